"""The three-host harness itself, without agents: the underlay joins the hosts and redis,
redis answers from inside a host, and nothing of the cluster is left afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cluster import REDIS_ADDRESS, REDIS_PORT, running_cluster
from tests.support.hostns import leftovers

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.timeout(60),
]


def test_underlay_joins_hosts_and_redis_and_teardown_leaves_nothing(tmp_path: Path) -> None:
    with running_cluster(tmp_path, agents=False) as cluster:
        prefix, server = cluster.prefix, cluster.redis
        assert server is not None and server.process is not None
        for host in cluster.hosts:
            for other in [*cluster.hosts, None]:
                address = other.address if other else REDIS_ADDRESS
                pinged = host.run("ping", "-c1", "-W2", address)
                assert pinged.returncode == 0, f"{host.name} -> {address}: {pinged.stdout}"
            answer = host.run("redis-cli", "-h", REDIS_ADDRESS, "-p", str(REDIS_PORT), "PING")
            assert answer.stdout.strip() == "PONG", f"redis from {host.name}: {answer}"
        assert cluster.redis_cli("SET", "berth:test", "1").strip() == "OK"
        cluster.stop_redis()
        assert server.process.poll() is not None
        assert cluster.redis_cli("PING") == "", "redis answers after stop"
        cluster.start_redis()
        assert cluster.redis_cli("GET", "berth:test").strip() == "1", "data kept over a restart"
        assert len(leftovers(prefix)) == len(cluster.hosts) + 2  # hosts, underlay, redis
    assert leftovers(prefix) == []
    assert server.process.poll() is not None, "redis-server still runs"
