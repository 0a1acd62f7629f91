"""Overlay networks are cluster-wide objects: every host lists the same one, its name and
VNI are unique in the cluster, `rm` waits until no host has endpoints on it; the kernel
side (MTU, VXLAN device, permanent FDB and neighbour entries) is what the issue asks."""

from __future__ import annotations

import random

import grpc
import pytest

from berth.api.network.v1 import network_service_pb2 as npb
from tests.integration.overlay.probes import (
    REACH_S,
    bare,
    bridge_device,
    eventually,
    needs_cluster,
    new_subnet,
    remote_entries,
    vxlan_device,
)
from tests.support.cluster import (
    MTU_OPTION,
    VNI_OPTION,
    VXLAN_PORT,
    Cluster,
    ClusterHost,
    error_info,
)

pytestmark = [needs_cluster, pytest.mark.timeout(180)]


def listed_everywhere(cluster: Cluster, name: str) -> list[npb.Network]:
    """The network as each host lists it (fails until every host does)."""
    found = []
    for host in cluster.hosts:
        match = [n for n in host.client().network_list() if n.name == name]
        assert match, f"{host.name} does not list {name}"
        found.append(match[0])
    return found


def test_every_host_lists_the_network_with_one_id_and_vni(cluster: Cluster, t: str) -> None:
    _, h2, h3 = cluster.hosts
    created = h2.client().overlay_network(f"ov-{t}", new_subnet())
    assert created.scope == npb.SCOPE_GLOBAL
    assert created.driver == npb.DRIVER_OVERLAY
    assert created.vni >= 4096, created
    assert created.options[VNI_OPTION] == str(created.vni)
    listed = eventually(lambda: listed_everywhere(cluster, f"ov-{t}"), REACH_S, "every host")
    for host, network in zip(cluster.hosts, listed, strict=True):
        assert (network.id, network.vni, network.scope, network.driver) == (
            created.id,
            created.vni,
            npb.SCOPE_GLOBAL,
            npb.DRIVER_OVERLAY,
        ), host.name
        inspected = host.client().inspect_network(created.id)
        assert inspected.ipam.config[0].subnet == created.ipam.config[0].subnet, host.name
    second = h3.client().overlay_network(f"ov2-{t}", new_subnet())
    assert second.vni != created.vni, "each network has its own VNI"
    assert cluster.redis_hash("berth:network-names").get(f"ov-{t}") == created.id
    assert cluster.redis_hash("berth:vnis").get(str(created.vni)) == created.id


def test_a_vni_can_be_asked_for_and_is_unique(cluster: Cluster, t: str) -> None:
    h1, h2, _ = cluster.hosts
    vni = random.randrange(100_000, 200_000)
    network = h1.client().overlay_network(f"ov-{t}", new_subnet(), options={VNI_OPTION: str(vni)})
    assert network.vni == vni
    with pytest.raises(grpc.RpcError) as refused:
        h2.client().overlay_network(f"ov2-{t}", new_subnet(), options={VNI_OPTION: str(vni)})
    assert refused.value.code() in (
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    ), refused.value


def test_the_name_is_unique_cluster_wide(cluster: Cluster, t: str) -> None:
    h1, h2, h3 = cluster.hosts
    h1.client().overlay_network(f"ov-{t}", new_subnet())
    for host in (h2, h3):
        with pytest.raises(grpc.RpcError) as refused:
            host.client().overlay_network(f"ov-{t}", new_subnet())
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS, (host.name, refused.value)
    assert len([n for n in h1.client().network_list() if n.name == f"ov-{t}"]) == 1


def test_rm_from_another_host_waits_until_the_endpoints_leave(cluster: Cluster, t: str) -> None:
    h1, h2, h3 = cluster.hosts
    network = h1.client().overlay_network(f"ov-{t}", new_subnet())
    h2.client().sandbox_on(f"b-{t}", f"ov-{t}")
    eventually(lambda: listed_everywhere(cluster, f"ov-{t}"), REACH_S, "every host")
    with pytest.raises(grpc.RpcError) as refused:
        h3.client().remove_networks(f"ov-{t}")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value
    info = error_info(refused.value)
    assert info is not None and info.reason == "NETWORK_IN_USE", info
    assert f"ov-{t}" in h3.client().network_names(), "a refused rm removes nothing"

    h2.client().detach(f"b-{t}", f"ov-{t}")
    h3.client().remove_networks(f"ov-{t}")

    def gone_everywhere() -> None:
        for host in cluster.hosts:
            assert f"ov-{t}" not in host.client().network_names(), f"{host.name} lists it"
            assert host.link(vxlan_device(network)) is None, f"{host.name} keeps its VXLAN"
            assert host.link(bridge_device(network)) is None, f"{host.name} keeps its bridge"

    eventually(gone_everywhere, REACH_S, "every host to forget the network")
    assert f"ov-{t}" not in cluster.redis_hash("berth:network-names")
    assert network.id not in cluster.redis_hash("berth:networks")


