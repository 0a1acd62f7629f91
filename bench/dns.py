"""Embedded DNS: queries/s and p50/p99 latency for a local name, asked from inside a sandbox.

Starts berth-networkd alone (in a throwaway host namespace, on a temporary unix socket,
its --resolv-conf a temporary file), creates a user-defined bridge network with two running
sandboxes, `client` and `target`, and has dnsperf ask for `target` (type A) from inside
`client`: at berth's embedded server on 127.0.0.11 and, as the baseline, at dnsmasq started
in the same sandbox on 127.0.0.12, answering the same name from a hosts file. Each server
gets two loads, alternating server by server over several rounds so both see the same
machine: flat out (dnsperf keeping 100 queries outstanding) and a steady 5,000 queries/s.
dnsperf logs every answer's latency (-v); p50/p99 are taken over all rounds' answers, q/s is
the median round's. Also shown per run: the CPU time the server and dnsperf used, and how
long the server waited for a CPU (few cores: other work on the machine shows in the tail).
Prints both servers' figures, berth's ratio to dnsmasq, and the issue's targets (at least
5,000 queries/s, p99 under 5 ms at that rate).

Run: make bench (or .venv/bin/python -m bench.dns [--seconds 5] [--rounds 3])
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import grpc

from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import network_service_pb2_grpc as npb_grpc
from berth.api.network.v1 import sandbox_service_pb2 as spb
from berth.api.network.v1 import sandbox_service_pb2_grpc as spb_grpc
from tests.support.hostns import AgentHost, host_namespace
from tests.support.processes import DaemonProcess, poll, start, stop_process

SUBNET = IPv4Network("10.234.0.0/24")
NETWORK = "bench-dns"
CLIENT = "client"
NAME = "target"  # the local name asked for: the other sandbox
BERTH = "127.0.0.11"
DNSMASQ = "127.0.0.12"
STEADY_QPS = 5000
FLAT_OUT, STEADY = "flat out", f"{STEADY_QPS:,} q/s"
LOADS: dict[str, int | None] = {FLAT_OUT: None, STEADY: STEADY_QPS}
OUTSTANDING = 100  # dnsperf's default, made explicit: the flat-out latency is mostly this queue
WARMUP_S = 1.0
HOST_RESOLVERS = "nameserver 192.0.2.53\n"  # unroutable; a local name never goes upstream
TARGET_QPS = 5000.0
TARGET_P99_MS = 5.0
BUSY_MACHINE = 0.03  # waiting for a CPU this share of a run or more: its tail is suspect


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    pid: int  # whose CPU time is counted during each run


@dataclass
class CpuShares:
    """CPU time over a run's wall time (1.0: one core, all the time)."""

    server: float
    dnsperf: float
    server_waited: float  # the server's time runnable but waiting for a CPU (the machine busy)

    @classmethod
    def mean(cls, shares: list[CpuShares]) -> CpuShares:
        count = len(shares)
        return cls(
            sum(s.server for s in shares) / count,
            sum(s.dnsperf for s in shares) / count,
            sum(s.server_waited for s in shares) / count,
        )


@dataclass
class Run:
    """One dnsperf run against one server."""

    qps: float
    cpu: CpuShares
    sent: int
    lost: int
    not_noerror: int
    max_ms: float
    latencies: list[float]  # seconds, one per answer


