"""The rules of overlay networks: VNIs, MTU, device names, and what a host's VXLAN device
must know about the endpoints on other hosts.

An overlay network spans the hosts of a cluster. Each host with an endpoint on it has a
bridge and a VXLAN device; every endpoint on another host is one permanent forwarding
entry (its MAC behind that host's underlay address) and one neighbour entry (its
address at its MAC), so nothing is flooded and nothing is learnt from traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Interface, IPv6Interface, ip_interface, ip_network
from typing import Any

from berth.common.errors import AlreadyExists, FieldViolation, InvalidArgument, ResourceExhausted
from berth.network.domain.model import IPInterface, Network

VNI_FIRST = 4096  # as Docker's overlay driver: lower ones are left to hand-made VXLANs
VNI_LAST = 2**24 - 1
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
UNDERLAY_MTU = 1500
DEFAULT_MTU = UNDERLAY_MTU - VXLAN_OVERHEAD
VXLAN_PORT = 4789

VNI_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
MTU_OPTION = "com.docker.network.driver.mtu"
OVERLAY_OPTIONS = (MTU_OPTION, VNI_OPTION)
DEVICE_ID_CHARS = 12  # "bo-" or "vx-" + 12 = 15, the longest interface name


@dataclass(frozen=True)
class OverlayOptions:
    mtu: int = DEFAULT_MTU
    vni: int | None = None  # None: the cluster picks one


def overlay_options(options: Mapping[str, str], field: str = "options") -> OverlayOptions:
    """The overlay driver's `-o` options, validated."""
    violations = []
    mtu, vni = DEFAULT_MTU, None
    for key, value in options.items():
        path = f'{field}["{key}"]'
        if key == MTU_OPTION:
            mtu, problem = _parse_number(value, 68, 65535 - VXLAN_OVERHEAD, "MTU")
            mtu = mtu or DEFAULT_MTU
        elif key == VNI_OPTION:
            vni, problem = _parse_number(value, 1, VNI_LAST, "VXLAN id")
        else:
            problem = f"unknown overlay option; known options: {', '.join(OVERLAY_OPTIONS)}"
        if problem:
            violations.append(FieldViolation(path, f"option {key}: {problem}"))
    if violations:
        raise InvalidArgument(violations, reason="INVALID_OPTION")
    return OverlayOptions(mtu=mtu, vni=vni)


def _parse_number(value: str, low: int, high: int, what: str) -> tuple[int, str]:
    if value.isascii() and value.isdigit() and len(value) <= 9:
        number = int(value)
        if number == 0 and what == "MTU":
            return 0, ""
        if low <= number <= high:
            return number, ""
    return 0, f"{what} must be a whole number from {low} to {high}, got {value!r}"


def choose_vni(taken: Iterable[int], wanted: int | None) -> int:
    """The VNI asked for if free, else the lowest free one from VNI_FIRST."""
    used = set(taken)
    if wanted is not None:
        if wanted in used:
            raise AlreadyExists(
                f"VXLAN id {wanted} is used by another overlay network",
                reason="VNI_IN_USE",
                metadata={"vni": str(wanted)},
            )
        return wanted
    vni = VNI_FIRST
    while vni in used:
        vni += 1
    if vni > VNI_LAST:
        raise ResourceExhausted("no free VXLAN id left", reason="VNI_EXHAUSTED")
    return vni


def bridge_name(network_id: str) -> str:
    return f"bo-{network_id[:DEVICE_ID_CHARS]}"


def vxlan_name(network_id: str) -> str:
    return f"vx-{network_id[:DEVICE_ID_CHARS]}"


# ---- the cluster's records ---------------------------------------------------------------


@dataclass(frozen=True)
class HostRecord:
    """A host as it registers itself in the cluster (renewed by its heartbeat)."""

    name: str
    underlay_address: str
    agent_address: str
    heartbeat_time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "underlay_address": self.underlay_address,
            "agent_address": self.agent_address,
            "heartbeat_time": self.heartbeat_time.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostRecord:
        return cls(
            name=data["name"],
            underlay_address=data["underlay_address"],
            agent_address=data.get("agent_address", ""),
            heartbeat_time=datetime.fromisoformat(data["heartbeat_time"]),
        )


