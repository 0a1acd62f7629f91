"""Rules of an endpoint's plumbing: interface names, MACs, gateways and route metrics."""

from __future__ import annotations

import secrets
from ipaddress import IPv4Address, IPv6Address, ip_interface

from berth.network.domain.model import Endpoint, IPAddress, IPInterface, Network, Sandbox

HOST_VETH_PREFIX = "bv"  # every host-side veth berth makes: bv + 12 hex (14 characters)
BASE_ROUTE_METRIC = 100_000
METRICS_PER_PRIORITY = 64  # interfaces of one sandbox at one priority: each needs its own metric


def host_veth_name() -> str:
    return HOST_VETH_PREFIX + secrets.token_hex(6)


def is_berth_veth(name: str) -> bool:
    rest = name.removeprefix(HOST_VETH_PREFIX)
    return (
        name.startswith(HOST_VETH_PREFIX)
        and len(rest) == 12
        and all(c in "0123456789abcdef" for c in rest)
    )


def gateway_interfaces(network: Network) -> list[IPInterface]:
    return [ip_interface(f"{s.gateway}/{s.subnet.prefixlen}") for s in network.subnets]


def gateways(network: Network) -> tuple[IPv4Address | None, IPv6Address | None]:
    v4 = next((s.gateway for s in network.subnets if s.subnet.version == 4), None)
    v6 = next((s.gateway for s in network.subnets if s.subnet.version == 6), None)
    if network.bridge is not None and network.bridge.inhibit_ipv4:
        v4 = None
    return v4, v6  # type: ignore[return-value]


def route_metric(endpoint: Endpoint) -> int:
    """Lower wins: a higher gw-priority gets a lower metric; the interface index keeps two
    endpoints of one sandbox apart (the kernel refuses two equal default routes)."""
    metric = (
        BASE_ROUTE_METRIC
        - endpoint.gw_priority * METRICS_PER_PRIORITY
        + interface_index(endpoint.interface)
    )
    return max(1, min(metric, 2**31 - 1))


def interface_index(interface: str) -> int:
    """The number in an interface's name (eth1 -> 1): the order the sandbox joined in."""
    return int("".join(c for c in interface if c.isdigit()) or 0)


def in_join_order(sandbox: Sandbox) -> list[Endpoint]:
    """The sandbox's endpoints, eth0 first."""
    return sorted(
        sandbox.endpoints.values(), key=lambda e: (interface_index(e.interface), e.interface)
    )


def next_ifname(prefix: str, sandbox: Sandbox) -> str:
    used = {e.interface for e in sandbox.endpoints.values()}
    return next(f"{prefix}{i}" for i in range(len(used) + 1) if f"{prefix}{i}" not in used)


def random_mac() -> str:
    octets = [0x02, 0x42, *secrets.token_bytes(4)]  # locally administered, unicast
    return ":".join(f"{o:02x}" for o in octets)


def address_field(network: Network, version: int) -> str | None:
    """The request field an endpoint's IPv`version` address answers to, or None when the
    network gives its endpoints no address of that version."""
    if not any(s.subnet.version == version for s in network.subnets):
        return None
    if version == 4 and not network.ipv4:
        return None
    return "endpoint_config.ip_address" if version == 4 else "endpoint_config.ipv6_address"


def mac_for(address: IPv4Address) -> str:
    """The MAC an overlay endpoint gets from its IPv4 address (Docker's 02:42:a.b.c.d):
    a sandbox that cached a departed sandbox's MAC still reaches whoever takes the address
    over, on whichever host."""
    return ":".join(f"{o:02x}" for o in (0x02, 0x42, *address.packed))


def link_local(address: IPAddress) -> IPInterface:
    return ip_interface(f"{address}/{16 if address.version == 4 else 64}")