@dataclass
class Summary:
    """A server's runs under one load: the median round's q/s, percentiles over all answers."""

    qps: float
    cpu: CpuShares  # mean over the rounds
    p50_ms: float
    p99_ms: float
    max_ms: float
    sent: int
    lost: int
    not_noerror: int

    @classmethod
    def of(cls, runs: list[Run]) -> Summary:
        latencies = sorted(s for run in runs for s in run.latencies)

        def percentile(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

        return cls(
            qps=sorted(run.qps for run in runs)[len(runs) // 2],
            cpu=CpuShares.mean([run.cpu for run in runs]),
            p50_ms=percentile(0.5),
            p99_ms=percentile(0.99),
            max_ms=max(run.max_ms for run in runs),
            sent=sum(run.sent for run in runs),
            lost=sum(run.lost for run in runs),
            not_noerror=sum(run.not_noerror for run in runs),
        )


# the servers


@contextmanager
def network_agent(root: Path, host: AgentHost) -> Iterator[DaemonProcess]:
    """berth-networkd in `host`, reading a temporary file as the host's resolv.conf."""
    resolv_conf = root / "resolv.conf"
    resolv_conf.write_text(HOST_RESOLVERS)
    args = ["--state-dir", str(root / "net"), "--resolv-conf", str(resolv_conf)]
    args += host.agent_args()
    agent = start("networkd", "berth.network.main", root / "networkd.sock", args, root)
    try:
        yield agent
    finally:
        agent.stop()


def make_sandboxes(target: str) -> tuple[str, str]:
    """The network and both sandboxes; returns the client's namespace and the target's
    IPv4 address."""
    with grpc.insecure_channel(target) as channel:
        networks = npb_grpc.NetworkServiceStub(channel)
        sandboxes = spb_grpc.SandboxServiceStub(channel)
        ipam = npb.IPAM(config=[npb.IPAMConfig(subnet=str(SUBNET))])
        networks.CreateNetwork(npb.CreateNetworkRequest(name=NETWORK, ipam=ipam))
        made = {
            name: sandboxes.CreateSandbox(
                spb.CreateSandboxRequest(
                    name=name, networks=[spb.NetworkAttachment(network=NETWORK)], start=True
                )
            ).sandbox
            for name in (CLIENT, NAME)
        }
    (endpoint,) = made[NAME].endpoints
    return Path(made[CLIENT].netns_path).name, endpoint.ipv4_address.split("/")[0]


def dig(netns: str, server: str) -> str:
    """What `server` answers for NAME (A), asked from inside `netns`."""
    argv = ["ip", "netns", "exec", netns, "dig", "+short", "+time=1", "+tries=1"]
    argv += [NAME, f"@{server}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()


@contextmanager
def dnsmasq(root: Path, netns: str, address: str) -> Iterator[int]:
    """dnsmasq inside `netns` on DNSMASQ:53, answering NAME -> `address` from a hosts file
    (authoritatively, as berth does) and nothing else; yields its pid."""
    hosts = root / "hosts"
    hosts.write_text(f"{address} {NAME}\n")
    argv = ["ip", "netns", "exec", netns, shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"]
    argv += ["--conf-file=/dev/null", "--no-daemon", "--no-resolv", "--no-hosts"]
    argv += [f"--addn-hosts={hosts}", f"--listen-address={DNSMASQ}", "--bind-interfaces"]
    argv += ["--port=53", "--cache-size=1000", f"--pid-file={root / 'dnsmasq.pid'}"]
    argv += ["--user=root"]  # stays able to read the hosts file in our private temporary folder
    log_path = root / "dnsmasq.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        poll(
            lambda: process.poll() is not None or dig(netns, DNSMASQ) == address,
            what="dnsmasq to answer",
        )
        if process.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {log_path.read_text()}")
        yield process.pid  # ip netns exec execs dnsmasq: the same process
    finally:
        stop_process(process)


# the load


class CpuMeter:
    """CPU time used from now on by the server `pid` and by this process's children that
    finish (dnsperf: the servers are still running), and the time the server's main thread
    (the agent's event loop) spent waiting for a CPU."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = time.perf_counter()
        self.server, self.children, self.waited = self._now()

    def shares(self) -> CpuShares:
        wall = time.perf_counter() - self.started
        server, children, waited = self._now()
        return CpuShares(
            (server - self.server) / wall,
            (children - self.children) / wall,
            (waited - self.waited) / wall,
        )

    def _now(self) -> tuple[float, float, float]:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime+stime
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        # /proc/PID/schedstat: time on a CPU, time waiting on a run queue, slices (ns, ns, n)
        waited = int(Path(f"/proc/{self.pid}/schedstat").read_text().split()[1]) / 1e9
        return server, usage.ru_utime + usage.ru_stime, waited


def dnsperf(netns: str, server: Server, queries: Path, seconds: float, rate: int | None) -> Run:
    argv = ["ip", "netns", "exec", netns, "dnsperf", "-s", server.address, "-d", str(queries)]
    argv += ["-l", f"{seconds:g}", "-c", "1", "-q", str(OUTSTANDING), "-v"]
    if rate is not None:
        argv += ["-Q", str(rate)]
    # Into a file, not a pipe: nothing of ours competes for the CPUs while it runs.
    with tempfile.TemporaryFile() as output:
        meter = CpuMeter(server.pid)
        subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT, timeout=seconds + 30)
        cpu = meter.shares()
        output.seek(0)
        return parse_dnsperf(output.read().decode(), cpu)


def parse_dnsperf(output: str, cpu: CpuShares) -> Run:
    def figure(label: str) -> str:
        found = re.search(rf"^\s*{label}:\s*(\S+)", output, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no '{label}' in dnsperf's output:\n{output[-2000:]}")
        return found.group(1)

    answers = [line.split() for line in output.splitlines() if line.startswith("> ")]
    if not answers:
        raise RuntimeError(f"no answers in dnsperf's output:\n{output[-2000:]}")
    maximum = re.search(r"^\s*Average Latency \(s\):.*max ([\d.]+)\)", output, re.MULTILINE)
    return Run(
        qps=float(figure("Queries per second")),
        cpu=cpu,
        sent=int(figure("Queries sent")),
        lost=int(figure("Queries lost")),
        not_noerror=sum(1 for fields in answers if fields[1] != "NOERROR"),
        max_ms=float(maximum.group(1)) * 1000 if maximum else float("nan"),
        latencies=[float(fields[-1]) for fields in answers],
    )


def measure(
    netns: str, servers: list[Server], queries: Path, seconds: float, rounds: int
) -> dict[str, dict[str, Summary]]:
    """load -> server name -> summary."""
    for server in servers:
        dnsperf(netns, server, queries, WARMUP_S, None)
    runs: dict[str, dict[str, list[Run]]] = {
        load: {server.name: [] for server in servers} for load in LOADS
    }
    for _ in range(rounds):
        for load, rate in LOADS.items():
            for server in servers:
                runs[load][server.name].append(dnsperf(netns, server, queries, seconds, rate))
    return {
        load: {server: Summary.of(server_runs) for server, server_runs in by_server.items()}
        for load, by_server in runs.items()
    }


# the report


def target_line(what: str, figure: str, met: bool) -> None:
    print(f"  {what:<40} {figure:<24} {'met' if met else 'NOT met'}")


def table(results: dict[str, dict[str, Summary]]) -> None:
    columns = ("q/s", "p50 ms", "p99 ms", "max ms", "lost", "!NOERROR")
    cpu_columns = ("server", "dnsperf", "waited")
    heading = " ".join(f"{c:>8}" for c in columns) + "   CPU % "
    print(f"  {'load':<10} {'server':<8} {heading}" + " ".join(f"{c:>7}" for c in cpu_columns))
    for load, by_server in results.items():
        for i, (server, s) in enumerate(by_server.items()):
            figures = f"{s.qps:>8.0f} {s.p50_ms:>8.3f} {s.p99_ms:>8.3f} {s.max_ms:>8.3f} "
            figures += f"{s.lost:>8} {s.not_noerror:>8}"
            cpu = s.cpu
            shares = f"{cpu.server:>7.0%} {cpu.dnsperf:>7.0%} {cpu.server_waited:>7.1%}"
            print(f"  {load if i == 0 else '':<10} {server:<8} {figures}         {shares}")


def report(
    results: dict[str, dict[str, Summary]], seconds: float, rounds: int, load_before: float
) -> None:
    print(f"\n'{NAME}' (A) asked from inside a sandbox: {rounds} round(s) x {seconds:g} s per load")
    table(results)
    flat, steady = results[FLAT_OUT], results[STEADY]
    print(
        f"  flat out: dnsperf keeps {OUTSTANDING} queries outstanding, so latency there is"
        " mostly that queue.\n"
        "  p50/p99/max: over all rounds' answers; q/s: the median round's.\n"
        "  CPU %: CPU time over the run's wall time (100% = one core); waited: the server's time\n"
        "  ready to run but waiting for a CPU (dnsperf or other work), over the same.\n"
        f"  {os.cpu_count()} CPUs, shared by the agent (one Python event loop), dnsperf and"
        f" dnsmasq;\n  load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after."
    )
    if steady["berth"].cpu.server_waited > BUSY_MACHINE:
        print(
            f"  NOTE: berth waited for a CPU {steady['berth'].cpu.server_waited:.1%} of its"
            f" {STEADY_QPS:,} q/s runs;\n  its p99 there says more about the machine: run"
            " again when it is quiet."
        )
    berth, baseline = flat["berth"], flat["dnsmasq"]
    print(
        f"\nberth / dnsmasq: {berth.qps / baseline.qps:.3f}x the queries/s flat out;"
        f" at {STEADY_QPS:,} q/s p50 {steady['berth'].p50_ms / steady['dnsmasq'].p50_ms:.1f}x,"
        f" p99 {steady['berth'].p99_ms / steady['dnsmasq'].p99_ms:.1f}x dnsmasq's"
    )
    print("\ntargets")
    target_line(
        f"berth >= {TARGET_QPS:,.0f} queries/s (flat out)",
        f"{berth.qps:,.0f} q/s",
        berth.qps >= TARGET_QPS and berth.lost == 0,
    )
    p99 = steady["berth"].p99_ms
    target_line(
        f"berth p99 under {TARGET_P99_MS:g} ms at {STEADY_QPS:,} q/s",
        f"{p99:.2f} ms ({steady['berth'].qps:,.0f} q/s)",
        p99 < TARGET_P99_MS and steady["berth"].qps >= 0.99 * STEADY_QPS,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per load")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")
    if shutil.which("dnsperf") is None:
        sys.exit("dnsperf not found: tools/setup-system.sh installs it")
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp,
        host_namespace() as host,
        network_agent(Path(tmp), host) as agent,
    ):
        root = Path(tmp)
        netns, address = make_sandboxes(agent.target)
        poll(lambda: dig(netns, BERTH) == address, what=f"berth to answer {NAME}")
        queries = root / "queries"
        queries.write_text(f"{NAME} A\n")
        try:
            with dnsmasq(root, netns, address) as dnsmasq_pid:
                servers = [
                    Server("berth", BERTH, agent.process.pid),
                    Server("dnsmasq", DNSMASQ, dnsmasq_pid),
                ]
                results = measure(netns, servers, queries, args.seconds, args.rounds)
        except KeyboardInterrupt:
            sys.exit("interrupted: removing what the benchmark made")
    report(results, args.seconds, args.rounds, load_before)


if __name__ == "__main__":
    main()
