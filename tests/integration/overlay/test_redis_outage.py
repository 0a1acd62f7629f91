"""Redis stops while traffic flows: the established connection between h1 and h2 keeps
exchanging data all along, the agents say they are disconnected and refuse cluster
operations at once (UNAVAILABLE, naming Redis); once Redis is back they reconnect and
converge, and a new endpoint on h3 is reachable from h1."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.overlay.probes import (
    HOST_TTL_ECHOES,
    REACH_S,
    bare,
    echo_stream,
    eventually,
    kernel_watch,
    needs_cluster,
    new_subnet,
    tcp_reaches,
    vxlan_device,
)
from tests.support.cluster import Cluster
from tests.support.processes import poll

pytestmark = [needs_cluster, pytest.mark.timeout(180)]

FAIL_FAST_S = 2.0
RECONNECT_S = 20.0  # the agents' reconnection backoff included
MAX_GAP_S = 1.0  # the longest pause the established connection may see


def fails_fast(call: Callable[[], Any], what: str) -> None:
    """The call fails with UNAVAILABLE, naming Redis, in under FAIL_FAST_S."""
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as failed:
        call()
    elapsed = time.monotonic() - started
    error = failed.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{what}: {error}"
    assert "redis" in (error.details() or "").lower(), f"{what}: {error.details()}"
    assert elapsed < FAIL_FAST_S, f"{what} took {elapsed:.2f}s to fail"


def test_redis_outage_keeps_traffic_and_converges_after(
    cluster: Cluster, t: str, tmp_path: Path
) -> None:
    h1, h2, h3 = cluster.hosts
    net = f"ov-{t}"
    network = h1.client().overlay_network(net, new_subnet())
    a = h1.client().sandbox_on(f"a-{t}", net)
    b = h2.client().sandbox_on(f"b-{t}", net)
    b_ip = bare(b.ipv4_address)
    h3.client().bare_sandbox(f"c-{t}")
    before = set(cluster.endpoints_in_redis(network.id))

    device = vxlan_device(network)
    with (
        echo_stream((h1, f"a-{t}"), (h2, f"b-{t}"), b_ip, tmp_path / "stream") as stream,
        kernel_watch(h1, device, tmp_path / "watch") as on_h1,
        kernel_watch(h2, device, tmp_path / "watch") as on_h2,
    ):
        marks = {"redis stopped": time.time()}
        cluster.stop_redis()
        try:
            for host in cluster.hosts:
                poll(
                    lambda host=host: not host.client().info().cluster.connected,
                    10,
                    f"{host.name} to report cluster.connected false",
                )
            fails_fast(lambda: h3.client().attach(f"c-{t}", net, timeout=10), "connect while down")
            assert h3.client().endpoint(f"c-{t}", network.id) is None, "half a connect"
            fails_fast(
                lambda: h2.client().overlay_network(f"late-{t}", new_subnet(), timeout=10),
                "create while down",
            )
            fails_fast(
                lambda: h3.client().remove_networks(net), "rm while down (no local endpoint)"
            )
            # Longer than the hosts' TTL: their heartbeat keys expire meanwhile.
            stream.advances(HOST_TTL_ECHOES, what="while Redis is down")
        finally:
            marks["redis restarting"] = time.time()
            cluster.start_redis()
            marks["redis answers"] = time.time()
        for host in cluster.hosts:
            poll(
                lambda host=host: host.client().info().cluster.connected,
                RECONNECT_S,
                f"{host.name} to reconnect to Redis",
            )
        marks["all reconnected"] = time.time()
        c_ip = bare(h3.client().attach(f"c-{t}", net).ipv4_address)
        assert tcp_reaches((h1, f"a-{t}"), (h3, f"c-{t}"), c_ip), "new endpoint on h3 from h1"
        stream.advances(20, what="after Redis came back")
        eventually(
            lambda: before <= set(cluster.endpoints_in_redis(network.id)),
            REACH_S,
            "the endpoints from before the outage to be in Redis again",
        )
        stream.advances(HOST_TTL_ECHOES, what="after the resynchronisation")
        result = stream.finish()
    marks["longest pause ended"] = result["gap_end"]
    timeline = ", ".join(
        f"{what} at +{at - marks['redis stopped']:.2f}s" for what, at in marks.items()
    )
    assert result["error"] == "", f"{result}; {timeline}"
    # A live host's endpoints must never leave the others' kernels (a host whose
    # heartbeat key expired while Redis was down is not dead).
    removed = on_h1.deletions(b.mac_address, b_ip)
    removed += on_h2.deletions(a.mac_address, bare(a.ipv4_address))
    assert removed == [], f"live endpoints' entries removed meanwhile: {removed}; {timeline}"
    assert result["gap"] < MAX_GAP_S, f"the connection stalled: {result}; {timeline}"
    assert {h.name for h in h1.client().info().cluster.hosts} == {h.name for h in cluster.hosts}
