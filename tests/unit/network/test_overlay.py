"""The rules of overlay networks: their options, VNIs, device names, the cluster's records,
what a VXLAN device must know of other hosts, and remote names and addresses."""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_network
from typing import Any

import pytest

from berth.common.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from berth.network.domain.ipam import Ipam, SubnetRequest
from berth.network.domain.model import Driver, IPAddress, Network, Subnet
from berth.network.domain.names import NameTable
from berth.network.domain.overlay import (
    DEFAULT_MTU,
    MTU_OPTION,
    VNI_FIRST,
    VNI_LAST,
    VNI_OPTION,
    ClusterEndpoint,
    Forwarding,
    HostRecord,
    Neighbour,
    OverlayOptions,
    bridge_name,
    check_unique,
    choose_vni,
    claim_host,
    claim_owner,
    overlay_options,
    peers_of,
    remote_endpoints,
    vxlan_name,
)
from tests.unit.network.dns_fixtures import join, network, sandbox

# ---- options -------------------------------------------------------------------------------


def violations(options: dict[str, str], field: str = "options") -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        overlay_options(options, field)
    assert caught.value.reason == "INVALID_OPTION"
    return {v.field: v.description for v in caught.value.violations}


def test_no_options_give_the_vxlan_mtu_and_no_vni() -> None:
    assert overlay_options({}) == OverlayOptions(mtu=1450, vni=None)
    assert DEFAULT_MTU == 1450


def test_the_mtu_and_vni_options_are_dockers() -> None:
    assert MTU_OPTION == "com.docker.network.driver.mtu"
    assert VNI_OPTION == "com.docker.network.driver.overlay.vxlanid_list"
    chosen = overlay_options({MTU_OPTION: "1400", VNI_OPTION: "5000"})
    assert chosen == OverlayOptions(mtu=1400, vni=5000)


def test_an_mtu_of_zero_means_the_default() -> None:
    assert overlay_options({MTU_OPTION: "0"}).mtu == DEFAULT_MTU


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (MTU_OPTION, "68"),
        (MTU_OPTION, "65485"),
        (VNI_OPTION, "1"),
        (VNI_OPTION, str(VNI_LAST)),
    ],
)
def test_the_bounds_are_accepted(key: str, value: str) -> None:
    chosen = overlay_options({key: value})
    assert (chosen.mtu if key == MTU_OPTION else chosen.vni) == int(value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (MTU_OPTION, "67"),
        (MTU_OPTION, "65486"),  # the VXLAN header must still fit in a 65535 underlay
        (MTU_OPTION, "-1"),
        (MTU_OPTION, "1e3"),
        (MTU_OPTION, ""),
        (MTU_OPTION, "١٤٠٠"),  # Arabic-Indic digits: str.isdigit, but not a number here
        (VNI_OPTION, "0"),
        (VNI_OPTION, str(VNI_LAST + 1)),
        (VNI_OPTION, "abc"),
        (VNI_OPTION, "4096,4097"),
        (VNI_OPTION, " 4096"),
    ],
)
def test_bad_values_are_refused_with_the_options_path(key: str, value: str) -> None:
    found = violations({key: value})
    assert list(found) == [f'options["{key}"]']
    assert key in found[f'options["{key}"]']
    assert repr(value) in found[f'options["{key}"]']


def test_an_unknown_option_is_refused_and_the_known_ones_are_named() -> None:
    found = violations({"com.docker.network.bridge.name": "br0"})
    description = found['options["com.docker.network.bridge.name"]']
    assert "unknown" in description
    assert MTU_OPTION in description and VNI_OPTION in description


def test_every_bad_option_is_reported_under_the_given_field() -> None:
    found = violations({MTU_OPTION: "9", VNI_OPTION: "x", "encrypted": ""}, field="network.options")
    assert set(found) == {
        f'network.options["{MTU_OPTION}"]',
        f'network.options["{VNI_OPTION}"]',
        'network.options["encrypted"]',
    }


