"""An agent SIGKILLed in the middle of a burst of connects and started again: traffic
between the two other hosts never stops; afterwards the restarted agent's endpoints, as its
API, its sandboxes' interfaces, Redis (records and address claims) and another host see
them, all agree (no orphan claim, no lost acknowledged connect), and new connects work."""

from __future__ import annotations

import random
from concurrent.futures import Future, ThreadPoolExecutor
from ipaddress import ip_address, ip_network
from pathlib import Path

import grpc
import pytest

from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import resources_pb2 as rpb
from tests.integration.overlay.probes import (
    REACH_S,
    bare,
    bridge_device,
    claims_by,
    echo_stream,
    eventually,
    needs_cluster,
    new_subnet,
    tcp_reaches,
    vxlan_device,
)
from tests.support.cluster import Cluster, ClusterHost
from tests.support.processes import poll

pytestmark = [needs_cluster, pytest.mark.timeout(180)]

BURST = 16  # connects started at once on the agent that gets killed
KILL_AFTER = random.randint(1, BURST // 2)  # replies received when the kill comes
CONVERGE_S = 20.0
MAX_GAP_S = 1.0

Endpoints = dict[str, tuple[str, str]]  # sandbox id -> (endpoint id, bare IPv4 address)


def burst_then_kill(
    host: ClusterHost, sandboxes: list[str], network: str
) -> tuple[dict[str, rpb.Endpoint], int]:
    """Connects every sandbox at once and SIGKILLs the agent after KILL_AFTER replies.
    Returns the connects that were acknowledged and how many were still in flight."""
    client = host.client()
    errors: dict[str, str] = {}

    def connect(sandbox: str) -> rpb.Endpoint | None:
        try:
            return client.attach(sandbox, network, timeout=30)
        except grpc.RpcError as error:
            errors[sandbox] = f"{error.code().name}: {error.details()}"
            return None

    with ThreadPoolExecutor(len(sandboxes)) as pool:
        futures: dict[str, Future[rpb.Endpoint | None]] = {
            s: pool.submit(connect, s) for s in sandboxes
        }
        poll(
            lambda: sum(f.done() for f in futures.values()) >= KILL_AFTER,
            30,
            f"{KILL_AFTER} connects to return",
        )
        in_flight = sum(not f.done() for f in futures.values())
        early = dict(errors)
        host.kill_agent()
    assert in_flight > 0, f"the burst was over before the kill (raise BURST); errors: {early}"
    acknowledged = {s: e for s, f in futures.items() if (e := f.result()) is not None}
    return acknowledged, in_flight


def api_view(host: ClusterHost, network: npb.Network, sandboxes: list[str]) -> Endpoints:
    """The host's endpoints on the network, from InspectSandbox of each sandbox, checked
    against InspectNetwork's containers and the interfaces inside the sandboxes."""
    client = host.client()
    by_sandbox: Endpoints = {}
    subnet = ip_network(network.ipam.config[0].subnet)
    for name in sandboxes:
        sandbox = client.inspect_sandbox(name)
        endpoint = next((e for e in sandbox.endpoints if e.network_id == network.id), None)
        inside = {bare(a) for a in host.sandbox_addresses(name) if ip_address(bare(a)) in subnet}
        expected = {bare(endpoint.ipv4_address)} if endpoint else set()
        assert inside == expected, f"{name}: interfaces {inside}, agent {expected}"
        if endpoint is not None:
            by_sandbox[sandbox.id] = (endpoint.endpoint_id, bare(endpoint.ipv4_address))
    containers = client.inspect_network(network.id).containers
    by_network = {sid: (r.endpoint_id, bare(r.ipv4_address)) for sid, r in containers.items()}
    assert by_network == by_sandbox, "InspectNetwork and InspectSandbox disagree"
    return by_sandbox


def redis_view(cluster: Cluster, network: npb.Network, host: str) -> Endpoints:
    records = cluster.endpoints_in_redis(network.id).values()
    return {r["sandbox_id"]: (r["id"], bare(r["ipv4"])) for r in records if r.get("host") == host}


def peer_view(observer: ClusterHost, network: npb.Network, host: str) -> Endpoints:
    """What another host's verbose InspectNetwork says `host` has."""
    peers = observer.client().inspect_network(network.id, verbose=True).peers
    peer = next((p for p in peers if p.name == host), None)
    containers = peer.containers if peer is not None else {}
    return {sid: (r.endpoint_id, bare(r.ipv4_address)) for sid, r in containers.items()}


def agreement(
    cluster: Cluster, host: ClusterHost, network: npb.Network, sandboxes: list[str]
) -> Endpoints:
    local = api_view(host, network, sandboxes)
    ports = host.ip_json("link", "show", "master", bridge_device(network))
    veths = sorted(p["ifname"] for p in ports if p["ifname"] != vxlan_device(network))
    assert len(veths) == len(local), f"ports on the overlay bridge: {veths}, endpoints: {local}"
    assert redis_view(cluster, network, host.name) == local, "Redis's records disagree"
    claims = claims_by(cluster, network.id, host.name)
    assert claims == {ip: eid for eid, ip in local.values()}, "address claims disagree"
    observer = cluster.hosts[0]
    assert peer_view(observer, network, host.name) == local, f"{observer.name} disagrees"
    return local


def test_an_agent_killed_mid_burst_comes_back_consistent(
    cluster: Cluster, t: str, tmp_path: Path
) -> None:
    h1, h2, h3 = cluster.hosts
    net = f"ov-{t}"
    network = h1.client().overlay_network(net, new_subnet())
    h1.client().sandbox_on(f"a-{t}", net)
    b_ip = bare(h2.client().sandbox_on(f"b-{t}", net).ipv4_address)
    sandboxes = [f"s{i:02d}-{t}" for i in range(BURST)]
    for name in sandboxes:
        h3.client().bare_sandbox(name)

    with echo_stream((h1, f"a-{t}"), (h2, f"b-{t}"), b_ip, tmp_path / "stream") as stream:
        acknowledged, in_flight = burst_then_kill(h3, sandboxes, net)
        stream.advances(20, what="while h3's agent is dead")
        h3.start_agent()
        local = eventually(
            lambda: agreement(cluster, h3, network, sandboxes),
            CONVERGE_S,
            "h3's endpoints to agree everywhere",
        )
        ids = {endpoint_id for endpoint_id, _ in local.values()}
        lost = {s: e.endpoint_id for s, e in acknowledged.items() if e.endpoint_id not in ids}
        assert lost == {}, "acknowledged connects lost by the restart"

        n = h3.client().sandbox_on(f"n-{t}", net)
        assert tcp_reaches((h1, f"a-{t}"), (h3, f"n-{t}"), bare(n.ipv4_address), within=REACH_S)
        eventually(
            lambda: h1.client().resolve(f"a-{t}", f"n-{t}") == [bare(n.ipv4_address)],
            REACH_S,
            "the new sandbox's name from h1",
        )
        stream.advances(20, what="after the restart")
        result = stream.finish()
    print(
        f"\nkilled after {KILL_AFTER} replies: {in_flight} of {BURST} connects in flight, "
        f"{len(acknowledged)} acknowledged, {len(local)} endpoints after the restart"
    )
    assert result["error"] == "", result
    assert result["gap"] < MAX_GAP_S, f"traffic between h1 and h2 stalled: {result}"
