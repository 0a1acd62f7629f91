"""berth's entry in MCP clients' files: every format round-trips, the rest of a file is kept,
backups, refusals, scopes and the transport mapping."""

from __future__ import annotations

import json
import stat
import subprocess
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.api.mcp.v1 import client_service_pb2 as pb
from berth.api.mcp.v1 import resources_pb2 as res
from berth.common.errors import FailedPrecondition, InvalidArgument
from berth.mcp.adapters import jsonc
from berth.mcp.adapters.client_files import BACKUP_SUFFIX, ClientFiles
from berth.mcp.domain.clients import KNOWN, McpClients, Scope, Transport
from berth.mcp.transport.clients import client_to_proto, scope, transport

URL = "http://127.0.0.1:8811"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STDIO_ARGS = ["mcp", "gateway", "run"]

# Each client's user-wide file with another server and another key, as the client writes it.
EXISTING = {
    "claude-code": '{\n  "numStartups": 3,\n  "mcpServers": {\n    "time": {\n'
    '      "type": "stdio",\n      "command": "mcp-server-time"\n    }\n  },\n'
    '  "theme": "dark"\n}\n',
    "claude-desktop": '{\n  "mcpServers": {\n    "time": {\n      "command": "mcp-server-time"\n'
    '    }\n  },\n  "globalShortcut": "Ctrl+Space"\n}\n',
    "codex": textwrap.dedent(
        """\
        # Codex
        model = "o3"  # the model

        [mcp_servers.time]
        command = "mcp-server-time"

        [profiles.fast]
        model = "o4-mini"
        """
    ),
    "continue": textwrap.dedent(
        """\
        name: Local Assistant
        version: 1.0.0
        schema: v1
        mcpServers:
        - name: time
          command: mcp-server-time
        models: []
        """
    ),
    "cursor": '{\n  "mcpServers": {\n    "time": {\n      "command": "mcp-server-time"\n    }\n'
    "  }\n}\n",
    "gemini-cli": '{\n  // my settings\n  "theme": "Dracula",\n  "mcpServers": {\n    "time": {\n'
    '      "command": "mcp-server-time"\n    }\n  }\n}\n',
    "goose": textwrap.dedent(
        """\
        GOOSE_PROVIDER: anthropic
        extensions:
          developer:
            enabled: true
            name: developer
            type: builtin
        GOOSE_MODE: auto
        """
    ),
    "lm-studio": '{\n  "mcpServers": {\n    "time": {\n      "command": "mcp-server-time"\n'
    "    }\n  }\n}\n",
    "vscode": '{\n  "inputs": [],\n  "servers": {\n    "time": {\n      "type": "stdio",\n'
    '      "command": "mcp-server-time",\n    },\n  },\n}\n',
    "windsurf": '{\n  "mcpServers": {\n    "time": {\n      "command": "mcp-server-time"\n'
    "    }\n  }\n}\n",
    "zed": "// Zed settings\n//\n// For information on how to configure Zed, see the docs.\n"
    '{\n  "ui_font_size": 16, // bigger\n  "context_servers": {\n    "time": {\n'
    '      "command": "mcp-server-time",\n      "args": []\n    }\n  }\n}\n',
}
OTHER_SERVER = {client: "developer" if client == "goose" else "time" for client in EXISTING}