# ---- VNIs and device names -----------------------------------------------------------------


def test_the_first_vni_is_4096() -> None:
    assert VNI_FIRST == 4096
    assert choose_vni([], None) == 4096


def test_the_lowest_free_vni_is_chosen() -> None:
    assert choose_vni([4096, 4097, 4099], None) == 4098
    assert choose_vni([4097, 100, 5000], None) == 4096
    assert choose_vni(iter([4096]), None) == 4097  # any iterable, read once


def test_a_requested_free_vni_is_given_even_below_4096() -> None:
    assert choose_vni([4096, 4097], 5000) == 5000
    assert choose_vni([4096], 42) == 42


def test_a_requested_vni_in_use_is_refused() -> None:
    with pytest.raises(AlreadyExists) as caught:
        choose_vni([4096, 5000], 5000)
    assert caught.value.reason == "VNI_IN_USE"
    assert caught.value.metadata == {"vni": "5000"}
    assert "5000" in caught.value.message


def test_device_names_fit_an_interface_name_and_differ() -> None:
    network_id = secrets.token_hex(32)
    bridge, vxlan = bridge_name(network_id), vxlan_name(network_id)
    assert bridge == f"bo-{network_id[:12]}"
    assert vxlan == f"vx-{network_id[:12]}"
    assert len(bridge) <= 15 and len(vxlan) <= 15
    assert bridge != vxlan


# ---- the cluster's records -----------------------------------------------------------------


def endpoint(
    sandbox_name: str,
    network_id: str,
    *,
    host: str = "h2",
    underlay: str = "10.71.0.2",
    mac: str = "02:42:0a:48:00:02",
    ipv4: str | None = "10.72.0.2/24",
    ipv6: str | None = None,
    aliases: tuple[str, ...] = (),
) -> ClusterEndpoint:
    return ClusterEndpoint(
        id=secrets.token_hex(32),
        network_id=network_id,
        host=host,
        underlay_address=underlay,
        sandbox=sandbox_name,
        sandbox_id=secrets.token_hex(32),
        mac_address=mac,
        ipv4=None if ipv4 is None else IPv4Interface(ipv4),
        ipv6=None if ipv6 is None else IPv6Interface(ipv6),
        aliases=aliases,
    )


