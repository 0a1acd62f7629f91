"""`berth network` and `berth sandbox` as a user walks seed 001 with them, against `berth up`.

One `berth up` (its network agent in a throwaway host namespace) serves the whole module,
since each start takes seconds; every test names what it makes with a tag of its own and
gives explicit subnets that no other test uses. No DNS names or published ports yet: the
sandboxes reach each other by IP address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_berth_up import Up, _up
from tests.support.hostns import host_namespace
from tests.support.processes import BIN, poll

FULL_ID = re.compile(r"[0-9a-f]{64}")
PREDEFINED = {"bridge", "host", "none"}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with host_namespace() as host:
        yield from _up(tmp_path_factory.mktemp("berth-net"), host)


def tag() -> str:
    return secrets.token_hex(3)


def berth(up: Up, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BERTH_HOST": f"unix://{up.socket}"}
    return subprocess.run(
        [str(BIN / "berth"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def ok(up: Up, *args: str, stdin: str = "") -> str:
    result = berth(up, *args, stdin=stdin)
    assert result.returncode == 0, f"berth {' '.join(args)}: {result.stderr}"
    return result.stdout


def fails(up: Up, *args: str) -> str:
    """The readable message of a command that must exit 1 (no traceback, no usage text)."""
    result = berth(up, *args)
    assert result.returncode == 1, f"berth {' '.join(args)} gave {result.returncode}"
    assert result.stderr.startswith("berth: ") and "Traceback" not in result.stderr
    return result.stderr


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def network_rows(up: Up, *args: str) -> dict[str, list[str]]:
    """`berth network ls` by network name (after checking Docker's header)."""
    header, *rows = ok(up, "network", "ls", *args).splitlines()
    assert cells(header) == ["NETWORK ID", "NAME", "DRIVER", "SCOPE"]
    return {cells(row)[1]: cells(row) for row in rows}


def inspect_network(up: Up, name: str) -> dict[str, Any]:
    (network,) = json.loads(ok(up, "network", "inspect", name))
    return network


def members(up: Up, network: str) -> dict[str, str]:
    """Sandbox name -> IPv4Address, from `network inspect`'s Containers."""
    containers = inspect_network(up, network)["Containers"]
    return {entry["Name"]: entry["IPv4Address"] for entry in containers.values()}


def inspect_sandbox(up: Up, name: str) -> dict[str, Any]:
    (sandbox,) = json.loads(ok(up, "sandbox", "inspect", name))
    return sandbox


def sandbox_networks(up: Up, name: str) -> dict[str, Any]:
    return json.loads(
        ok(up, "sandbox", "inspect", "-f", "{{json .NetworkSettings.Networks}}", name)
    )


def sandbox_states(up: Up, *args: str) -> dict[str, str]:
    """Sandbox name -> STATUS, from `berth sandbox ls`."""
    listed = ok(up, "sandbox", "ls", *args, "--format", "{{.Names}}|{{.Status}}")
    return dict(line.split("|") for line in listed.splitlines())


def pings(up: Up, sandbox: str, address: str) -> bool:
    return (
        berth(up, "sandbox", "exec", sandbox, "--", "ping", "-c1", "-W1", address).returncode == 0
    )


def reaches(up: Up, sandbox: str, address: str) -> bool:
    return bool(poll(lambda: pings(up, sandbox, address), timeout=10, what=f"{address}"))


def host_links(up: Up) -> set[str]:
    listing = up.host.run("ip", "-o", "link", "show").stdout
    return {line.split(": ")[1].split("@")[0] for line in listing.splitlines()}


def test_seed_001_connect_isolate_disconnect_and_remove(up: Up) -> None:
    t = tag()
    net = f"isolated_nw-{t}"
    c1, c2, c3, c4 = (f"container{i}-{t}" for i in range(1, 5))
    create = "network create -d bridge --subnet 172.25.0.0/16 --ip-range 172.25.3.0/24"
    net_id = ok(up, *create.split(), "--gateway", "172.25.0.254", net).strip()
    assert FULL_ID.fullmatch(net_id)
    ids = {name: ok(up, "sandbox", "create", "--start", name).strip() for name in (c1, c2, c3)}
    assert ok(up, "network", "connect", net, c2) == ""
    assert ok(up, "network", "connect", "--ip", "172.25.3.3", net, c3) == ""
    ids[c4] = ok(up, "sandbox", "create", c4, "--network", net).strip()
    assert ok(up, "sandbox", "start", c4) == f"{c4}\n"

    inspected = inspect_network(up, net)
    assert inspected["IPAM"]["Config"] == [
        {"Subnet": "172.25.0.0/16", "Gateway": "172.25.0.254", "IPRange": "172.25.3.0/24"}
    ]
    assert sorted(inspected["Containers"]) == sorted(ids[name] for name in (c2, c3, c4))
    attached = members(up, net)
    assert attached[c3] == "172.25.3.3/16"
    for name in (c2, c4):
        address = ipaddress.ip_interface(attached[name])
        assert address.ip in ipaddress.ip_network("172.25.3.0/24"), "--ip-range is honoured"
        assert address.network == ipaddress.ip_network("172.25.0.0/16")

    on_isolated = sandbox_networks(up, c3)[net]
    assert on_isolated["IPAMConfig"] == {"IPv4Address": "172.25.3.3"}
    assert (on_isolated["IPAddress"], on_isolated["IPPrefixLen"]) == ("172.25.3.3", 16)
    assert (on_isolated["Gateway"], on_isolated["NetworkID"]) == ("172.25.0.254", net_id)
    assert sorted(sandbox_networks(up, c2)) == sorted(["bridge", net])

    assert reaches(up, c2, "172.25.3.3"), "container2 joined isolated_nw: it reaches container3"
    assert reaches(up, c4, "172.25.3.3")
    assert not pings(up, c1, "172.25.3.3"), "the default bridge must not reach isolated_nw"
    c1_address = sandbox_networks(up, c1)["bridge"]["IPAddress"]
    assert reaches(up, c2, c1_address)
    assert not pings(up, c4, c1_address), "isolated_nw only must not reach the default bridge"

    assert ok(up, "network", "disconnect", net, c2) == ""
    assert c2 not in members(up, net)
    assert list(sandbox_networks(up, c2)) == ["bridge"]
    assert not pings(up, c2, "172.25.3.3"), "disconnected: no way to isolated_nw any more"
    assert "not connected" in fails(up, "network", "disconnect", net, c2)

    refused = fails(up, "network", "rm", net)
    assert "active endpoints" in refused and c3 in refused and c4 in refused
    assert net in network_rows(up)
    ok(up, "network", "disconnect", net, c3)
    ok(up, "network", "disconnect", net, c4)
    assert ok(up, "network", "rm", net) == f"{net}\n"
    assert net not in network_rows(up)
    assert ok(up, "sandbox", "rm", "-f", c1, c2, c3, c4) == f"{c1}\n{c2}\n{c3}\n{c4}\n"


def test_create_ls_and_inspect_print_dockers_shapes(up: Up) -> None:
    t = tag()
    simple, labelled = f"simple-network-{t}", f"labelled-{t}"
    simple_id = ok(up, "network", "create", simple).strip()
    create = "network create --subnet 10.31.0.0/24 --gateway 10.31.0.62 --label team=blue"
    labelled_id = ok(up, *create.split(), "-o", "com.docker.network.driver.mtu=1400", labelled)
    labelled_id = labelled_id.strip()
    assert FULL_ID.fullmatch(simple_id) and FULL_ID.fullmatch(labelled_id)

    rows = network_rows(up)
    assert rows[simple] == [simple_id[:12], simple, "bridge", "local"]
    assert rows[labelled] == [labelled_id[:12], labelled, "bridge", "local"]
    assert rows["host"][2:] == ["host", "local"] and rows["none"][2:] == ["null", "local"]
    quiet = ok(up, "network", "ls", "-q").split()
    assert simple_id[:12] in quiet and labelled_id[:12] in quiet
    assert len(quiet) == len(rows) and all(len(short) == 12 for short in quiet)
    bridges = network_rows(up, "--filter", "driver=bridge")
    assert {simple, labelled, "bridge"} <= bridges.keys()
    assert not {"host", "none"} & bridges.keys()

    network = inspect_network(up, simple)
    assert (network["Name"], network["Id"]) == (simple, simple_id)
    assert (network["Scope"], network["Driver"]) == ("local", "bridge")
    (config,) = network["IPAM"]["Config"]
    assert ipaddress.ip_address(config["Gateway"]) in ipaddress.ip_network(config["Subnet"])
    assert network["Containers"] == {} and network["Options"] == {} and network["Labels"] == {}
    assert network["Internal"] is False and network["EnableIPv6"] is False

    network = inspect_network(up, labelled)
    assert network["IPAM"]["Config"] == [{"Subnet": "10.31.0.0/24", "Gateway": "10.31.0.62"}]
    assert network["Labels"] == {"team": "blue"}
    assert network["Options"] == {"com.docker.network.driver.mtu": "1400"}

    both = json.loads(ok(up, "network", "inspect", simple, labelled))
    assert [n["Name"] for n in both] == [simple, labelled]
    missing = berth(up, "network", "inspect", simple, f"ghost-{t}")
    assert missing.returncode == 1 and f"ghost-{t} not found" in missing.stderr
    assert [n["Name"] for n in json.loads(missing.stdout)] == [simple]
    ok(up, "network", "rm", simple, labelled)


def test_bad_input_names_the_field_and_leaves_nothing_behind(up: Up) -> None:
    t = tag()
    networks, links = set(network_rows(up)), host_links(up)

    unknown = fails(up, "network", "create", "-o", "com.docker.network.bridge.bogus=1", f"a-{t}")
    assert "com.docker.network.bridge.bogus" in unknown and "unknown" in unknown
    malformed = fails(up, "network", "create", "--subnet", "172.300.0.0/16", f"b-{t}")
    assert "--subnet" in malformed and "172.300.0.0/16" in malformed
    host_bits = fails(up, "network", "create", "--subnet", "10.32.0.5/24", f"c-{t}")
    assert "subnet" in host_bits and "10.32.0.0/24" in host_bits
    mtu = fails(up, "network", "create", "-o", "com.docker.network.driver.mtu=abc", f"d-{t}")
    assert "com.docker.network.driver.mtu" in mtu and "abc" in mtu
    bad_ip = fails(up, "network", "connect", "--ip", "10.32.0.300", "bridge", f"e-{t}")
    assert "--ip" in bad_ip and "10.32.0.300" in bad_ip

    assert set(network_rows(up)) == networks
    assert host_links(up) == links


def test_sandbox_exec_passes_output_input_and_exit_codes_through(up: Up) -> None:
    box = f"exec-{tag()}"
    ok(up, "sandbox", "create", "--start", box)
    script = "echo out; echo err >&2; exit 7"
    result = berth(up, "sandbox", "exec", box, "--", "sh", "-c", script)
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert ok(up, "sandbox", "exec", "-i", box, "--", "cat", stdin="hello\n") == "hello\n"
    shown = ok(up, "sandbox", "exec", "-e", "FOO=bar", "-w", "/tmp", box, "sh", "-c", "echo $FOO")
    assert shown == "bar\n"
    assert ok(up, "sandbox", "exec", "-w", "/tmp", box, "--", "pwd") == "/tmp\n"
    assert berth(up, "sandbox", "exec", box, "--", "sh", "-c", "kill -9 $$").returncode == 137

    address = sandbox_networks(up, box)["bridge"]["IPAddress"]
    inside = ok(up, "sandbox", "exec", box, "--", "ip", "-o", "-4", "addr", "show", "eth0")
    assert f"inet {address}/" in inside, "the command runs in the sandbox's namespace"

    assert "needs a command" in fails(up, "sandbox", "exec", box, "--")
    assert "not found" in fails(up, "sandbox", "exec", f"ghost-{tag()}", "--", "true")
    ok(up, "sandbox", "stop", box)
    assert "not running" in fails(up, "sandbox", "exec", box, "--", "true")
    ok(up, "sandbox", "rm", box)


def test_sandbox_create_start_stop_rm(up: Up) -> None:
    t = tag()
    net, box = f"life-{t}", f"box-{t}"
    ok(up, "network", "create", "--subnet", "10.33.0.0/24", net)
    box_id = ok(up, "sandbox", "create", box, "--network", net, "--ip", "10.33.0.33").strip()
    assert box not in sandbox_states(up)
    assert sandbox_states(up, "-a")[box] == "Created"
    header = ok(up, "sandbox", "ls", "-a").splitlines()[0]
    assert cells(header) == ["SANDBOX ID", "CREATED", "STATUS", "PORTS", "NETWORKS", "NAMES"]

    assert ok(up, "sandbox", "start", box) == f"{box}\n"
    assert sandbox_states(up)[box].startswith("Up")
    sandbox = inspect_sandbox(up, box)
    assert (sandbox["Id"], sandbox["Name"]) == (box_id, box)
    assert sandbox["State"]["Running"] is True and sandbox["State"]["Status"] == "running"
    netns = Path(sandbox["NetworkSettings"]["SandboxKey"])
    assert netns.exists()
    assert sandbox["NetworkSettings"]["Networks"][net]["IPAddress"] == "10.33.0.33"
    assert members(up, net) == {box: "10.33.0.33/24"}

    assert ok(up, "sandbox", "stop", box) == f"{box}\n"
    assert box not in sandbox_states(up)
    assert sandbox_states(up, "-a")[box] == "Stopped"
    assert members(up, net) == {}, "network inspect shows running sandboxes only"

    ok(up, "sandbox", "start", box)
    inside = ok(up, "sandbox", "exec", box, "--", "ip", "-o", "-4", "addr", "show", "eth0")
    assert "inet 10.33.0.33/24" in inside, "start re-applies the static address"
    assert "stop it or use --force" in fails(up, "sandbox", "rm", box)
    assert box in sandbox_states(up)
    assert ok(up, "sandbox", "rm", "-f", box) == f"{box}\n"
    assert "not found" in fails(up, "sandbox", "inspect", box)
    assert box not in sandbox_states(up, "-a")
    assert not netns.exists()
    assert ok(up, "network", "rm", net) == f"{net}\n"


def test_network_rm_force_passes_over_missing_networks(up: Up) -> None:
    t = tag()
    real, ghost = f"real-{t}", f"ghost-{t}"
    assert f"network {ghost} not found" in fails(up, "network", "rm", ghost)
    ok(up, "network", "create", "--subnet", "10.35.0.0/24", real)
    result = berth(up, "network", "rm", "-f", ghost, real)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{real}\n", "")
    assert real not in network_rows(up)
    assert "pre-defined" in fails(up, "network", "rm", "bridge")


def test_network_prune_removes_only_unused_networks(up: Up) -> None:
    t = tag()
    unused, used, box = f"unused-{t}", f"used-{t}", f"user-{t}"
    ok(up, "network", "create", unused)
    ok(up, "network", "create", "--subnet", "10.34.0.0/24", used)
    ok(up, "sandbox", "create", "--start", "--network", used, box)

    declined = berth(up, "network", "prune", stdin="n\n")
    assert declined.returncode == 1 and "cancelled" in declined.stderr
    assert unused in network_rows(up)

    deleted = ok(up, "network", "prune", "-f").splitlines()
    assert deleted[0] == "Deleted Networks:" and unused in deleted and used not in deleted
    left = network_rows(up)
    assert used in left and unused not in left and left.keys() >= PREDEFINED
    ok(up, "sandbox", "rm", "-f", box)
    assert used in ok(up, "network", "prune", "-f").splitlines()
