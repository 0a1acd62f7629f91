"""Gateway overhead: unary latency and throughput direct to a daemon vs through the gateway.

Starts berth-networkd and berth-gateway (and, as a reference, a plain grpc.aio
forwarding proxy) on temporary unix sockets, then calls
berth.network.v1.SystemService/GetVersion with one caller and with 16 concurrent
callers, alternating targets over several rounds and keeping each target's median.
Prints p50/p99 latency, calls per second, and the gateway's ratios to direct.

Run: make bench (or .venv/bin/python -m bench.gateway_overhead [--seconds 4] [--rounds 3])
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from berth.api.network.v1 import system_service_pb2
from tests.support.hostns import AgentHost, host_namespace
from tests.support.processes import DaemonProcess, start, wait_serving

METHOD = "/berth.network.v1.SystemService/GetVersion"
REQUEST = system_service_pb2.GetVersionRequest().SerializeToString()


@dataclass
class Result:
    calls: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.calls / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def load(target: str, callers: int, seconds: float) -> Result:
    """`callers` tasks calling back to back for `seconds`; every latency recorded."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD, _registered_method=True)
        for _ in range(200):  # warm up the connection and both ends' caches
            await call(REQUEST)
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            while (now := time.perf_counter()) < deadline:
                await call(REQUEST)
                latencies.append(time.perf_counter() - now)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return Result(len(latencies), time.perf_counter() - started, latencies)


def median_result(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


@contextmanager
def servers(root: Path) -> Iterator[dict[str, str]]:
    with host_namespace() as host:
        yield from _servers(root, host)


def _servers(root: Path, host: AgentHost) -> Iterator[dict[str, str]]:
    agent = start(
        "networkd",
        "berth.network.main",
        root / "networkd.sock",
        ["--state-dir", str(root / "net"), *host.agent_args()],
        root,
    )
    nowhere = f"unix://{root}/absent.sock"
    gateway = start(
        "gateway",
        "berth.gateway.main",
        root / "berth.sock",
        [
            "--state-dir",
            str(root / "gw"),
            "--network-address",
            agent.target,
            "--models-address",
            nowhere,
            "--mcp-address",
            nowhere,
        ],
        root,
    )
    proxy_socket = root / "plain.sock"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "bench.plain_proxy", f"unix://{proxy_socket}", agent.target]
    )
    processes: list[DaemonProcess] = [gateway, agent]
    try:
        wait_serving(f"unix://{proxy_socket}")
        yield {
            "direct": agent.target,
            "plain proxy": f"unix://{proxy_socket}",
            "gateway": gateway.target,
        }
    finally:
        proxy.terminate()
        proxy.wait()
        for process in processes:
            process.stop()


def measure(
    targets: dict[str, str], callers: int, seconds: float, rounds: int
) -> dict[str, Result]:
    runs: dict[str, list[Result]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, target in targets.items():
            runs[name].append(asyncio.run(load(target, callers, seconds)))
    return {name: median_result(results) for name, results in runs.items()}


def report(callers: int, results: dict[str, Result]) -> None:
    direct = results["direct"]
    print(f"\n{callers} caller(s), GetVersion over unix sockets")
    columns = ("calls/s", "p50 ms", "p99 ms", "x direct", "+p50 ms")
    print(f"  {'target':<12} " + " ".join(f"{c:>9}" for c in columns))
    for name, result in results.items():
        ratio = result.rps / direct.rps
        added = result.percentile(0.5) - direct.percentile(0.5)
        print(
            f"  {name:<12} {result.rps:>9.0f} {result.percentile(0.5):>9.3f} "
            f"{result.percentile(0.99):>9.3f} {ratio:>8.2f}x {added:>+9.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per target")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp, servers(Path(tmp)) as targets:
        summary = {}
        for callers in (1, 16):
            results = measure(targets, callers, args.seconds, args.rounds)
            report(callers, results)
            summary[callers] = results
    one, many = summary[1], summary[16]

    def throughput(name: str) -> float:
        return many[name].rps / many["direct"].rps

    def added_p50(name: str) -> float:
        return one[name].percentile(0.5) - one["direct"].percentile(0.5)

    print("\nsummary (targets: >= 0.45x direct throughput at 16 callers, < 0.5 ms added p50 at 1)")
    print(
        f"  gateway throughput at 16 callers: {throughput('gateway'):.2f}x direct"
        f" (plain proxy {throughput('plain proxy'):.2f}x)"
    )
    print(
        f"  gateway added p50 at 1 caller: {added_p50('gateway'):+.3f} ms"
        f" (plain proxy {added_p50('plain proxy'):+.3f} ms)"
    )


if __name__ == "__main__":
    main()
