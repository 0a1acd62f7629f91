"""`berth mcp client` through the gateway and the real berth-mcpd.

The stack's daemon edits the files of the machine's user, so every call here names a file
under tmp_path: either a project (a fresh git repository the CLI runs in) or
`--config-file`. Nothing touches the real home directory.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from berth.api.mcp.v1 import client_service_pb2 as pb
from berth.api.mcp.v1 import client_service_pb2_grpc as rpc
from berth.api.mcp.v1 import resources_pb2 as res
from tests.integration.test_errors import violations
from tests.support.processes import BIN
from tests.support.stack import Stack

STDIO_ENTRY = {"command": "berth", "args": ["mcp", "gateway", "run"]}
KNOWN = {
    "claude-code",
    "claude-desktop",
    "codex",
    "continue",
    "cursor",
    "gemini-cli",
    "goose",
    "lm-studio",
    "vscode",
    "windsurf",
    "zed",
}


def berth_in(stack: Stack, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run from `cwd`: the project it means is the git repository around it."""
    env = {**os.environ, "BERTH_HOST": f"unix://{stack.socket}"}
    return subprocess.run(
        [str(BIN / "berth"), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def ok(stack: Stack, cwd: Path, *args: str) -> str:
    result = berth_in(stack, cwd, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(stack: Stack, cwd: Path, *args: str) -> str:
    result = berth_in(stack, cwd, *args)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    made = tmp_path / "project"
    (made / "src").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(made)], check=True)
    return made


@pytest.fixture
def clients(stack: Stack) -> Iterator[rpc.ClientServiceStub]:
    with stack.channel() as channel:
        yield rpc.ClientServiceStub(channel)


def test_connect_ls_and_disconnect_in_a_project(stack: Stack, repo: Path) -> None:
    work = repo / "src"
    mcp_json = repo / ".cursor" / "mcp.json"
    mcp_json.parent.mkdir()
    mcp_json.write_text(
        '{\n  "mcpServers": {\n    "time": {"command": "mcp-server-time"}\n  }\n}\n'
    )

    connected = ok(stack, work, "mcp", "client", "connect", "cursor")
    assert connected.splitlines()[0] == f"Connected berth to Cursor ({mcp_json})"
    assert "Previous file saved as" in connected
    servers = json.loads(mcp_json.read_text())["mcpServers"]
    assert servers == {"time": {"command": "mcp-server-time"}, "berth": STDIO_ENTRY}

    rows = {
        line.split()[0]: line.split()
        for line in ok(stack, work, "mcp", "client", "ls").splitlines()[1:]
    }
    assert set(rows) == KNOWN
    assert rows["cursor"][1:] == ["connected", "stdio", str(mcp_json)]
    assert rows["vscode"][-1] == str(repo / ".vscode" / "mcp.json")
    listed = {c["name"]: c for c in json.loads(ok(stack, work, "mcp", "client", "ls", "--json"))}
    assert listed["cursor"]["servers"] == ["time", "berth"]
    assert listed["cursor"]["scope"] == "CLIENT_SCOPE_PROJECT"
    assert listed["claude-desktop"]["supports_project"] is False

    disconnected = ok(stack, work, "mcp", "client", "disconnect", "cursor")
    assert disconnected.startswith(f"Disconnected berth from Cursor ({mcp_json})\n")
    assert json.loads(mcp_json.read_text()) == {
        "mcpServers": {"time": {"command": "mcp-server-time"}}
    }
    again = ok(stack, work, "mcp", "client", "disconnect", "cursor")
    assert again == f"berth is not connected to Cursor ({mcp_json})\n"


def test_a_config_file_relative_to_the_working_directory(stack: Stack, tmp_path: Path) -> None:
    ok(stack, tmp_path, "mcp", "client", "connect", "vscode", "-g", "--config-file", "mine.json")
    assert json.loads((tmp_path / "mine.json").read_text()) == {
        "servers": {"berth": {"type": "stdio", **STDIO_ENTRY}}
    }
    ok(stack, tmp_path, "mcp", "client", "connect", "codex", "--config-file", "codex.toml")
    assert '[mcp_servers.berth]\ncommand = "berth"' in (tmp_path / "codex.toml").read_text()


def test_refusals_say_why(stack: Stack, tmp_path: Path) -> None:
    stderr = refused(stack, tmp_path, "mcp", "client", "connect", "nobody")
    assert "unknown MCP client 'nobody'" in stderr and "claude-desktop" in stderr
    stderr = refused(stack, tmp_path, "mcp", "client", "connect", "cursor")
    assert f"{tmp_path} is not inside a git repository" in stderr and "--global" in stderr
    assert "not inside a git repository" in refused(stack, tmp_path, "mcp", "client", "ls")
    stderr = refused(
        stack, tmp_path, "mcp", "client", "connect", "claude-desktop", "-g",
        "--transport", "sse", "--config-file", "c.json",
    )  # fmt: skip
    assert "Claude Desktop cannot reach berth over sse" in stderr
    assert not list(tmp_path.iterdir())


def test_a_broken_file_is_refused_with_its_line_and_left_alone(
    clients: rpc.ClientServiceStub, tmp_path: Path
) -> None:
    broken = tmp_path / "settings.json"
    broken.write_text('{\n  "context_servers": {\n    "x": \n  }\n}\n')
    request = pb.ConnectClientRequest(
        client="zed", scope=pb.CLIENT_SCOPE_GLOBAL, config_path=str(broken)
    )
    with pytest.raises(grpc.RpcError) as raised:
        clients.ConnectClient(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value)["config_path"].startswith(f"{broken}: line 4, column 3: ")
    assert broken.read_text() == '{\n  "context_servers": {\n    "x": \n  }\n}\n'
    assert list(tmp_path.iterdir()) == [broken]


def test_http_transports_point_at_the_endpoint_with_its_token(
    clients: rpc.ClientServiceStub, tmp_path: Path
) -> None:
    path = tmp_path / "mcp.json"
    request = pb.ConnectClientRequest(
        client="claude-code",
        scope=pb.CLIENT_SCOPE_GLOBAL,
        transport=res.GATEWAY_TRANSPORT_STREAMING,
        config_path=str(path),
    )
    try:
        response = clients.ConnectClient(request)
    except grpc.RpcError as error:  # a daemon started without an HTTP endpoint
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--transport stdio" in error.details()
        assert not path.exists()
        return
    entry = json.loads(path.read_text())["mcpServers"]["berth"]
    assert entry["type"] == "http" and entry["url"].endswith("/mcp")
    assert entry["headers"]["Authorization"].startswith("Bearer ")
    assert response.client.transport == res.GATEWAY_TRANSPORT_STREAMING
