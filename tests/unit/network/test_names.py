"""Who answers to which name, seen from each sandbox (the embedded DNS server's rules)."""

from __future__ import annotations

from ipaddress import ip_address

from berth.network.domain.names import (
    NameTable,
    dns_names,
    legacy_link_hosts,
    own_addresses,
)
from tests.unit.network.dns_fixtures import join, network, sandbox


def addresses(table: NameTable, asker: str, name: str, version: int = 4) -> list[str] | None:
    found = table.resolve(asker, name)
    if found is None:
        return None
    return sorted(str(a) for m in found for a in m.addresses(version))


def test_a_name_resolves_on_a_shared_network_only() -> None:
    isolated, other = network("isolated_nw", "10.25.0.0/24"), network("other", "10.26.0.0/24")
    c2 = join(sandbox("container2"), isolated, "10.25.0.2")
    c3 = join(sandbox("container3"), isolated, "10.25.0.3")
    outsider = join(sandbox("outsider"), other, "10.26.0.2")
    table = NameTable.build([isolated, other], [c2, c3, outsider])
    assert addresses(table, c2.id, "container3") == ["10.25.0.3"]
    assert addresses(table, c2.id, "CONTAINER3.") == ["10.25.0.3"]
    assert addresses(table, c2.id, "container3.isolated_nw") == ["10.25.0.3"]
    assert addresses(table, c2.id, c3.id[:12]) == ["10.25.0.3"]
    assert table.resolve(outsider.id, "container3") is None
    assert table.resolve(c2.id, "container3.other") is None


def test_the_default_bridge_has_no_names() -> None:
    bridge = network("bridge", "10.17.0.0/24", predefined=True)
    c1 = join(sandbox("container1"), bridge, "10.17.0.2")
    c2 = join(sandbox("container2"), bridge, "10.17.0.3")
    table = NameTable.build([bridge], [c1, c2])
    assert not table.asks(c2.id)
    assert table.resolve(c2.id, "container1") is None
    assert dns_names(c1, bridge) == []


def test_stopped_sandboxes_are_not_answered() -> None:
    net = network("isolated_nw", "10.25.0.0/24")
    c4 = join(sandbox("container4"), net, "10.25.0.4")
    c6 = join(sandbox("container6", running=False), net, None, aliases=["app"])
    c7 = join(sandbox("container7"), net, "10.25.0.7", aliases=["app"])
    table = NameTable.build([net], [c4, c6, c7])
    assert addresses(table, c4.id, "app") == ["10.25.0.7"]
    assert table.resolve(c4.id, "container6") is None


def test_a_shared_alias_gives_every_member() -> None:
    net = network("isolated_nw", "10.25.0.0/24")
    c4 = join(sandbox("container4"), net, "10.25.0.4")
    c6 = join(sandbox("container6"), net, "10.25.0.6", aliases=["app"])
    c7 = join(sandbox("container7"), net, "10.25.0.7", aliases=["app"])
    table = NameTable.build([net], [c4, c6, c7])
    assert addresses(table, c4.id, "app") == ["10.25.0.6", "10.25.0.7"]


def test_aliases_are_scoped_to_their_network() -> None:
    isolated, local = network("isolated_nw", "10.25.0.0/24"), network("local", "10.26.0.0/24")
    c4 = join(join(sandbox("container4"), isolated, "10.25.0.4"), local, "10.26.0.4")
    c5 = join(sandbox("container5"), isolated, "10.25.0.5")
    c6 = join(sandbox("container6"), isolated, "10.25.0.6", aliases=["app"])
    join(c6, local, "10.26.0.6", aliases=["scoped-app"])
    table = NameTable.build([isolated, local], [c4, c5, c6])
    assert addresses(table, c4.id, "scoped-app") == ["10.26.0.6"]
    assert table.resolve(c5.id, "scoped-app") is None
    assert addresses(table, c5.id, "app") == ["10.25.0.6"]
    assert addresses(table, c4.id, "container6") == ["10.25.0.6"]  # eth0's network first
    assert addresses(table, c4.id, "container6.local") == ["10.26.0.6"]


