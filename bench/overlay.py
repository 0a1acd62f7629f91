"""Overlay networks: throughput, convergence and control-plane fan-out, each against a
baseline measured in the same run.

Throughput: a two-host cluster (tests/support/cluster.py: host namespaces on one underlay
bridge, redis-server on it, an agent in each host) with an overlay network; iperf3 (TCP,
one stream) from a sandbox on h1 to a sandbox on h2 over berth's VXLAN, against the hosts'
underlay (host namespace to host namespace), a VXLAN link made by hand with `ip` between
the same two host namespaces (VNI 99, port 4789, MTU 1450: the kernel's datapath with
nothing of berth's), and berth's topology made by hand (in each host a sandbox namespace
on a veth, a bridge, and a VXLAN port on it, VNI 98), which shows what the sandbox's veth
and bridge hop costs by itself. The paths alternate, --repeats times; medians are shown.

Convergence: a sandbox is created on h1 on the overlay network (CreateSandbox, start=True)
and a sandbox on h2 connects to it over TCP. Timed: from the start of the CreateSandbox call
until the first TCP handshake from h2 completes. As soon as the call returns, a listening
socket is made inside the new sandbox (by a thread of this process that entered its
namespace: well under a millisecond, no process to start) and a thread inside the h2
sandbox tries to connect every few milliseconds (each attempt times out after
CONNECT_TIMEOUT_S). Also recorded: when h2's VXLAN device got the new address's neighbour
entry (rtnetlink events read in h2), and whether the client's first attempt came before
it: its ARP request then goes unanswered until h2's agent programs the entry and answers for
the address unasked (without that, the kernel would ask again only after the neighbour
retransmit time, 1 s by default). The baseline is the same measure on a
bridge network of h2 alone (new sandbox and client both on h2), so the ratio shows what
crossing hosts costs. The two alternate; every round's sandbox is new and stays.

Fan-out: N simulated hosts in this process, each a real ClusterLink and ClusterStore on one
real redis-server (on loopback), whose change handler reads the network's endpoints as the
agent does (kernel programming left out). The network holds one endpoint per host; one
host writes a new endpoint (ClusterStore.put_endpoint, which publishes) and the time until
every other host has read it is measured. Baseline: plain Redis pub/sub to N subscribers
(a publish, N receive it, no reads). All N hosts share one event loop here, so the time
to reach all of them includes handling the N notifications one after another: an upper
bound for N machines that handle theirs in parallel.

Run: make bench (or .venv/bin/python -m bench.overlay [--seconds 5] [--repeats 3]
     [--rounds 50] [--hosts 10,50,100] [--fanout-repeats 20])
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis
from pyroute2 import netns as pyroute2_netns

from berth.common import logging as berth_logging
from berth.network.adapters.cluster_store import ClusterStore, endpoints_key
from berth.network.domain.overlay import ClusterEndpoint
from berth.network.overlay.link import Change, ClusterLink, Timing
from tests.support.cluster import UNDERLAY_DEVICE, Cluster, ClusterHost, running_cluster
from tests.support.hostns import NETNS_DIR
from tests.support.processes import free_port, poll, stop_process
from tests.support.redis import redis_server

OVERLAY_SUBNET = "10.236.0.0/16"
BRIDGE_SUBNET = "10.238.0.0/24"  # the convergence baseline's network, on h2 alone
OVERLAY = "bench-overlay"
BRIDGE = "bench-bridge"
HAND_DEVICE = "vxhand"
HAND_VNI = 99
HAND_PORT = 4789
HAND_MTU = 1450
HAND_ADDRESSES = ("10.237.0.1", "10.237.0.2")  # h1, h2; /24
BRIDGED_BRIDGE, BRIDGED_VXLAN, BRIDGED_VETH = "brhand", "vxhandbr", "vhand"
BRIDGED_VNI = 98
BRIDGED_ADDRESSES = ("10.237.1.1", "10.237.1.2")  # the hand-built sandboxes; /24
IPERF_PORT = 5201
LISTEN_PORT = 8080
CONNECT_TIMEOUT_S = 0.005  # one attempt; a handshake that can succeed takes well under 1 ms
RETRY_PAUSE_S = 0.001  # after an attempt refused at once (nobody there yet)
CONVERGE_DEADLINE_S = 5.0
WARMUP_ROUNDS = 2
FANOUT_DEADLINE_S = 10.0
STOP_GRACE_S = 5.0
RAW_CHANNEL = "bench:raw"
TARGET_THROUGHPUT = 0.95  # of the hand-built VXLAN
TARGET_CONVERGE_P99_MS = 200.0

UNDERLAY, HAND, BERTH = "underlay", "hand-built VXLAN", "berth overlay"
HAND_BRIDGED = "hand-built, bridged"
BRIDGE_BASELINE = "bridge, one host"
NETLINK_ROUTE = 0
RTMGRP_NEIGH = 0x4
RTM_NEWNEIGH = 28
NUD_PERMANENT = 0x80
NDA_DST = 1

T = TypeVar("T")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> float:
    return seconds * 1000


def check(argv: Sequence[str], timeout: float = 30) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def in_netns(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def bare(address: str) -> str:
    return address.split("/")[0]


# ---- throughput -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IperfPath:
    """Where iperf3's client runs and the address of its server."""

    client_netns: str
    server_address: str


