"""berth's nftables table on the real kernel, inside namespaces this module creates.

Topology (all names carry a per-run prefix): a "host" namespace with three bridges (a, b and
an internal one), sandbox namespaces behind veth pairs on them, and an "outside" namespace
joined to the host by one more veth pair (the uplink). The outside has no route back to the
sandbox subnets, so a reply only comes back when the host masquerades.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network

import pytest

from berth.network.adapters import nftables
from berth.network.adapters.nftables import BridgeRules, Nftables, PortForward

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="needs root, ip and nft",
)

TIMEOUT = 1.0  # how long a probe waits for an answer that must not come
UP_DEADLINE = 10.0

# One small program for every probe and server, run with `ip netns exec NS python -c`.
PROBE = r"""
import os, socket, struct, sys, time
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
if mode == "ping":
    v6 = fam == socket.AF_INET6
    s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    ident, kind, reply = os.getpid() & 0xFFFF, 128 if v6 else 8, 129 if v6 else 0
    packet = struct.pack("!BBHHH", kind, 0, 0, ident, 1) + b"berth!"
    if not v6:
        total = sum(struct.unpack("!7H", packet))
        total = (total >> 16) + (total & 0xFFFF)
        packet = packet[:2] + struct.pack("!H", ~(total + (total >> 16)) & 0xFFFF) + packet[4:]
    s.sendto(packet, (addr, 0))
    deadline = time.monotonic() + float(sys.argv[4])
    while deadline > time.monotonic():
        s.settimeout(deadline - time.monotonic())
        try:
            data = s.recv(2048)
        except OSError:
            break
        icmp = data if v6 else data[(data[0] & 0xF) * 4:]
        if icmp[0] == reply and struct.unpack("!H", icmp[4:6])[0] == ident:
            sys.exit(0)
    sys.exit(1)
kind = socket.SOCK_STREAM if mode.endswith("tcp") else socket.SOCK_DGRAM
s = socket.socket(fam, kind)
if mode.startswith("serve"):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    if kind == socket.SOCK_STREAM:
        s.listen()
    print("ready", flush=True)
    while True:
        if kind == socket.SOCK_STREAM:
            conn, peer = s.accept()
            print(peer[0], flush=True)
            conn.sendall(peer[0].encode())
            conn.close()
        else:
            data, peer = s.recvfrom(100)
            print(peer[0], flush=True)
            s.sendto(peer[0].encode(), peer)
s.settimeout(float(sys.argv[4]))
try:
    s.connect((addr, port))
    s.send(b"hello")
    print(s.recv(100).decode())
except OSError:
    sys.exit(1)
