"""The cluster store and an agent's link to it, against a real redis-server on loopback.

No root needed: everything here is Redis. Uniqueness (network names, VNIs, addresses)
must hold under concurrent writers, a dead host must be swept from every network, and a
link must notice a lost server at once and come back by itself when it returns.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from berth.common.errors import AlreadyExists, Code
from berth.network.adapters.cluster_store import (
    CHANNEL,
    HOSTS,
    NETWORK_NAMES,
    NETWORKS,
    VNIS,
    ClusterStore,
    ClusterUnavailable,
    addresses_key,
    endpoints_key,
)
from berth.network.domain.model import now
from berth.network.domain.overlay import ClusterEndpoint, HostRecord, choose_vni, claim_owner
from berth.network.overlay.link import Change, ClusterLink, Timing
from tests.support.processes import free_port
from tests.support.redis import RedisServer, redis_server

LINK_TIMING = Timing(heartbeat_interval=0.1, host_ttl=2.0, resync_interval=60.0)
NOTICE_S = 5.0  # how long a link may take to notice that Redis went or came back


# ---- helpers -------------------------------------------------------------------------------


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = 5.0) -> Any:
    """Await check() until it gives something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


def network_builder(name: str, subnet: str, vni: int | None = None) -> Any:
    """What an agent's create_network hands the store: the record made from the networks
    there are, refusing a name already taken (as the overlay driver does)."""
    network_id = secrets.token_hex(32)

    def build(existing: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if any(other["name"] == name for other in existing.values()):
            raise AlreadyExists(f"network with name {name} already exists in the cluster")
        chosen = choose_vni((other["vni"] for other in existing.values()), vni)
        return {"id": network_id, "name": name, "vni": chosen, "subnets": [{"subnet": subnet}]}

    return build


async def create(store: ClusterStore, name: str, subnet: str = "10.72.0.0/24") -> dict[str, Any]:
    return await store.create_network(network_builder(name, subnet), "h1")


def cluster_endpoint(
    network_id: str, host: str, address: str, sandbox: str = "web"
) -> ClusterEndpoint:
    return ClusterEndpoint.from_dict(
        {
            "id": secrets.token_hex(32),
            "network_id": network_id,
            "host": host,
            "underlay_address": f"10.71.0.{host.removeprefix('h')}",
            "sandbox": sandbox,
            "sandbox_id": secrets.token_hex(32),
            "mac_address": "02:42:0a:48:00:02",
            "ipv4": f"{address}/24",
            "ipv6": None,
            "aliases": [],
        }
    )


async def attach(store: ClusterStore, network_id: str, host: str, address: str) -> ClusterEndpoint:
    """An endpoint as an agent adds it: its address claimed, then the endpoint put."""
    endpoint = cluster_endpoint(network_id, host, address, sandbox=f"box-{host}-{address}")
    assert await store.claim(network_id, address, claim_owner(host, endpoint.id))
    await store.put_endpoint(endpoint)
    return endpoint


def host_record(name: str) -> HostRecord:
    return HostRecord(name, f"10.71.0.{name.removeprefix('h')}", "", now())


def raw(server: RedisServer) -> redis.Redis:
    """A plain synchronous client, standing for another host writing at the same time."""
    return redis.Redis(host=server.address, port=server.port, decode_responses=True)


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis", port=free_port()) as running:
        yield running


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[ClusterStore]:
    opened = ClusterStore(server.url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def other(server: RedisServer) -> AsyncIterator[ClusterStore]:
    """A second host's store: its own connections to the same server."""
    opened = ClusterStore(server.url)
    try:
        yield opened
    finally:
        await opened.close()


# ---- networks ------------------------------------------------------------------------------


async def test_two_hosts_creating_the_same_name_at_once_give_one_network(
    store: ClusterStore, other: ClusterStore
) -> None:
    results = await asyncio.gather(
        store.create_network(network_builder("shared", "10.72.0.0/24"), "h1"),
        other.create_network(network_builder("shared", "10.72.0.0/24"), "h2"),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], AlreadyExists)
    assert list(await store.networks()) == [won[0]["id"]]


async def test_a_network_added_between_read_and_write_is_seen_on_the_retry(
    server: RedisServer, store: ClusterStore
) -> None:
    """WATCH: another host writes after this one read the networks; the transaction must
    fail and `build` run again on the new set, where the name is taken."""
    intruder = {"id": "f" * 64, "name": "shared", "vni": 4096, "subnets": []}
    seen: list[set[str]] = []
    build = network_builder("shared", "10.73.0.0/24")

    def racing_build(existing: dict[str, dict[str, Any]]) -> dict[str, Any]:
        seen.append(set(existing))
        if len(seen) == 1:
            with raw(server) as client:
                client.hset(NETWORKS, intruder["id"], json.dumps(intruder))
        return build(existing)

    with pytest.raises(AlreadyExists):
        await store.create_network(racing_build, "h1")
    assert seen == [set(), {intruder["id"]}]
    assert list(await store.networks()) == [intruder["id"]]


async def test_concurrent_creations_of_different_names_get_different_vnis(
    server: RedisServer, store: ClusterStore, other: ClusterStore
) -> None:
    created = await asyncio.gather(
        *(
            (store if i % 2 else other).create_network(
                network_builder(f"net{i}", f"10.{72 + i}.0.0/24"), f"h{i}"
            )
            for i in range(6)
        )
    )
    assert sorted(n["vni"] for n in created) == list(range(4096, 4102))
    networks = await store.networks()
    assert set(networks) == {n["id"] for n in created}
    with raw(server) as client:
        assert client.hgetall(NETWORK_NAMES) == {n["name"]: n["id"] for n in created}
        assert client.hgetall(VNIS) == {str(n["vni"]): n["id"] for n in created}


async def test_creating_a_network_announces_it(store: ClusterStore, other: ClusterStore) -> None:
    pubsub = other.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        network = await create(store, "announced")
        message = await until(lambda: pubsub.get_message(timeout=0.1), "the announcement")
    finally:
        await pubsub.aclose()
    assert json.loads(message["data"]) == {
        "kind": "network",
        "network_id": network["id"],
        "host": "h1",
    }


async def test_remove_network_refuses_while_endpoints_exist_and_names_them(
    store: ClusterStore, server: RedisServer
) -> None:
    network = await create(store, "busy")
    held = await attach(store, network["id"], "h2", "10.72.0.2")

    assert await store.remove_network(network["id"], "h1") == [held]
    assert network["id"] in await store.networks()
    assert await store.claims(network["id"]) == {"10.72.0.2": claim_owner("h2", held.id)}

    await store.remove_endpoint(network["id"], held.id, "h2")
    assert await store.remove_network(network["id"], "h1") == []
    assert await store.networks() == {}
    with raw(server) as client:
        assert client.hgetall(NETWORK_NAMES) == {} and client.hgetall(VNIS) == {}
        assert not client.exists(addresses_key(network["id"]), endpoints_key(network["id"]))
    again = await create(store, "busy")  # the name and the VNI are free again
    assert again["vni"] == network["vni"]


async def test_restore_network_puts_back_a_lost_network(
    store: ClusterStore, server: RedisServer
) -> None:
    network = await create(store, "kept")
    with raw(server) as client:
        client.flushall()  # as a Redis restarted without its data
    assert await store.restore_network(network, "h1") is True
    assert await store.networks() == {network["id"]: network}
    with raw(server) as client:
        assert client.hget(NETWORK_NAMES, "kept") == network["id"]
        assert client.hget(VNIS, str(network["vni"])) == network["id"]
    assert await store.restore_network(network, "h1") is True  # already there: nothing to do
    with pytest.raises(AlreadyExists):
        await create(store, "kept")


async def test_restore_network_gives_way_to_a_network_that_took_its_name(
    store: ClusterStore, server: RedisServer
) -> None:
    lost = await create(store, "contested")
    with raw(server) as client:
        client.flushall()
    taken = await store.create_network(network_builder("contested", "10.73.0.0/24", vni=9000), "h2")
    assert await store.restore_network(lost, "h1") is False
    assert set(await store.networks()) == {taken["id"]}
    with raw(server) as client:
        assert client.hget(NETWORK_NAMES, "contested") == taken["id"]


async def test_restore_network_gives_way_to_a_network_that_took_its_vni(
    store: ClusterStore, server: RedisServer
) -> None:
    lost = await create(store, "first")
    with raw(server) as client:
        client.flushall()
    taken = await create(store, "second")
    assert taken["vni"] == lost["vni"]
    assert await store.restore_network(lost, "h1") is False
    assert set(await store.networks()) == {taken["id"]}


async def test_hosts_restoring_the_same_network_at_once_all_keep_it(
    server: RedisServer, store: ClusterStore
) -> None:
    """After Redis came back without its data, every host with endpoints on a network
    resyncs at about the same time and puts it back. Each must learn that it is back
    (True): a False makes the overlay driver drop its local copy, endpoints and all.
    Another host's restore committing between this one's WATCH and EXEC must end in True.
    """
    lost = await create(store, "restored")
    with raw(server) as client:
        client.flushall()
    stores = [ClusterStore(server.url) for _ in range(4)]
    try:
        answers = await asyncio.gather(
            *(s.restore_network(lost, f"h{i}") for i, s in enumerate(stores))
        )
    finally:
        for opened in stores:
            await opened.close()
    assert await store.networks() == {lost["id"]: lost}
    assert answers == [True] * len(stores)


# ---- address claims ------------------------------------------------------------------------


async def test_one_of_twenty_concurrent_claims_of_an_address_wins(
    store: ClusterStore, other: ClusterStore
) -> None:
    owners = [claim_owner(f"h{i}", secrets.token_hex(32)) for i in range(20)]
    results = await asyncio.gather(
        *(
            (store if i % 2 else other).claim("n" * 64, "10.72.0.2", owner)
            for i, owner in enumerate(owners)
        )
    )
    assert results.count(True) == 1, results
    winner = owners[results.index(True)]
    assert await store.claims("n" * 64) == {"10.72.0.2": winner}
    assert await store.claim("n" * 64, "10.72.0.2", winner) is True  # the holder keeps it
    loser = owners[results.index(False)]
    assert await store.claim("n" * 64, "10.72.0.2", loser) is False


async def test_only_the_owner_releases_its_claims(store: ClusterStore) -> None:
    nid = "n" * 64
    mine, theirs = claim_owner("h1", "a" * 64), claim_owner("h2", "b" * 64)
    assert await store.claim(nid, "10.72.0.2", mine)
    assert await store.claim(nid, "10.72.0.3", theirs)

    await store.release(nid, ["10.72.0.2", "10.72.0.3"], theirs.replace("h2", "h3"))
    assert await store.claims(nid) == {"10.72.0.2": mine, "10.72.0.3": theirs}

    await store.release(nid, ["10.72.0.2", "10.72.0.3", "10.72.0.9"], mine)
    assert await store.claims(nid) == {"10.72.0.3": theirs}
    await store.release(nid, [], mine)  # nothing to release: no call at all
    assert await store.claim(nid, "10.72.0.2", theirs)


async def test_putting_and_removing_an_endpoint_announces_it(
    store: ClusterStore, other: ClusterStore
) -> None:
    nid = (await create(store, "announced"))["id"]
    endpoint = cluster_endpoint(nid, "h2", "10.72.0.2")
    pubsub = other.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        assert await store.put_endpoint(endpoint)
        put = await until(lambda: pubsub.get_message(timeout=0.1), "the put")
        assert await other.endpoints(nid) == [endpoint]
        await store.remove_endpoint(nid, endpoint.id, "h2")
        removed = await until(lambda: pubsub.get_message(timeout=0.1), "the removal")
    finally:
        await pubsub.aclose()
    expected = {"kind": "endpoints", "network_id": nid, "host": "h2"}
    assert json.loads(put["data"]) == expected == json.loads(removed["data"])
    assert await other.endpoints(nid) == []


async def test_an_endpoint_is_not_recorded_on_a_network_removed_meanwhile(
    store: ClusterStore,
) -> None:
    """A removal that comes between a host's address claim and its endpoint write wins:
    the write is refused, so no endpoint is left on a network that no longer exists."""
    nid = (await create(store, "short-lived"))["id"]
    assert await store.claim(nid, "10.72.0.2", "h2/e1")
    assert await store.remove_network(nid, "h1") == []
    assert not await store.put_endpoint(cluster_endpoint(nid, "h2", "10.72.0.2"))
    assert await store.endpoints(nid) == []


# ---- hosts ---------------------------------------------------------------------------------


async def test_a_dead_hosts_endpoints_and_claims_are_swept_from_every_network(
    store: ClusterStore, server: RedisServer
) -> None:
    ids = [(await create(store, f"net{i}", f"10.7{2 + i}.0.0/24"))["id"] for i in range(3)]
    await store.heartbeat(host_record("h1"), ttl_s=30.0)
    await store.heartbeat(host_record("h2"), ttl_s=0.1)
    survivors = {
        ids[0]: [await attach(store, ids[0], "h1", "10.72.0.2")],
        ids[1]: [],
        ids[2]: [await attach(store, ids[2], "h1", "10.74.0.2")],
    }
    await attach(store, ids[0], "h2", "10.72.0.3")
    await attach(store, ids[1], "h2", "10.73.0.2")
    await attach(store, ids[1], "h2", "10.73.0.3")

    async def h2_dead() -> bool:
        live, dead = await store.hosts()
        return "h2" in dead and set(live) == {"h1"}

    await until(h2_dead, "h2's heartbeat to expire")
    assert sorted(await store.reap("h2")) == sorted(ids[:2])  # not the third: h2 had none

    for nid, endpoints in survivors.items():
        assert await store.endpoints(nid) == endpoints
        assert await store.claims(nid) == {
            str(e.ipv4.ip): claim_owner("h1", e.id) for e in endpoints if e.ipv4
        }
    live, dead = await store.hosts()
    assert set(live) == {"h1"} and dead == set()
    with raw(server) as client:
        assert client.smembers(HOSTS) == {"h1"}

    assert await store.reap("h1") == []  # alive: swept of nothing
    assert await store.endpoints(ids[0]) == survivors[ids[0]]
    assert await store.reap("h2") == []  # already gone


async def test_a_late_host_whose_key_came_back_is_not_swept(store: ClusterStore) -> None:
    network = await create(store, "late")
    await store.heartbeat(host_record("h2"), ttl_s=0.1)
    held = await attach(store, network["id"], "h2", "10.72.0.2")

    async def h2_dead() -> bool:
        return "h2" in (await store.hosts())[1]

    await until(h2_dead, "h2's heartbeat to expire")
    await store.heartbeat(host_record("h2"), ttl_s=30.0)
    assert await store.reap("h2") == []
    assert await store.endpoints(network["id"]) == [held]
    assert "h2" in (await store.hosts())[0]


async def test_a_heartbeat_records_the_host(store: ClusterStore) -> None:
    record = host_record("h3")
    await store.heartbeat(record, ttl_s=30.0)
    live, dead = await store.hosts()
    assert live == {"h3": record} and dead == set()


# ---- the link ------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.resyncs = 0
        self.changes: list[Change] = []

    async def on_resync(self) -> None:
        self.resyncs += 1

    async def on_change(self, change: Change) -> None:
        self.changes.append(change)


def make_link(server: RedisServer, recorder: Recorder, host: str = "h1") -> ClusterLink:
    return ClusterLink(
        ClusterStore(server.url, timeout=0.5),
        host_name=host,
        underlay_address=f"10.71.0.{host.removeprefix('h')}",
        agent_address="",
        timing=LINK_TIMING,
        on_change=recorder.on_change,
        on_resync=recorder.on_resync,
    )


async def test_a_link_without_redis_refuses_at_once_and_comes_back_with_it(
    server: RedisServer, store: ClusterStore
) -> None:
    recorder = Recorder()
    link = make_link(server, recorder)
    link.start()
    try:
        await until(lambda: _true(link.connected and recorder.resyncs == 1), "the first join")
        link.require()
        assert "h1" in (await store.hosts())[0]
        with raw(server) as client:
            assert 0 < client.pttl("berth:host:h1") <= LINK_TIMING.host_ttl * 1000
        network = await create(store, "survivor")

        await asyncio.to_thread(server.stop)
        await until(lambda: _true(not link.connected), "the link to notice", NOTICE_S)
        started = time.monotonic()
        with pytest.raises(ClusterUnavailable) as caught:
            link.require()
        assert time.monotonic() - started < 0.1
        assert caught.value.code is Code.UNAVAILABLE
        assert caught.value.reason == "CLUSTER_UNAVAILABLE"
        assert "Redis" in caught.value.message
        assert f"{server.address}:{server.port}" in caught.value.message

        started = time.monotonic()
        with pytest.raises(ClusterUnavailable):
            await store.claim(network["id"], "10.72.0.2", "h1/x")
        assert time.monotonic() - started < 2.0  # the store fails fast too

        await asyncio.to_thread(server.start)
        await until(lambda: _true(link.connected), "the link to reconnect", NOTICE_S)
        await until(lambda: _true(recorder.resyncs == 2), "the resync after reconnecting")
        link.require()
        assert network["id"] in await store.networks()  # the data survived the restart
    finally:
        await link.stop()


async def test_a_link_sweeps_dead_hosts_and_reports_what_changed(
    server: RedisServer, store: ClusterStore
) -> None:
    network = await create(store, "swept")
    await store.heartbeat(host_record("h2"), ttl_s=0.2)
    await attach(store, network["id"], "h2", "10.72.0.2")
    recorder = Recorder()
    link = make_link(server, recorder)
    link.start()
    try:
        await until(lambda: _true(recorder.changes), "the sweep's change")
        assert recorder.changes[0] == Change("endpoints", network["id"], "h2")
        assert await store.endpoints(network["id"]) == []
        assert await store.claims(network["id"]) == {}
        assert set(link.hosts) == {"h1"}
    finally:
        await link.stop()


async def test_a_link_reports_other_hosts_changes_but_not_its_own(
    server: RedisServer, store: ClusterStore
) -> None:
    recorder = Recorder()
    link = make_link(server, recorder)
    link.start()
    try:
        await until(lambda: _true(link.connected), "the link to join")
        mine = await store.create_network(network_builder("mine", "10.72.0.0/24"), "h1")
        theirs = await store.create_network(network_builder("theirs", "10.73.0.0/24"), "h2")
        # h1's own change was published first: had it been reported, it would be first
        await until(lambda: _true(recorder.changes), "h2's change")
        assert recorder.changes == [Change("network", theirs["id"], "h2")]
        assert mine["id"] != theirs["id"]
    finally:
        await link.stop()


async def test_a_links_refusal_does_not_show_the_redis_password() -> None:
    """A password in --redis-url (redis://:PASSWORD@HOST) never reaches the UNAVAILABLE
    answer a client gets."""
    port = free_port()
    store = ClusterStore(f"redis://:s3cret-pass@127.0.0.1:{port}/0")
    link = ClusterLink(
        store,
        host_name="h1",
        underlay_address="10.71.0.1",
        agent_address="",
        timing=LINK_TIMING,
    )
    try:
        with pytest.raises(ClusterUnavailable) as caught:
            link.require()
    finally:
        await store.close()
    assert f"127.0.0.1:{port}" in caught.value.message
    assert "s3cret-pass" not in caught.value.message


async def _true(value: Any) -> bool:
    return bool(value)