# berth's entry over stdio and over streamable HTTP, client by client.
STDIO_ENTRIES: dict[str, dict[str, Any]] = {
    "claude-code": {"type": "stdio", "command": "berth", "args": STDIO_ARGS},
    "claude-desktop": {"command": "berth", "args": STDIO_ARGS},
    "codex": {"command": "berth", "args": STDIO_ARGS},
    "continue": {"name": "berth", "command": "berth", "args": STDIO_ARGS},
    "cursor": {"command": "berth", "args": STDIO_ARGS},
    "gemini-cli": {"command": "berth", "args": STDIO_ARGS},
    "goose": {
        "name": "berth",
        "enabled": True,
        "description": "berth's MCP gateway: the servers enabled with `berth mcp server enable`",
        "type": "stdio",
        "cmd": "berth",
        "args": STDIO_ARGS,
        "envs": {},
        "env_keys": [],
        "timeout": 300,
    },
    "lm-studio": {"command": "berth", "args": STDIO_ARGS},
    "vscode": {"type": "stdio", "command": "berth", "args": STDIO_ARGS},
    "windsurf": {"command": "berth", "args": STDIO_ARGS},
    "zed": {"command": "berth", "args": STDIO_ARGS, "env": {}},
}
MCP = f"{URL}/mcp"
STREAMING_ENTRIES: dict[str, dict[str, Any]] = {
    "claude-code": {"type": "http", "url": MCP, "headers": AUTH},
    "codex": {"url": MCP, "http_headers": AUTH},
    "continue": {
        "name": "berth",
        "type": "streamable-http",
        "url": MCP,
        "requestOptions": {"headers": AUTH},
    },
    "cursor": {"url": MCP, "headers": AUTH},
    "gemini-cli": {"httpUrl": MCP, "headers": AUTH},
    "goose": {
        "name": "berth",
        "enabled": True,
        "description": STDIO_ENTRIES["goose"]["description"],
        "type": "streamable_http",
        "uri": MCP,
        "headers": AUTH,
        "envs": {},
        "env_keys": [],
        "timeout": 300,
    },
    "lm-studio": {"url": MCP, "headers": AUTH},
    "vscode": {"type": "http", "url": MCP, "headers": AUTH},
    "windsurf": {"serverUrl": MCP, "headers": AUTH},
    "zed": {"url": MCP, "headers": AUTH},
}


def endpoint(transport: Transport) -> tuple[str, str]:
    return URL, TOKEN


@pytest.fixture
def home(tmp_path: Path) -> Path:
    made = tmp_path / "home"
    made.mkdir()
    return made


@pytest.fixture
def clients(home: Path) -> McpClients:
    return McpClients(home, endpoint, ClientFiles())


def global_file(home: Path, name: str) -> Path:
    return home / KNOWN[name].global_file


def document(path: Path) -> Any:
    """A file's data, whatever its format."""
    text = path.read_text()
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix == ".yaml":
        return yaml.safe_load(text)
    root = jsonc.parse(text)
    return root.value if root else None


def servers_of(name: str, data: Any) -> dict[str, Any]:
    client = KNOWN[name]
    container = data
    for key in client.layout.servers_at:
        container = container[key]
    if client.layout.listed:
        return {item["name"]: item for item in container}
    return container


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}{BACKUP_SUFFIX}*"))


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


# -- every client, every format -----------------------------------------------------------


def test_the_test_tables_cover_every_known_client() -> None:
    assert set(EXISTING) == set(STDIO_ENTRIES) == set(KNOWN)
    assert set(STREAMING_ENTRIES) == {
        n for n, c in KNOWN.items() if Transport.STREAMING in c.transports
    }


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_connect_keeps_the_rest_of_the_file_and_disconnect_restores_it(
    clients: McpClients, home: Path, name: str
) -> None:
    path = global_file(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EXISTING[name])
    before = document(path)

    status, backup = clients.connect(name, Scope.GLOBAL)

    assert Path(backup).read_text() == EXISTING[name]
    assert backups(path) == [Path(backup)]
    after = document(path)
    servers = servers_of(name, after)
    assert servers["berth"] == STDIO_ENTRIES[name]
    assert servers[OTHER_SERVER[name]] == servers_of(name, before)[OTHER_SERVER[name]]
    assert list(after) == list(before)  # the other keys, in their order
    assert (status.connected, status.transport, status.scope) == (
        True,
        Transport.STDIO,
        Scope.GLOBAL,
    )
    assert status.config_path == path
    assert status.servers == list(servers)

    status, backup = clients.disconnect(name, Scope.GLOBAL)

    assert backup and (status.connected, status.transport) == (False, None)
    assert document(path) == before
    if KNOWN[name].layout.format.value != "yaml":  # JSON, JSONC and TOML keep every byte
        assert path.read_text() == EXISTING[name]


