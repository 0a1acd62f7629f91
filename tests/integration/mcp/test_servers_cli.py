"""`berth mcp server` and `berth mcp config` through the gateway and the real berth-mcpd."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from berth.api.mcp.v1 import server_service_pb2 as pb
from berth.api.mcp.v1 import server_service_pb2_grpc as rpc
from tests.integration.mcp.test_catalog_service import berth
from tests.integration.test_errors import violations
from tests.support.processes import BIN
from tests.support.stack import Stack


def ok(stack: Stack, *args: str) -> str:
    result = berth(stack, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(stack: Stack, *args: str) -> str:
    result = berth(stack, *args)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    return result.stderr


def enabled_names(stack: Stack) -> list[str]:
    return [server["name"] for server in json.loads(ok(stack, "mcp", "server", "ls", "--json"))]


@pytest.fixture(autouse=True)
def no_servers(stack: Stack) -> Iterator[None]:
    """Every test starts and ends with no server enabled and no config (shared stack)."""
    ok(stack, "mcp", "server", "reset")
    ok(stack, "mcp", "config", "reset")
    yield
    ok(stack, "mcp", "server", "reset")
    ok(stack, "mcp", "config", "reset")


@pytest.fixture
def servers(stack: Stack) -> Iterator[rpc.ServerServiceStub]:
    with stack.channel() as channel:
        yield rpc.ServerServiceStub(channel)


def test_enable_list_inspect_disable_and_reset(stack: Stack) -> None:
    assert ok(stack, "mcp", "server", "enable", "time", "git") == "Enabled time\nEnabled git\n"
    enabled = ok(stack, "mcp", "server", "add", "filesystem")
    assert "filesystem needs config: see `berth mcp server inspect filesystem`" in enabled

    rows = [line.split() for line in ok(stack, "mcp", "server", "ls").splitlines()]
    assert [row[:7] for row in rows[1:]] == [
        ["filesystem", "-", "-", "required", "-", "stopped", "Read,"],
        ["git", "-", "-", "-", "-", "stopped", "Read,"],
        ["time", "-", "-", "-", "-", "stopped", "Current"],
    ]
    listed = json.loads(ok(stack, "mcp", "server", "list", "--json"))
    assert [(s["name"], s["catalog"], s["enabled"]) for s in listed] == [
        ("filesystem", "berth", True),
        ("git", "berth", True),
        ("time", "berth", True),
    ]

    inspected = json.loads(ok(stack, "mcp", "server", "inspect", "time"))
    assert inspected["spec"]["stdio"]["command"] == "mcp-server-time"
    assert {t["name"] for t in inspected["tools"]} == {"get_current_time", "convert_time"}
    assert all(t["enabled"] and t["server"] == "time" for t in inspected["tools"])
    assert (inspected["server"]["enabled"], inspected["config"]) == (True, "")

    disabled = ok(stack, "mcp", "server", "rm", "time", "everything")
    assert disabled == "Disabled time\neverything was not enabled\n"
    assert enabled_names(stack) == ["filesystem", "git"]
    assert ok(stack, "mcp", "server", "reset") == "Disabled filesystem, git\n"
    assert enabled_names(stack) == []
    assert ok(stack, "mcp", "server", "reset") == "No server was enabled\n"


def test_an_unknown_server_is_not_found_and_nothing_is_enabled(
    stack: Stack, servers: rpc.ServerServiceStub
) -> None:
    stderr = refused(stack, "mcp", "server", "enable", "time", "nobody")
    assert "no server 'nobody' in any catalog" in stderr
    assert enabled_names(stack) == []
    with pytest.raises(grpc.RpcError) as raised:
        servers.EnableServers(pb.EnableServersRequest(names=["git", "nobody"]))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert enabled_names(stack) == []
    assert "no server 'nobody'" in refused(stack, "mcp", "server", "inspect", "nobody")


def test_config_write_read_and_reset(stack: Stack) -> None:
    ok(stack, "mcp", "server", "enable", "filesystem")
    written = ok(stack, "mcp", "config", "write", "filesystem", "root: /srv/data")
    assert written == "Wrote the config of filesystem\n"
    assert ok(stack, "mcp", "config", "read", "filesystem") == "root: /srv/data\n"
    as_json = ok(stack, "mcp", "config", "read", "--format", "json")
    assert json.loads(as_json) == {"filesystem": {"root": "/srv/data"}}
    assert (stack.root / "mcp" / "config.yaml").read_text() == "filesystem:\n  root: /srv/data\n"
    (listed,) = json.loads(ok(stack, "mcp", "server", "ls", "--json"))
    assert listed["config_status"] == "REQUIREMENT_STATUS_DONE"
    inspected = json.loads(ok(stack, "mcp", "server", "inspect", "filesystem"))
    assert inspected["config"] == "root: /srv/data\n"

    everything = '{"filesystem": {"root": "/tmp"}}'
    env = {**os.environ, "BERTH_HOST": f"unix://{stack.socket}"}
    piped = subprocess.run(
        [str(BIN / "berth"), "mcp", "config", "write"],
        input=everything,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert ok(stack, "mcp", "config", "read") == "filesystem:\n  root: /tmp\n"

    assert ok(stack, "mcp", "config", "reset", "filesystem") == "Reset the config of filesystem\n"
    assert ok(stack, "mcp", "config", "read", "filesystem") == "{}\n"
    (listed,) = json.loads(ok(stack, "mcp", "server", "ls", "--json"))
    assert listed["config_status"] == "REQUIREMENT_STATUS_REQUIRED"


def test_invalid_config_is_refused_with_its_path_and_nothing_is_written(
    stack: Stack, servers: rpc.ServerServiceStub
) -> None:
    ok(stack, "mcp", "config", "write", "filesystem", "root: /srv")
    stderr = refused(stack, "mcp", "config", "write", "filesystem", '{"root": 3}')
    assert "filesystem.root: 3 is not of type 'string'" in stderr
    stderr = refused(stack, "mcp", "config", "write", "filesystem", "root: /a\n- b\n")
    assert "line 2, column 1: invalid YAML" in stderr
    assert "nobody: no server 'nobody'" in refused(stack, "mcp", "config", "write", "nobody: {}")
    assert ok(stack, "mcp", "config", "read") == "filesystem:\n  root: /srv\n"

    with pytest.raises(grpc.RpcError) as raised:
        servers.WriteServerConfig(pb.WriteServerConfigRequest(server="filesystem", content="a: 1"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value) == {"content": "filesystem: 'root' is a required property"}
    with pytest.raises(grpc.RpcError) as raised:
        servers.WriteServerConfig(pb.WriteServerConfigRequest(server="nobody", content="a: 1"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert ok(stack, "mcp", "config", "read") == "filesystem:\n  root: /srv\n"


def test_empty_requests_name_the_missing_field(servers: rpc.ServerServiceStub) -> None:
    calls = [
        ("names", lambda: servers.EnableServers(pb.EnableServersRequest())),
        ("names", lambda: servers.DisableServers(pb.DisableServersRequest())),
        ("name", lambda: servers.InspectServer(pb.InspectServerRequest())),
        ("content", lambda: servers.WriteServerConfig(pb.WriteServerConfigRequest())),
    ]
    for field_name, call in calls:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(violations(raised.value)) == {field_name}