@contextmanager
def iperf_server(netns: str) -> Iterator[None]:
    """`iperf3 -s` in `netns` (it serves every address there), stopped afterwards."""
    argv = in_netns(netns, "iperf3", "-s", "-p", str(IPERF_PORT))
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(
            lambda: (
                process.poll() is not None
                or check(in_netns(netns, "ss", "-Hltn", f"sport = :{IPERF_PORT}")).strip()
            ),
            what=f"iperf3 to listen in {netns}",
        )
        if process.poll() is not None:
            raise RuntimeError(f"iperf3 -s in {netns} exited with {process.returncode}")
        yield
    finally:
        stop_process(process)


def iperf(path: IperfPath, seconds: float) -> float:
    """bits/s the server received (end.sum_received) over `seconds` of one TCP stream."""
    argv = in_netns(path.client_netns, "iperf3", "-c", path.server_address)
    argv += ["-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    try:
        result = json.loads(done.stdout)
        return float(result["end"]["sum_received"]["bits_per_second"])
    except (ValueError, KeyError) as error:
        raise RuntimeError(f"iperf3 to {path.server_address}: {done.stdout[-2000:]}") from error


def pings(netns: str, address: str, timeout: float = 10.0) -> None:
    argv = in_netns(netns, "ping", "-c1", "-W1", address)
    poll(
        lambda: subprocess.run(argv, capture_output=True, timeout=5).returncode == 0,
        timeout,
        f"{address} to answer a ping from {netns}",
    )


@contextmanager
def hand_built_vxlan(h1: ClusterHost, h2: ClusterHost) -> Iterator[None]:
    """A point-to-point VXLAN between the two host namespaces, made with `ip` alone."""
    ends = ((h1, h2, HAND_ADDRESSES[0]), (h2, h1, HAND_ADDRESSES[1]))
    try:
        for host, peer, address in ends:
            host.ip(
                "link", "add", HAND_DEVICE, "type", "vxlan", "id", str(HAND_VNI),
                "dstport", str(HAND_PORT), "local", host.address, "remote", peer.address,
                "dev", UNDERLAY_DEVICE,
            )  # fmt: skip
            host.ip("link", "set", HAND_DEVICE, "mtu", str(HAND_MTU))
            host.ip("addr", "add", f"{address}/24", "dev", HAND_DEVICE)
            host.ip("link", "set", HAND_DEVICE, "up")
        yield
    finally:
        for host, _, _ in ends:
            with suppress(RuntimeError):
                host.ip("link", "del", HAND_DEVICE)


def hand_sandbox(host: ClusterHost) -> str:
    """The namespace of the hand-built bridged path's sandbox on `host` (it carries the
    cluster's prefix, so the harness removes it even after a failure)."""
    return f"{host.prefix}hand{host.index}"


@contextmanager
def hand_built_bridged(h1: ClusterHost, h2: ClusterHost) -> Iterator[None]:
    """Berth's topology made with `ip` alone: in each host a bridge with a VXLAN port
    (point-to-point to the other host) and a sandbox namespace on a veth port."""
    ends = ((h1, h2, BRIDGED_ADDRESSES[0]), (h2, h1, BRIDGED_ADDRESSES[1]))
    try:
        for host, peer, address in ends:
            sandbox = hand_sandbox(host)
            check(["ip", "netns", "add", sandbox])
            host.ip("link", "add", BRIDGED_BRIDGE, "type", "bridge")
            host.ip(
                "link", "add", BRIDGED_VXLAN, "type", "vxlan", "id", str(BRIDGED_VNI),
                "dstport", str(HAND_PORT), "local", host.address, "remote", peer.address,
                "dev", UNDERLAY_DEVICE,
            )  # fmt: skip
            host.ip("link", "add", BRIDGED_VETH, "type", "veth", "peer", "eth0", "netns", sandbox)
            for device in (BRIDGED_VXLAN, BRIDGED_VETH):
                host.ip("link", "set", device, "mtu", str(HAND_MTU), "master", BRIDGED_BRIDGE)
                host.ip("link", "set", device, "up")
            host.ip("link", "set", BRIDGED_BRIDGE, "up")
            check(["ip", "-n", sandbox, "link", "set", "eth0", "mtu", str(HAND_MTU), "up"])
            check(["ip", "-n", sandbox, "link", "set", "lo", "up"])
            check(["ip", "-n", sandbox, "addr", "add", f"{address}/24", "dev", "eth0"])
        yield
    finally:
        for host, _, _ in ends:
            for device in (BRIDGED_VXLAN, BRIDGED_BRIDGE):
                with suppress(RuntimeError):
                    host.ip("link", "del", device)
            with suppress(RuntimeError):
                check(["ip", "netns", "del", hand_sandbox(host)])


def measure_throughput(
    cluster: Cluster, seconds: float, repeats: int
) -> tuple[dict[str, list[float]], int, float]:
    """path -> bits/s per repetition; the overlay sandboxes' MTU; the seconds per run."""
    h1, h2 = cluster.hosts[:2]
    h1.client().sandbox_on("tp-client", OVERLAY)
    server_ip = bare(h2.client().sandbox_on("tp-server", OVERLAY).ipv4_address)
    mtu = int((h1.sandbox_link("tp-client", "eth0") or {}).get("mtu", 0))
    paths = {
        UNDERLAY: IperfPath(h1.netns, h2.address),
        HAND: IperfPath(h1.netns, HAND_ADDRESSES[1]),
        HAND_BRIDGED: IperfPath(hand_sandbox(h1), BRIDGED_ADDRESSES[1]),
        BERTH: IperfPath(h1.sandbox_netns("tp-client"), server_ip),
    }
    results: dict[str, list[float]] = {name: [] for name in paths}
    with (
        hand_built_vxlan(h1, h2),
        hand_built_bridged(h1, h2),
        iperf_server(h2.netns),
        iperf_server(hand_sandbox(h2)),
        iperf_server(h2.sandbox_netns("tp-server")),
    ):
        for path in paths.values():
            pings(path.client_netns, path.server_address)
            iperf(path, 1)  # warm-up
        for _ in range(repeats):
            for name, path in paths.items():
                results[name].append(iperf(path, seconds))
    return results, mtu, seconds


# ---- convergence ----------------------------------------------------------------------------


def _enter(path: Path) -> None:
    pyroute2_netns.setns(str(path), flags=0)


class NamespaceThread:
    """One thread living in a network namespace: the sockets it makes belong there."""

    def __init__(self, path: Path) -> None:
        self.pool = ThreadPoolExecutor(1, initializer=_enter, initargs=(path,))

    def run(self, work: Callable[[], T]) -> T:
        return self.pool.submit(work).result()

    def close(self) -> None:
        self.pool.shutdown()


def listener_in(path: Path) -> socket.socket:
    """A socket listening on LISTEN_PORT inside the namespace at `path`, made by a
    short-lived thread that entered it (a socket stays in the namespace it was made in).
    Nobody accepts: the kernel completes handshakes into the backlog by itself."""
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            _enter(path)
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("0.0.0.0", LISTEN_PORT))
            listener.listen(64)
            made.append(listener)
        except BaseException as error:
            made.append(error)

    thread = threading.Thread(target=make, daemon=True)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def first_handshake(address: str, deadline: float) -> float | None:
    """Connects to address:LISTEN_PORT until one handshake completes; its perf_counter
    time, or None past `deadline`. Runs in a NamespaceThread."""
    while True:
        attempt = socket.socket()
        attempt.settimeout(CONNECT_TIMEOUT_S)
        try:
            attempt.connect((address, LISTEN_PORT))
            return time.perf_counter()
        except TimeoutError:
            pass
        except OSError:
            time.sleep(RETRY_PAUSE_S)
        finally:
            attempt.close()
        if time.perf_counter() > deadline:
            return None


