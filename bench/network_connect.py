"""Sandbox connect: berth through the gateway vs the same kernel operations done directly.

Starts berth-networkd (in a throwaway host namespace) and berth-gateway on temporary unix
sockets, creates a user-defined bridge network with a /16, and times
berth.network.v1.SandboxService/CreateSandbox(name, networks=[it], start=True): a new
namespace, an address, a veth pair on the bridge, the sandbox end configured inside.
The baseline does the same netlink requests with pyroute2 in this process, in a second
throwaway host namespace with its own bridge (berth's adapters are not used). The two
alternate, so both see the same machine. Then berth connects --growth sandboxes to one
network and the 10th is compared with the last (medians of 10 around each).
Prints p50/p99 per connect, berth's ratio to the baseline, and the issue's targets.

Run: make bench (or .venv/bin/python -m bench.network_connect [--count 100] [--growth 500])
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import grpc.aio
from pyroute2 import AsyncIPRoute
from pyroute2 import netns as pyroute2_netns

from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import network_service_pb2_grpc as npb_grpc
from berth.api.network.v1 import sandbox_service_pb2 as spb
from berth.api.network.v1 import sandbox_service_pb2_grpc as spb_grpc
from tests.support.hostns import NETNS_DIR, AgentHost, host_namespace
from tests.support.processes import DaemonProcess, start

SAMPLE_SUBNET = IPv4Network("10.231.0.0/16")
GROWTH_SUBNET = IPv4Network("10.232.0.0/16")
DIRECT_SUBNET = IPv4Network("10.233.0.0/16")
MTU = 1500
WARMUP = 3
WINDOW = 10  # the n-th connect is the median of the WINDOW connects around it
NETLINK_ROUTE = 0
TARGET_RATIO = 2.0
TARGET_P50_MS = 50.0
TARGET_GROWTH = 1.5


@dataclass
class Timings:
    seconds: list[float]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def median_around(self, nth: int) -> float:
        """Median in ms of connects nth-4 .. nth+5 (1-based), clamped to the run."""
        first = min(max(nth - WINDOW // 2, 0), len(self.seconds) - WINDOW)
        return statistics.median(self.seconds[first : first + WINDOW]) * 1000


# berth, through the gateway


class BerthClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.networks = npb_grpc.NetworkServiceStub(channel)
        self.sandboxes = spb_grpc.SandboxServiceStub(channel)

    async def create_network(self, name: str, subnet: IPv4Network) -> None:
        ipam = npb.IPAM(config=[npb.IPAMConfig(subnet=str(subnet))])
        await self.networks.CreateNetwork(npb.CreateNetworkRequest(name=name, ipam=ipam))

    async def connect(self, name: str, network: str) -> float:
        request = spb.CreateSandboxRequest(
            name=name, networks=[spb.NetworkAttachment(network=network)], start=True
        )
        started = time.perf_counter()
        await self.sandboxes.CreateSandbox(request)
        return time.perf_counter() - started

    async def remove(self, names: list[str]) -> None:
        await self.sandboxes.RemoveSandbox(spb.RemoveSandboxRequest(sandboxes=names, force=True))


@contextmanager
def berth_gateway(root: Path, host: AgentHost) -> Iterator[str]:
    """berth-networkd in `host` behind berth-gateway; yields the gateway's target."""
    agent = start(
        "networkd",
        "berth.network.main",
        root / "networkd.sock",
        ["--state-dir", str(root / "net"), *host.agent_args()],
        root,
    )
    processes: list[DaemonProcess] = [agent]
    try:
        nowhere = f"unix://{root}/absent.sock"
        gateway_args = ["--state-dir", str(root / "gw"), "--network-address", agent.target]
        gateway_args += ["--models-address", nowhere, "--mcp-address", nowhere]
        gateway = start("gateway", "berth.gateway.main", root / "berth.sock", gateway_args, root)
        processes.insert(0, gateway)
        yield gateway.target
    finally:
        for process in processes:
            process.stop()


# the baseline: the same kernel operations, directly with pyroute2


