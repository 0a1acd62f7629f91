"""Addresses are claimed atomically in Redis: sandboxes on every host connecting to one
overlay network at the same instant never get the same address (100 rounds)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from berth.api.network.v1 import resources_pb2 as rpb
from tests.integration.overlay.probes import bare, needs_cluster, new_subnet
from tests.support.cluster import Cluster, ClusterHost

pytestmark = [needs_cluster, pytest.mark.timeout(240)]

ROUNDS = 100
PER_HOST = 2  # sandboxes of each host connecting in every round


def at_once(calls: list[tuple[ClusterHost, str]], act: str, network: str) -> list[rpb.Endpoint]:
    """Connects (or disconnects) every (host, sandbox), all released by one barrier."""
    barrier = threading.Barrier(len(calls))

    def one(call: tuple[ClusterHost, str]) -> rpb.Endpoint:
        host, sandbox = call
        client = host.client()
        barrier.wait(timeout=10)
        if act == "connect":
            return client.attach(sandbox, network)
        client.detach(sandbox, network)
        return rpb.Endpoint()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def claims_of_hosts(cluster: Cluster, network_id: str) -> dict[str, dict[str, str]]:
    """Each host's address claims (address -> endpoint id), from one HGETALL."""
    found: dict[str, dict[str, str]] = {host.name: {} for host in cluster.hosts}
    for address, owner in cluster.claims(network_id).items():
        host, _, endpoint_id = owner.partition("/")
        if host in found:  # not a reservation (the gateway's, if the agent records one)
            found[host][address] = endpoint_id
    return found


def test_concurrent_connects_from_all_hosts_never_share_an_address(
    cluster: Cluster, t: str
) -> None:
    net = f"ov-{t}"
    network = cluster.hosts[0].client().overlay_network(net, new_subnet())
    calls = [(host, f"s{host.index}{i}-{t}") for host in cluster.hosts for i in range(PER_HOST)]
    for host, sandbox in calls:
        host.client().bare_sandbox(sandbox)
    started = time.monotonic()
    seen: set[str] = set()
    for round_no in range(ROUNDS):
        endpoints = at_once(calls, "connect", net)
        addresses = [bare(e.ipv4_address) for e in endpoints]
        assert len(set(addresses)) == len(addresses), f"round {round_no}: {addresses}"
        seen.update(addresses)
        expected: dict[str, dict[str, str]] = {host.name: {} for host in cluster.hosts}
        for (host, _), endpoint in zip(calls, endpoints, strict=True):
            expected[host.name][bare(endpoint.ipv4_address)] = endpoint.endpoint_id
        claimed = claims_of_hosts(cluster, network.id)
        assert claimed == expected, f"round {round_no}: the address claims in Redis"
        at_once(calls, "disconnect", net)
    elapsed = time.monotonic() - started
    assert claims_of_hosts(cluster, network.id) == {h.name: {} for h in cluster.hosts}
    print(
        f"\n{ROUNDS} rounds of {len(calls)} concurrent connects in {elapsed:.1f}s "
        f"({len(seen)} different addresses handed out)"
    )