class NeighbourWatch:
    """When each IPv4 address first got a permanent neighbour entry in a namespace (the
    agent adds a remote endpoint's neighbour entry last, after its forwarding entry): an
    rtnetlink socket made there, joined to the neighbour group, read by a thread."""

    def __init__(self, path: Path) -> None:
        self.seen: dict[str, float] = {}
        self.stopping = False
        ready = threading.Event()
        self.thread = threading.Thread(target=self._watch, args=(path, ready), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _watch(self, path: Path, ready: threading.Event) -> None:
        _enter(path)
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as nl:
            nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            nl.bind((0, RTMGRP_NEIGH))
            nl.settimeout(0.2)
            ready.set()
            while not self.stopping:
                try:
                    data = nl.recv(1 << 16)
                except (TimeoutError, BlockingIOError):
                    continue
                except OSError:  # ENOBUFS: some were dropped; later ones still count
                    continue
                at = time.perf_counter()
                for address in permanent_ipv4_neighbours(data):
                    self.seen.setdefault(address, at)

    def first(self, address: str, timeout: float = 1.0) -> float | None:
        deadline = time.monotonic() + timeout
        while address not in self.seen and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.seen.get(address)

    def close(self) -> None:
        self.stopping = True
        self.thread.join()


def permanent_ipv4_neighbours(data: bytes) -> Iterator[str]:
    """The destinations of the RTM_NEWNEIGH messages in `data` that are permanent IPv4
    neighbour entries (nlmsghdr, ndmsg, then rtattrs)."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            return
        if kind == RTM_NEWNEIGH and length >= 28:
            family, _, state = struct.unpack_from("=B3xiH", data, offset + 16)
            if family == socket.AF_INET and state & NUD_PERMANENT:
                attribute = offset + 28
                while attribute + 4 <= offset + length:
                    size, kind_ = struct.unpack_from("=HH", data, attribute)
                    if size < 4:
                        break
                    if kind_ == NDA_DST and size == 8:
                        yield socket.inet_ntoa(data[attribute + 4 : attribute + 8])
                    attribute += (size + 3) & ~3
        offset += (length + 3) & ~3


@dataclass
class Rounds:
    """Per round, seconds from the start of CreateSandbox to: its reply, the client's
    first attempt, the first completed handshake, and (across hosts) the moment the
    client's host held the new address's neighbour entry."""

    created: list[float] = field(default_factory=list)
    probing: list[float] = field(default_factory=list)
    reached: list[float] = field(default_factory=list)
    programmed: list[float | None] = field(default_factory=list)  # None: no event seen

    @property
    def after_reply(self) -> list[float]:
        return [r - c for r, c in zip(self.reached, self.created, strict=True)]

    def early(self) -> list[int]:
        """The rounds whose client tried before its host had the entry."""
        pairs = zip(self.probing, self.programmed, strict=True)
        return [i for i, (p, q) in enumerate(pairs) if q is not None and p < q]


class ConvergenceProbe:
    """Rounds on one network: a new sandbox on `server_host`, reached from `client`."""

    def __init__(
        self,
        server_host: ClusterHost,
        network: str,
        client: Path,
        watch: NeighbourWatch | None = None,
    ) -> None:
        self.host = server_host
        self.network = network
        self.client = NamespaceThread(client)
        self.watch = watch

    def round(self, name: str, into: Rounds | None) -> None:
        started = time.perf_counter()
        endpoint = self.host.client().sandbox_on(name, self.network)  # CreateSandbox
        replied = time.perf_counter()
        address = bare(endpoint.ipv4_address)
        listener = listener_in(NETNS_DIR / self.host.sandbox_netns(name))
        try:
            probing = time.perf_counter()
            reached = self.client.run(
                lambda: first_handshake(address, replied + CONVERGE_DEADLINE_S)
            )
        finally:
            listener.close()
        if reached is None:
            raise RuntimeError(
                f"{name} ({address}) on {self.network} not reachable within "
                f"{CONVERGE_DEADLINE_S:g} s of its creation"
            )
        if into is None:
            return
        into.created.append(replied - started)
        into.probing.append(probing - started)
        into.reached.append(reached - started)
        if self.watch is not None:
            programmed = self.watch.first(address)
            into.programmed.append(None if programmed is None else programmed - started)


def measure_convergence(cluster: Cluster, rounds: int) -> tuple[dict[str, Rounds], str]:
    """network -> its rounds; and the client sandbox's ARP retry interval."""
    h1, h2 = cluster.hosts[:2]
    h2.client().user_network(BRIDGE, BRIDGE_SUBNET)
    h2.client().sandbox_on("cv-client", OVERLAY)
    h2.client().sandbox_on("br-client", BRIDGE)
    watch = NeighbourWatch(NETNS_DIR / h2.netns)
    probes = {
        BERTH: ConvergenceProbe(h1, OVERLAY, NETNS_DIR / h2.sandbox_netns("cv-client"), watch),
        BRIDGE_BASELINE: ConvergenceProbe(h2, BRIDGE, NETNS_DIR / h2.sandbox_netns("br-client")),
    }
    results = {name: Rounds() for name in probes}
    try:
        for i in range(WARMUP_ROUNDS + rounds):
            for name, probe in probes.items():
                counted = results[name] if i >= WARMUP_ROUNDS else None
                probe.round(f"{'cv' if name == BERTH else 'br'}{i}", counted)
    finally:
        watch.close()
        for probe in probes.values():
            probe.client.close()
    retry = h2.in_sandbox("cv-client", "cat", "/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms")
    return results, f"{retry.stdout.strip() or '?'} ms in the client sandbox"


# ---- fan-out --------------------------------------------------------------------------------


class Arrivals:
    """When each of `expected` parties first saw one thing; done once all have."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.times: list[float] = []
        self.done = asyncio.Event()

    def arrived(self, at: float) -> None:
        self.times.append(at)
        if len(self.times) == self.expected:
            self.done.set()


class SimulatedHost:
    """An agent's cluster side with kernel programming left out: a real ClusterLink and
    ClusterStore; on a change (and on resync) it reads the network's endpoints and keeps
    the other hosts' ones, as OverlayDriver.refresh_endpoints does."""

    def __init__(self, url: str, index: int, network_id: str) -> None:
        self.name = f"sim{index}"
        self.address = f"10.239.{index // 250}.{index % 250 + 1}"
        self.network_id = network_id
        self.store = ClusterStore(url)
        self.link = ClusterLink(
            self.store,
            host_name=self.name,
            underlay_address=self.address,
            agent_address="",
            timing=Timing(),  # the agent's defaults: heartbeat 1 s, ttl 5 s, resync 10 s
            on_change=self.changed,
            on_resync=self.read,
        )
        self.remote: list[ClusterEndpoint] = []
        self.known: set[str] = set()
        self.watching: tuple[str, Arrivals] | None = None

    async def changed(self, change: Change) -> None:
        if change.kind == "endpoints" and change.network_id == self.network_id:
            await self.read()

    async def read(self) -> None:
        endpoints = await self.store.endpoints(self.network_id)
        at = time.perf_counter()
        self.remote = sorted((e for e in endpoints if e.host != self.name), key=lambda e: e.id)
        before, self.known = self.known, {e.id for e in endpoints}
        if self.watching is not None:
            endpoint_id, arrivals = self.watching
            if endpoint_id in self.known and endpoint_id not in before:
                arrivals.arrived(at)

    def endpoint(self, network_id: str, number: int) -> ClusterEndpoint:
        mac = ":".join(f"{o:02x}" for o in (0x02, 0x42, *secrets.token_bytes(4)))
        return ClusterEndpoint(
            id=secrets.token_hex(32),
            network_id=network_id,
            host=self.name,
            underlay_address=self.address,
            sandbox=f"{self.name}-s{number}",
            sandbox_id=secrets.token_hex(32),
            mac_address=mac,
            ipv4=IPv4Interface(f"10.240.{number // 250}.{number % 250 + 2}/16"),
        )


class RawSubscribers:
    """N plain redis-py pub/sub subscribers, each on its own connection, reading as the
    link does (get_message with a timeout) and recording when the message arrived."""

    def __init__(self, url: str, count: int) -> None:
        self.client = aioredis.Redis.from_url(url, decode_responses=True)
        self.count = count
        self.arrivals: Arrivals | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.subscribed = 0

    async def start(self) -> None:
        self.tasks = [asyncio.create_task(self._listen()) for _ in range(self.count)]
        await until(lambda: self.subscribed == self.count)

    async def _listen(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(RAW_CHANNEL)
            self.subscribed += 1
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and self.arrivals is not None:
                    self.arrivals.arrived(time.perf_counter())
        finally:
            await pubsub.aclose()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()


@dataclass
class Fanout:
    """Per repetition, seconds from the write (publish) until the last / the median
    host had it."""

    berth_all: list[float] = field(default_factory=list)
    berth_median: list[float] = field(default_factory=list)
    raw_all: list[float] = field(default_factory=list)
    raw_median: list[float] = field(default_factory=list)
    stuck_links: int = 0  # links whose stop() lost its cancellation (see stop_links)
    berth_cpu: list[float] = field(default_factory=list)  # this process's, per receiver
    raw_cpu: list[float] = field(default_factory=list)


async def berth_fanout(hosts: list[SimulatedHost], number: int, into: Fanout) -> None:
    writer, others = hosts[0], hosts[1:]
    endpoint = writer.endpoint(writer.network_id, number)
    arrivals = Arrivals(len(others))
    for host in others:
        host.watching = (endpoint.id, arrivals)
    cpu, started = time.process_time(), time.perf_counter()
    if not await writer.store.put_endpoint(endpoint):
        raise RuntimeError("put_endpoint refused: the network is not in the cluster store")
    try:
        await asyncio.wait_for(arrivals.done.wait(), FANOUT_DEADLINE_S)
    except TimeoutError:
        missing = [h.name for h in others if endpoint.id not in h.known]
        connected = sum(h.link.connected for h in others)
        raise RuntimeError(
            f"{len(arrivals.times)} of {len(others)} hosts learnt the endpoint within"
            f" {FANOUT_DEADLINE_S:g} s; missing: {missing[:10]}; links connected: {connected}"
        ) from None
    into.berth_cpu.append((time.process_time() - cpu) / len(others))
    into.berth_all.append(max(arrivals.times) - started)
    into.berth_median.append(statistics.median(arrivals.times) - started)
    for host in others:
        host.watching = None
    # Withdraw it and let every host read the network again before the next repetition.
    await writer.store.remove_endpoint(endpoint.network_id, endpoint.id, writer.name)
    await until(lambda: all(endpoint.id not in host.known for host in others))


async def raw_fanout(
    subscribers: RawSubscribers, publisher: aioredis.Redis, data: str, into: Fanout
) -> None:
    subscribers.arrivals = arrivals = Arrivals(subscribers.count)
    cpu, started = time.process_time(), time.perf_counter()
    await publisher.publish(RAW_CHANNEL, data)
    await asyncio.wait_for(arrivals.done.wait(), FANOUT_DEADLINE_S)
    into.raw_cpu.append((time.process_time() - cpu) / subscribers.count)
    subscribers.arrivals = None
    into.raw_all.append(max(arrivals.times) - started)
    into.raw_median.append(statistics.median(arrivals.times) - started)


async def until(condition: Callable[[], bool], within: float = FANOUT_DEADLINE_S) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not settled within {within:g} s")
        await asyncio.sleep(0.005)


async def fanout_at(url: str, count: int, repeats: int) -> Fanout:
    """`count` simulated hosts, each with one endpoint on the network already (written
    directly, not announced), and `count` raw subscribers; the two alternate."""
    network_id = secrets.token_hex(32)
    hosts = [SimulatedHost(url, i, network_id) for i in range(count)]
    setup = aioredis.Redis.from_url(url, decode_responses=True)
    subscribers = RawSubscribers(url, count)
    result = Fanout()
    try:
        await setup.flushall()
        # The network as the store needs it (id, name, VNI); the simulated hosts know it.
        record = {"id": network_id, "name": f"bench-fanout-{count}", "vni": 4096}
        await hosts[0].store.create_network(lambda _: record, hosts[0].name)
        existing = [host.endpoint(network_id, 1000 + i) for i, host in enumerate(hosts)]
        await setup.hset(
            endpoints_key(network_id),
            mapping={e.id: json.dumps(e.to_dict()) for e in existing},
        )
        for host in hosts:
            host.link.start()
        await until(lambda: all(host.link.connected and host.known for host in hosts))
        await subscribers.start()
        data = json.dumps({"kind": "endpoints", "network_id": network_id, "host": "raw"})
        await asyncio.sleep(0.2)
        for number in range(repeats + 1):  # the first of each is a warm-up
            counted = result if number else Fanout()
            await berth_fanout(hosts, number, counted)
            await raw_fanout(subscribers, setup, data, counted)
    finally:
        await subscribers.stop()
        result.stuck_links = await stop_links([host.link for host in hosts])
        await setup.flushall()
        await setup.aclose()
    return result


async def stop_links(links: list[ClusterLink]) -> int:
    """ClusterLink.stop() for each; how many did not stop on their own.

    On CPython 3.11 asyncio.wait_for can lose a cancellation that comes as the awaited
    call finishes (fixed in 3.12), and redis-py sends every command through wait_for when
    a socket timeout is set (ClusterStore sets one). A link whose heartbeat loop lost its
    cancellation runs on and stop() waits for it forever; here what is left is cancelled
    again until every stop() returns."""
    stops = {asyncio.ensure_future(link.stop()) for link in links}
    _, pending = await asyncio.wait(stops, timeout=STOP_GRACE_S)
    stuck = len(pending)
    while pending:
        for task in asyncio.all_tasks() - stops - {asyncio.current_task()}:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.2)
    for stop in stops:
        with suppress(Exception):
            stop.result()
    return stuck


async def measure_fanout(url: str, counts: list[int], repeats: int) -> dict[int, Fanout]:
    return {count: await fanout_at(url, count, repeats) for count in counts}


# ---- the report -----------------------------------------------------------------------------


def target_line(what: str, figure: str, met: bool) -> None:
    print(f"  {what:<40} {figure:<30} {'met' if met else 'NOT met'}")


PATH_NOTES = {
    UNDERLAY: "host namespace to host namespace, MTU 1500",
    HAND: "vxlan device in each host namespace, no bridge",
    HAND_BRIDGED: "sandbox, veth, bridge, vxlan: berth's topology",
    BERTH: "sandbox to sandbox over the overlay network",
}


def report_throughput(results: dict[str, list[float]], mtu: int, seconds: float) -> float:
    """Prints the table; returns berth's ratio to the hand-built VXLAN."""
    repeats = len(results[BERTH])
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"\nthroughput: iperf3, one TCP stream, h1 -> h2, {seconds:g} s per run,"
        f" {repeats} runs per path, alternating"
    )
    print(f"  {'path':<20} {'median':>7} {'berth/it':>8}   runs (Gbit/s)")
    for name, values in results.items():
        runs = " ".join(f"{v / 1e9:.2f}" for v in values)
        ratio = medians[BERTH] / medians[name]
        print(
            f"  {name:<20} {medians[name] / 1e9:>7.2f} {ratio:>7.3f}x   {runs:<20}"
            f" {PATH_NOTES[name]}"
        )
    print(
        f"  (berth/it: berth's median over the path's; VXLAN MTU {HAND_MTU} by hand,"
        f" {mtu} in berth's sandboxes)"
    )
    return medians[BERTH] / medians[HAND]


