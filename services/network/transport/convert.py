"""Between the domain's data and the berth.network.v1 messages."""

from __future__ import annotations

from ipaddress import ip_address

from google.protobuf.timestamp_pb2 import Timestamp

from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import resources_pb2 as rpb
from berth.api.network.v1 import sandbox_service_pb2 as spb
from berth.common.errors import FieldViolation, InvalidArgument
from berth.network.domain.ipam import SubnetRequest
from berth.network.domain.model import (
    Driver,
    Endpoint,
    IPAddress,
    Network,
    PortBinding,
    PublishedPort,
    Sandbox,
    SandboxState,
)
from berth.network.domain.names import dns_names
from berth.network.domain.overlay import ClusterEndpoint
from berth.network.domain.requests import EndpointRequest
from berth.network.domain.state import NetworkState

DRIVERS = {
    Driver.BRIDGE: npb.DRIVER_BRIDGE,
    Driver.OVERLAY: npb.DRIVER_OVERLAY,
    Driver.HOST: npb.DRIVER_HOST,
    Driver.NULL: npb.DRIVER_NULL,
}
DRIVER_NAMES = {
    npb.DRIVER_UNSPECIFIED: "bridge",
    npb.DRIVER_BRIDGE: "bridge",
    npb.DRIVER_OVERLAY: "overlay",
    npb.DRIVER_HOST: "host",
    npb.DRIVER_NULL: "null",
}
SCOPE_NAMES = {npb.SCOPE_LOCAL: "local", npb.SCOPE_GLOBAL: "global"}
PROTOCOLS = {"tcp": spb.PROTOCOL_TCP, "udp": spb.PROTOCOL_UDP}
PROTOCOL_NAMES = {spb.PROTOCOL_TCP: "tcp", spb.PROTOCOL_UDP: "udp"}
STATES = {
    SandboxState.CREATED: spb.SANDBOX_STATE_CREATED,
    SandboxState.RUNNING: spb.SANDBOX_STATE_RUNNING,
    SandboxState.STOPPED: spb.SANDBOX_STATE_STOPPED,
}


def _time(moment) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def port_bindings(request: spb.CreateSandboxRequest) -> list[PortBinding]:
    """-p bindings, plus -P: every exposed port on a free host port."""
    bindings = [
        PortBinding(
            container_port=b.container_port,
            protocol=PROTOCOL_NAMES.get(b.protocol, "tcp"),
            host_ip=_ip(b.host_ip, f"port_bindings[{i}].host_ip"),
            host_port=b.host_port,
        )
        for i, b in enumerate(request.port_bindings)
    ]
    if request.publish_all:
        bindings += [
            PortBinding(
                container_port=e.container_port, protocol=PROTOCOL_NAMES.get(e.protocol, "tcp")
            )
            for e in request.exposed_ports
        ]
    return bindings


def _ip(text: str, field: str) -> IPAddress | None:
    if not text or text in ("0.0.0.0", "::"):
        return None
    try:
        return ip_address(text)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, f"invalid IP address {text!r}")]) from None


def published_message(port: PublishedPort) -> spb.PortBinding:
    return spb.PortBinding(
        host_ip=str(port.host_ip or "0.0.0.0"),
        host_port=port.host_port,
        container_port=port.container_port,
        protocol=PROTOCOLS[port.protocol],
    )


def binding_message(binding: PortBinding) -> spb.PortBinding:
    return spb.PortBinding(
        host_ip=str(binding.host_ip or ""),
        host_port=binding.host_port,
        container_port=binding.container_port,
        protocol=PROTOCOLS[binding.protocol],
    )


def subnet_requests(ipam: npb.IPAM) -> list[SubnetRequest]:
    return [
        SubnetRequest(
            subnet=c.subnet,
            gateway=c.gateway,
            ip_range=c.ip_range,
            aux_addresses=dict(c.aux_addresses),
        )
        for c in ipam.config
    ]


def endpoint_request(config: rpb.EndpointConfig) -> EndpointRequest:
    return EndpointRequest(
        ip_address=config.ip_address,
        ipv6_address=config.ipv6_address,
        aliases=list(config.aliases),
        links={link.name: link.alias for link in config.links},
        link_local_ips=list(config.link_local_ips),
        driver_opts=dict(config.driver_opts),
        gw_priority=config.gw_priority,
    )


