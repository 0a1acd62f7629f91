"""The embedded DNS server as seed 001's walkthrough shows it ("Working with network
commands", step 8 to "Resolving multiple containers to a single alias"): real sandboxes
looking names up from inside, through dig and through the C library.

Docker's container1..container7, isolated_nw and local_alias keep their names, with the
test's tag appended. Names no network knows are forwarded to the stack's unroutable
upstream and come back SERVFAIL, so "does not resolve" is asserted as "no address".
"""

from __future__ import annotations

from tests.integration.network.netclient import DnsNetClient, attachment

ROUND_ROBIN_QUERIES = 20


def first_answers(dns: DnsNetClient, sandbox: str, name: str, count: int) -> list[str]:
    """The first address of `count` answers for `name`, asked one after another."""
    loop = f'for i in $(seq {count}); do dig +short +time=3 +tries=1 "$1" | head -n1; done'
    found = dns.exec(sandbox, ["sh", "-c", loop, "sh", name], timeout=60)
    return found.stdout.split()


def test_names_resolve_on_a_user_defined_network_only(dns: DnsNetClient, t: str) -> None:
    """Step 8: container2 reaches container3 by name on isolated_nw; the default bridge
    has no embedded DNS, so container1's name means nothing there."""
    isolated = dns.user_network(f"isolated_nw-{t}", "10.61.1.0/24")
    c1, c2, c3 = (f"container{i}-{t}" for i in (1, 2, 3))
    dns.sandbox(c1, "bridge")
    dns.sandbox(c2, "bridge")
    dns.connect(c2, isolated)
    dns.sandbox(c3, isolated, ip="10.61.1.3")

    assert dns.pings(c2, c3), "ping by name goes through the C library and resolv.conf"
    answer = dns.lookup(c2, c3)
    assert (answer.status, answer.answers) == ("NOERROR", ["10.61.1.3"])
    assert "aa" in answer.flags, "local names are answered authoritatively"
    assert dns.resolve(c2, f"{c3}.{isolated}") == ["10.61.1.3"]
    assert dns.resolve(c2, c3.upper()) == ["10.61.1.3"], "names are case-insensitive"
    assert dns.dig(c2, "-x", "10.61.1.3").answers == [f"{c3}.{isolated}."]
    no_ipv6 = dns.lookup(c2, c3, "AAAA")
    assert (no_ipv6.status, no_ipv6.answers) == ("NOERROR", []), "the name exists: NODATA"

    c1_address = dns.address(c1, "bridge")
    assert dns.getent_hosts(c2, c1) == [], "no names on the default bridge"
    refused = dns.exec(c2, ["ping", "-c1", "-W1", c1])
    assert refused.code != 0 and c1 in refused.stderr
    assert dns.pings(c2, c1_address), "the address itself still works"

    assert "nameserver 127.0.0.11" in dns.file_in(c2, "/etc/resolv.conf")
    assert "127.0.0.11" not in dns.file_in(c1, "/etc/resolv.conf")


def test_names_do_not_resolve_across_networks(dns: DnsNetClient, t: str) -> None:
    isolated = dns.user_network(f"isolated_nw-{t}", "10.61.2.0/24")
    other = dns.user_network(f"other_nw-{t}", "10.62.2.0/24")
    c3, stranger = f"container3-{t}", f"stranger-{t}"
    dns.sandbox(c3, isolated)
    dns.sandbox(stranger, other)

    assert dns.resolve(stranger, stranger) == [dns.address(stranger, other)], "DNS works there"
    for name in (c3, f"{c3}.{isolated}"):
        answer = dns.lookup(stranger, name)
        assert answer.answers == [], f"{name} must not resolve from another network"
        assert answer.status not in ("NOERROR", "TIMEOUT"), answer
    assert dns.getent_hosts(stranger, c3) == []


def test_links_resolve_for_the_declaring_sandbox_once_the_target_runs(
    dns: DnsNetClient, t: str
) -> None:
    """Linking containers, steps 1-3: container4 links container5 as c5 before it exists."""
    isolated = dns.user_network(f"isolated_nw-{t}", "10.61.3.0/24")
    c4, c5, other = f"container4-{t}", f"container5-{t}", f"other-{t}"
    dns.create_sandbox(c4, attachment(isolated, links={c5: "c5"}))
    assert dns.resolve(c4, c4) == [dns.address(c4, isolated)], "DNS works there"
    assert dns.resolve(c4, "c5") == []
    assert dns.resolve(c4, c5) == []

    dns.create_sandbox(c5, attachment(isolated, links={c4: "c4"}))
    ip4, ip5 = dns.address(c4, isolated), dns.address(c5, isolated)
    assert dns.resolve(c4, "c5") == [ip5]
    assert dns.resolve(c4, c5) == [ip5]
    assert dns.pings(c4, "c5")
    assert dns.resolve(c5, "c4") == [ip4]
    assert dns.resolve(c5, c4) == [ip4]

    dns.sandbox(other, isolated)
    assert dns.resolve(other, c5) == [ip5]
    assert dns.resolve(other, "c5") == [], "a link is private to the sandbox declaring it"