def test_links_are_private_scoped_and_late_bound() -> None:
    isolated, local = network("isolated_nw", "10.25.0.0/24"), network("local", "10.26.0.0/24")
    c4 = join(sandbox("container4"), isolated, "10.25.0.4", links={"container5": "c5"})
    other = join(sandbox("other"), isolated, "10.25.0.9")
    before = NameTable.build([isolated, local], [c4, other])
    assert before.resolve(c4.id, "c5") is None  # the target does not exist yet

    c5 = join(sandbox("container5"), isolated, "10.25.0.5", links={"container4": "c4"})
    join(c4, local, "10.26.0.4", links={"container5": "foo"})
    join(c5, local, "10.26.0.5", links={"container4": "bar"})
    table = NameTable.build([isolated, local], [c4, c5, other])
    assert addresses(table, c4.id, "c5") == ["10.25.0.5"]
    assert addresses(table, c4.id, "foo") == ["10.26.0.5"]
    assert addresses(table, c5.id, "c4") == ["10.25.0.4"]
    assert table.resolve(other.id, "c5") is None  # only the declaring sandbox sees it

    del c5.endpoints[isolated.id]  # container5 leaves isolated_nw
    after = NameTable.build([isolated, local], [c4, c5, other])
    assert after.resolve(c4.id, "c5") is None
    assert addresses(after, c4.id, "foo") == ["10.26.0.5"]


def test_reverse_lookups_name_the_sandbox_and_network() -> None:
    net, other = network("isolated_nw", "10.25.0.0/24"), network("other", "10.26.0.0/24")
    c2 = join(sandbox("container2"), net, "10.25.0.2")
    c3 = join(sandbox("container3"), net, "10.25.0.3", ipv6="fd00:25::3")
    outsider = join(sandbox("outsider"), other, "10.26.0.2")
    table = NameTable.build([net, other], [c2, c3, outsider])
    assert table.reverse(c2.id, ip_address("10.25.0.3")) == "container3.isolated_nw"
    assert table.reverse(c2.id, ip_address("fd00:25::3")) == "container3.isolated_nw"
    assert addresses(table, c2.id, "container3", 6) == ["fd00:25::3"]
    assert table.reverse(outsider.id, ip_address("10.25.0.3")) is None


def test_forwarding_and_upstreams() -> None:
    internal = network("backend", "10.27.0.0/24", internal=True)
    public = network("front", "10.28.0.0/24")
    inside = join(sandbox("inside", dns=["10.0.0.53"]), internal, "10.27.0.2")
    both = join(join(sandbox("both"), internal, "10.27.0.3"), public, "10.28.0.3")
    table = NameTable.build([internal, public], [inside, both])
    assert not table.forwards(inside.id)
    assert table.forwards(both.id)
    assert table.upstreams(inside.id) == ("10.0.0.53",)
    assert table.upstreams(both.id) == ()


def test_dns_names_and_hosts_entries() -> None:
    bridge = network("bridge", "10.17.0.0/24", predefined=True)
    net = network("web", "10.25.0.0/24")
    db = join(sandbox("db"), bridge, "10.17.0.2")
    app = join(sandbox("app"), bridge, "10.17.0.3", links={"db": "database"})
    join(app, net, "10.25.0.3", aliases=["api", "API"])
    assert dns_names(app, net) == ["app", app.id[:12], "api"]
    running = {s.name: s for s in (db, app)}
    assert legacy_link_hosts(app, {bridge.id: bridge, net.id: net}, running) == [
        (ip_address("10.17.0.2"), ["database", "db"])
    ]
    assert legacy_link_hosts(app, {bridge.id: bridge, net.id: net}, {"app": app}) == []
    assert own_addresses(app) == [ip_address("10.17.0.3"), ip_address("10.25.0.3")]
