"""The namespace and link adapters on the real kernel, inside namespaces these tests create.

Topology (every name carries a per-test prefix): a "host" namespace, standing in for the
agent's, with a bridge; sandbox namespaces joined to it with create_endpoint. Nothing
outside those namespaces is touched, and all of them are removed after each test.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Interface,
    ip_address,
    ip_network,
)
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from berth.network.adapters.links import LinkError, Links
from berth.network.adapters.netns import (
    NETNS_DIR,
    SysctlError,
    create_netns,
    list_netns,
    netns_exists,
    remove_netns,
    run_in_netns,
    write_sysctls,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nsenter") is None, reason="needs root and nsenter"
)

GATEWAY4 = IPv4Interface("10.201.0.1/24")
GATEWAY6 = IPv6Interface("fdb2:201::1/64")
OTHER_GATEWAY4 = IPv4Interface("10.202.0.1/24")
NO_ANSWER = 1.0  # how long a ping waits for an answer that must not come
DEADLINE = 10.0  # how long an answer that must come may take

# ICMP echo from inside a namespace (iputils ping is not installed everywhere).
PING = r"""
import os, socket, struct, sys, time
addr, wait = sys.argv[1], float(sys.argv[2])
v6 = ":" in addr
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
ident, kind, reply = os.getpid() & 0xFFFF, 128 if v6 else 8, 129 if v6 else 0
packet = struct.pack("!BBHHH", kind, 0, 0, ident, 1) + b"berth"
if not v6:
    padded = packet + b"\0" * (len(packet) % 2)
    total = sum(struct.unpack("!%dH" % (len(padded) // 2), padded))
    total = (total >> 16) + (total & 0xFFFF)
    packet = packet[:2] + struct.pack("!H", ~(total + (total >> 16)) & 0xFFFF) + packet[4:]
s.sendto(packet, (addr, 0))
deadline = time.monotonic() + wait
while deadline > time.monotonic():
    s.settimeout(deadline - time.monotonic())
    try:
        data = s.recv(2048)
    except OSError:
        break
    icmp = data if v6 else data[(data[0] & 0xF) * 4:]
    if icmp[0] == reply and struct.unpack("!H", icmp[4:6])[0] == ident:
        sys.exit(0)
sys.exit(3)
"""
ANSWERED, UNANSWERED = 0, 3  # any other exit code is the probe's own failure


@dataclass
class Lab:
    prefix: str
    host: str  # the namespace Links works in
    bridge: str
    links: Links

    def name(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"

    async def sandbox(self, suffix: str) -> str:
        name = self.name(suffix)
        await create_netns(name)
        return name

    async def join(self, sandbox: str | Path, n: int, **overrides: Any) -> str:
        """Joins the sandbox to the bridge as 10.201.0.(n+1); returns the host veth name."""
        spec: dict[str, Any] = {
            "bridge": self.bridge,
            "host_ifname": self.name(f"v{n}"),
            "netns": sandbox,
            "ifname": "eth0",
            "mac": f"02:42:0a:c9:00:{n:02x}",
            "mtu": 1500,
            "addresses": [IPv4Interface(f"10.201.0.{n + 1}/24"), sandbox_ip6(n)],
            "gateway4": GATEWAY4.ip,
            "gateway6": GATEWAY6.ip,
            "metric": 100,
            "sysctls": {},
        }
        spec.update(overrides)
        await self.links.create_endpoint(**spec)
        return str(spec["host_ifname"])


def sandbox_ip6(n: int) -> IPv6Interface:
    return IPv6Interface(f"fdb2:201::{n + 1:x}/64")


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    prefix = f"t{os.getpid() % 10000}{secrets.token_hex(2)}"
    try:
        host = f"{prefix}h"
        await create_netns(host)
        async with Links(netns=host) as links:
            bridge = f"{prefix}br"
            await links.ensure_bridge(bridge, mtu=1500, addresses=[GATEWAY4, GATEWAY6])
            yield Lab(prefix=prefix, host=host, bridge=bridge, links=links)
    finally:
        for name in list_netns(prefix):
            await remove_netns(name)
    assert list_netns(prefix) == []


# Looking at a namespace from outside the code under test


@dataclass
class Seen:
    mtu: int
    mac: str
    up: bool
    master: int | None
    addresses: set[Any]  # global ones: the kernel adds IPv6 link-local ones by itself
    default_routes: set[tuple[Any, int]]  # (gateway, metric)


async def seen(netns: str | Path, ifname: str) -> Seen:
    path = netns if isinstance(netns, Path) else NETNS_DIR / netns
    async with AsyncIPRoute(netns=str(path), flags=0) as ipr:
        (index,) = await ipr.link_lookup(ifname=ifname)
        (link,) = await ipr.link("get", index=index)
        addresses = set()
        async for msg in await ipr.addr("dump", index=index):
            address = ip_address(msg.get("local") or msg.get("address"))
            if not address.is_link_local:
                addresses.add((address, msg["prefixlen"]))
        routes = set()
        async for route in await ipr.route("dump"):
            if route["dst_len"] == 0 and route.get("oif") == index and route.get("gateway"):
                routes.add((ip_address(route.get("gateway")), route.get("priority")))
    return Seen(
        mtu=link.get("mtu"),
        mac=link.get("address"),
        up=bool(link["flags"] & 1),
        master=link.get("master"),
        addresses=addresses,
        default_routes=routes,
    )


def pairs(*interfaces: IPv4Interface | IPv6Interface) -> set[tuple[Any, int]]:
    return {(i.ip, i.network.prefixlen) for i in interfaces}


async def names(netns: str | Path) -> set[str]:
    async with Links(netns=str(netns)) as links:
        return await links.link_names()


async def ping_once(netns: str | Path, address: Any, wait: float = NO_ANSWER) -> bool:
    argv = [sys.executable, "-c", PING, str(address), str(wait)]
    code, _, err = await run_in_netns(netns, argv, timeout=wait + 10)
    assert code in (ANSWERED, UNANSWERED), err.decode()
    return code == ANSWERED


async def pings(netns: str | Path, address: Any) -> bool:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if await ping_once(netns, address):
            return True
    return False


async def read_sysctl(netns: str | Path, key: str) -> str:
    cat = shutil.which("cat")
    assert cat is not None
    code, out, err = await run_in_netns(netns, [cat, "/proc/sys/" + key.replace(".", "/")])
    assert code == 0, err
    return out.decode().strip()


def own_sysctl(key: str) -> str:
    """The value in this process's namespace, which the tests must leave alone."""
    return Path("/proc/sys", *key.split(".")).read_text()


# Namespaces


async def test_create_list_and_remove_named_namespaces() -> None:
    prefix = f"t{os.getpid() % 10000}{secrets.token_hex(2)}"
    try:
        path = await create_netns(f"{prefix}a")
        await create_netns(f"{prefix}b")
        assert path == NETNS_DIR / f"{prefix}a"
        assert netns_exists(f"{prefix}a")
        assert list_netns(prefix) == [f"{prefix}a", f"{prefix}b"]
        assert os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino
        with pytest.raises(FileExistsError):
            await create_netns(f"{prefix}a")

        await remove_netns(f"{prefix}a")
        await remove_netns(f"{prefix}a")  # gone already: no error
        assert not netns_exists(f"{prefix}a")
        assert list_netns(prefix) == [f"{prefix}b"]
    finally:
        for name in list_netns(prefix):
            await remove_netns(name)


async def test_run_in_netns_returns_output_and_exit_code(lab: Lab) -> None:
    script = (
        "import os, socket, sys; data = sys.stdin.read();"
        "print(sorted(n for _, n in socket.if_nameindex()), data, os.environ.get('WHO'),"
        " os.getcwd()); print('oops', file=sys.stderr); sys.exit(3)"
    )
    code, out, err = await run_in_netns(
        lab.host, [sys.executable, "-c", script], stdin=b"hi", env={"WHO": "me"}, cwd="/tmp"
    )
    assert code == 3
    # Only the host namespace's interfaces: this machine's are not visible there.
    assert out.decode() == f"{sorted(['lo', lab.bridge])} hi me /tmp\n"
    assert err == b"oops\n"


async def test_run_in_netns_kills_the_command_on_timeout(lab: Lab) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await run_in_netns(
            lab.host, [sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5
        )
    assert time.monotonic() - started < 10


async def test_run_in_a_missing_namespace_fails() -> None:
    with pytest.raises(FileNotFoundError):
        await run_in_netns(f"t{secrets.token_hex(6)}", [sys.executable, "-c", "pass"])


async def test_write_sysctls_applies_inside_and_names_a_bad_key(lab: Lab) -> None:
    own_before = own_sysctl("net.ipv4.conf.all.forwarding")
    await write_sysctls(lab.host, {"net.ipv4.conf.all.forwarding": "1"})
    assert await read_sysctl(lab.host, "net.ipv4.conf.all.forwarding") == "1"
    assert own_sysctl("net.ipv4.conf.all.forwarding") == own_before
    with pytest.raises(SysctlError, match=r"net\.ipv4\.no_such_thing"):
        await write_sysctls(lab.host, {"net.ipv4.no_such_thing": "1"})


# Endpoints


async def test_sandboxes_reach_each_other_and_the_gateway(lab: Lab) -> None:
    one, two = await lab.sandbox("s1"), await lab.sandbox("s2")
    await lab.join(one, 1)
    await lab.join(two, 2)

    assert await pings(one, "10.201.0.3")
    assert await pings(two, "10.201.0.2")
    assert await pings(one, GATEWAY4.ip)
    assert await pings(one, sandbox_ip6(2).ip)
    assert await pings(two, GATEWAY6.ip)
    assert await pings(lab.host, "10.201.0.2")


async def test_endpoint_is_configured_as_asked(lab: Lab) -> None:
    one = await lab.sandbox("s1")
    sysctls = {"net.ipv4.conf.eth0.log_martians": "1", "net.ipv6.conf.eth0.accept_ra": "0"}
    host_ifname = await lab.join(one, 1, mtu=1400, metric=321, sysctls=sysctls)

    inside = await seen(one, "eth0")
    assert inside.mac == "02:42:0a:c9:00:01"
    assert inside.mtu == 1400
    assert inside.up
    assert inside.addresses == pairs(IPv4Interface("10.201.0.2/24"), sandbox_ip6(1))
    assert inside.default_routes == {(GATEWAY4.ip, 321), (GATEWAY6.ip, 321)}
    assert (await seen(one, "lo")).up
    assert await read_sysctl(one, "net.ipv4.conf.eth0.log_martians") == "1"
    assert await read_sysctl(one, "net.ipv6.conf.eth0.accept_ra") == "0"

    outside = await seen(lab.host, host_ifname)
    bridge = await seen(lab.host, lab.bridge)
    assert outside.up and outside.mtu == 1400
    assert outside.master is not None
    assert outside.master == (await lab.links.ipr.link_lookup(ifname=lab.bridge))[0]
    assert bridge.addresses == pairs(GATEWAY4, GATEWAY6)
    assert await names(one) == {"lo", "eth0"}


async def test_endpoint_without_gateways_has_no_default_route(lab: Lab) -> None:
    one = await lab.sandbox("s1")
    await lab.join(one, 1, gateway4=None, gateway6=None, addresses=[IPv4Interface("10.201.0.2/24")])
    inside = await seen(one, "eth0")
    assert inside.default_routes == set()
    assert inside.addresses == pairs(IPv4Interface("10.201.0.2/24"))
    assert await pings(one, GATEWAY4.ip)


async def test_endpoint_into_a_namespace_given_by_path(lab: Lab) -> None:
    unshare = shutil.which("unshare")
    assert unshare is not None
    # A namespace with no name, held by a process, as a container runtime makes them.
    process = await asyncio.create_subprocess_exec(
        unshare,
        "--net",
        sys.executable,
        "-c",
        "import sys; sys.stdin.read()",
        stdin=asyncio.subprocess.PIPE,
    )
    try:
        path = Path(f"/proc/{process.pid}/ns/net")
        deadline = time.monotonic() + DEADLINE
        while os.stat(path).st_ino == os.stat("/proc/self/ns/net").st_ino:
            assert time.monotonic() < deadline, "unshare did not enter a new namespace"
            await asyncio.sleep(0.05)
        await lab.join(path, 1)
        assert (await seen(path, "eth0")).addresses == pairs(
            IPv4Interface("10.201.0.2/24"), sandbox_ip6(1)
        )
        assert await pings(path, GATEWAY4.ip)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await process.wait()


async def test_the_lower_metric_wins(lab: Lab) -> None:
    other = lab.name("br2")
    await lab.links.ensure_bridge(other, mtu=1500, addresses=[OTHER_GATEWAY4])
    one = await lab.sandbox("s1")
    await lab.join(one, 1, metric=200, gateway6=None)
    await lab.join(
        one,
        2,
        bridge=other,
        ifname="eth1",
        metric=100,
        gateway4=OTHER_GATEWAY4.ip,
        gateway6=None,
        addresses=[IPv4Interface("10.202.0.2/24")],
    )
    async with AsyncIPRoute(netns=str(NETNS_DIR / one), flags=0) as ipr:
        (route,) = await ipr.route("get", dst="192.0.2.1")
    assert route.get("gateway") == str(OTHER_GATEWAY4.ip)


async def test_remove_endpoint_removes_both_ends(lab: Lab) -> None:
    one, two = await lab.sandbox("s1"), await lab.sandbox("s2")
    host_ifname = await lab.join(one, 1)
    await lab.join(two, 2)
    assert await pings(two, "10.201.0.2")

    await lab.links.remove_endpoint(host_ifname)
    assert host_ifname not in await lab.links.link_names()
    assert await names(one) == {"lo"}
    assert not await ping_once(two, "10.201.0.2")
    await lab.links.remove_endpoint(host_ifname)  # gone already: no error


async def test_create_endpoint_on_a_missing_bridge_leaves_nothing(lab: Lab) -> None:
    one = await lab.sandbox("s1")
    before_host, before_one = await lab.links.link_names(), await names(one)
    with pytest.raises(LinkError, match="no link named"):
        await lab.join(one, 1, bridge=lab.name("nb"))
    assert await lab.links.link_names() == before_host
    assert await names(one) == before_one


async def test_create_endpoint_failing_inside_the_sandbox_leaves_nothing(lab: Lab) -> None:
    one = await lab.sandbox("s1")
    await lab.join(one, 1)
    before_host, before_one = await lab.links.link_names(), await names(one)

    # eth0 is taken in the sandbox: the rename fails after the pair was made and moved.
    with pytest.raises(FileExistsError):
        await lab.join(one, 2)
    # Everything was configured, then a sysctl fails: the last step.
    with pytest.raises(SysctlError, match="no_such_thing"):
        await lab.join(
            one, 3, ifname="eth1", metric=101, sysctls={"net.ipv4.conf.eth1.no_such_thing": "1"}
        )
    # The gateway is not on the sandbox's subnet: the default route fails.
    with pytest.raises(NetlinkError) as unreachable:
        await lab.join(one, 4, ifname="eth1", metric=101, gateway4=IPv4Address("192.0.2.1"))
    assert unreachable.value.code == errno.ENETUNREACH
    # A second default route with the same metric: the caller must give distinct metrics.
    with pytest.raises(NetlinkError) as same_metric:
        await lab.join(one, 5, ifname="eth1", metric=100)
    assert same_metric.value.code == errno.EEXIST

    assert await lab.links.link_names() == before_host
    assert await names(one) == before_one
    assert await pings(one, GATEWAY4.ip)  # the first endpoint is untouched


async def test_create_endpoint_with_a_taken_host_name_keeps_the_existing_link(lab: Lab) -> None:
    one, two = await lab.sandbox("s1"), await lab.sandbox("s2")
    host_ifname = await lab.join(one, 1)
    with pytest.raises(FileExistsError):
        await lab.join(two, 2, host_ifname=host_ifname)
    assert await names(two) == {"lo"}
    assert await pings(one, GATEWAY4.ip)


async def test_port_isolation_blocks_sandbox_to_sandbox_only(lab: Lab) -> None:
    one, two = await lab.sandbox("s1"), await lab.sandbox("s2")
    port1, port2 = await lab.join(one, 1), await lab.join(two, 2)
    assert await pings(one, "10.201.0.3")

    await lab.links.set_port_isolated(port1, True)
    await lab.links.set_port_isolated(port2, True)
    assert not await ping_once(one, "10.201.0.3")
    assert not await ping_once(two, sandbox_ip6(1).ip)
    assert await pings(one, GATEWAY4.ip)
    assert await pings(two, GATEWAY6.ip)

    await lab.links.set_port_isolated(port1, False)
    assert await pings(one, "10.201.0.3")


async def test_port_isolation_of_a_missing_port_fails(lab: Lab) -> None:
    with pytest.raises(LinkError):
        await lab.links.set_port_isolated(lab.name("nope"), True)


# Bridges and the host namespace


async def test_ensure_bridge_is_idempotent_and_corrects_addresses(lab: Lab) -> None:
    await lab.links.ensure_bridge(lab.bridge, mtu=1500, addresses=[GATEWAY4, GATEWAY6])
    assert (await seen(lab.host, lab.bridge)).addresses == pairs(GATEWAY4, GATEWAY6)
    assert await lab.links.link_names() == {"lo", lab.bridge}

    index = (await lab.links.ipr.link_lookup(ifname=lab.bridge))[0]
    await lab.links.ipr.addr("add", index=index, address="10.201.0.99", prefixlen=24)
    await lab.links.ipr.link("set", index=index, state="down")
    wider = IPv4Interface("10.201.0.1/16")
    await lab.links.ensure_bridge(lab.bridge, mtu=1400, addresses=[wider])

    bridge = await seen(lab.host, lab.bridge)
    assert bridge.addresses == pairs(wider)
    assert bridge.mtu == 1400
    assert bridge.up


async def test_ensure_bridge_refuses_a_link_that_is_not_a_bridge(lab: Lab) -> None:
    name = lab.name("d")
    await lab.links.ipr.link("add", ifname=name, kind="veth", peer=lab.name("dp"))
    with pytest.raises(LinkError, match="not a bridge"):
        await lab.links.ensure_bridge(name, mtu=1500, addresses=[])


async def test_delete_link(lab: Lab) -> None:
    await lab.links.delete_link(lab.bridge)
    await lab.links.delete_link(lab.bridge)  # gone already: no error
    assert await lab.links.link_names() == {"lo"}


async def test_host_networks_lists_routes_and_address_networks(lab: Lab) -> None:
    ipr = lab.links.ipr
    (bridge,) = await ipr.link_lookup(ifname=lab.bridge)
    await ipr.route("add", dst="198.51.100.0", dst_len=24, gateway="10.201.0.254", oif=bridge)
    await ipr.route("add", dst="0.0.0.0", dst_len=0, gateway="10.201.0.254", oif=bridge)
    await ipr.route(
        "add",
        family=socket.AF_INET6,
        dst="2001:db8:7::",
        dst_len=48,
        gateway="fdb2:201::fe",
        oif=bridge,
    )
    networks = await lab.links.host_networks()
    assert networks == [
        ip_network("10.201.0.0/24"),
        ip_network("198.51.100.0/24"),
        ip_network("2001:db8:7::/48"),
        ip_network("fdb2:201::/64"),
    ]


async def test_enable_forwarding_in_the_links_namespace_only(lab: Lab) -> None:
    own_before = own_sysctl("net.ipv4.ip_forward")
    assert await read_sysctl(lab.host, "net.ipv4.ip_forward") == "0"
    await lab.links.enable_forwarding(ipv6=True)
    assert await read_sysctl(lab.host, "net.ipv4.ip_forward") == "1"
    assert await read_sysctl(lab.host, "net.ipv6.conf.all.forwarding") == "1"
    assert own_sysctl("net.ipv4.ip_forward") == own_before


async def test_links_in_a_missing_namespace_fail_to_open() -> None:
    missing = f"t{secrets.token_hex(6)}"
    with pytest.raises(FileNotFoundError):
        await Links(netns=missing).open()
    assert not netns_exists(missing)  # pyroute2 would create it by default