def test_link_aliases_are_scoped_to_their_network(dns: DnsNetClient, t: str) -> None:
    """Network alias scoping, steps 1-4: foo and bar on local_alias, c5 on isolated_nw."""
    isolated = dns.user_network(f"isolated_nw-{t}", "10.61.4.0/24")
    local = dns.user_network(f"local_alias-{t}", "10.62.4.0/24")
    c4, c5 = f"container4-{t}", f"container5-{t}"
    dns.create_sandbox(c4, attachment(isolated, links={c5: "c5"}))
    dns.create_sandbox(c5, attachment(isolated, links={c4: "c4"}))
    dns.connect(c4, local, links={c5: "foo"})
    dns.connect(c5, local, links={c4: "bar"})
    c5_isolated, c5_local = dns.address(c5, isolated), dns.address(c5, local)

    assert dns.resolve(c4, "foo") == [c5_local]
    assert dns.resolve(c4, "c5") == [c5_isolated]
    assert dns.resolve(c5, "bar") == [dns.address(c4, local)]
    assert dns.pings(c4, "foo")

    dns.disconnect(c5, isolated)
    assert dns.resolve(c4, "c5") == [], "c5 was declared on isolated_nw, which c5 left"
    assert dns.resolve(c4, "foo") == [c5_local]


def test_network_scoped_aliases(dns: DnsNetClient, t: str) -> None:
    """Use network-scoped aliases, steps 1-4: app on isolated_nw, scoped-app on
    local_alias, seen only by the members of that network."""
    isolated = dns.user_network(f"isolated_nw-{t}", "10.61.5.0/24")
    local = dns.user_network(f"local_alias-{t}", "10.62.5.0/24")
    c4, c5, c6 = f"container4-{t}", f"container5-{t}", f"container6-{t}"
    dns.sandbox(c4, isolated)
    dns.connect(c4, local)
    dns.sandbox(c5, isolated)
    dns.create_sandbox(c6, attachment(isolated, aliases=["app"]))
    c6_isolated = dns.address(c6, isolated)

    assert dns.resolve(c4, "app") == [c6_isolated]
    assert dns.resolve(c4, c6) == [c6_isolated]
    assert dns.pings(c4, "app")

    dns.connect(c6, local, aliases=["scoped-app"])
    assert dns.resolve(c4, "scoped-app") == [dns.address(c6, local)]
    assert dns.resolve(c5, "app") == [c6_isolated]
    assert dns.resolve(c5, "scoped-app") == [], "container5 is not on local_alias"


def test_a_shared_alias_answers_every_running_member_shuffled(dns: DnsNetClient, t: str) -> None:
    """Resolving multiple containers to a single alias: container6 and container7 are
    both app; a stopped one drops out at once and comes back when started."""
    isolated = dns.user_network(f"isolated_nw-{t}", "10.61.6.0/24")
    c4, c6, c7 = f"container4-{t}", f"container6-{t}", f"container7-{t}"
    dns.sandbox(c4, isolated)
    dns.create_sandbox(c6, attachment(isolated, aliases=["app"]))
    dns.create_sandbox(c7, attachment(isolated, aliases=["app"]))
    ip6, ip7 = dns.address(c6, isolated), dns.address(c7, isolated)

    assert dns.resolve(c4, "app") == sorted([ip6, ip7])
    firsts = first_answers(dns, c4, "app", ROUND_ROBIN_QUERIES)
    assert len(firsts) == ROUND_ROBIN_QUERIES
    assert set(firsts) == {ip6, ip7}, "the order is shuffled per answer"

    dns.stop(c6)
    assert dns.resolve(c4, "app") == [ip7]
    assert dns.resolve(c4, c6) == []
    dns.start(c6)
    assert dns.resolve(c4, "app") == sorted([dns.address(c6, isolated), ip7])


def test_leaving_the_network_or_being_removed_drops_the_name(dns: DnsNetClient, t: str) -> None:
    isolated = dns.user_network(f"isolated_nw-{t}", "10.61.7.0/24")
    c2, c3, c8 = f"container2-{t}", f"container3-{t}", f"container8-{t}"
    dns.sandbox(c2, isolated)
    dns.sandbox(c3, isolated)
    dns.sandbox(c8, isolated)
    assert dns.resolve(c2, c3) == [dns.address(c3, isolated)]
    assert dns.resolve(c2, c8) == [dns.address(c8, isolated)]

    dns.disconnect(c3, isolated)
    assert dns.resolve(c2, c3) == []
    assert dns.resolve(c2, f"{c3}.{isolated}") == []
    dns.remove(c8)
    assert dns.resolve(c2, c8) == []


def test_legacy_links_on_the_default_bridge_go_through_the_hosts_file(
    dns: DnsNetClient, t: str
) -> None:
    x, y, z = f"x-{t}", f"y-{t}", f"z-{t}"
    dns.sandbox(x, "bridge")
    dns.create_sandbox(y, attachment("bridge", links={x: "xalias"}))
    dns.sandbox(z, "bridge")
    x_address = dns.address(x, "bridge")

    assert dns.getent_hosts(y, "xalias") == [x_address]
    assert dns.getent_hosts(y, x) == [x_address]
    assert dns.pings(y, "xalias")
    assert "127.0.0.11" not in dns.file_in(y, "/etc/resolv.conf")
    assert dns.getent_hosts(z, "xalias") == [], "the link is y's own"
    assert dns.getent_hosts(z, x) == []
