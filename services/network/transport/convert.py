"""Between the domain's data and the berth.network.v1 messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import resources_pb2 as rpb
from berth.api.network.v1 import sandbox_service_pb2 as spb
from berth.network.domain.ipam import SubnetRequest
from berth.network.domain.model import Driver, Endpoint, Network, Sandbox, SandboxState
from berth.network.domain.requests import EndpointRequest
from berth.network.domain.state import NetworkState

DRIVERS = {
    Driver.BRIDGE: npb.DRIVER_BRIDGE,
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
STATES = {
    SandboxState.CREATED: spb.SANDBOX_STATE_CREATED,
    SandboxState.RUNNING: spb.SANDBOX_STATE_RUNNING,
    SandboxState.STOPPED: spb.SANDBOX_STATE_STOPPED,
}


def _time(moment) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


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
        scope=npb.SCOPE_LOCAL,
        driver=DRIVERS[network.driver],
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
            message.containers[sandbox.id].CopyFrom(
                npb.EndpointResource(
                    name=sandbox.name,
                    endpoint_id=endpoint.id,
                    mac_address=endpoint.mac_address,
                    ipv4_address=str(endpoint.ipv4 or ""),
                    ipv6_address=str(endpoint.ipv6 or ""),
                )
            )
    return message


def endpoint_message(endpoint: Endpoint, network: Network) -> rpb.Endpoint:
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
    )


def sandbox_message(sandbox: Sandbox, state: NetworkState) -> spb.Sandbox:
    return spb.Sandbox(
        name=sandbox.name,
        id=sandbox.id,
        state=STATES[sandbox.state],
        netns_path=sandbox.netns,
        attached=sandbox.attached,
        created_time=_time(sandbox.created),
        hostname=sandbox.hostname,
        labels=sandbox.labels,
        endpoints=[
            endpoint_message(e, state.networks[network_id])
            for network_id, e in sandbox.endpoints.items()
        ],
    )
