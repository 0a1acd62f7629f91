"""Fixtures of the overlay tests: a three-host cluster per test module (a module that kills
a host or an agent does not leave a damaged cluster to the next), and a tag per test whose
sandboxes and networks are removed from every host afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.network.netclient import tag
from tests.integration.overlay.probes import remove_tagged
from tests.support.cluster import Cluster, running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("overlay")) as running:
        yield running
    assert running.leftovers() == [], "namespaces or /etc/netns folders left behind"
    assert not [h.name for h in running.hosts if h.agent_running], "agents left running"
    assert (
        running.redis is None
        or running.redis.process is None
        or (running.redis.process.poll() is not None)
    ), "redis-server left running"


@pytest.fixture
def t(cluster: Cluster) -> Iterator[str]:
    """The test's tag: every sandbox and network named `...-TAG` goes away afterwards."""
    value = tag()
    try:
        yield value
    finally:
        remove_tagged(cluster, value)
