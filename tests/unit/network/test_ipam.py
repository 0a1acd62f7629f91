"""berth.network.domain.ipam: subnets of networks and the addresses handed out in them."""

from __future__ import annotations

import json
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_network,
)

import pytest

from berth.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from berth.network.domain.ipam import DEFAULT_POOLS_V4, Ipam, SubnetRequest
from berth.network.domain.model import Subnet


def create(
    ipam: Ipam,
    network_id: str,
    *requests: SubnetRequest,
    ipv4: bool = True,
    ipv6: bool = False,
    avoid: tuple[IPv4Network | IPv6Network, ...] = (),
) -> list[Subnet]:
    """`docker network create`: plan, then commit."""
    subnets = ipam.plan(list(requests), ipv4=ipv4, ipv6=ipv6, avoid=avoid)
    ipam.add_network(network_id, subnets)
    return subnets


def fields(error: InvalidArgument) -> dict[str, str]:
    return {violation.field: violation.description for violation in error.violations}


def invalid(requests: list[SubnetRequest], *, ipv4: bool = True, ipv6: bool = False) -> dict:
    with pytest.raises(InvalidArgument) as caught:
        Ipam().plan(requests, ipv4=ipv4, ipv6=ipv6)
    return fields(caught.value)


def drain(ipam: Ipam, network_id: str, version: int = 4) -> list[str]:
    """Allocate until the network runs out; the addresses handed out, in order."""
    handed_out = []
    while True:
        try:
            handed_out.append(str(ipam.allocate(network_id, version).ip))
        except ResourceExhausted:
            return handed_out


# ---- plan: requested subnets ---------------------------------------------------------------


def test_requested_subnet_gets_the_first_usable_address_as_gateway() -> None:
    (subnet,) = Ipam().plan([SubnetRequest(subnet="172.20.0.0/16")], ipv4=True, ipv6=False)

    assert subnet == Subnet(subnet=IPv4Network("172.20.0.0/16"), gateway=IPv4Address("172.20.0.1"))


def test_requested_gateway_ip_range_and_aux_addresses_are_kept() -> None:
    request = SubnetRequest(
        subnet="192.168.0.0/16",
        gateway="192.168.0.100",
        ip_range="192.168.1.0/24",
        aux_addresses={"my-router": "192.168.1.5", "my-switch": "192.168.1.6"},
    )

    (subnet,) = Ipam().plan([request], ipv4=True, ipv6=False)

    assert subnet.gateway == IPv4Address("192.168.0.100")
    assert subnet.ip_range == IPv4Network("192.168.1.0/24")
    assert subnet.aux_addresses == {
        "my-router": IPv4Address("192.168.1.5"),
        "my-switch": IPv4Address("192.168.1.6"),
    }


def test_plan_changes_nothing() -> None:
    ipam = Ipam()
    before = ipam.to_dict()

    first = ipam.plan([], ipv4=True, ipv6=False)
    second = ipam.plan([], ipv4=True, ipv6=False)

    assert first == second
    assert ipam.to_dict() == before


@pytest.mark.parametrize(
    ("request_", "path", "words"),
    [
        (SubnetRequest(subnet="not-a-cidr"), "ipam.config[0].subnet", "invalid CIDR"),
        (SubnetRequest(subnet="172.20.0.0"), "ipam.config[0].subnet", "prefix length"),
        (SubnetRequest(subnet="172.20.0.0/33"), "ipam.config[0].subnet", "invalid CIDR"),
        (SubnetRequest(subnet="172.20.0.5/16"), "ipam.config[0].subnet", "172.20.0.0/16"),
        (SubnetRequest(subnet="172.20.0.0/31"), "ipam.config[0].subnet", "too small"),
        (
            SubnetRequest(subnet="10.0.0.0/8", gateway="10.0.0.256"),
            "ipam.config[0].gateway",
            "invalid IP address",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/8", gateway="11.0.0.1"),
            "ipam.config[0].gateway",
            "not inside",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/8", gateway="10.0.0.0"),
            "ipam.config[0].gateway",
            "network address",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/8", gateway="10.255.255.255"),
            "ipam.config[0].gateway",
            "broadcast",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/8", gateway="fd00::1"),
            "ipam.config[0].gateway",
            "not inside",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/8", ip_range="11.0.0.0/24"),
            "ipam.config[0].ip_range",
            "not inside",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/24", ip_range="10.0.0.0/16"),
            "ipam.config[0].ip_range",
            "not inside",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/8", ip_range="10.0.0.7/24"),
            "ipam.config[0].ip_range",
            "10.0.0.0/24",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/8", aux_addresses={"nas": "12.0.0.1"}),
            "ipam.config[0].aux_addresses[nas]",
            "not inside",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/8", aux_addresses={"nas": "nas.local"}),
            "ipam.config[0].aux_addresses[nas]",
            "invalid IP address",
        ),
        (
            SubnetRequest(subnet="10.0.0.0/8", aux_addresses={"gw": "10.0.0.1"}),
            "ipam.config[0].aux_addresses[gw]",
            "gateway",
        ),
        (SubnetRequest(gateway="10.0.0.1"), "ipam.config[0].gateway", "needs a subnet"),
        (SubnetRequest(ip_range="10.0.0.0/24"), "ipam.config[0].ip_range", "needs a subnet"),
        (
            SubnetRequest(aux_addresses={"nas": "10.0.0.9"}),
            "ipam.config[0].aux_addresses[nas]",
            "needs a subnet",
        ),
    ],
)
def test_invalid_requests_name_the_field(request_: SubnetRequest, path: str, words: str) -> None:
    violations = invalid([request_])

    assert list(violations) == [path]
    assert words in violations[path]