"""


@dataclass
class Net:
    """One bridge in the host namespace and its sandboxes (namespace name -> address)."""

    bridge: str
    subnet: str
    subnet6: str | None
    sandboxes: dict[str, str] = field(default_factory=dict)
    sandboxes6: dict[str, str] = field(default_factory=dict)

    def rules(self, **options: bool) -> BridgeRules:
        subnets = [ip_network(s) for s in (self.subnet, self.subnet6) if s]
        return BridgeRules(self.bridge, tuple(subnets), **options)


@dataclass
class Topology:
    prefix: str
    host: str
    outside: str
    host_ip: str  # the host's address on the uplink
    host_ip6: str
    outside_ip: str
    outside_ip6: str
    a: Net
    b: Net
    sealed: Net
    namespaces: list[str] = field(default_factory=list)

    def nft(self) -> Nftables:
        return Nftables(netns=self.host)


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, capture_output=True, text=True)


def ip(ns: str, *args: str) -> None:
    sh("ip", "-n", ns, *args)


def in_ns(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args)


def nft_script(ns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True, check=True
    )


def probe(ns: str, mode: str, addr: str, port: int = 0) -> subprocess.CompletedProcess[str]:
    command = ["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, mode, addr, str(port)]
    return subprocess.run(
        [*command, str(TIMEOUT)], capture_output=True, text=True, timeout=TIMEOUT + 10
    )


def pings(ns: str, addr: str) -> bool:
    return probe(ns, "ping", addr).returncode == 0


def ask(ns: str, protocol: str, addr: str, port: int) -> str | None:
    """Connect (TCP) or send (UDP) to addr:port; the peer address the server saw, or None."""
    result = probe(ns, protocol, addr, port)
    return result.stdout.strip() if result.returncode == 0 else None


def wait_until_pings(ns: str, addr: str) -> None:
    deadline = time.monotonic() + UP_DEADLINE
    while not pings(ns, addr):
        assert time.monotonic() < deadline, f"{ns} never reached {addr}"


Server = subprocess.Popen[bytes]
Serve = Callable[..., Server]


def heard(server: Server, timeout: float = TIMEOUT) -> str | None:
    """The next line the server prints (the peer of each request) within timeout, or None."""
    assert server.stdout is not None
    fd, line = server.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1)
        if not chunk:
            return None
        line += chunk
    return line.decode().strip()


@pytest.fixture
def serve() -> Iterator[Serve]:
    """serve(ns, protocol, port, bind): a server answering with the peer address it sees."""
    servers: list[Server] = []

    def start(ns: str, protocol: str, port: int, bind: str = "0.0.0.0") -> Server:
        command = ["ip", "netns", "exec", ns, sys.executable, "-c", PROBE]
        server = subprocess.Popen(
            [*command, f"serve-{protocol}", bind, str(port)], stdout=subprocess.PIPE, bufsize=0
        )
        servers.append(server)
        assert heard(server, UP_DEADLINE) == "ready"
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()
            server.wait()


def add_net(top: Topology, net: Net, gateway: str, gateway6: str | None) -> None:
    ip(top.host, "link", "add", net.bridge, "type", "bridge")
    ip(top.host, "addr", "add", gateway, "dev", net.bridge)
    if gateway6:
        ip(top.host, "addr", "add", gateway6, "dev", net.bridge, "nodad")
    ip(top.host, "link", "set", net.bridge, "up")
    for ns, address in net.sandboxes.items():
        add_namespace(top, ns)
        veth = f"{ns}v"
        ip(top.host, "link", "add", veth, "type", "veth", "peer", "eth0", "netns", ns)
        ip(top.host, "link", "set", veth, "master", net.bridge, "up")
        ip(ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip(ns, "link", "set", "eth0", "up")
        ip(ns, "route", "add", "default", "via", gateway.split("/")[0])
        if ns in net.sandboxes6 and gateway6:
            ip(ns, "addr", "add", f"{net.sandboxes6[ns]}/64", "dev", "eth0", "nodad")
            ip(ns, "-6", "route", "add", "default", "via", gateway6.split("/")[0])


def add_namespace(top: Topology, ns: str) -> None:
    sh("ip", "netns", "add", ns)
    top.namespaces.append(ns)
    ip(ns, "link", "set", "lo", "up")


def build(top: Topology) -> None:
    add_namespace(top, top.host)
    for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        in_ns(top.host, "sysctl", "-qw", key)
    add_namespace(top, top.outside)
    uplink = f"{top.prefix}up"
    ip(top.host, "link", "add", uplink, "type", "veth", "peer", "eth0", "netns", top.outside)
    ip(top.host, "addr", "add", f"{top.host_ip}/24", "dev", uplink)
    ip(top.host, "addr", "add", f"{top.host_ip6}/64", "dev", uplink, "nodad")
    ip(top.host, "link", "set", uplink, "up")
    ip(top.outside, "addr", "add", f"{top.outside_ip}/24", "dev", "eth0")
    ip(top.outside, "addr", "add", f"{top.outside_ip6}/64", "dev", "eth0", "nodad")
    ip(top.outside, "link", "set", "eth0", "up")
    add_net(top, top.a, "10.201.1.1/24", "fd42:1::1/64")
    add_net(top, top.b, "10.201.2.1/24", "fd42:2::1/64")
    add_net(top, top.sealed, "10.201.3.1/24", None)
    # The outside knows the way back to b (a routed network) and to the internal network (so
    # only berth's rules keep it in), not to a: a's traffic only gets answers when masqueraded.
    for net in (top.b, top.sealed):
        ip(top.outside, "route", "add", net.subnet, "via", top.host_ip)


@pytest.fixture(scope="module")
def top() -> Iterator[Topology]:
    p = f"t{os.getpid() % 10000}{secrets.token_hex(1)}"
    topology = Topology(
        prefix=p,
        host=f"{p}h",
        outside=f"{p}o",
        host_ip="198.18.7.1",
        host_ip6="fd42:99::1",
        outside_ip="198.18.7.2",
        outside_ip6="fd42:99::2",
        a=Net(
            f"{p}ba",
            "10.201.1.0/24",
            "fd42:1::/64",
            {f"{p}a1": "10.201.1.2", f"{p}a2": "10.201.1.3"},
            {f"{p}a1": "fd42:1::2", f"{p}a2": "fd42:1::3"},
        ),
        b=Net(f"{p}bb", "10.201.2.0/24", "fd42:2::/64", {f"{p}b1": "10.201.2.2"}),
        sealed=Net(
            f"{p}bi", "10.201.3.0/24", None, {f"{p}i1": "10.201.3.2", f"{p}i2": "10.201.3.3"}
        ),
    )
    try:
        build(topology)
        for ns in (*topology.a.sandboxes, *topology.b.sandboxes, *topology.sealed.sandboxes):
            wait_until_pings(ns, topology.host_ip)
        yield topology
    finally:
        for ns in reversed(topology.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture
async def nft(top: Topology) -> AsyncIterator[Nftables]:
    tables = top.nft()
    try:
        yield tables
    finally:
        await tables.remove()


async def apply_defaults(
    top: Topology, nft: Nftables, forwards: Sequence[PortForward] = ()
) -> None:
    """Network a masquerades, b is routed (no NAT), the third one is internal."""
    await nft.apply(
        [top.a.rules(), top.b.rules(masquerade=False), top.sealed.rules(internal=True)], forwards
    )


async def test_one_bridge_talks_and_other_bridges_are_unreachable(
    top: Topology, nft: Nftables, serve: Serve
) -> None:
    (a1, a1_ip), (a2, a2_ip) = top.a.sandboxes.items()
    ((b1, b1_ip),) = top.b.sandboxes.items()
    serve(a2, "tcp", 7001)
    serve(b1, "tcp", 7001)
    # Without berth's table the host routes between its bridges: the isolation is berth's.
    assert pings(a1, b1_ip)
    assert ask(a1, "tcp", b1_ip, 7001) == a1_ip

    await apply_defaults(top, nft)

    assert pings(a1, a2_ip)
    assert ask(a1, "tcp", a2_ip, 7001) == a1_ip
    assert not pings(a1, b1_ip)
    assert not pings(b1, a1_ip)
    assert ask(a1, "tcp", b1_ip, 7001) is None
    assert ask(b1, "tcp", a2_ip, 7001) is None
    assert pings(a1, top.outside_ip)


async def test_an_internal_network_reaches_only_itself(
    top: Topology, nft: Nftables, serve: Serve
) -> None:
    (i1, i1_ip), (i2, i2_ip) = top.sealed.sandboxes.items()
    a1, a1_ip = next(iter(top.a.sandboxes.items()))
    serve(a1, "tcp", 7002)
    serve(i2, "tcp", 7002)
    inbound = serve(i2, "udp", 7002)
    outbound = serve(top.outside, "udp", 7002)
    # Without berth's table the internal network's traffic is routed like any other.
    assert ask(i1, "tcp", a1_ip, 7002) == i1_ip
    assert ask(i1, "udp", top.outside_ip, 7002) == i1_ip
    assert heard(outbound) == i1_ip
    assert ask(top.outside, "udp", i2_ip, 7002) == top.outside_ip
    assert heard(inbound) == top.outside_ip

    # masquerade=True is ignored for an internal network: nothing leaves it.
    await nft.apply([top.a.rules(), top.sealed.rules(internal=True, masquerade=True)])

    assert pings(i1, i2_ip)
    assert ask(i1, "tcp", i2_ip, 7002) == i1_ip
    assert not pings(i1, a1_ip)
    assert not pings(a1, i2_ip)
    assert ask(i1, "tcp", a1_ip, 7002) is None
    assert not pings(i1, top.outside_ip)
    # Not even one-way datagrams get through (ask has waited TIMEOUT for them already).
    assert ask(i1, "udp", top.outside_ip, 7002) is None
    assert heard(outbound, 0.1) is None
    assert ask(top.outside, "udp", i2_ip, 7002) is None
    assert heard(inbound, 0.1) is None


async def test_traffic_leaving_the_host_carries_the_hosts_address(
    top: Topology, nft: Nftables, serve: Serve
) -> None:
    a1 = next(iter(top.a.sandboxes))
    b1, b1_ip = next(iter(top.b.sandboxes.items()))
    serve(top.outside, "tcp", 7003)
    serve(top.outside, "udp", 7003)
    serve(top.outside, "tcp", 7004, "::")
    # The outside has no route back to network a: only masquerading gets an answer home.
    assert ask(a1, "tcp", top.outside_ip, 7003) is None

    await apply_defaults(top, nft)

    assert ask(a1, "tcp", top.outside_ip, 7003) == top.host_ip
    assert ask(a1, "udp", top.outside_ip, 7003) == top.host_ip
    assert ask(a1, "tcp", top.outside_ip6, 7004) == top.host_ip6
    assert pings(a1, top.outside_ip)
    # Network b does not masquerade: it arrives with its own address.
    assert ask(b1, "tcp", top.outside_ip, 7003) == b1_ip


async def test_a_published_port_reaches_the_sandbox(
    top: Topology, nft: Nftables, serve: Serve
) -> None:
    (a1, a1_ip), (a2, _) = top.a.sandboxes.items()
    a1_ip6 = top.a.sandboxes6[a1]
    b1, b1_ip = next(iter(top.b.sandboxes.items()))
    serve(a1, "tcp", 8000)
    serve(a1, "udp", 8000)
    serve(a1, "tcp", 8001, "::")
    bridge = top.a.bridge
    forwards = [
        PortForward("tcp", None, 18080, ip_address(a1_ip), 8000, bridge),
        PortForward("udp", ip_address(top.host_ip), 18053, ip_address(a1_ip), 8000, bridge),
        PortForward("tcp", None, 18443, ip_address(a1_ip6), 8001, bridge),
    ]
    assert ask(top.outside, "tcp", top.host_ip, 18080) is None

    await apply_defaults(top, nft, forwards)

    # The sandbox sees the real client, as with Docker's -p.
    assert ask(top.outside, "tcp", top.host_ip, 18080) == top.outside_ip
    assert ask(top.outside, "udp", top.host_ip, 18053) == top.outside_ip
    assert ask(top.outside, "tcp", top.host_ip6, 18443) == top.outside_ip6
    # From the host itself, and from a sandbox of the same network through the host (hairpin).
    assert ask(top.host, "tcp", top.host_ip, 18080) == top.host_ip
    assert ask(a2, "tcp", top.host_ip, 18080) == "10.201.1.1"
    # Another network reaches the published port, never the sandbox directly.
    assert ask(b1, "tcp", top.host_ip, 18080) == b1_ip
    assert ask(b1, "tcp", a1_ip, 8000) is None
    # Only the published port is forwarded.
    assert ask(top.outside, "tcp", top.host_ip, 18081) is None


async def test_applying_twice_is_stable_and_replaces_everything(
    top: Topology, nft: Nftables, serve: Serve
) -> None:
    a1, a1_ip = next(iter(top.a.sandboxes.items()))
    serve(a1, "tcp", 8002)
    forward = PortForward("tcp", None, 18082, ip_address(a1_ip), 8002, top.a.bridge)
    await apply_defaults(top, nft, [forward])
    first = await nft.current()
    await apply_defaults(top, nft, [forward])

    assert await nft.current() == first
    assert first.count("dnat ip to") == 2
    assert ask(top.outside, "tcp", top.host_ip, 18082) == top.outside_ip

    await apply_defaults(top, nft)
    assert "dnat" not in (await nft.current()).replace("ct status dnat", "")
    assert ask(top.outside, "tcp", top.host_ip, 18082) is None


async def test_remove_deletes_only_berths_table(top: Topology, nft: Nftables) -> None:
    other = "table inet other {\n chain input {\n type filter hook input priority 0;\n }\n}\n"
    nft_script(top.host, other)
    await apply_defaults(top, nft)
    assert "table inet berth" in await nft.current()

    await nft.remove()
    await nft.remove()

    assert await nft.current() == ""
    tables = in_ns(top.host, "nft", "list", "tables").stdout.splitlines()
    assert tables == ["table inet other"]
    in_ns(top.host, "nft", "delete", "table", "inet", "other")


async def test_a_failed_apply_raises_and_keeps_the_previous_table(
    top: Topology, nft: Nftables, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply_defaults(top, nft)
    before = await nft.current()
    valid = nftables.render
    monkeypatch.setattr(
        nftables, "render", lambda *args, **kwargs: valid([]) + "add rule inet berth nowhere drop\n"
    )

    with pytest.raises(RuntimeError, match="nowhere"):
        await apply_defaults(top, nft)

    assert await nft.current() == before


async def test_a_missing_namespace_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError):
        await Nftables(netns=f"t{os.getpid() % 10000}gone").apply([])