async def netlink_in(path: Path) -> AsyncIPRoute:
    """An rtnetlink connection living in the namespace at `path`.

    The socket is made by a short-lived thread that entered the namespace (a socket stays
    where it was made), as berth does, rather than by pyroute2's forked helper.
    """
    loop = asyncio.get_running_loop()
    made: asyncio.Future[int] = loop.create_future()

    def make() -> None:
        try:
            pyroute2_netns.setns(str(path), flags=0)
            fd = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE).detach()
        except BaseException as error:
            loop.call_soon_threadsafe(made.set_exception, error)
        else:
            loop.call_soon_threadsafe(made.set_result, fd)

    threading.Thread(target=make, daemon=True).start()
    return AsyncIPRoute(fileno=await made, groups=0, ext_ack=True)


async def ip_netns(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec("ip", "netns", *argv)
    if await process.wait() != 0:
        raise RuntimeError(f"ip netns {' '.join(argv)} failed")


async def index_of(ipr: AsyncIPRoute, name: str) -> int:
    (index,) = await ipr.link_lookup(ifname=name)
    return int(index)


class Direct:
    """Sandboxes made by hand in `host`: the reference berth's connect is measured against."""

    BRIDGE = "br0"

    def __init__(self, host: AgentHost, ipr: AsyncIPRoute, bridge: int) -> None:
        self.host = host
        self.ipr = ipr
        self.bridge = bridge
        self.gateway = IPv4Interface(f"{DIRECT_SUBNET[1]}/{DIRECT_SUBNET.prefixlen}")
        self.namespaces: list[str] = []

    @classmethod
    async def open(cls, host: AgentHost) -> Direct:
        ipr = await netlink_in(NETNS_DIR / host.netns)
        await ipr.link("add", ifname=cls.BRIDGE, kind="bridge")
        bridge = await index_of(ipr, cls.BRIDGE)
        await ipr.addr("add", index=bridge, address=str(DIRECT_SUBNET[1]), prefixlen=16)
        await ipr.link("set", index=bridge, mtu=MTU, state="up")
        return cls(host, ipr, bridge)

    async def connect(self, number: int) -> float:
        """Connects sandbox `number` (from 0); returns the seconds it took."""
        name = f"{self.host.prefix}d{number}"
        host_ifname, peer = f"bv{secrets.token_hex(6)}", f"vb{secrets.token_hex(4)}"
        address = IPv4Interface(f"{DIRECT_SUBNET[number + 2]}/{DIRECT_SUBNET.prefixlen}")
        started = time.perf_counter()
        await ip_netns("add", name)
        self.namespaces.append(name)
        await self._attach(host_ifname, peer, NETNS_DIR / name)
        await self._configure(NETNS_DIR / name, peer, address)
        return time.perf_counter() - started

    async def _attach(self, host_ifname: str, peer: str, sandbox: Path) -> None:
        await index_of(self.ipr, self.BRIDGE)  # berth checks its bridge on every connect
        await self.ipr.link("add", ifname=host_ifname, kind="veth", peer=peer)
        index = await index_of(self.ipr, host_ifname)
        await self.ipr.link("set", index=index, mtu=MTU)
        await self.ipr.link("set", index=index, master=self.bridge)
        await self.ipr.link("set", index=index, state="up")
        peer_index = await index_of(self.ipr, peer)
        fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
        try:
            await self.ipr.link("set", index=peer_index, net_ns_fd=fd)
        finally:
            os.close(fd)

    async def _configure(self, sandbox: Path, peer: str, address: IPv4Interface) -> None:
        ipr = await netlink_in(sandbox)
        try:
            index = await index_of(ipr, peer)
            await ipr.link("set", index=index, ifname="eth0")
            mac = ":".join(f"{o:02x}" for o in (0x02, 0x42, *secrets.token_bytes(4)))
            await ipr.link("set", index=index, address=mac, mtu=MTU)
            await ipr.link("set", index=index, state="up")
            await ipr.link("set", index=await index_of(ipr, "lo"), state="up")
            await ipr.addr("add", index=index, address=str(address.ip), prefixlen=16)
            await ipr.route(
                "add", dst="0.0.0.0", dst_len=0, gateway=str(self.gateway.ip), oif=index
            )
        finally:
            ipr.close()

    async def close(self) -> None:
        """Deletes its namespaces (and with them the veths) and closes the netlink socket."""
        self.ipr.close()
        for name in self.namespaces:
            await ip_netns("delete", name)
        self.namespaces.clear()


# the run


@dataclass
class Results:
    berth: Timings
    direct: Timings
    growth: Timings


async def measure(target: str, direct_host: AgentHost, count: int, growth: int) -> Results:
    async with grpc.aio.insecure_channel(target) as channel:
        berth = BerthClient(channel)
        await berth.create_network("bench-sample", SAMPLE_SUBNET)
        direct = await Direct.open(direct_host)
        try:
            names = [f"w{i}" for i in range(WARMUP)] + [f"s{i}" for i in range(count)]
            berth_times, direct_times = [], []
            for i, name in enumerate(names):
                berth_times.append(await berth.connect(name, "bench-sample"))
                direct_times.append(await direct.connect(i))
        finally:
            await direct.close()
        # The growth run starts on a host without the sample's sandboxes.
        await berth.remove(names)
        await berth.create_network("bench-growth", GROWTH_SUBNET)
        growth_times = [await berth.connect(f"g{i}", "bench-growth") for i in range(growth)]
    return Results(
        Timings(berth_times[WARMUP:]), Timings(direct_times[WARMUP:]), Timings(growth_times)
    )


def target_line(what: str, figure: str, met: bool) -> None:
    print(f"  {what:<36} {figure:<28} {'met' if met else 'NOT met'}")


def report(results: Results, count: int) -> None:
    berth, direct, growth = results.berth, results.direct, results.growth
    print(f"\nconnecting a sandbox: {count} each, alternating, after {WARMUP} warm-ups each")
    print(f"  {'':<34} {'p50 ms':>8} {'p99 ms':>8} {'x direct p50':>13}")
    for name, timings in {
        "direct pyroute2 (baseline)": direct,
        "berth CreateSandbox via gateway": berth,
    }.items():
        ratio = timings.percentile(0.5) / direct.percentile(0.5)
        print(
            f"  {name:<34} {timings.percentile(0.5):>8.2f} "
            f"{timings.percentile(0.99):>8.2f} {ratio:>12.2f}x"
        )
    total = len(growth.seconds)
    marks = sorted({10, *range(100, total, 100), total})
    print(f"\ngrowth: berth connects {total} sandboxes to one network")
    print(f"  p50 {growth.percentile(0.5):.2f} ms, p99 {growth.percentile(0.99):.2f} ms")
    print(f"  #n (median of the {WINDOW} connects #n-4..#n+5, in ms):")
    print("  " + "  ".join(f"#{n} {growth.median_around(n):.2f}" for n in marks))
    ratio = berth.percentile(0.5) / direct.percentile(0.5)
    p50 = berth.percentile(0.5)
    tenth, last = growth.median_around(10), growth.median_around(total)
    print("\ntargets")
    target_line(
        f"berth within {TARGET_RATIO:g}x of direct (p50)", f"{ratio:.2f}x", ratio <= TARGET_RATIO
    )
    target_line(f"berth p50 under {TARGET_P50_MS:g} ms", f"{p50:.2f} ms", p50 < TARGET_P50_MS)
    target_line(
        f"#{total} no slower than {TARGET_GROWTH:g}x #10",
        f"{last:.2f} / {tenth:.2f} ms = {last / tenth:.2f}x",
        last <= TARGET_GROWTH * tenth,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="connects for p50/p99, each")
    parser.add_argument("--growth", type=int, default=500, help="sandboxes on one network")
    args = parser.parse_args()
    if args.count < 1 or args.growth < WINDOW + 5:
        parser.error(f"--count must be at least 1 and --growth at least {WINDOW + 5}")
    with (
        tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp,
        host_namespace() as berth_host,
        host_namespace() as direct_host,
        berth_gateway(Path(tmp), berth_host) as target,
    ):
        try:
            results = asyncio.run(measure(target, direct_host, args.count, args.growth))
        except KeyboardInterrupt:
            sys.exit("interrupted: removing what the benchmark made")
    report(results, args.count)


if __name__ == "__main__":
    main()
