"""The agent's state: lookups, the per-object codec, and IPAM reconciliation."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface

import pytest

from berth.common.errors import FailedPrecondition, NotFound
from berth.network.domain.ipam import Ipam, SubnetRequest
from berth.network.domain.model import (
    BridgeOptions,
    Driver,
    Endpoint,
    Network,
    PortBinding,
    PublishedPort,
    Sandbox,
    SandboxState,
)
from berth.network.domain.state import NetworkState, decode_network, decode_sandbox, encode


def network_with_ipam() -> tuple[Network, Ipam]:
    ipam = Ipam()
    subnets = ipam.plan([SubnetRequest(subnet="10.9.0.0/24")], ipv4=True, ipv6=False)
    network = Network(
        id="a1" * 32,
        name="web",
        driver=Driver.BRIDGE,
        bridge=BridgeOptions(bridge_name="br-web"),
        subnets=subnets,
    )
    ipam.add_network(network.id, subnets)
    return network, ipam


def sandbox_on(network: Network, name: str, address: str) -> Sandbox:
    endpoint = Endpoint(
        id="e" * 64,
        network_id=network.id,
        interface="eth0",
        host_interface="bv0123456789ab",
        mac_address="02:42:0a:09:00:05",
        ipv4=ip_interface(f"{address}/24"),
        static_ipv4=ip_address(address),
        aliases=["api"],
        links={"db": "database"},
        gw_priority=3,
    )
    return Sandbox(
        id=name.encode().hex().ljust(64, "0"),
        name=name,
        netns=f"/run/netns/{name}",
        state=SandboxState.RUNNING,
        endpoints={network.id: endpoint},
        port_bindings=[PortBinding(container_port=80, host_port=8080)],
        published=[PublishedPort(80, "tcp", None, 8080, ip_address(address), "br-web")],
    )


def test_networks_and_sandboxes_round_trip_through_json() -> None:
    network, _ = network_with_ipam()
    sandbox = sandbox_on(network, "api", "10.9.0.5")
    assert decode_network(encode(network)) == network
    assert decode_sandbox(encode(sandbox)) == sandbox


def test_lookup_by_name_id_and_unambiguous_prefix() -> None:
    network, ipam = network_with_ipam()
    other = Network(id="a2" * 32, name="db", driver=Driver.NULL, bridge=None)
    state = NetworkState([network, other], ipam=ipam)
    assert state.network("web") is network
    assert state.network(network.id) is network
    assert state.network("a1a1") is network
    with pytest.raises(FailedPrecondition):
        state.network("a")  # both ids start with "a"
    with pytest.raises(NotFound):
        state.network("nope")


def test_reconcile_frees_stray_addresses_and_marks_held_ones() -> None:
    network, ipam = network_with_ipam()
    stray = ipam.allocate(network.id, 4)  # a call that never completed
    state = NetworkState([network], [sandbox_on(network, "api", "10.9.0.5")], ipam)
    state.reconcile_ipam()
    assert ipam.in_use(network.id) == {ip_address("10.9.0.5")}
    assert stray.ip not in ipam.in_use(network.id)


def test_reconcile_drops_the_reservations_of_networks_that_are_gone() -> None:
    _, ipam = network_with_ipam()
    NetworkState([], [], ipam).reconcile_ipam()
    assert ipam.network_ids() == []
