"""How an enabled server is run: its entry with config templated in, and nothing more."""

from __future__ import annotations

import pytest

from berth.common.errors import FailedPrecondition
from berth.mcp.domain.launch import launch_of

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


def test_a_server_that_needs_secrets_is_not_started_without_them() -> None:
    entry = {"command": "x", "secrets": [{"name": "github.token", "env": "GITHUB_TOKEN"}]}
    with pytest.raises(FailedPrecondition, match=r"needs the secrets github\.token"):
        launch_of("github", entry, {}, ENV)
