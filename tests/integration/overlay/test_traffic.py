"""Sandboxes on different hosts of one overlay network talk over VXLAN (TCP, UDP, ICMP),
find each other by name, and sandboxes of another overlay network reach none of them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from berth.api.network.v1 import network_service_pb2 as npb
from tests.integration.overlay.probes import (
    PY,
    REACH_S,
    TCP_SERVER,
    UDP_SERVER,
    bare,
    needs_cluster,
    new_subnet,
    ping_blocked,
    pings,
    serving,
    tcp_answers,
    tcp_reaches,
    udp_answers,
)
from tests.support.cluster import Cluster
from tests.support.processes import poll

pytestmark = [needs_cluster, pytest.mark.timeout(180)]


def test_tcp_and_udp_between_sandboxes_on_different_hosts(cluster: Cluster, t: str) -> None:
    h1, h2, h3 = cluster.hosts
    net = f"ov-{t}"
    h1.client().overlay_network(net, new_subnet())
    a = h1.client().sandbox_on(f"a-{t}", net)
    b = h2.client().sandbox_on(f"b-{t}", net)
    c = h3.client().sandbox_on(f"c-{t}", net)
    a_ip, b_ip, c_ip = bare(a.ipv4_address), bare(b.ipv4_address), bare(c.ipv4_address)
    assert len({a_ip, b_ip, c_ip}) == 3

    assert tcp_reaches((h1, f"a-{t}"), (h2, f"b-{t}"), b_ip), "TCP h1 -> h2"
    assert tcp_reaches((h2, f"b-{t}"), (h1, f"a-{t}"), a_ip), "TCP h2 -> h1"
    assert tcp_reaches((h3, f"c-{t}"), (h1, f"a-{t}"), a_ip), "TCP h3 -> h1"
    with serving(h2, f"b-{t}", UDP_SERVER, 5353):
        assert udp_answers(h1, f"a-{t}", b_ip, 5353), "UDP h1 -> h2"
        assert udp_answers(h3, f"c-{t}", b_ip, 5353), "UDP h3 -> h2"
    assert pings(h1, f"a-{t}", c_ip), "ICMP h1 -> h3"
    assert pings(h3, f"c-{t}", b_ip), "ICMP h3 -> h2"


def test_a_big_tcp_transfer_fits_the_overlay_mtu(cluster: Cluster, t: str) -> None:
    """Full-size segments cross the tunnel: the sandbox MTU leaves room for VXLAN."""
    h1, h2, _ = cluster.hosts
    net = f"ov-{t}"
    h1.client().overlay_network(net, new_subnet())
    h1.client().sandbox_on(f"a-{t}", net)
    b_ip = bare(h2.client().sandbox_on(f"b-{t}", net).ipv4_address)
    sink = (
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('0.0.0.0',9000)); s.listen(); print('ready',flush=True)\n"
        "c,_=s.accept(); n=0\n"
        "while d:=c.recv(65536): n+=len(d)\n"
        "c.sendall(str(n).encode()); c.close()\n"
    )
    send = (
        "import socket,sys\n"
        f"s=socket.create_connection(({b_ip!r},9000),timeout=10)\n"
        "s.sendall(b'x'*4_000_000); s.shutdown(socket.SHUT_WR)\n"
        "print(s.recv(64).decode())\n"
    )
    with serving(h2, f"b-{t}", sink, 9000):
        assert pings(h1, f"a-{t}", b_ip), "the path is up"
        sent = h1.in_sandbox(f"a-{t}", PY, "-c", send, timeout=30)
    assert sent.stdout.strip() == "4000000", sent


def test_names_and_aliases_resolve_across_hosts(cluster: Cluster, t: str) -> None:
    h1, h2, _ = cluster.hosts
    net = f"ov-{t}"
    h1.client().overlay_network(net, new_subnet())
    h1.client().sandbox_on(f"a-{t}", net)
    b = h2.client().sandbox_on(f"b-{t}", net, aliases=[f"web-{t}"])
    b_ip = bare(b.ipv4_address)
    dns = h1.client()
    for name in (f"b-{t}", f"b-{t}.{net}", f"web-{t}"):
        poll(
            lambda name=name: dns.resolve(f"a-{t}", name) == [b_ip],
            REACH_S,
            f"{name} (on h2) to resolve to {b_ip} from a sandbox on h1",
        )
    answer = dns.lookup(f"a-{t}", f"b-{t}")
    assert answer.status == "NOERROR" and "aa" in answer.flags, answer
    with serving(h2, f"b-{t}", TCP_SERVER, 8081):
        assert tcp_answers(h1, f"a-{t}", f"web-{t}", 8081), "TCP by alias, through the C library"


def test_another_overlay_network_reaches_none_of_them(cluster: Cluster, t: str) -> None:
    """Sandboxes of `other` (on h1, beside a, and on h3) reach each other, but neither a
    (h1) nor b (h2) of `ov`, by address or by name; and the other way round."""
    h1, h2, h3 = cluster.hosts
    ov, other = f"ov-{t}", f"other-{t}"
    h1.client().overlay_network(ov, new_subnet())
    h2.client().overlay_network(other, new_subnet())
    a_ip = bare(h1.client().sandbox_on(f"a-{t}", ov).ipv4_address)
    b_ip = bare(h2.client().sandbox_on(f"b-{t}", ov, aliases=[f"web-{t}"]).ipv4_address)
    x_ip = bare(h1.client().sandbox_on(f"x-{t}", other).ipv4_address)
    y_ip = bare(h3.client().sandbox_on(f"y-{t}", other).ipv4_address)

    assert pings(h3, f"y-{t}", x_ip), "other works: h3 -> h1"
    assert pings(h1, f"a-{t}", b_ip), "ov works: h1 -> h2"
    assert h3.client().resolve(f"y-{t}", f"x-{t}") == [x_ip], "names work on other"
    strangers = ((h1, f"x-{t}"), (h3, f"y-{t}"))
    checks: dict[str, Callable[[], bool]] = {}
    for host, sandbox in strangers:
        for address in (a_ip, b_ip):
            checks[f"{sandbox} pings {address}"] = partial(ping_blocked, host, sandbox, address)
            checks[f"{sandbox} connects to {address}"] = partial(
                lambda *a: not tcp_answers(*a, within=2), host, sandbox, address, 8082
            )
        for name in (f"a-{t}", f"b-{t}", f"b-{t}.{ov}", f"web-{t}"):
            checks[f"{sandbox} resolves {name}"] = partial(
                lambda h, s, n: h.client().resolve(s, n) == [], host, sandbox, name
            )
    for host, sandbox in ((h1, f"a-{t}"), (h2, f"b-{t}")):
        for address in (x_ip, y_ip):
            checks[f"{sandbox} pings {address}"] = partial(ping_blocked, host, sandbox, address)
    with serving(h2, f"b-{t}", TCP_SERVER, 8082), serving(h1, f"a-{t}", TCP_SERVER, 8082):
        assert failing(checks) == []


def failing(checks: dict[str, Callable[[], bool]]) -> list[str]:
    """The checks (all run at once) that returned False."""
    with ThreadPoolExecutor(len(checks)) as pool:
        futures = {what: pool.submit(check) for what, check in checks.items()}
    return [what for what, future in futures.items() if not future.result()]


def test_ipv6_between_sandboxes_on_different_hosts(cluster: Cluster, t: str) -> None:
    """A dual-stack overlay: the VXLAN devices answer neighbour solicitations by proxy,
    as they answer ARP, and AAAA names resolve across hosts."""
    h1, h2, _ = cluster.hosts
    net = f"ov6-{t}"
    v4 = new_subnet()
    request = npb.CreateNetworkRequest(
        name=net,
        driver=npb.DRIVER_OVERLAY,
        ipv6=True,
        ipam=npb.IPAM(
            config=[
                npb.IPAMConfig(subnet=v4),
                npb.IPAMConfig(subnet=f"fd00:72:{v4.split('.')[2]}::/64"),
            ]
        ),
    )
    h1.client().networks.CreateNetwork(request, timeout=30)
    poll(lambda: net in h2.client().network_names(), REACH_S, "h2 to know the network")
    h1.client().sandbox_on(f"a-{t}", net)
    b = h2.client().sandbox_on(f"b-{t}", net)
    b_ip6 = bare(b.ipv6_address)
    assert b_ip6.startswith("fd00:72:")
    poll(
        lambda: h1.in_sandbox(f"a-{t}", "ping", "-6", "-c1", "-W1", b_ip6).returncode == 0,
        REACH_S,
        "a on h1 to ping b on h2 over IPv6",
    )
    answer = h1.in_sandbox(f"a-{t}", "dig", "+short", "@127.0.0.11", f"b-{t}", "AAAA")
    assert answer.stdout.split() == [b_ip6]