def test_host_bits_set_names_the_network_address() -> None:
    violations = invalid([SubnetRequest(subnet="172.20.0.5/16")])

    assert "should be 172.20.0.0/16" in violations["ipam.config[0].subnet"]


def test_every_problem_is_reported_with_its_index() -> None:
    violations = invalid(
        [
            SubnetRequest(subnet="10.1.0.0/16"),
            SubnetRequest(subnet="10.2.0.0/16", gateway="10.3.0.1", ip_range="10.9.0.0/24"),
        ]
    )

    assert set(violations) == {"ipam.config[1].gateway", "ipam.config[1].ip_range"}


def test_custom_field_prefix_is_used_in_paths() -> None:
    with pytest.raises(InvalidArgument) as caught:
        Ipam().plan([SubnetRequest(subnet="x")], ipv4=True, ipv6=False, field="ipam")

    assert list(fields(caught.value)) == ["ipam[0].subnet"]


def test_requested_subnets_overlapping_each_other_are_refused() -> None:
    violations = invalid([SubnetRequest(subnet="10.0.0.0/8"), SubnetRequest(subnet="10.20.0.0/16")])

    assert list(violations) == ["ipam.config[1].subnet"]
    assert "ipam.config[0].subnet" in violations["ipam.config[1].subnet"]


def test_subnet_of_another_network_is_refused_with_its_id() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="172.20.0.0/16"))

    with pytest.raises(FailedPrecondition) as caught:
        ipam.plan([SubnetRequest(subnet="172.20.128.0/24")], ipv4=True, ipv6=False)

    assert caught.value.reason == "SUBNET_OVERLAP"
    assert caught.value.metadata["subnet"] == "172.20.128.0/24"
    assert caught.value.metadata["network_id"] == "net-a"
    assert "Pool overlaps with other one on this address space" in caught.value.message


def test_subnet_overlapping_the_host_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        Ipam().plan(
            [SubnetRequest(subnet="192.168.0.0/16")],
            ipv4=True,
            ipv6=False,
            avoid=[IPv4Network("192.168.1.0/24")],
        )

    assert caught.value.reason == "SUBNET_OVERLAPS_HOST"
    assert caught.value.metadata == {"subnet": "192.168.0.0/16", "host_network": "192.168.1.0/24"}


def test_a_default_route_in_avoid_does_not_block_every_subnet() -> None:
    subnets = Ipam().plan(
        [SubnetRequest(subnet="10.5.0.0/16")],
        ipv4=True,
        ipv6=False,
        avoid=[IPv4Network("0.0.0.0/0")],
    )

    assert [s.subnet for s in subnets] == [IPv4Network("10.5.0.0/16")]


def test_add_network_rechecks_overlap_between_racing_plans() -> None:
    ipam = Ipam()
    first = ipam.plan([], ipv4=True, ipv6=False)
    second = ipam.plan([], ipv4=True, ipv6=False)
    ipam.add_network("net-a", first)

    with pytest.raises(FailedPrecondition) as caught:
        ipam.add_network("net-b", second)

    assert caught.value.reason == "SUBNET_OVERLAP"
    assert caught.value.metadata["network_id"] == "net-a"
    with pytest.raises(NotFound):
        ipam.subnets("net-b")


def test_the_same_network_cannot_be_added_twice() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.1.0.0/16"))

    with pytest.raises(AlreadyExists):
        ipam.add_network("net-a", ipam.plan([], ipv4=True, ipv6=False))


# ---- plan: default pools -------------------------------------------------------------------