@pytest.mark.parametrize("name", sorted(STREAMING_ENTRIES))
def test_streaming_entries_carry_the_url_and_the_bearer_token(
    clients: McpClients, home: Path, name: str
) -> None:
    status, backup = clients.connect(name, Scope.GLOBAL, transport=Transport.STREAMING)
    assert backup == ""
    assert servers_of(name, document(global_file(home, name)))["berth"] == STREAMING_ENTRIES[name]
    assert status.transport is Transport.STREAMING


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("claude-code", {"type": "sse", "url": f"{URL}/sse", "headers": AUTH}),
        ("cursor", {"url": f"{URL}/sse", "headers": AUTH}),
        ("gemini-cli", {"url": f"{URL}/sse", "headers": AUTH}),
        ("vscode", {"type": "sse", "url": f"{URL}/sse", "headers": AUTH}),
        ("windsurf", {"serverUrl": f"{URL}/sse", "headers": AUTH}),
        (
            "continue",
            {
                "name": "berth",
                "type": "sse",
                "url": f"{URL}/sse",
                "requestOptions": {"headers": AUTH},
            },
        ),
    ],
)
def test_sse_entries_use_the_sse_url(
    clients: McpClients, home: Path, name: str, entry: dict[str, Any]
) -> None:
    status, _ = clients.connect(name, Scope.GLOBAL, transport=Transport.SSE)
    assert servers_of(name, document(global_file(home, name)))["berth"] == entry
    assert status.transport is Transport.SSE


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("claude-desktop", Transport.STREAMING),
        ("claude-desktop", Transport.SSE),
        ("codex", Transport.SSE),
        ("goose", Transport.SSE),
        ("zed", Transport.SSE),
    ],
)
def test_a_transport_the_client_cannot_use_is_refused(
    clients: McpClients, home: Path, name: str, refused: Transport
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        clients.connect(name, Scope.GLOBAL, transport=refused)
    [violation] = raised.value.violations
    assert violation.field == "transport"
    assert f"over {refused.value}; it supports: stdio" in violation.description
    assert not global_file(home, name).exists()


def test_no_http_endpoint_is_a_failed_precondition(home: Path) -> None:
    clients = McpClients(home, lambda transport: None, ClientFiles())
    with pytest.raises(FailedPrecondition) as raised:
        clients.connect("cursor", Scope.GLOBAL, transport=Transport.STREAMING)
    assert raised.value.reason == "NO_HTTP_ENDPOINT"
    assert "--transport stdio" in raised.value.message
    assert not global_file(home, "cursor").exists()


def test_an_endpoint_url_with_a_path_is_used_as_it_is(home: Path) -> None:
    clients = McpClients(home, lambda t: ("https://gw.example:9000/x/mcp", "t"), ClientFiles())
    clients.connect("cursor", Scope.GLOBAL, transport=Transport.STREAMING)
    entry = document(global_file(home, "cursor"))["mcpServers"]["berth"]
    assert entry["url"] == "https://gw.example:9000/x/mcp"


# -- files ------------------------------------------------------------------------------


def test_a_new_file_is_created_with_its_directories_private_and_without_backup(
    clients: McpClients, home: Path
) -> None:
    status, backup = clients.connect("claude-desktop", Scope.GLOBAL)
    path = home / ".config/Claude/claude_desktop_config.json"
    assert backup == ""
    assert json.loads(path.read_text()) == {
        "mcpServers": {"berth": STDIO_ENTRIES["claude-desktop"]}
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert status.installed  # its configuration directory exists now


def test_connect_twice_changes_nothing_the_second_time(clients: McpClients, home: Path) -> None:
    clients.connect("cursor", Scope.GLOBAL)
    path = global_file(home, "cursor")
    text = path.read_text()
    status, backup = clients.connect("cursor", Scope.GLOBAL)
    assert (backup, path.read_text(), status.connected) == ("", text, True)
    assert backups(path) == []


def test_connect_again_with_another_transport_replaces_the_entry(
    clients: McpClients, home: Path
) -> None:
    path = global_file(home, "vscode")
    path.parent.mkdir(parents=True)
    path.write_text(EXISTING["vscode"])
    clients.connect("vscode", Scope.GLOBAL)
    status, backup = clients.connect("vscode", Scope.GLOBAL, transport=Transport.STREAMING)
    servers = document(path)["servers"]
    assert list(servers) == ["time", "berth"]
    assert servers["berth"] == STREAMING_ENTRIES["vscode"]
    assert backup and status.transport is Transport.STREAMING


def test_disconnect_when_not_connected_changes_nothing(clients: McpClients, home: Path) -> None:
    path = global_file(home, "cursor")
    path.parent.mkdir(parents=True)
    path.write_text(EXISTING["cursor"])
    status, backup = clients.disconnect("cursor", Scope.GLOBAL)
    assert (backup, status.connected, status.servers) == ("", False, ["time"])
    assert path.read_text() == EXISTING["cursor"]
    assert backups(path) == []
    _, backup = clients.disconnect("zed", Scope.GLOBAL)
    assert backup == "" and not global_file(home, "zed").exists()


def test_the_comments_of_jsonc_files_are_kept(clients: McpClients, home: Path) -> None:
    path = global_file(home, "zed")
    path.parent.mkdir(parents=True)
    path.write_text(EXISTING["zed"])
    clients.connect("zed", Scope.GLOBAL)
    text = path.read_text()
    assert text.startswith("// Zed settings\n//\n")
    assert '"ui_font_size": 16, // bigger' in text
    assert '"args": []\n    },\n    "berth": {\n      "command": "berth",' in text


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("cursor", '{\n  "mcpServers": {\n    "time": {"command": "x"}\n    "b": 1\n', "line 4"),
        ("claude-desktop", '{\n  // not in plain JSON\n  "mcpServers": {}\n}\n', "line 2"),
        ("claude-desktop", '{"mcpServers": {},}', "line 1"),
        ("vscode", '{\n  "servers": {\n    "time": \n  }\n}\n', "line 4"),
        ("continue", "mcpServers:\n  - name: a\n   command: b\n", "line 3"),
        ("goose", "extensions: [\n", "line 2"),
        ("codex", '[mcp_servers.time]\ncommand "x"\n', "line 2"),
        ("codex", '[mcp_servers.time]\ncommand = "x"\ncommand = "y"\n', "already exists"),
        ("cursor", '[{"mcpServers": {}}]', "not a JSON object"),
        ("continue", "- a\n- b\n", "not a YAML mapping"),
    ],
)
def test_a_file_that_cannot_be_parsed_is_refused_and_left_untouched(
    clients: McpClients, home: Path, name: str, content: str, where: str
) -> None:
    path = global_file(home, name)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    for change in (clients.connect, clients.disconnect):
        with pytest.raises(InvalidArgument) as raised:
            change(name, Scope.GLOBAL)
        [violation] = raised.value.violations
        assert violation.field == "config_path"
        assert violation.description.startswith(f"{path}: ")
        assert where in violation.description
    assert path.read_text() == content
    assert backups(path) == []
    [row] = [s for s in clients.list(Scope.GLOBAL) if s.client.name == name]
    assert (row.connected, row.servers) == (False, [])


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("cursor", '{"mcpServers": []}\n', "mcpServers is not an object"),
        ("goose", "extensions: []\n", "extensions is list, expected an object"),
        ("continue", "mcpServers: {}\n", "mcpServers is dict, expected a list"),
        ("codex", "mcp_servers = 3\n", "mcp_servers is Integer, expected an object"),
    ],
)
def test_a_servers_key_of_the_wrong_type_is_refused(
    clients: McpClients, home: Path, name: str, content: str, problem: str
) -> None:
    path = global_file(home, name)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(InvalidArgument, match=problem):
        clients.connect(name, Scope.GLOBAL)
    assert path.read_text() == content