@dataclass(frozen=True)
class ClusterEndpoint:
    """An endpoint as every host of the cluster sees it: whose, where, and its names."""

    id: str
    network_id: str
    host: str
    underlay_address: str
    sandbox: str
    sandbox_id: str
    mac_address: str
    ipv4: IPv4Interface | None = None
    ipv6: IPv6Interface | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def addresses(self) -> list[IPInterface]:
        return [a for a in (self.ipv4, self.ipv6) if a is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "network_id": self.network_id,
            "host": self.host,
            "underlay_address": self.underlay_address,
            "sandbox": self.sandbox,
            "sandbox_id": self.sandbox_id,
            "mac_address": self.mac_address,
            "ipv4": None if self.ipv4 is None else str(self.ipv4),
            "ipv6": None if self.ipv6 is None else str(self.ipv6),
            "aliases": list(self.aliases),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterEndpoint:
        return cls(
            id=data["id"],
            network_id=data["network_id"],
            host=data["host"],
            underlay_address=data["underlay_address"],
            sandbox=data["sandbox"],
            sandbox_id=data["sandbox_id"],
            mac_address=data["mac_address"],
            ipv4=None if data.get("ipv4") is None else ip_interface(data["ipv4"]),  # type: ignore[arg-type]
            ipv6=None if data.get("ipv6") is None else ip_interface(data["ipv6"]),  # type: ignore[arg-type]
            aliases=tuple(data.get("aliases", ())),
        )


def claim_owner(host: str, endpoint_id: str) -> str:
    """What an address claim records: who holds the address."""
    return f"{host}/{endpoint_id}"


def claim_host(owner: str) -> str:
    return owner.partition("/")[0]


# ---- what a host's VXLAN device must hold ------------------------------------------------


@dataclass(frozen=True, order=True)
class Forwarding:
    """A permanent FDB entry: frames for `mac` go to the host at `underlay_address`."""

    mac_address: str
    underlay_address: str


@dataclass(frozen=True, order=True)
class Neighbour:
    """A permanent neighbour entry: `address` is at `mac_address` (answered by proxy)."""

    address: str
    mac_address: str


@dataclass(frozen=True)
class Peers:
    forwarding: frozenset[Forwarding] = frozenset()
    neighbours: frozenset[Neighbour] = frozenset()


def peers_of(remote: Iterable[ClusterEndpoint]) -> Peers:
    """The entries a host's VXLAN device needs for the endpoints on other hosts."""
    endpoints = list(remote)
    return Peers(
        forwarding=frozenset(Forwarding(e.mac_address, e.underlay_address) for e in endpoints),
        neighbours=frozenset(
            Neighbour(str(a.ip), e.mac_address) for e in endpoints for a in e.addresses()
        ),
    )


def remote_endpoints(
    endpoints: Iterable[ClusterEndpoint], local_host: str
) -> list[ClusterEndpoint]:
    return [e for e in endpoints if e.host != local_host]


def check_unique(draft: Network, existing: Iterable[Mapping[str, Any]]) -> None:
    """A new overlay network against the cluster's (as stored): name and subnets free."""
    for other in existing:
        if other["name"] == draft.name:
            raise AlreadyExists(
                f"network with name {draft.name} already exists in the cluster",
                reason="NETWORK_EXISTS",
                metadata={"network": draft.name},
            )
        for subnet in draft.subnets:
            for theirs in other["subnets"]:
                if subnet.subnet.overlaps(ip_network(theirs["subnet"])):
                    raise AlreadyExists(
                        f"subnet {subnet.subnet} overlaps {theirs['subnet']} of overlay "
                        f"network {other['name']}",
                        reason="SUBNET_OVERLAPS",
                        metadata={"subnet": str(subnet.subnet), "network": other["name"]},
                    )
