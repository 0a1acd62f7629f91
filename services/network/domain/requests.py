"""What callers ask of the agent, as plain data (the transport builds these from protos)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from berth.network.domain.ipam import SubnetRequest
from berth.network.domain.model import BridgeOptions, Driver, Network, PortBinding, Subnet


@dataclass(frozen=True)
class NetworkRequest:
    name: str
    driver: str = "bridge"
    subnets: Sequence[SubnetRequest] = ()
    ipv4: bool = True
    ipv6: bool = False
    internal: bool = False
    attachable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)

    def network(
        self,
        *,
        network_id: str,
        name: str,
        driver: Driver,
        bridge: BridgeOptions,
        subnets: list[Subnet],
        labels: dict[str, str],
        predefined: bool = False,
    ) -> Network:
        """The network this request makes, with what the driver validated and planned."""
        return Network(
            id=network_id,
            name=name,
            driver=driver,
            bridge=bridge,
            subnets=subnets,
            ipv4=self.ipv4,
            ipv6=self.ipv6,
            internal=self.internal,
            attachable=self.attachable,
            labels=labels,
            options=dict(self.options),
            predefined=predefined,
        )


@dataclass(frozen=True)
class EndpointRequest:
    """`network connect` options (strings as given; the agent validates them)."""

    ip_address: str = ""
    ipv6_address: str = ""
    aliases: Sequence[str] = ()
    links: Mapping[str, str] = field(default_factory=dict)  # target -> alias
    link_local_ips: Sequence[str] = ()
    driver_opts: Mapping[str, str] = field(default_factory=dict)
    gw_priority: int = 0


@dataclass(frozen=True)
class SandboxRequest:
    name: str
    networks: Sequence[tuple[str, EndpointRequest]] = ()  # empty: the default bridge
    netns_path: str = ""  # attach an existing namespace instead of creating one
    hostname: str = ""
    dns: Sequence[str] = ()
    dns_search: Sequence[str] = ()
    dns_options: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    port_bindings: Sequence[PortBinding] = ()  # -p, and -P's exposed ports with host_port 0
    start: bool = False
