"""render(): the nft script for berth's own table, from bridges and published ports."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from berth.network.adapters.nftables import TABLE, BridgeRules, Nftables, PortForward, render

NET_A = BridgeRules("br-a", (ip_network("10.1.0.0/24"), ip_network("fd00:1::/64")))
NET_B = BridgeRules("br-b", (ip_network("10.2.0.0/24"),))
SEALED = BridgeRules("br-i", (ip_network("10.3.0.0/24"),), internal=True)
ROUTED = BridgeRules("br-r", (ip_network("10.4.0.0/24"),), masquerade=False)
WEB = PortForward("tcp", None, 8080, ip_address("10.1.0.2"), 80, "br-a")
DNS = PortForward("udp", ip_address("192.0.2.1"), 53, ip_address("10.1.0.2"), 5353, "br-a")
WEB6 = PortForward("tcp", None, 8443, ip_address("fd00:1::2"), 443, "br-a")


def chain(script: str, name: str) -> list[str]:
    """The lines of one chain of the rendered table, stripped."""
    lines = [line.strip() for line in script.splitlines()]
    start = lines.index(f"chain {name} {{")
    return lines[start + 1 : lines.index("}", start)]


def test_the_script_recreates_only_berths_table_in_one_transaction() -> None:
    script = render([NET_A])
    lines = script.splitlines()
    assert lines[:3] == ["table inet berth {}", "delete table inet berth", "table inet berth {"]
    assert "flush ruleset" not in script
    tables = {line.split("{")[0].strip() for line in lines if line.startswith("table")}
    assert tables == {"table inet berth"}


def test_base_chains_hook_with_explicit_priorities_and_accept_policy() -> None:
    script = render([NET_A])
    heads = {name: chain(script, name)[0] for name in ("forward", "postrouting", "prerouting")}
    assert heads == {
        "forward": "type filter hook forward priority filter; policy accept;",
        "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
        "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    }
    assert chain(script, "output")[0] == "type nat hook output priority -100; policy accept;"


def test_same_input_in_any_order_gives_the_same_script() -> None:
    first = render([NET_A, NET_B, SEALED], [WEB, DNS, WEB6])
    second = render([SEALED, NET_B, NET_A], [WEB6, DNS, WEB])
    assert first == second
    assert render([NET_A, NET_B], [WEB]) == render([NET_A, NET_B], [WEB])


def test_a_custom_table_name_is_used_throughout() -> None:
    script = render([NET_A], table="berth_t1")
    assert script.startswith("table inet berth_t1 {}\ndelete table inet berth_t1\n")
    assert "table inet berth " not in script
    assert TABLE == "berth"


def test_networks_are_isolated_from_each_other() -> None:
    forward = chain(render([NET_A, NET_B]), "forward")
    assert 'iifname "br-a" oifname "br-b" drop' in forward
    assert 'iifname "br-b" oifname "br-a" drop' in forward
    assert forward[-1] == "ct state established,related accept"


def test_one_network_alone_has_nothing_to_be_isolated_from() -> None:
    forward = chain(render([NET_A]), "forward")
    assert not [rule for rule in forward if rule.endswith("drop")]


def test_an_internal_network_is_sealed_and_never_masqueraded() -> None:
    script = render([NET_A, SEALED])
    forward = chain(script, "forward")
    assert forward[1:3] == [
        'iifname "br-i" oifname != "br-i" drop',
        'oifname "br-i" iifname != "br-i" drop',
    ]
    assert "10.3.0.0/24" not in "\n".join(chain(script, "postrouting"))


def test_masquerade_covers_each_subnet_leaving_through_another_interface() -> None:
    postrouting = chain(render([NET_A, ROUTED]), "postrouting")
    assert 'ip saddr 10.1.0.0/24 oifname != "br-a" masquerade' in postrouting
    assert 'ip6 saddr fd00:1::/64 oifname != "br-a" masquerade' in postrouting
    assert not [rule for rule in postrouting if "10.4.0.0/24" in rule and "!=" in rule]


def test_several_subnets_of_one_family_share_a_rule() -> None:
    two = BridgeRules("br-a", (ip_network("10.9.0.0/24"), ip_network("10.1.0.0/24")))
    postrouting = chain(render([two]), "postrouting")
    assert 'ip saddr { 10.1.0.0/24, 10.9.0.0/24 } oifname != "br-a" masquerade' in postrouting


def test_published_ports_are_dnated_from_the_host_and_accepted() -> None:
    script = render([NET_A], [WEB, DNS])
    prerouting = chain(script, "prerouting")
    assert "meta nfproto ipv4 fib daddr type local tcp dport 8080 dnat ip to 10.1.0.2:80" in (
        prerouting
    )
    assert "ip daddr 192.0.2.1 udp dport 53 dnat ip to 10.1.0.2:5353" in prerouting
    output = chain(script, "output")
    assert "ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080 dnat ip to 10.1.0.2:80" in (
        output
    )
    forward = chain(script, "forward")
    assert (
        "meta l4proto udp ct status dnat ct reply ip saddr 10.1.0.2 ct reply proto-src 5353 accept"
    ) in forward


def test_ipv6_targets_use_dnat_ip6_with_a_bracketed_address() -> None:
    script = render([NET_A], [WEB6])
    assert "meta nfproto ipv6 fib daddr type local tcp dport 8443 dnat ip6 to [fd00:1::2]:443" in (
        chain(script, "prerouting")
    )
    assert (
        "meta l4proto tcp ct status dnat ct reply ip6 saddr fd00:1::2 ct reply proto-src 443 accept"
    ) in (chain(script, "forward"))


def test_published_ports_are_accepted_before_isolation_drops() -> None:
    forward = chain(render([NET_A, NET_B], [WEB]), "forward")
    accept = forward.index(
        "meta l4proto tcp ct status dnat ct reply ip saddr 10.1.0.2 ct reply proto-src 80 accept"
    )
    assert accept < forward.index('iifname "br-b" oifname "br-a" drop')


def test_no_bridges_give_an_empty_but_valid_table() -> None:
    script = render([])
    assert chain(script, "forward")[1:] == ["ct state established,related accept"]
    for name in ("postrouting", "prerouting", "output"):
        assert len(chain(script, name)) == 1


BAD_NAMES = [
    "",
    "a" * 16,
    'br"; flush ruleset; "',
    "br a",
    "br\n",
    "br}",
    "br/a",
    "brü",
    "br;x",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bridge_name_that_could_inject_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="bridge name"):
        render([BridgeRules(name, (ip_network("10.1.0.0/24"),))])


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_port_forward_bridge_that_could_inject_is_refused(name: str) -> None:
    forward = PortForward("tcp", None, 80, ip_address("10.1.0.2"), 80, name)
    with pytest.raises(ValueError, match="bridge name"):
        render([NET_A], [forward])


def test_the_longest_interface_name_is_accepted() -> None:
    longest = BridgeRules("a.b_c-123456789", (ip_network("10.5.0.0/24"),), internal=True)
    assert 'iifname "a.b_c-123456789" oifname != "a.b_c-123456789" drop' in render([longest])


@pytest.mark.parametrize(
    "forward",
    [
        PortForward("sctp", None, 80, ip_address("10.1.0.2"), 80, "br-a"),
        PortForward("tcp;", None, 80, ip_address("10.1.0.2"), 80, "br-a"),
        PortForward("tcp", None, 0, ip_address("10.1.0.2"), 80, "br-a"),
        PortForward("tcp", None, 80, ip_address("10.1.0.2"), 65536, "br-a"),
        PortForward("tcp", ip_address("::1"), 80, ip_address("10.1.0.2"), 80, "br-a"),
    ],
    ids=["protocol", "protocol-injection", "host-port", "target-port", "mixed-families"],
)
def test_an_unrenderable_port_forward_is_refused(forward: PortForward) -> None:
    with pytest.raises(ValueError):
        render([NET_A], [forward])


def test_a_bridge_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="more than once"):
        render([NET_A, NET_A])


@pytest.mark.parametrize("table", ["", "berth; flush ruleset", "bad-name", "1abc"])
def test_a_bad_table_name_is_refused(table: str) -> None:
    with pytest.raises(ValueError, match="table"):
        render([NET_A], table=table)
    with pytest.raises(ValueError, match="table"):
        Nftables(table=table)


@pytest.mark.parametrize("netns", ["", "..", "a/b", "x y"])
def test_a_bad_namespace_name_is_refused(netns: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        Nftables(netns=netns)