def p50_p99(all_values: Sequence[float | None], width: int = 7) -> str:
    values = [v for v in all_values if v is not None]
    if not values:
        return f"{'-':>{width}} {'-':>{width}}"
    return f"{ms(percentile(values, 0.5)):>{width}.1f} {ms(percentile(values, 0.99)):>{width}.1f}"


def report_convergence(results: dict[str, Rounds], arp_retry_ms: str) -> tuple[float, float]:
    """Prints the table; returns the p99 (ms) of reached and of h2 having the entry."""
    berth, bridge = results[BERTH], results[BRIDGE_BASELINE]
    rounds = len(berth.reached)
    print(
        f"\nconvergence: a new sandbox reached over TCP from another sandbox, {rounds} rounds"
        " per network, alternating\n"
        "  reached: from the start of CreateSandbox(start=True) until the first completed TCP\n"
        "  handshake from the client sandbox; a listener is made in the new sandbox as soon\n"
        "  as the call returns (by a thread in its namespace, < 1 ms), and the client tries\n"
        f"  every few ms (each attempt times out after {ms(CONNECT_TIMEOUT_S):g} ms).\n"
        "  create: until CreateSandbox returned; h2 had it: until h2's VXLAN device held the\n"
        "  new address's neighbour entry (its last step), seen on rtnetlink in h2."
    )
    columns = ("reached", "create", "after reply", "h2 had it")
    print(f"  {'':<25}" + "".join(f"{c:>16}" for c in columns) + "   (ms)")
    print(f"  {'':<25}" + "       p50     p99" * len(columns))
    for name, r in results.items():
        label = f"{name} (h1 -> h2)" if name == BERTH else f"{name} (h2)"
        figures = [r.reached, r.created, r.after_reply, r.programmed]
        print(f"  {label:<25}" + "".join(f"  {p50_p99(f)}" for f in figures))
    print(
        f"  berth overlay / bridge (reached): p50 "
        f"{percentile(berth.reached, 0.5) / percentile(bridge.reached, 0.5):.2f}x, p99 "
        f"{percentile(berth.reached, 0.99) / percentile(bridge.reached, 0.99):.2f}x"
    )
    unseen = sum(p is None for p in berth.programmed)
    if unseen:
        print(f"  (h2's neighbour event was not seen in {unseen} rounds: left out of 'h2 had it')")
    early = berth.early()
    late = [berth.reached[i] for i in range(rounds) if i not in early]
    print(
        f"  In {len(early)} of {rounds} berth rounds the client's first attempt came before h2"
        " had the entry: its\n  ARP request waited for the agent's unasked answer (else the"
        f" kernel asks again after\n  retrans_time_ms, {arp_retry_ms})."
    )
    if early and late:
        print(
            f"  reached, those rounds: p50/p99 {p50_p99([berth.reached[i] for i in early], 0)}"
            f" ms; the others: {p50_p99(late, 0)} ms"
        )
    seen = [p for p in berth.programmed if p is not None]
    return ms(percentile(berth.reached, 0.99)), ms(percentile(seen, 0.99)) if seen else math.nan


