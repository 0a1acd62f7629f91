"""An agent started without --redis-url is in no cluster: an overlay network cannot be
created, and the error says what to do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.overlay.probes import needs_cluster
from tests.support.cluster import ClusterHost, running_cluster

pytestmark = [needs_cluster, pytest.mark.timeout(60)]


@pytest.fixture
def lone_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClusterHost]:
    for variable in ("BERTH_REDIS_URL", "BERTH_NETWORKD_REDIS_URL"):
        monkeypatch.delenv(variable, raising=False)
    with running_cluster(tmp_path, hosts=1, redis=False) as cluster:
        yield cluster.hosts[0]


def test_overlay_needs_a_redis_url(lone_host: ClusterHost) -> None:
    client = lone_host.client()
    with pytest.raises(grpc.RpcError) as refused:
        client.overlay_network("lonely", "10.79.1.0/24")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value
    message = refused.value.details() or ""
    assert "--redis-url" in message or "BERTH_REDIS_URL" in message, message
    assert "lonely" not in client.network_names(), "a refused create left a network"
    cluster = client.info().cluster
    assert (cluster.enabled, cluster.connected) == (False, False)