def through_json(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


def test_a_host_record_round_trips_through_json() -> None:
    record = HostRecord("h1", "10.71.0.1", "10.71.0.1:7001", datetime(2025, 5, 1, 12, tzinfo=UTC))
    data = through_json(record.to_dict())
    assert data == {
        "name": "h1",
        "underlay_address": "10.71.0.1",
        "agent_address": "10.71.0.1:7001",
        "heartbeat_time": "2025-05-01T12:00:00+00:00",
    }
    assert HostRecord.from_dict(data) == record


def test_a_host_record_keeps_its_offset_and_may_lack_an_agent_address() -> None:
    when = datetime(2025, 5, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    data = HostRecord("h2", "10.71.0.2", "", when).to_dict()
    del data["agent_address"]
    restored = HostRecord.from_dict(through_json(data))
    assert restored.heartbeat_time == when and restored.heartbeat_time.utcoffset() is not None
    assert restored.agent_address == ""


def test_a_cluster_endpoint_round_trips_through_json() -> None:
    ep = endpoint("web", "n" * 64, ipv6="fd00:72::2/64", aliases=("www", "front"))
    data = through_json(ep.to_dict())
    assert set(data) == {
        "id",
        "network_id",
        "host",
        "underlay_address",
        "sandbox",
        "sandbox_id",
        "mac_address",
        "ipv4",
        "ipv6",
        "aliases",
    }
    assert data["ipv4"] == "10.72.0.2/24" and data["ipv6"] == "fd00:72::2/64"
    assert data["aliases"] == ["www", "front"]
    assert ClusterEndpoint.from_dict(data) == ep
    assert ep.addresses() == [IPv4Interface("10.72.0.2/24"), IPv6Interface("fd00:72::2/64")]


def test_a_cluster_endpoint_without_addresses_round_trips_with_nulls() -> None:
    ep = endpoint("idle", "n" * 64, ipv4=None)
    data = through_json(ep.to_dict())
    assert data["ipv4"] is None and data["ipv6"] is None and data["aliases"] == []
    assert ClusterEndpoint.from_dict(data) == ep
    assert ep.addresses() == []


def test_a_claim_names_its_host_and_endpoint() -> None:
    owner = claim_owner("h1", "e" * 64)
    assert owner == "h1/" + "e" * 64
    assert claim_host(owner) == "h1"


# ---- what a VXLAN device must hold ---------------------------------------------------------


def test_peers_are_one_forwarding_entry_per_mac_and_a_neighbour_per_address() -> None:
    nid = "n" * 64
    a = endpoint("a", nid, host="h2", underlay="10.71.0.2", mac="02:00:00:00:00:0a")
    b = endpoint(
        "b",
        nid,
        host="h3",
        underlay="10.71.0.3",
        mac="02:00:00:00:00:0b",
        ipv4="10.72.0.3/24",
        ipv6="fd00:72::3/64",
    )
    c = endpoint("c", nid, host="h3", underlay="10.71.0.3", mac="02:00:00:00:00:0c", ipv4=None)
    peers = peers_of([a, b, c])
    assert peers.forwarding == {
        Forwarding("02:00:00:00:00:0a", "10.71.0.2"),
        Forwarding("02:00:00:00:00:0b", "10.71.0.3"),
        Forwarding("02:00:00:00:00:0c", "10.71.0.3"),
    }
    assert peers.neighbours == {
        Neighbour("10.72.0.2", "02:00:00:00:00:0a"),
        Neighbour("10.72.0.3", "02:00:00:00:00:0b"),
        Neighbour("fd00:72::3", "02:00:00:00:00:0b"),
    }


def test_no_remote_endpoints_need_no_entries() -> None:
    peers = peers_of([])
    assert peers.forwarding == frozenset() and peers.neighbours == frozenset()


def test_peers_are_comparable_sets_for_reconciling() -> None:
    nid = "n" * 64
    a = endpoint("a", nid, mac="02:00:00:00:00:0a")
    b = endpoint("b", nid, mac="02:00:00:00:00:0b", ipv4="10.72.0.3/24")
    before, after = peers_of([a, b]), peers_of([a])
    assert before.forwarding - after.forwarding == {Forwarding("02:00:00:00:00:0b", "10.71.0.2")}
    assert before.neighbours - after.neighbours == {Neighbour("10.72.0.3", "02:00:00:00:00:0b")}
    assert sorted(before.forwarding)[0].mac_address == "02:00:00:00:00:0a"


def test_remote_endpoints_leave_out_this_hosts() -> None:
    nid = "n" * 64
    mine, theirs = endpoint("a", nid, host="h1"), endpoint("b", nid, host="h2")
    assert remote_endpoints([mine, theirs], "h1") == [theirs]


# ---- addresses the cluster holds -----------------------------------------------------------


def overlay_ipam(*requests: SubnetRequest, ipv6: bool = False) -> Ipam:
    ipam = Ipam()
    ipam.add_network("ov", ipam.plan(list(requests), ipv4=True, ipv6=ipv6))
    return ipam


def addrs(*texts: str) -> set[IPAddress]:
    return {ip_address(text) for text in texts}


def test_addresses_held_on_other_hosts_are_skipped() -> None:
    ipam = overlay_ipam(SubnetRequest(subnet="10.72.0.0/24"))
    ipam.set_in_use("ov", addrs("10.72.0.2", "10.72.0.3"))
    assert ipam.in_use("ov") == addrs("10.72.0.2", "10.72.0.3")
    assert str(ipam.allocate("ov", 4)) == "10.72.0.4/24"
    with pytest.raises(AlreadyExists):
        ipam.allocate("ov", 4, ip_address("10.72.0.3"))


def test_addresses_released_in_the_cluster_come_back() -> None:
    ipam = overlay_ipam(SubnetRequest(subnet="10.72.0.0/24"))
    ipam.set_in_use("ov", addrs("10.72.0.2", "10.72.0.3"))
    ipam.set_in_use("ov", addrs("10.72.0.3"))
    assert ipam.in_use("ov") == addrs("10.72.0.3")
    assert str(ipam.allocate("ov", 4)) == "10.72.0.2/24"
    ipam.set_in_use("ov", [])
    assert ipam.in_use("ov") == set()
    assert str(ipam.allocate("ov", 4, ip_address("10.72.0.3"))) == "10.72.0.3/24"


def test_the_allocation_cursor_is_kept() -> None:
    ipam = overlay_ipam(SubnetRequest(subnet="10.72.0.0/24"))
    ipam.allocate("ov", 4)
    ipam.allocate("ov", 4)
    ipam.set_in_use("ov", [])
    assert str(ipam.allocate("ov", 4)) == "10.72.0.4/24"  # not .2 again at once


def test_the_gateway_and_aux_addresses_are_never_marked_in_use() -> None:
    ipam = overlay_ipam(SubnetRequest(subnet="10.72.0.0/29", aux_addresses={"router": "10.72.0.6"}))
    ipam.set_in_use("ov", addrs("10.72.0.1", "10.72.0.2", "10.72.0.6"))
    assert ipam.in_use("ov") == addrs("10.72.0.2")
    ipam.set_in_use("ov", [])  # giving everything back leaves the reservations alone
    handed_out = set()
    with pytest.raises(ResourceExhausted):
        while True:
            handed_out.add(str(ipam.allocate("ov", 4).ip))
    assert handed_out == {"10.72.0.2", "10.72.0.3", "10.72.0.4", "10.72.0.5"}
    with pytest.raises(AlreadyExists):
        ipam.allocate("ov", 4, ip_address("10.72.0.1"))


def test_addresses_outside_the_subnets_are_ignored_and_versions_are_kept_apart() -> None:
    ipam = overlay_ipam(
        SubnetRequest(subnet="10.72.0.0/24"), SubnetRequest(subnet="fd00:72::/64"), ipv6=True
    )
    ipam.set_in_use("ov", addrs("10.72.0.2", "10.73.0.2", "fd00:72::2", "fd00:73::2"))
    assert ipam.in_use("ov") == addrs("10.72.0.2", "fd00:72::2")
    assert str(ipam.allocate("ov", 6)) == "fd00:72::3/64"


def test_set_in_use_on_an_unknown_network_is_not_found() -> None:
    with pytest.raises(NotFound):
        Ipam().set_in_use("missing", addrs("10.72.0.2"))


# ---- names of sandboxes on other hosts -----------------------------------------------------


def overlay(name: str, subnet: str) -> Network:
    return replace(network(name, subnet), driver=Driver.OVERLAY, vni=4096)


def resolved(table: NameTable, asker: str, name: str, version: int = 4) -> list[str] | None:
    found = table.resolve(asker, name)
    if found is None:
        return None
    return sorted(str(a) for m in found for a in m.addresses(version))


def test_a_remote_sandbox_answers_to_its_names_on_the_shared_overlay() -> None:
    ov = overlay("ov", "10.72.0.0/24")
    local = join(sandbox("local"), ov, "10.72.0.2")
    remote = endpoint(
        "remote", ov.id, ipv4="10.72.0.3/24", ipv6="fd00:72::3/64", aliases=("db", "primary")
    )
    table = NameTable.build([ov], [local], [remote])
    for name in ("remote", "REMOTE.", "remote.ov", "db", "primary.ov", remote.sandbox_id[:12]):
        assert resolved(table, local.id, name) == ["10.72.0.3"], name
    assert resolved(table, local.id, "remote", version=6) == ["fd00:72::3"]
    assert table.resolve(local.id, remote.sandbox_id) is None  # the full id is no name


def test_remote_and_local_members_share_an_alias() -> None:
    ov = overlay("ov", "10.72.0.0/24")
    local = join(sandbox("local"), ov, "10.72.0.2", aliases=["app"])
    remote = endpoint("remote", ov.id, ipv4="10.72.0.3/24", aliases=("app",))
    table = NameTable.build([ov], [local], [remote])
    assert resolved(table, local.id, "app") == ["10.72.0.2", "10.72.0.3"]


def test_a_remote_sandbox_is_not_seen_from_another_network() -> None:
    ov, other = overlay("ov", "10.72.0.0/24"), overlay("other", "10.73.0.0/24")
    outsider = join(sandbox("outsider"), other, "10.73.0.2")
    remote = endpoint("remote", ov.id, ipv4="10.72.0.3/24", aliases=("db",))
    table = NameTable.build([ov, other], [outsider], [remote])
    assert table.resolve(outsider.id, "remote") is None
    assert table.resolve(outsider.id, "db") is None
    assert table.resolve(outsider.id, "remote.ov") is None
    assert table.reverse(outsider.id, ip_address("10.72.0.3")) is None


def test_remote_endpoints_of_networks_unknown_here_are_ignored() -> None:
    ov = overlay("ov", "10.72.0.0/24")
    local = join(sandbox("local"), ov, "10.72.0.2")
    stray = endpoint("stray", "f" * 64, ipv4="10.72.0.9/24")
    table = NameTable.build([ov], [local], [stray])
    assert table.resolve(local.id, "stray") is None


def test_a_remote_sandboxs_address_resolves_back_to_its_name() -> None:
    ov = overlay("ov", "10.72.0.0/24")
    local = join(sandbox("local"), ov, "10.72.0.2")
    remote = endpoint("remote", ov.id, ipv4="10.72.0.3/24", ipv6="fd00:72::3/64")
    table = NameTable.build([ov], [local], [remote])
    assert table.reverse(local.id, ip_address("10.72.0.3")) == "remote.ov"
    assert table.reverse(local.id, ip_address("fd00:72::3")) == "remote.ov"
    assert table.reverse(local.id, ip_address("10.72.0.2")) == "local.ov"


def test_a_legacy_link_on_an_overlay_reaches_a_remote_sandbox() -> None:
    ov = overlay("ov", "10.72.0.0/24")
    local = join(sandbox("local"), ov, "10.72.0.2", links={"remote": "backend"})
    remote = endpoint("remote", ov.id, ipv4="10.72.0.3/24")
    table = NameTable.build([ov], [local], [remote])
    assert resolved(table, local.id, "backend") == ["10.72.0.3"]


# ---- uniqueness across the cluster -----------------------------------------------------


def _stored(name: str, subnet: str) -> dict[str, Any]:
    return {"name": name, "subnets": [{"subnet": subnet}]}


def _draft(name: str, subnet: str) -> Network:
    network = ip_network(subnet)
    return Network(
        id="d" * 64,
        name=name,
        driver=Driver.OVERLAY,
        bridge=None,
        subnets=[Subnet(subnet=network, gateway=next(network.hosts()))],
    )


def test_a_name_another_host_used_is_refused() -> None:
    with pytest.raises(AlreadyExists) as refused:
        check_unique(_draft("app", "10.90.0.0/24"), [_stored("app", "10.91.0.0/24")])
    assert refused.value.reason == "NETWORK_EXISTS"


def test_a_subnet_overlapping_another_overlay_network_is_refused() -> None:
    with pytest.raises(AlreadyExists) as refused:
        check_unique(_draft("new", "10.90.0.0/16"), [_stored("old", "10.90.4.0/24")])
    assert refused.value.reason == "SUBNET_OVERLAPS"
    assert refused.value.metadata["network"] == "old"


def test_a_free_name_and_subnet_pass() -> None:
    check_unique(_draft("new", "10.90.0.0/24"), [_stored("old", "10.91.0.0/24")])
