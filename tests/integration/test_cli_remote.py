"""The CLI against a TCP gateway, as DOCKER_HOST users do: TLS, a token, readable errors."""

from __future__ import annotations

import os
import subprocess

from tests.support.processes import BIN
from tests.support.stack import Stack


def berth(stack: Stack, *args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BERTH_HOST": f"tcp://localhost:{stack.tcp_port}",
        "BERTH_TLS_CA": str(stack.tls.ca),
    }
    env.pop("BERTH_TOKEN", None)
    if token:
        env["BERTH_TOKEN"] = token
    return subprocess.run(
        [str(BIN / "berth"), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_feature_ls_over_tcp_with_a_read_token(stack: Stack) -> None:
    result = berth(stack, "mcp", "feature", "ls", token=stack.tokens["mcp-read"])
    assert result.returncode == 0, result.stderr
    assert "block-secrets" in result.stdout


def test_a_read_token_cannot_enable_a_feature(stack: Stack) -> None:
    result = berth(
        stack, "mcp", "feature", "enable", "tool-name-prefix", token=stack.tokens["mcp-read"]
    )
    assert result.returncode == 1
    assert "mcp:write" in result.stderr


def test_no_token_is_refused_readably(stack: Stack) -> None:
    result = berth(stack, "mcp", "feature", "ls", token=None)
    assert result.returncode == 1
    assert "bearer token" in result.stderr


def test_status_over_tcp(stack: Stack) -> None:
    result = berth(stack, "status", token=stack.tokens["network-read"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("serving") == 3
