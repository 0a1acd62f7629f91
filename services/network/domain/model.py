"""What the network agent manages: networks, sandboxes and the endpoints joining them.

Plain data, persisted as JSON by the state store; the kernel is made to match it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
IPInterface = IPv4Interface | IPv6Interface


ANY_IPV4 = IPv4Address("0.0.0.0")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Subnet:
    """One IPAM config entry of a network (`--subnet` with its `--gateway`, ...)."""

    subnet: IPNetwork
    gateway: IPAddress
    ip_range: IPNetwork | None = None
    aux_addresses: dict[str, IPAddress] = field(default_factory=dict)


@dataclass
class BridgeOptions:
    """The bridge driver's options (`-o com.docker.network.bridge.*`), validated."""

    bridge_name: str
    enable_ip_masquerade: bool = True
    enable_icc: bool = True
    host_binding_ipv4: IPv4Address = ANY_IPV4
    mtu: int = 1500
    container_iface_prefix: str = "eth"
    inhibit_ipv4: bool = False
    gateway_mode_ipv4: str = "nat"  # nat | routed
    gateway_mode_ipv6: str = "nat"


class Driver(enum.StrEnum):
    BRIDGE = "bridge"
    OVERLAY = "overlay"
    HOST = "host"
    NULL = "null"


@dataclass
class Network:
    id: str  # 64 hex characters, like Docker's
    name: str
    driver: Driver
    bridge: BridgeOptions | None  # None for host and null; overlay: its local bridge
    subnets: list[Subnet] = field(default_factory=list)
    ipv4: bool = True
    ipv6: bool = False
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)  # as given, for inspect
    predefined: bool = False  # bridge, host, none: cannot be removed
    created: datetime = field(default_factory=now)
    vni: int = 0  # overlay only: the VXLAN network identifier, allocated cluster-wide

    @property
    def overlay(self) -> bool:
        """Cluster-wide (Docker's "swarm" scope): its truth lives in the cluster store."""
        return self.driver is Driver.OVERLAY


class SandboxState(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass
class Endpoint:
    """A sandbox's attachment to one network: a veth pair and its addresses."""

    id: str
    network_id: str
    interface: str  # inside the sandbox: eth0, eth1, ...
    host_interface: str  # the veth end on the bridge
    mac_address: str
    ipv4: IPv4Interface | None = None
    ipv6: IPv6Interface | None = None
    static_ipv4: IPv4Address | None = None  # --ip: re-applied on start
    static_ipv6: IPv6Address | None = None  # --ip6
    aliases: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # target name -> alias
    link_local_ips: list[IPAddress] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)  # per-interface, IFNAME resolved
    gw_priority: int = 0


@dataclass
class PortBinding:
    """A port to publish (`-p [HOST_IP:][HOST_PORT:]PORT[/PROTO]`, or `-P` for exposed ones)."""

    container_port: int
    protocol: str = "tcp"  # tcp | udp
    host_ip: IPAddress | None = None  # None: the network's host_binding_ipv4, else every address
    host_port: int = 0  # 0: a free port is chosen each time the sandbox starts


@dataclass
class PublishedPort:
    """A port published now: traffic to host_ip:host_port goes to target:container_port."""

    container_port: int
    protocol: str
    host_ip: IPAddress | None
    host_port: int
    target: IPAddress
    bridge: str


@dataclass
class Sandbox:
    id: str
    name: str
    netns: str  # path of the network namespace
    attached: bool = False  # an existing namespace berth did not create and never deletes
    state: SandboxState = SandboxState.CREATED
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # by network id
    resolv_conf: str = ""  # the sandbox's resolver file, /etc/netns/NAME/resolv.conf
    dns: list[str] = field(default_factory=list)  # --dns: upstream servers of its own
    dns_search: list[str] = field(default_factory=list)  # --dns-search
    dns_options: list[str] = field(default_factory=list)  # --dns-option
    port_bindings: list[PortBinding] = field(default_factory=list)
    published: list[PublishedPort] = field(default_factory=list)  # while running
    created: datetime = field(default_factory=now)
    started: datetime | None = None