def network_message(network: Network, state: NetworkState) -> npb.Network:
    message = npb.Network(
        name=network.name,
        id=network.id,
        created_time=_time(network.created),
        scope=npb.SCOPE_GLOBAL if network.overlay else npb.SCOPE_LOCAL,
        driver=DRIVERS[network.driver],
        vni=network.vni,
        enable_ipv4=network.ipv4,
        enable_ipv6=network.ipv6,
        internal=network.internal,
        attachable=network.attachable,
        options=network.options,
        labels=network.labels,
        ipam=npb.IPAM(
            driver="default",
            config=[
                npb.IPAMConfig(
                    subnet=str(s.subnet),
                    gateway=str(s.gateway),
                    ip_range=str(s.ip_range) if s.ip_range else "",
                    aux_addresses={k: str(v) for k, v in s.aux_addresses.items()},
                )
                for s in network.subnets
            ],
        ),
    )
    for sandbox, endpoint in state.endpoints_on(network.id):
        if sandbox.state is SandboxState.RUNNING:
            message.containers[sandbox.id].CopyFrom(_resource(sandbox.name, endpoint))
    return message


def _resource(sandbox: str, endpoint: Endpoint | ClusterEndpoint) -> npb.EndpointResource:
    return npb.EndpointResource(
        name=sandbox,
        endpoint_id=endpoint.id,
        mac_address=endpoint.mac_address,
        ipv4_address=str(endpoint.ipv4 or ""),
        ipv6_address=str(endpoint.ipv6 or ""),
    )


def check_scope(scope: int, driver: str) -> None:
    """`--scope` must agree with the driver: global for overlay, local for the others."""
    wanted = npb.SCOPE_GLOBAL if driver == "overlay" else npb.SCOPE_LOCAL
    if scope not in (npb.SCOPE_UNSPECIFIED, wanted):
        raise InvalidArgument(
            [
                FieldViolation(
                    "scope",
                    f"the {driver} driver makes {SCOPE_NAMES[wanted]}-scoped networks only",
                )
            ]
        )


def peer_messages(peers: dict[str, list[ClusterEndpoint]], *, verbose: bool) -> list[npb.Peer]:
    messages = []
    for host, endpoints in sorted(peers.items()):
        message = npb.Peer(name=host, ip_address=endpoints[0].underlay_address)
        if verbose:
            for endpoint in endpoints:
                message.containers[endpoint.sandbox_id].CopyFrom(
                    _resource(endpoint.sandbox, endpoint)
                )
        messages.append(message)
    return messages


def endpoint_message(endpoint: Endpoint, network: Network, sandbox: Sandbox) -> rpb.Endpoint:
    gateway4 = next((s.gateway for s in network.subnets if s.subnet.version == 4), None)
    gateway6 = next((s.gateway for s in network.subnets if s.subnet.version == 6), None)
    return rpb.Endpoint(
        network=network.name,
        network_id=network.id,
        endpoint_id=endpoint.id,
        interface_name=endpoint.interface,
        mac_address=endpoint.mac_address,
        ipv4_address=str(endpoint.ipv4 or ""),
        ipv6_address=str(endpoint.ipv6 or ""),
        gateway=str(gateway4 or "") if endpoint.ipv4 else "",
        ipv6_gateway=str(gateway6 or "") if endpoint.ipv6 else "",
        aliases=endpoint.aliases,
        links=[rpb.Link(name=t, alias=a) for t, a in endpoint.links.items()],
        link_local_ips=[str(a) for a in endpoint.link_local_ips],
        gw_priority=endpoint.gw_priority,
        static_ip_address=str(endpoint.static_ipv4 or ""),
        static_ipv6_address=str(endpoint.static_ipv6 or ""),
        dns_names=dns_names(sandbox, network),
    )


def sandbox_message(sandbox: Sandbox, state: NetworkState) -> spb.Sandbox:
    message = spb.Sandbox(
        name=sandbox.name,
        id=sandbox.id,
        state=STATES[sandbox.state],
        netns_path=sandbox.netns,
        attached=sandbox.attached,
        created_time=_time(sandbox.created),
        hostname=sandbox.hostname,
        resolv_conf_path=sandbox.resolv_conf,
        dns=sandbox.dns,
        dns_search=sandbox.dns_search,
        dns_options=sandbox.dns_options,
        labels=sandbox.labels,
        endpoints=[
            endpoint_message(e, state.networks[network_id], sandbox)
            for network_id, e in sandbox.endpoints.items()
        ],
        port_bindings=[binding_message(b) for b in sandbox.port_bindings],
        ports=[published_message(p) for p in sandbox.published],
    )
    if sandbox.started is not None:
        message.started_time.CopyFrom(_time(sandbox.started))
    return message
