"""The agent's whole state: networks, sandboxes and IPAM, with lookups and a JSON codec.

Lookups accept a name, a full id or an unambiguous id prefix, as Docker's do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from ipaddress import ip_address, ip_interface, ip_network
from typing import Any, TypeVar

from berth.common.errors import FailedPrecondition, NotFound
from berth.network.domain.ipam import Ipam
from berth.network.domain.model import (
    BridgeOptions,
    Driver,
    Endpoint,
    IPAddress,
    Network,
    PortBinding,
    PublishedPort,
    Sandbox,
    SandboxState,
    Subnet,
)
from berth.network.domain.overlay import ClusterEndpoint

Named = TypeVar("Named", Network, Sandbox)


class NetworkState:
    def __init__(
        self,
        networks: Iterable[Network] = (),
        sandboxes: Iterable[Sandbox] = (),
        ipam: Ipam | None = None,
    ) -> None:
        self.networks = {n.id: n for n in networks}
        self.sandboxes = {s.id: s for s in sandboxes}
        self.ipam = ipam or Ipam()
        # Overlay networks: the endpoints other hosts have on them, by network id.
        self.remote: dict[str, list[ClusterEndpoint]] = {}

    def network(self, ref: str) -> Network:
        return _find(self.networks.values(), ref, "network")

    def sandbox(self, ref: str) -> Sandbox:
        return _find(self.sandboxes.values(), ref, "sandbox")

    def network_named(self, name: str) -> Network | None:
        return next((n for n in self.networks.values() if n.name == name), None)

    def sandbox_named(self, name: str) -> Sandbox | None:
        return next((s for s in self.sandboxes.values() if s.name == name), None)

    def endpoints_on(self, network_id: str) -> list[tuple[Sandbox, Endpoint]]:
        return [
            (s, s.endpoints[network_id])
            for s in self.sandboxes.values()
            if network_id in s.endpoints
        ]

    def running_endpoints_on(self, network_id: str) -> list[tuple[Sandbox, Endpoint]]:
        """The endpoints that are plumbed now (a running sandbox's, with addresses)."""
        return [
            (s, e)
            for s, e in self.endpoints_on(network_id)
            if s.state is SandboxState.RUNNING and (e.ipv4 is not None or e.ipv6 is not None)
        ]

    def reconcile_ipam(self) -> None:
        """Make the IPAM agree with the networks and endpoints, which are the truth: a
        network's leftover reservation is dropped, an address recorded for a call that
        never completed is freed, and an address an endpoint holds is marked taken."""
        for network_id in set(self.ipam.network_ids()) - set(self.networks):
            self.ipam.remove_network(network_id)
        held: dict[str, set[IPAddress]] = {}
        for sandbox in self.sandboxes.values():
            for endpoint in sandbox.endpoints.values():
                for interface in (endpoint.ipv4, endpoint.ipv6):
                    if interface is not None:
                        held.setdefault(endpoint.network_id, set()).add(interface.ip)
        for network_id in self.ipam.network_ids():
            wanted = held.get(network_id, set())
            for address in self.ipam.in_use(network_id) - wanted:
                self.ipam.release(network_id, address)
            for address in wanted - self.ipam.in_use(network_id):
                self.ipam.allocate(network_id, address.version, address)


def _find(items: Iterable[Named], ref: str, what: str) -> Named:
    candidates = list(items)
    for item in candidates:
        if ref in (item.name, item.id):
            return item
    by_prefix = [i for i in candidates if ref and i.id.startswith(ref)]
    if len(by_prefix) == 1:
        return by_prefix[0]
    if len(by_prefix) > 1:
        raise FailedPrecondition(
            f"{what} id prefix {ref!r} is ambiguous", reason="AMBIGUOUS_ID", metadata={what: ref}
        )
    raise NotFound(
        f"{what} {ref} not found", reason=f"{what.upper()}_NOT_FOUND", metadata={what: ref}
    )


def encode(value: Any) -> Any:
    """Dataclasses to dicts; addresses, enums and times to strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _optional(value: str | None, parse: Any) -> Any:
    return None if value is None else parse(value)


def decode_network(data: dict[str, Any]) -> Network:
    bridge = data["bridge"]
    return Network(
        id=data["id"],
        name=data["name"],
        driver=Driver(data["driver"]),
        bridge=None
        if bridge is None
        else BridgeOptions(
            **{**bridge, "host_binding_ipv4": ip_address(bridge["host_binding_ipv4"])}
        ),
        subnets=[
            Subnet(
                subnet=ip_network(s["subnet"]),
                gateway=ip_address(s["gateway"]),
                ip_range=_optional(s["ip_range"], ip_network),
                aux_addresses={k: ip_address(v) for k, v in s["aux_addresses"].items()},
            )
            for s in data["subnets"]
        ],
        ipv4=data["ipv4"],
        ipv6=data["ipv6"],
        internal=data["internal"],
        attachable=data["attachable"],
        labels=data["labels"],
        options=data["options"],
        predefined=data["predefined"],
        created=datetime.fromisoformat(data["created"]),
        vni=data.get("vni", 0),
    )


def _endpoint(data: dict[str, Any]) -> Endpoint:
    return Endpoint(
        id=data["id"],
        network_id=data["network_id"],
        interface=data["interface"],
        host_interface=data["host_interface"],
        mac_address=data["mac_address"],
        ipv4=_optional(data["ipv4"], ip_interface),
        ipv6=_optional(data["ipv6"], ip_interface),
        static_ipv4=_optional(data["static_ipv4"], ip_address),
        static_ipv6=_optional(data["static_ipv6"], ip_address),
        aliases=data["aliases"],
        links=data["links"],
        link_local_ips=[ip_address(a) for a in data["link_local_ips"]],
        sysctls=data["sysctls"],
        gw_priority=data["gw_priority"],
    )


def decode_sandbox(data: dict[str, Any]) -> Sandbox:
    return Sandbox(
        id=data["id"],
        name=data["name"],
        netns=data["netns"],
        attached=data["attached"],
        state=SandboxState(data["state"]),
        hostname=data["hostname"],
        labels=data["labels"],
        endpoints={k: _endpoint(v) for k, v in data["endpoints"].items()},
        resolv_conf=data["resolv_conf"],
        dns=data.get("dns", []),
        dns_search=data.get("dns_search", []),
        dns_options=data.get("dns_options", []),
        port_bindings=[
            PortBinding(
                container_port=b["container_port"],
                protocol=b["protocol"],
                host_ip=_optional(b["host_ip"], ip_address),
                host_port=b["host_port"],
            )
            for b in data["port_bindings"]
        ],
        published=[
            PublishedPort(
                container_port=p["container_port"],
                protocol=p["protocol"],
                host_ip=_optional(p["host_ip"], ip_address),
                host_port=p["host_port"],
                target=ip_address(p["target"]),
                bridge=p["bridge"],
            )
            for p in data["published"]
        ],
        created=datetime.fromisoformat(data["created"]),
        started=_optional(data["started"], datetime.fromisoformat),
    )