def test_a_yaml_servers_key_without_a_value_is_filled(clients: McpClients, home: Path) -> None:
    path = global_file(home, "continue")
    path.parent.mkdir(parents=True)
    path.write_text("name: Local\nmcpServers:\n")
    clients.connect("continue", Scope.GLOBAL)
    assert document(path) == {"name": "Local", "mcpServers": [STDIO_ENTRIES["continue"]]}


def test_a_yaml_file_with_comments_is_refused_rather_than_stripped(
    clients: McpClients, home: Path
) -> None:
    path = global_file(home, "continue")
    path.parent.mkdir(parents=True)
    content = "name: Local\n# my servers\nmcpServers: []\n"
    path.write_text(content)
    with pytest.raises(FailedPrecondition) as raised:
        clients.connect("continue", Scope.GLOBAL)
    assert raised.value.reason == "CLIENT_CONFIG_HAS_COMMENTS"
    assert "line 2" in raised.value.message
    assert path.read_text() == content and backups(path) == []


def test_a_hash_inside_a_yaml_value_is_not_a_comment(clients: McpClients, home: Path) -> None:
    path = global_file(home, "continue")
    path.parent.mkdir(parents=True)
    path.write_text("name: 'a # b'\nurl: http://x/#y\n")
    clients.connect("continue", Scope.GLOBAL)
    assert document(path)["url"] == "http://x/#y"


