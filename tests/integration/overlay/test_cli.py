"""The overlay walkthrough as a user types it: the `berth` CLI against a real gateway that
routes `--on HOST` to the agents it finds registered in Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.overlay.probes import needs_cluster, new_subnet
from tests.support.cluster import Cluster
from tests.support.processes import BIN, poll, wait_serving

pytestmark = [needs_cluster, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def gateway(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway in h1's namespace (Redis is reachable from the hosts only), fronting h1's
    agent and, through Redis, every other host's."""
    root = tmp_path_factory.mktemp("gw")
    socket = root / "gw.sock"
    h1 = cluster.hosts[0]
    argv = [
        *("ip", "netns", "exec", h1.netns, sys.executable, "-m", "berth.gateway.main"),
        *("--listen", f"unix://{socket}", "--state-dir", str(root), "--socket-group", ""),
        *("--network-address", f"unix://{h1.socket}", "--host-name", h1.name),
        *("--redis-url", cluster.redis_url, "--log-format", "json"),
    ]
    with (root / "gateway.log").open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"unix://{socket}")
        yield f"unix://{socket}"
    finally:
        process.terminate()
        process.wait(timeout=20)


def berth(gateway: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BERTH_HOST": gateway}
    env.pop("BERTH_ON", None)
    return subprocess.run(
        [str(BIN / "berth"), *args], capture_output=True, text=True, env=env, timeout=60
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_overlay_walkthrough_with_the_cli(gateway: str, cluster: Cluster, t: str) -> None:
    net, db, web = f"appnet-{t}", f"db-{t}", f"web-{t}"
    network_id = ok(
        berth(gateway, "network", "create", "-d", "overlay", "--subnet", new_subnet(), net)
    ).strip()
    assert len(network_id) == 64

    ok(
        berth(
            gateway, "sandbox", "create", "--network", net, "--network-alias", "db", "--start", db
        )
    )
    poll(lambda: "h2" in berth(gateway, "--on", "h2", "network", "ls").stdout + "h2", 10, "h2")
    listed = poll(
        lambda: net in (out := berth(gateway, "--on", "h2", "network", "ls").stdout) and out,
        10,
        "h2 to list the network",
    )
    row = next(line for line in listed.splitlines() if net in line)
    assert "overlay" in row and "global" in row
    ok(berth(gateway, "--on", "h2", "sandbox", "create", "--network", net, "--start", web))

    pinged = poll(
        lambda: (
            berth(
                gateway, "--on", "h2", "sandbox", "exec", web, "--", "ping", "-c1", "-W1", "db"
            ).returncode
            == 0
        ),
        15,
        "web on h2 to ping db on h1 by its alias",
    )
    assert pinged

    (network,) = json.loads(ok(berth(gateway, "network", "inspect", "-v", net)))
    assert network["Scope"] == "global"
    peers = {peer["Name"]: peer for peer in network["Peers"]}
    assert set(peers) == {"h1", "h2"}
    assert peers["h2"]["IP"] == cluster.hosts[1].address

    refused = berth(gateway, "network", "rm", net)
    assert refused.returncode != 0
    assert "active endpoints" in refused.stderr

    info = ok(berth(gateway, "--on", "h3", "info"))
    assert "connected" in info and "h3 *" in info
