"""TLS cost at the gateway: fronted unary throughput over plaintext TCP vs TLS, same run.

Starts one berth-mcpd and three berth-gateways in front of it, each on a TCP port of
127.0.0.1 with bearer tokens: one plaintext (--insecure-tcp, the baseline), one with TLS,
and one with TLS that also reaches the daemon over mTLS on TCP (instead of its unix
socket). Certificates come from berth.common.pki, as `berth certs init` makes them.
N concurrent callers, each on its own channel, call berth.mcp.v1.SystemService/GetVersion
for a fixed time; targets alternate over several rounds and each keeps its median.
Prints calls per second and the ratio to plaintext.

Run: make bench (or .venv/bin/python -m bench.tls [--seconds 3] [--rounds 3] [--callers 16])
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from berth.api.mcp.v1 import system_service_pb2
from berth.common import pki
from berth.gateway.auth import add_token
from tests.support.processes import DaemonProcess, free_port, start

METHOD = "/berth.mcp.v1.SystemService/GetVersion"
REQUEST = system_service_pb2.GetVersionRequest().SerializeToString()


@dataclass(frozen=True)
class Target:
    address: str
    credentials: grpc.ChannelCredentials | None  # None: plaintext
    token: str


async def load(target: Target, callers: int, seconds: float) -> float:
    """Calls per second of `callers` tasks, each on its own channel, for `seconds`."""
    metadata = (("authorization", f"Bearer {target.token}"),)
    channels = [
        grpc.aio.secure_channel(target.address, target.credentials)
        if target.credentials is not None
        else grpc.aio.insecure_channel(target.address)
        for _ in range(callers)
    ]
    try:
        calls = [c.unary_unary(METHOD, _registered_method=True) for c in channels]
        for call in calls:  # connect (and shake hands) before the clock starts
            for _ in range(20):
                await call(REQUEST, metadata=metadata)
        done = 0
        deadline = time.perf_counter() + seconds

        async def caller(call: grpc.aio.UnaryUnaryMultiCallable) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await call(REQUEST, metadata=metadata)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller(call) for call in calls))
        return done / (time.perf_counter() - started)
    finally:
        for channel in channels:
            await channel.close()


@contextmanager
def servers(root: Path) -> Iterator[dict[str, Target]]:
    certs = pki.init_cluster(root / "certs")
    tokens_file = root / "tokens.json"
    token = add_token(tokens_file, "bench", ["mcp:read"])
    server_tls = ["--tls-cert", str(certs["server"]), "--tls-key", str(certs["server-key"])]
    trust = grpc.ssl_channel_credentials(certs["ca"].read_bytes())
    with ExitStack() as stack:
        mcpd_port = free_port()
        mcpd = start(
            "mcpd",
            "berth.mcp.main",
            root / "mcpd.sock",
            [
                *("--state-dir", str(root / "mcp"), "--runtime-dir", str(root / "mcp-run")),
                *("--gateway-port", "-1", "--listen", f"127.0.0.1:{mcpd_port}"),
                *server_tls,
                *("--tls-client-ca", str(certs["ca"])),
            ],
            root,
        )
        stack.callback(mcpd.stop)
        upstream_mtls = [
            *("--upstream-tls-ca", str(certs["ca"])),
            *("--upstream-tls-cert", str(certs["client"])),
            *("--upstream-tls-key", str(certs["client-key"])),
        ]
        kinds = {
            "plaintext": (["--insecure-tcp"], mcpd.target, None),
            "tls": (server_tls, mcpd.target, trust),
            "tls + mtls upstream": (
                [*server_tls, *upstream_mtls],
                f"127.0.0.1:{mcpd_port}",
                trust,
            ),
        }
        targets = {}
        for index, (name, (args, upstream, credentials)) in enumerate(kinds.items()):
            port = free_port()
            gateway = _gateway(root, f"gateway-{index}", port, upstream, tokens_file, args)
            stack.callback(gateway.stop)
            targets[name] = Target(f"localhost:{port}", credentials, token)
        yield targets


def _gateway(
    root: Path, name: str, port: int, mcp: str, tokens: Path, args: list[str]
) -> DaemonProcess:
    nowhere = f"unix://{root}/absent.sock"
    return start(
        name,
        "berth.gateway.main",
        root / f"{name}.sock",
        [
            *("--state-dir", str(root / name), "--tokens-file", str(tokens)),
            *("--listen", f"127.0.0.1:{port}", "--mcp-address", mcp),
            *("--network-address", nowhere, "--models-address", nowhere),
            *args,
        ],
        root,
    )


def measure(
    targets: dict[str, Target], callers: int, seconds: float, rounds: int
) -> dict[str, float]:
    runs: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, target in targets.items():
            runs[name].append(asyncio.run(load(target, callers, seconds)))
    return {name: sorted(found)[len(found) // 2] for name, found in runs.items()}


def report(callers: int, results: dict[str, float]) -> None:
    baseline = results["plaintext"]
    print(f"\n{callers} caller(s), one channel each, GetVersion through the gateway over TCP")
    print(f"  {'gateway':<22} {'calls/s':>9} {'x plaintext':>12}")
    for name, rps in results.items():
        print(f"  {name:<22} {rps:>9.0f} {rps / baseline:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target")
    parser.add_argument(
        "--callers", type=int, nargs="+", default=[1, 16], help="concurrent callers"
    )
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="berth-bench-tls-") as folder,
        servers(Path(folder)) as targets,
    ):
        for callers in options.callers:
            report(callers, measure(targets, callers, options.seconds, options.rounds))


if __name__ == "__main__":
    main()