def report_fanout(results: dict[int, Fanout]) -> None:
    repeats = len(next(iter(results.values())).berth_all)
    print(
        f"\nfan-out: one simulated host writes a new endpoint; until every other host has"
        f" read it\n  ({repeats} writes per size, alternating with a raw publish to as many"
        " subscribers)"
    )
    print(
        f"  {'':>5}  {'berth: all hosts':>17} {'median':>7} {'CPU':>6}"
        f"   {'raw pub/sub: all':>17} {'median':>7} {'CPU':>6}   {'berth / raw':>11}"
    )
    print(
        f"  {'hosts':>5}  {'p50':>8} {'p99':>8} {'host':>7} {'/host':>6}"
        f"   {'p50':>8} {'p99':>8} {'sub':>7} {'/sub':>6}   {'p50':>5} {'p99':>5}"
    )
    for count, f in results.items():
        berth = (
            f"{ms(percentile(f.berth_all, 0.5)):>8.2f} {ms(percentile(f.berth_all, 0.99)):>8.2f}"
        )
        raw = f"{ms(percentile(f.raw_all, 0.5)):>8.2f} {ms(percentile(f.raw_all, 0.99)):>8.2f}"
        ratio_50 = percentile(f.berth_all, 0.5) / percentile(f.raw_all, 0.5)
        ratio_99 = percentile(f.berth_all, 0.99) / percentile(f.raw_all, 0.99)
        print(
            f"  {count:>5}  {berth} {ms(statistics.median(f.berth_median)):>7.2f}"
            f" {ms(statistics.median(f.berth_cpu)):>6.3f}"
            f"   {raw} {ms(statistics.median(f.raw_median)):>7.2f}"
            f" {ms(statistics.median(f.raw_cpu)):>6.3f}   {ratio_50:>4.1f}x {ratio_99:>4.1f}x"
        )
    print(
        "  (ms. all: until the last host / subscriber had it; median host/sub: when half of"
        " them had\n  it; CPU/host: this process's CPU time per write over the hosts that"
        " learnt it. Every\n  simulated host runs in this one process, so their reads queue"
        f" on one event loop and\n  {os.cpu_count()} CPUs: an upper bound for hosts on"
        " machines of their own, where each host's part\n  is about its CPU/host plus one"
        " Redis round trip.)"
    )
    for count, f in results.items():
        if f.stuck_links:
            print(
                f"  NOTE: at {count} hosts, ClusterLink.stop() of {f.stuck_links} link(s) did"
                f" not return within {STOP_GRACE_S:g} s:\n  a heartbeat loop that lost its"
                " cancellation (see stop_links); cancelled again."
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per iperf3 run")
    parser.add_argument("--repeats", type=int, default=3, help="iperf3 runs per path")
    parser.add_argument("--rounds", type=int, default=50, help="convergence rounds per network")
    parser.add_argument("--hosts", default="10,50,100", help="simulated host counts")
    parser.add_argument("--fanout-repeats", type=int, default=20, help="writes per host count")
    args = parser.parse_args()
    counts = [int(n) for n in args.hosts.split(",")]
    if args.seconds <= 0 or min(args.repeats, args.rounds, args.fanout_repeats) < 1:
        parser.error("--seconds must be positive, the counts at least 1")
    if min(counts) < 2:
        parser.error("--hosts: at least 2 each (one writes, the others learn)")
    if os.geteuid() != 0:
        sys.exit("needs root: it makes network namespaces")
    berth_logging.configure(level="warning")
    load_before = os.getloadavg()[0]
    try:
        with (
            tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp,
            running_cluster(Path(tmp) / "cluster", hosts=2) as cluster,
        ):
            cluster.hosts[0].client().overlay_network(OVERLAY, OVERLAY_SUBNET)
            ratio = report_throughput(*measure_throughput(cluster, args.seconds, args.repeats))
            p99, programmed_p99 = report_convergence(*measure_convergence(cluster, args.rounds))
        with (
            tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp,
            redis_server(Path(tmp), port=free_port()) as server,
        ):
            report_fanout(asyncio.run(measure_fanout(server.url, counts, args.fanout_repeats)))
    except KeyboardInterrupt:
        sys.exit("interrupted: removing what the benchmark made")
    print(
        f"\n  {os.cpu_count()} CPUs; load average {load_before:.2f} before,"
        f" {os.getloadavg()[0]:.2f} after"
    )
    print("\ntargets")
    target_line(
        f"berth >= {TARGET_THROUGHPUT:g}x the hand-built VXLAN",
        f"{ratio:.3f}x",
        ratio >= TARGET_THROUGHPUT,
    )
    target_line(
        f"convergence p99 under {TARGET_CONVERGE_P99_MS:g} ms",
        f"{p99:.1f} ms",
        p99 < TARGET_CONVERGE_P99_MS,
    )
    print(
        f"  {'  (for reference: h2 had the entry, p99)':<40} {programmed_p99:.1f} ms:"
        " the control plane alone"
    )


if __name__ == "__main__":
    main()