def test_a_symlinked_file_is_written_through_its_link(clients: McpClients, home: Path) -> None:
    real = home / "dotfiles" / "mcp.json"
    real.parent.mkdir()
    real.write_text(EXISTING["cursor"])
    (home / ".cursor").mkdir()
    link = global_file(home, "cursor")
    link.symlink_to(real)
    _, backup = clients.connect("cursor", Scope.GLOBAL)
    assert link.is_symlink()
    assert "berth" in document(real)["mcpServers"]
    assert Path(backup).parent == real.parent


def test_a_given_config_file_is_used_instead(clients: McpClients, tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "mine.json"
    status, _ = clients.connect("cursor", config_path=str(path))
    assert status.config_path == path and status.scope is Scope.GLOBAL
    assert document(path) == {"mcpServers": {"berth": STDIO_ENTRIES["cursor"]}}
    with pytest.raises(InvalidArgument) as raised:
        clients.connect("cursor", config_path="relative.json")
    assert raised.value.violations[0].field == "config_path"


# -- clients and scopes -----------------------------------------------------------------


def test_an_unknown_client_is_refused_with_the_known_names(clients: McpClients) -> None:
    for name in ("nobody", ""):
        with pytest.raises(InvalidArgument) as raised:
            clients.connect(name)
        [violation] = raised.value.violations
        assert violation.field == "client"
        assert all(known in violation.description for known in KNOWN)
    assert raised.value.reason == "UNKNOWN_CLIENT"


def test_project_scope_writes_the_file_at_the_git_root(
    clients: McpClients, home: Path, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    work = repo / "src" / "deep"
    work.mkdir(parents=True)
    expected = {
        "claude-code": repo / ".mcp.json",
        "cursor": repo / ".cursor/mcp.json",
        "vscode": repo / ".vscode/mcp.json",
        "gemini-cli": repo / ".gemini/settings.json",
        "zed": repo / ".zed/settings.json",
        "codex": repo / ".codex/config.toml",
        "continue": repo / ".continue/mcpServers/berth.yaml",
    }
    for name, path in expected.items():
        status, _ = clients.connect(name, project_dir=str(work))
        assert (status.config_path, status.scope) == (path, Scope.PROJECT)
        assert servers_of(name, document(path))["berth"] == STDIO_ENTRIES[name]
    assert not list(home.iterdir())  # nothing user-wide


def test_continue_gets_a_block_file_of_its_own_removed_on_disconnect(
    clients: McpClients, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    clients.connect("continue", Scope.PROJECT, project_dir=str(repo))
    block = repo / ".continue/mcpServers/berth.yaml"
    assert document(block) == {
        "name": "berth",
        "version": "0.0.1",
        "schema": "v1",
        "mcpServers": [STDIO_ENTRIES["continue"]],
    }
    status, backup = clients.disconnect("continue", Scope.PROJECT, project_dir=str(repo))
    assert not block.exists() and Path(backup).exists()
    assert (status.connected, status.servers) == (False, [])


def test_unspecified_scope_means_global_for_clients_without_project_files(
    clients: McpClients, home: Path, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    for name in ("claude-desktop", "goose", "lm-studio", "windsurf"):
        status, _ = clients.connect(name, project_dir=str(repo))
        assert (status.config_path, status.scope) == (global_file(home, name), Scope.GLOBAL)
    with pytest.raises(InvalidArgument) as raised:
        clients.connect("claude-desktop", Scope.PROJECT, project_dir=str(repo))
    assert raised.value.violations[0].field == "scope"


def test_project_scope_outside_a_git_repository_is_a_failed_precondition(
    clients: McpClients, tmp_path: Path
) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    for call in (
        lambda: clients.connect("cursor", project_dir=str(outside)),
        lambda: clients.disconnect("vscode", Scope.PROJECT, project_dir=str(outside)),
        lambda: clients.list(project_dir=str(outside)),
    ):
        with pytest.raises(FailedPrecondition) as raised:
            call()
        assert raised.value.reason == "NOT_IN_GIT_REPOSITORY"
        assert f"{outside} is not inside a git repository" in raised.value.message
        assert "--global" in raised.value.message
    assert not list(outside.iterdir())


def test_project_dir_must_be_given_and_absolute(clients: McpClients) -> None:
    for given in ("", "relative/dir"):
        with pytest.raises(InvalidArgument) as raised:
            clients.connect("cursor", project_dir=given)
        assert raised.value.violations[0].field == "project_dir"


def test_ls_lists_every_client_sorted_with_its_file_and_servers(
    clients: McpClients, home: Path, tmp_path: Path
) -> None:
    (home / ".cursor").mkdir()
    clients.connect("vscode", Scope.GLOBAL, transport=Transport.STREAMING)
    rows = clients.list(Scope.GLOBAL)
    assert [row.client.name for row in rows] == sorted(KNOWN)
    by_name = {row.client.name: row for row in rows}
    assert by_name["cursor"].installed and not by_name["cursor"].connected
    assert not by_name["zed"].installed
    assert by_name["vscode"].installed  # connecting made ~/.config/Code
    vscode = by_name["vscode"]
    assert (vscode.connected, vscode.transport, vscode.servers) == (
        True,
        Transport.STREAMING,
        ["berth"],
    )
    assert all(row.scope is Scope.GLOBAL for row in rows)

    repo = git_repo(tmp_path / "repo")
    rows = clients.list(project_dir=str(repo))
    scopes = {row.client.name: row.scope for row in rows}
    assert scopes["claude-desktop"] is Scope.GLOBAL and scopes["cursor"] is Scope.PROJECT
    assert {row.client.name: row.connected for row in rows}["vscode"] is False


# -- transport mapping ------------------------------------------------------------------


def test_client_info_carries_the_status(clients: McpClients, home: Path) -> None:
    status, _ = clients.connect("cursor", Scope.GLOBAL, transport=Transport.SSE)
    info = client_to_proto(status)
    assert info == pb.ClientInfo(
        name="cursor",
        display_name="Cursor",
        scope=pb.CLIENT_SCOPE_GLOBAL,
        config_path=str(global_file(home, "cursor")),
        installed=True,
        connected=True,
        transport=res.GATEWAY_TRANSPORT_SSE,
        servers=["berth"],
        supports_project=True,
    )
    status, _ = clients.disconnect("cursor", Scope.GLOBAL)
    assert client_to_proto(status).transport == res.GATEWAY_TRANSPORT_UNSPECIFIED


def test_request_values_are_mapped_and_unknown_ones_refused() -> None:
    assert transport(res.GATEWAY_TRANSPORT_UNSPECIFIED) is Transport.STDIO
    assert transport(res.GATEWAY_TRANSPORT_STREAMING) is Transport.STREAMING
    assert scope(pb.CLIENT_SCOPE_UNSPECIFIED) is Scope.UNSPECIFIED
    for bad in (lambda: transport(res.GATEWAY_TRANSPORT_GRPC), lambda: scope(7)):
        with pytest.raises(InvalidArgument):
            bad()


# -- JSONC edits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "{\n}\n",
        '{"a": 1}',
        '{\n  "a": 1, // one\n}\n',
        '{\n    "mcpServers": {\n        "x": {"command": "x"},\n    }\n}\n',
        '{\n\t"mcpServers": {} /* none yet */\n}\n',
    ],
)
def test_jsonc_set_then_remove_keeps_the_data(text: str) -> None:
    entry = {"command": "berth", "args": ["a"]}
    changed = jsonc.set_member(text, ("mcpServers",), "berth", entry)
    root = jsonc.parse(changed)
    assert root is not None and root.value["mcpServers"]["berth"] == entry
    restored = jsonc.parse(jsonc.remove_member(changed, ("mcpServers",), "berth"))
    original = jsonc.parse(text)
    assert restored is not None and original is not None
    original.value.setdefault("mcpServers", {})
    restored.value.setdefault("mcpServers", {})
    assert restored.value == original.value


def test_jsonc_errors_name_line_and_column() -> None:
    with pytest.raises(jsonc.JsoncError) as raised:
        jsonc.parse('{\n  "a": tru\n}')
    assert (raised.value.line, raised.value.column) == (2, 8)
    with pytest.raises(jsonc.JsoncError, match="unterminated comment"):
        jsonc.parse("{} /* open")