def test_default_pools_are_like_dockers() -> None:
    assert DEFAULT_POOLS_V4[0] == ("172.17.0.0/16", 16)
    assert DEFAULT_POOLS_V4[-2] == ("172.31.0.0/16", 16)
    assert DEFAULT_POOLS_V4[-1] == ("192.168.0.0/16", 20)


def test_default_subnets_come_from_the_pools_in_order() -> None:
    ipam = Ipam()

    first = create(ipam, "net-a")
    second = create(ipam, "net-b")

    assert first == [Subnet(subnet=IPv4Network("172.17.0.0/16"), gateway=IPv4Address("172.17.0.1"))]
    assert second[0].subnet == IPv4Network("172.18.0.0/16")


def test_default_subnet_skips_taken_and_avoided_subnets() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="172.17.5.0/24"))

    (subnet,) = ipam.plan(
        [], ipv4=True, ipv6=False, avoid=[IPv4Network("172.18.0.1/32"), IPv6Network("fd00::/8")]
    )

    assert subnet.subnet == IPv4Network("172.19.0.0/16")


def test_a_removed_networks_subnet_is_free_again() -> None:
    ipam = Ipam()
    create(ipam, "net-a")
    ipam.remove_network("net-a")

    assert create(ipam, "net-b")[0].subnet == IPv4Network("172.17.0.0/16")


def test_after_the_172_pools_come_slash_20s_of_192_168() -> None:
    ipam = Ipam()
    for octet in range(17, 32):
        create(ipam, f"net-{octet}")

    assert create(ipam, "net-x")[0].subnet == IPv4Network("192.168.0.0/20")
    assert create(ipam, "net-y")[0].subnet == IPv4Network("192.168.16.0/20")


def test_exhausted_pools_are_reported() -> None:
    ipam = Ipam(pools_v4=[("10.10.0.0/23", 24)])
    create(ipam, "net-a")
    create(ipam, "net-b")

    with pytest.raises(ResourceExhausted) as caught:
        ipam.plan([], ipv4=True, ipv6=False)

    assert caught.value.reason == "POOLS_EXHAUSTED"


def test_ipv6_without_subnet_gets_a_ula_slash_64_different_per_network() -> None:
    ipam = Ipam()

    first = create(ipam, "net-a", ipv6=True)
    second = create(ipam, "net-b", ipv6=True)

    assert [s.subnet.version for s in first] == [4, 6]
    prefixes = [first[1].subnet, second[1].subnet]
    for prefix in prefixes:
        assert prefix.prefixlen == 64
        assert prefix.subnet_of(IPv6Network("fd00::/8"))
    assert prefixes[0] != prefixes[1]
    assert first[1].gateway == prefixes[0].network_address + 1


def test_ula_subnet_skips_avoided_prefixes() -> None:
    ipam = Ipam()
    (planned,) = ipam.plan([], ipv4=False, ipv6=True)

    (subnet,) = ipam.plan([], ipv4=False, ipv6=True, avoid=[planned.subnet])

    assert subnet.subnet != planned.subnet


def test_ipv6_pool_smaller_than_a_slash_48_is_used_from_its_start() -> None:
    ipam = Ipam(pool_v6="2001:db8:1:ff00::/56")

    first = create(ipam, "net-a", ipv4=False, ipv6=True)
    second = create(ipam, "net-b", ipv4=False, ipv6=True)

    assert first[0].subnet == IPv6Network("2001:db8:1:ff00::/64")
    assert second[0].subnet == IPv6Network("2001:db8:1:ff01::/64")


def test_requested_ipv6_subnet_is_used_with_a_default_ipv4_one() -> None:
    subnets = Ipam().plan([SubnetRequest(subnet="2001:db8:1234::/64")], ipv4=True, ipv6=True)

    assert [str(s.subnet) for s in subnets] == ["172.17.0.0/16", "2001:db8:1234::/64"]
    assert subnets[1].gateway == IPv6Address("2001:db8:1234::1")


def test_ipv6_only_network_has_no_ipv4_subnet() -> None:
    subnets = Ipam().plan([], ipv4=False, ipv6=True)

    assert [s.subnet.version for s in subnets] == [6]


def test_ipv4_subnet_is_refused_when_ipv4_is_disabled() -> None:
    violations = invalid([SubnetRequest(subnet="10.0.0.0/24")], ipv4=False, ipv6=True)

    assert "--ipv4=false" in violations["ipam.config[0].subnet"]


def test_ipv6_subnet_is_refused_when_ipv6_is_not_enabled() -> None:
    violations = invalid([SubnetRequest(subnet="fd12::/64")])

    assert "--ipv6" in violations["ipam.config[0].subnet"]


