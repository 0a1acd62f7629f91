"""Small networks and sandboxes for the embedded DNS unit tests."""

from __future__ import annotations

import secrets
from ipaddress import ip_interface, ip_network

from berth.network.domain.model import (
    BridgeOptions,
    Driver,
    Endpoint,
    Network,
    Sandbox,
    SandboxState,
    Subnet,
)


def network(name: str, subnet: str, *, internal: bool = False, predefined: bool = False) -> Network:
    net = ip_network(subnet)
    return Network(
        id=secrets.token_hex(32),
        name=name,
        driver=Driver.BRIDGE,
        bridge=BridgeOptions(bridge_name=f"br-{name}"[:15]),
        subnets=[Subnet(subnet=net, gateway=next(net.hosts()))],
        internal=internal,
        predefined=predefined,
    )


def sandbox(name: str, *, running: bool = True, dns: list[str] | None = None) -> Sandbox:
    return Sandbox(
        id=secrets.token_hex(32),
        name=name,
        netns=f"/run/netns/{name}",
        state=SandboxState.RUNNING if running else SandboxState.STOPPED,
        hostname=name,
        dns=dns or [],
    )


def join(
    box: Sandbox,
    net: Network,
    address: str | None,
    *,
    aliases: list[str] | None = None,
    links: dict[str, str] | None = None,
    ipv6: str | None = None,
) -> Sandbox:
    """Connect `box` to `net` with `address` (None: not plumbed, as when stopped)."""
    prefix = net.subnets[0].subnet.prefixlen
    box.endpoints[net.id] = Endpoint(
        id=secrets.token_hex(32),
        network_id=net.id,
        interface=f"eth{len(box.endpoints)}",
        host_interface="bv" + secrets.token_hex(6),
        mac_address="02:42:00:00:00:01",
        ipv4=None if address is None else ip_interface(f"{address}/{prefix}"),
        ipv6=None if ipv6 is None else ip_interface(f"{ipv6}/64"),
        aliases=aliases or [],
        links=links or {},
    )
    return box