def sandbox_mtu(host: ClusterHost, sandbox: str, network_id: str) -> int:
    endpoint = host.client().endpoint(sandbox, network_id)
    assert endpoint is not None
    link = host.sandbox_link(sandbox, endpoint.interface_name)
    assert link is not None, f"no {endpoint.interface_name} in {sandbox}"
    return int(link["mtu"])


def test_the_mtu_leaves_room_for_vxlan_unless_set(cluster: Cluster, t: str) -> None:
    h1, h2, _ = cluster.hosts
    default = h1.client().overlay_network(f"ov-{t}", new_subnet())
    small = h1.client().overlay_network(f"small-{t}", new_subnet(), options={MTU_OPTION: "1400"})
    h2.client().sandbox_on(f"b-{t}", f"ov-{t}")
    h2.client().sandbox_on(f"c-{t}", f"small-{t}")
    assert sandbox_mtu(h2, f"b-{t}", default.id) == 1450
    assert sandbox_mtu(h2, f"c-{t}", small.id) == 1400
    assert small.options[MTU_OPTION] == "1400"


def bridge_addresses(host: ClusterHost, network: npb.Network) -> list[str]:
    links = host.ip_json("addr", "show", "dev", bridge_device(network))
    return [info["local"] for link in links for info in link.get("addr_info", [])]


def test_vxlan_device_and_permanent_remote_entries_on_every_host(cluster: Cluster, t: str) -> None:
    """Each host with an endpoint has the VXLAN device (VNI, port 4789, learning off, its
    own underlay address) and, for every remote endpoint, a permanent FDB entry towards
    that endpoint's host and a permanent neighbour entry; nothing for its own endpoints."""
    network = cluster.hosts[0].client().overlay_network(f"ov-{t}", new_subnet())
    endpoints = {
        host.name: host.client().sandbox_on(f"s{host.index}-{t}", f"ov-{t}")
        for host in cluster.hosts
    }
    for host in cluster.hosts:
        link = host.link(vxlan_device(network))
        assert link is not None, f"{host.name} has no {vxlan_device(network)}"
        data = link["linkinfo"]["info_data"]
        assert data["id"] == network.vni, host.name
        assert data["port"] == VXLAN_PORT, host.name
        assert data["learning"] is False, host.name
        assert data.get("local") == host.address, host.name
        gateway = network.ipam.config[0].gateway
        assert gateway in bridge_addresses(host, network), f"{host.name}: bridge lacks {gateway}"

    def entries_right(host: ClusterHost) -> None:
        for owner in cluster.hosts:
            endpoint = endpoints[owner.name]
            fdb, neigh = remote_entries(
                host, network, endpoint.mac_address, bare(endpoint.ipv4_address)
            )
            if owner is host:
                assert fdb is None, f"{host.name}: its own endpoint on the VXLAN device: {fdb}"
                continue
            where = f"{host.name}, for {owner.name}'s endpoint"
            assert fdb is not None, f"{where}: no FDB entry"
            assert fdb.get("dst") == owner.address and fdb.get("state") == "permanent", (
                where,
                fdb,
            )
            assert neigh is not None, f"{where}: no neighbour entry"
            assert neigh.get("lladdr") == endpoint.mac_address, (where, neigh)
            assert "PERMANENT" in neigh.get("state", []), (where, neigh)

    for host in cluster.hosts:
        eventually(lambda host=host: entries_right(host), REACH_S, f"{host.name}'s entries")
    peers = cluster.hosts[0].client().inspect_network(f"ov-{t}").peers
    assert {(p.name, p.ip_address) for p in peers} == {(h.name, h.address) for h in cluster.hosts}