# ---- allocate ------------------------------------------------------------------------------


def test_first_address_follows_the_gateway_with_the_subnet_prefix() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="172.18.0.0/16"))

    assert ipam.allocate("net-a", 4) == IPv4Interface("172.18.0.2/16")
    assert ipam.allocate("net-a", 4) == IPv4Interface("172.18.0.3/16")
    assert ipam.in_use("net-a") == {IPv4Address("172.18.0.2"), IPv4Address("172.18.0.3")}


def test_a_slash_29_runs_out_after_five_containers() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/29"))

    assert drain(ipam, "net-a") == [f"10.0.0.{n}" for n in range(2, 7)]
    with pytest.raises(ResourceExhausted) as caught:
        ipam.allocate("net-a", 4)
    assert caught.value.reason == "ADDRESS_POOL_EXHAUSTED"


def test_a_released_address_is_not_handed_out_again_at_once() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/29"))
    first = ipam.allocate("net-a", 4)
    ipam.allocate("net-a", 4)

    ipam.release("net-a", first.ip)

    assert ipam.allocate("net-a", 4).ip == IPv4Address("10.0.0.4")


def test_allocation_wraps_around_to_released_addresses() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/29"))
    drain(ipam, "net-a")

    ipam.release("net-a", IPv4Address("10.0.0.3"))

    assert ipam.allocate("net-a", 4).ip == IPv4Address("10.0.0.3")


def test_only_the_ip_range_is_allocated_from() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="172.20.0.0/16", ip_range="172.20.240.0/30"))

    assert drain(ipam, "net-a") == [f"172.20.240.{n}" for n in range(4)]
    assert ipam.allocate("net-a", 4, IPv4Address("172.20.128.2")) == IPv4Interface(
        "172.20.128.2/16"
    )


def test_aux_addresses_and_gateway_are_never_allocated() -> None:
    ipam = Ipam()
    create(
        ipam,
        "net-a",
        SubnetRequest(
            subnet="10.0.0.0/29",
            gateway="10.0.0.4",
            aux_addresses={"r": "10.0.0.2", "s": "10.0.0.6"},
        ),
    )

    assert drain(ipam, "net-a") == ["10.0.0.1", "10.0.0.3", "10.0.0.5"]


def test_a_static_address_in_use_is_refused() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="172.20.0.0/16"))
    ipam.allocate("net-a", 4, IPv4Address("172.20.128.2"))

    with pytest.raises(AlreadyExists) as caught:
        ipam.allocate("net-a", 4, IPv4Address("172.20.128.2"))

    assert caught.value.reason == "ADDRESS_IN_USE"
    assert caught.value.metadata["address"] == "172.20.128.2"


@pytest.mark.parametrize("address", ["10.0.0.0", "10.0.0.1", "10.0.0.5", "10.0.0.255"])
def test_reserved_addresses_cannot_be_requested(address: str) -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/24", aux_addresses={"nas": "10.0.0.5"}))

    with pytest.raises(AlreadyExists) as caught:
        ipam.allocate("net-a", 4, IPv4Address(address))

    assert caught.value.reason == "ADDRESS_IN_USE"


def test_a_static_address_outside_the_subnets_is_refused_like_docker() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="172.20.0.0/16"))

    with pytest.raises(InvalidArgument) as caught:
        ipam.allocate("net-a", 4, IPv4Address("172.21.0.2"), field="endpoint_config.ip_address")

    assert fields(caught.value) == {
        "endpoint_config.ip_address": "no configured subnet contains IP address 172.21.0.2"
    }


def test_a_static_address_of_the_wrong_version_is_refused() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="172.20.0.0/16"))

    with pytest.raises(InvalidArgument):
        ipam.allocate("net-a", 6, IPv4Address("172.20.0.9"))


def test_static_addresses_are_skipped_by_dynamic_allocation() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/29"))
    ipam.allocate("net-a", 4, IPv4Address("10.0.0.2"))

    assert ipam.allocate("net-a", 4).ip == IPv4Address("10.0.0.3")


def test_ipv6_addresses_are_allocated_in_the_ipv6_subnet() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="2001:db8:1234::/64"), ipv4=False, ipv6=True)

    assert ipam.allocate("net-a", 6) == IPv6Interface("2001:db8:1234::2/64")
    assert ipam.allocate("net-a", 6, IPv6Address("2001:db8:1234::99")) == IPv6Interface(
        "2001:db8:1234::99/64"
    )
    with pytest.raises(FailedPrecondition):
        ipam.allocate("net-a", 4)


