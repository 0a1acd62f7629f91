"""A host dies (its agent SIGKILLed, its underlay link down): once its heartbeat expires,
the other hosts drop its endpoints (FDB, neighbour entries, names) and its addresses
return to the pool, so another host can take one of them and be reached at it.

One death serves every test here (the dead host is not brought back; this module's
cluster serves this module only), in the order they are written."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import resources_pb2 as rpb
from tests.integration.network.netclient import tag
from tests.integration.overlay.probes import (
    bare,
    claims_by,
    eventually,
    needs_cluster,
    new_subnet,
    pings,
    remote_entries,
    remove_tagged,
    tcp_reaches,
)
from tests.support.cluster import HOST_TTL_S, RESYNC_S, Cluster, ClusterHost

pytestmark = [needs_cluster, pytest.mark.timeout(120)]

REAP_S = HOST_TTL_S + RESYNC_S + 8.0  # expiry, a resync period and slack


@dataclass
class Death:
    """h3 died with sandbox c (alias cal) on the network; a (h1) and b (h2) knew it."""

    t: str
    net: str
    network: npb.Network = field(repr=False)
    c: rpb.Endpoint = field(repr=False)

    @property
    def c_ip(self) -> str:
        return bare(self.c.ipv4_address)


@pytest.fixture(scope="module")
def death(cluster: Cluster) -> Iterator[Death]:
    h1, h2, h3 = cluster.hosts
    t = tag()
    net = f"ov-{t}"
    try:
        network = h1.client().overlay_network(net, new_subnet())
        h1.client().sandbox_on(f"a-{t}", net)
        h2.client().sandbox_on(f"b-{t}", net)
        c = h3.client().sandbox_on(f"c-{t}", net, aliases=[f"cal-{t}"])
        dead = Death(t, net, network, c)
        assert pings(h1, f"a-{t}", dead.c_ip) and pings(h2, f"b-{t}", dead.c_ip), "before"
        for name in (f"c-{t}", f"cal-{t}"):
            assert h1.client().resolve(f"a-{t}", name) == [dead.c_ip], f"{name} before"
        assert claims_by(cluster, network.id, "h3") == {dead.c_ip: c.endpoint_id}
        h3.kill_agent()
        h3.underlay_down()
        yield dead
    finally:
        remove_tagged(cluster, t)


@pytest.fixture(scope="module")
def taken(cluster: Cluster, death: Death) -> rpb.Endpoint:
    """Sandbox d on h1, given c's address once h3's claims are gone."""
    eventually(
        lambda: death.c_ip not in cluster.claims(death.network.id),
        REAP_S,
        "h3's claim on c's address to go",
    )
    return cluster.hosts[0].client().sandbox_on(f"d-{death.t}", death.net, ip=death.c_ip)


def test_its_endpoints_disappear_from_the_others(cluster: Cluster, death: Death) -> None:
    h1, h2, _ = cluster.hosts
    t, network = death.t, death.network

    def forgotten_by(host: ClusterHost) -> None:
        fdb, neigh = remote_entries(host, network, death.c.mac_address, death.c_ip)
        assert fdb is None, f"{host.name} keeps the FDB entry of h3's endpoint: {fdb}"
        assert neigh is None, f"{host.name} keeps the neighbour entry of h3's: {neigh}"

    for host in (h1, h2):
        eventually(lambda host=host: forgotten_by(host), REAP_S, f"{host.name} to forget c")
    assert death.c_ip not in cluster.claims(network.id), "h3's address is still claimed"
    records = cluster.endpoints_in_redis(network.id).values()
    assert [r for r in records if r.get("host") == "h3"] == [], "h3's endpoints in Redis"
    assert "h3" not in cluster.redis_members("berth:hosts")
    for name in (f"c-{t}", f"cal-{t}", f"c-{t}.{death.net}"):
        assert h1.client().resolve(f"a-{t}", name) == [], f"{name} still resolves on h1"
        assert h2.client().resolve(f"b-{t}", name) == [], f"{name} still resolves on h2"
    assert {h.name for h in h1.client().info().cluster.hosts} == {"h1", "h2"}
    assert "h3" not in {p.name for p in h1.client().inspect_network(death.net).peers}


def test_its_address_can_be_taken_again(
    cluster: Cluster, death: Death, taken: rpb.Endpoint
) -> None:
    h1, h2, _ = cluster.hosts
    t, c_ip = death.t, death.c_ip
    assert bare(taken.ipv4_address) == c_ip
    assert claims_by(cluster, death.network.id, "h1").get(c_ip) == taken.endpoint_id
    h2.client().sandbox_on(f"e-{t}", death.net)
    assert tcp_reaches((h2, f"e-{t}"), (h1, f"d-{t}"), c_ip), "a new sandbox on h2 reaches d"
    eventually(lambda: h2.client().resolve(f"e-{t}", f"d-{t}") == [c_ip], 10, "d's name from h2")


def test_a_sandbox_that_knew_the_dead_one_reaches_the_new_owner(
    cluster: Cluster, death: Death, taken: rpb.Endpoint
) -> None:
    """b talked to c at that address a moment before h3 died: b's own ARP cache still
    maps it to c's MAC, which no host has any more (MACs are not derived from the
    address, as Docker's classic ones are), unless the agent sees to it."""
    h1, h2, _ = cluster.hosts
    t = death.t
    assert tcp_reaches((h2, f"b-{t}"), (h1, f"d-{t}"), death.c_ip), (
        "b, which reached c before it died, does not reach d at c's old address: "
        f"b's neighbours: {h2.in_sandbox(f'b-{t}', 'ip', 'neigh').stdout.strip()}; "
        f"c's MAC was {death.c.mac_address}, d's is {taken.mac_address}"
    )
