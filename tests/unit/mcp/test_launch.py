"""How an enabled server is run: its entry with config templated in, and nothing more."""

from __future__ import annotations

import pytest

from berth.common.errors import FailedPrecondition
from berth.mcp.domain.launch import launch_of, with_secrets

ENV = {"PATH": "/usr/bin", "HOME": "/root", "BERTH_MCPD_GATEWAY_TOKEN": "secret"}


def test_config_is_templated_into_args_env_and_working_dir() -> None:
    entry = {
        "command": "mcp-server-filesystem",
        "args": ["{{fs.root}}", "--depth={{fs.limits.depth}}"],
        "env": {"ROOTS": "{{fs.extra}}"},
        "workingDir": "{{fs.root}}",
        "callTimeout": "1m30s",
    }
    config = {"fs": {"root": "/srv", "limits": {"depth": 3}, "extra": ["/a", "/b"]}}
    launch = launch_of("fs", entry, config, ENV)
    assert launch.command == "mcp-server-filesystem"
    assert launch.args == ["/srv", "--depth=3"]
    assert launch.env["ROOTS"] == '["/a", "/b"]'
    assert launch.working_dir == "/srv"
    assert launch.call_timeout_s == 90.0
    assert not launch.remote


def test_a_stdio_server_inherits_only_the_basics_of_the_daemons_environment() -> None:
    launch = launch_of("time", {"command": "mcp-server-time"}, {}, ENV)
    assert launch.env == {"PATH": "/usr/bin", "HOME": "/root"}


def test_a_remote_server_gets_its_url_and_headers_templated() -> None:
    entry = {
        "remote": {
            "url": "https://{{search.host}}/mcp",
            "transport": "sse",
            "headers": {"X-Team": "{{search.team}}"},
        }
    }
    launch = launch_of("search", entry, {"search": {"host": "example.com", "team": "a"}}, ENV)
    assert (launch.url, launch.transport) == ("https://example.com/mcp", "sse")
    assert launch.headers == {"X-Team": "a"}
    assert launch.remote


def test_missing_config_is_refused_naming_the_property() -> None:
    entry = {"command": "x", "args": ["{{fs.root}}"]}
    with pytest.raises(
        FailedPrecondition, match=r"needs config fs\.root.*berth mcp config write fs"
    ):
        launch_of("fs", entry, {"fs": {}}, ENV)


SECRETS = [
    {"name": "db.password", "env": "PGPASSWORD"},
    {"name": "db.cert", "injection": "file", "env": "PGCERT_FILE", "path": "/etc/../cert.pem"},
    {"name": "db.unset", "env": "UNSET"},
]


def test_granted_secrets_go_to_env_and_files_never_to_the_command_line() -> None:
    entry = {"command": "psql-mcp", "args": ["--db", "main"], "secrets": SECRETS}
    launch = launch_of("db", entry, {}, ENV)
    values = {"db.password": "hunter2", "db.cert": "-----CERT-----"}
    placed, files = with_secrets(launch, values, None, "/run/berth/mcp/secrets/db-1")
    assert placed.env["PGPASSWORD"] == "hunter2"
    assert placed.env["PGCERT_FILE"] == "/run/berth/mcp/secrets/db-1/cert.pem"
    assert files == {"/run/berth/mcp/secrets/db-1/cert.pem": "-----CERT-----"}
    assert "UNSET" not in placed.env  # declared but not granted: started without it
    assert placed.args == ["--db", "main"]
    assert "hunter2" not in repr(placed)


def test_a_remote_server_gets_header_secrets_and_a_stdio_one_its_oauth_token() -> None:
    remote = {
        "remote": {"url": "https://example.com/mcp"},
        "secrets": [{"name": "search.key", "header": "X-API-Key"}],
        "oauth": {"provider": "search"},
    }
    placed, files = with_secrets(launch_of("search", remote, {}, ENV), {"search.key": "k"}, "t", "")
    assert placed.headers == {"X-API-Key": "k"} and files == {}
    assert placed.oauth_app == "search" and "t" not in placed.env.values()

    stdio = {"command": "gh-mcp", "oauth": {"provider": "github", "env": "GITHUB_TOKEN"}}
    placed, _ = with_secrets(launch_of("github", stdio, {}, ENV), {}, "gho_token", "")
    assert placed.env["GITHUB_TOKEN"] == "gho_token"