def test_the_last_address_of_an_ipv6_subnet_is_usable() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="fd12::/126"), ipv4=False, ipv6=True)

    assert drain(ipam, "net-a", 6) == ["fd12::2", "fd12::3"]


def test_release_never_frees_the_gateway_and_ignores_unknown_addresses() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/29"))

    ipam.release("net-a", IPv4Address("10.0.0.1"))
    ipam.release("net-a", IPv4Address("10.0.0.4"))
    ipam.release("net-a", IPv4Address("192.0.2.1"))
    ipam.release("net-gone", IPv4Address("10.0.0.2"))

    assert "10.0.0.1" not in drain(ipam, "net-a")
    with pytest.raises(AlreadyExists):
        ipam.allocate("net-a", 4, IPv4Address("10.0.0.1"))


def test_unknown_networks_are_not_found() -> None:
    ipam = Ipam()

    with pytest.raises(NotFound):
        ipam.allocate("net-x", 4)
    with pytest.raises(NotFound):
        ipam.in_use("net-x")
    ipam.remove_network("net-x")


def test_removing_a_network_frees_its_addresses() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/24"))
    ipam.allocate("net-a", 4, IPv4Address("10.0.0.7"))

    ipam.remove_network("net-a")
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/24"))

    assert ipam.in_use("net-a") == set()
    assert ipam.allocate("net-a", 4, IPv4Address("10.0.0.7")).ip == IPv4Address("10.0.0.7")


def test_subnets_are_copies() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/24"))

    ipam.subnets("net-a")[0].aux_addresses["x"] = IPv4Address("10.0.0.9")

    assert ipam.subnets("net-a")[0].aux_addresses == {}


def test_thousands_of_allocations_are_unique_and_continue_after_the_last() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/16"))

    addresses = [ipam.allocate("net-a", 4).ip for _ in range(20_000)]
    ipam.release("net-a", addresses[100])
    again = ipam.allocate("net-a", 4).ip

    assert len(set(addresses)) == 20_000
    assert again == IPv4Address("10.0.78.34")


def test_a_full_slash_16_is_exhausted_without_handing_out_twice() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/16"))

    addresses = drain(ipam, "net-a")

    assert len(addresses) == 65536 - 3
    assert len(set(addresses)) == len(addresses)


# ---- persistence ---------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    ipam = Ipam()
    create(
        ipam,
        "net-a",
        SubnetRequest(
            subnet="10.0.0.0/24", ip_range="10.0.0.128/25", aux_addresses={"nas": "10.0.0.200"}
        ),
        ipv6=True,
    )
    ipam.allocate("net-a", 4)
    ipam.allocate("net-a", 6)
    ipam.allocate("net-a", 4, IPv4Address("10.0.0.9"))

    restored = Ipam.from_dict(json.loads(json.dumps(ipam.to_dict())))

    assert restored.to_dict() == ipam.to_dict()
    assert restored.subnets("net-a") == ipam.subnets("net-a")
    assert restored.in_use("net-a") == ipam.in_use("net-a")


def test_after_a_restart_no_address_is_handed_out_twice_or_reused_at_once() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/29"))
    first = ipam.allocate("net-a", 4)
    second = ipam.allocate("net-a", 4)
    ipam.release("net-a", first.ip)

    restored = Ipam.from_dict(json.loads(json.dumps(ipam.to_dict())))

    assert restored.allocate("net-a", 4).ip == IPv4Address("10.0.0.4")
    with pytest.raises(AlreadyExists):
        restored.allocate("net-a", 4, second.ip)


def test_after_a_restart_ula_prefixes_keep_coming_from_the_same_block() -> None:
    ipam = Ipam()
    first = create(ipam, "net-a", ipv4=False, ipv6=True)[0].subnet

    restored = Ipam.from_dict(json.loads(json.dumps(ipam.to_dict())))
    second = create(restored, "net-b", ipv4=False, ipv6=True)[0].subnet

    assert second != first
    assert second.supernet(new_prefix=48) == first.supernet(new_prefix=48)


def test_restored_state_refuses_overlapping_subnets() -> None:
    ipam = Ipam()
    create(ipam, "net-a", SubnetRequest(subnet="10.0.0.0/24"))

    restored = Ipam.from_dict(ipam.to_dict())

    with pytest.raises(FailedPrecondition):
        restored.plan([SubnetRequest(subnet="10.0.0.0/16")], ipv4=True, ipv6=False)
    assert create(restored, "net-b")[0].subnet == ip_network("172.17.0.0/16")
    assert ip_address("10.0.0.1") == restored.subnets("net-a")[0].gateway
