"""The aggregated MCP endpoint of berth-mcpd as its clients see it change and refuse:
list_changed when servers and tools are switched, the bearer token and the Origin check,
and the MCP inspector's CLI as a client."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from mcp import ClientSession, types
from mcp.shared.exceptions import MCPError

from tests.integration.mcp.test_tools_cli import ok
from tests.support.mcp import (
    GATEWAY_TRANSPORTS,
    MCP_GATEWAY_TOKEN,
    NODE_BIN,
    GatewayAddress,
    Inbox,
    client_session,
    gateway_address,
    gateway_streams,
    import_test_catalog,
)
from tests.support.stack import Stack

SERVERS = ["time", "everything-local"]
TIME_TOOLS = {"get_current_time", "convert_time"}
PARIS_NOON = {"source_timezone": "Europe/Paris", "time": "12:00", "target_timezone": "Asia/Tokyo"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1.0"},
    },
}
STREAMABLE = {"Accept": "application/json, text/event-stream"}
INSPECTOR = NODE_BIN / "mcp-inspector-cli"
# The inspector finds its own package.json through a path relative to the working directory.
INSPECTOR_CWD = NODE_BIN.parent / "@modelcontextprotocol" / "inspector-cli" / "build"


@pytest.fixture(scope="module", autouse=True)
def catalog_imported(stack: Stack) -> None:
    with stack.channel() as channel:
        import_test_catalog(channel)


@pytest.fixture(autouse=True)
def enabled(stack: Stack) -> Iterator[None]:
    """time and everything-local enabled, and nothing else (shared stack)."""
    ok(stack, "mcp", "server", "reset")
    ok(stack, "mcp", "server", "enable", *SERVERS)
    yield
    ok(stack, "mcp", "server", "reset")


@pytest.fixture(scope="module")
def address(stack: Stack) -> GatewayAddress:
    with stack.channel() as channel:
        return gateway_address(stack.socket, channel)


async def tool_names(session: ClientSession) -> set[str]:
    return {tool.name for tool in (await session.list_tools()).tools}


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


# -- 3. list_changed -----------------------------------------------------------------------


@pytest.mark.parametrize("transport", GATEWAY_TRANSPORTS)
async def test_a_connected_client_is_told_when_servers_and_tools_change(
    transport: str, stack: Stack, address: GatewayAddress
) -> None:
    notifications = Inbox()

    async with (
        gateway_streams(address, transport) as streams,
        client_session(streams, message_handler=notifications) as session,
    ):
        assert TIME_TOOLS | {"echo"} <= await tool_names(session)

        async def changing(*command: str) -> set[str]:
            """Runs `berth COMMAND` while the session stays open; the tools listed after
            the notification it brings."""
            before = len(notifications.items)
            await asyncio.to_thread(ok, stack, *command)
            await notifications.wait_for(
                lambda n: isinstance(n, types.ToolListChangedNotification),
                f"tools/list_changed after `berth {' '.join(command)}`",
                after=before,
            )
            return await tool_names(session)

        tools = await changing("mcp", "server", "disable", "time")
        assert not tools & TIME_TOOLS and "echo" in tools
        with pytest.raises(MCPError, match="no enabled server offers the tool 'convert_time'"):
            await session.call_tool("convert_time", PARIS_NOON)

        tools = await changing("mcp", "server", "enable", "time")
        assert TIME_TOOLS | {"echo"} <= tools
        assert "Europe/Paris" in text_of(await session.call_tool("convert_time", PARIS_NOON))

        try:
            tools = await changing("mcp", "tools", "disable", "convert_time")
            assert "convert_time" not in tools and "get_current_time" in tools
            with pytest.raises(MCPError, match="'convert_time' is disabled") as refused:
                await session.call_tool("convert_time", PARIS_NOON)
            assert "berth mcp tools enable convert_time" in refused.value.message
        finally:
            tools = await changing("mcp", "tools", "enable", "convert_time")
        assert tools >= TIME_TOOLS
        assert "Asia/Tokyo" in text_of(await session.call_tool("convert_time", PARIS_NOON))


# -- 4. the token and the Origin -----------------------------------------------------------


def initialize(url: str, headers: dict[str, str]) -> httpx2.Response:
    return httpx2.post(url, json=INITIALIZE, headers={**STREAMABLE, **headers}, timeout=30)


def end_session(url: str, response: httpx2.Response, headers: dict[str, str]) -> None:
    session = response.headers["mcp-session-id"]
    ended = httpx2.delete(url, headers={**headers, "mcp-session-id": session}, timeout=30)
    assert ended.status_code == 200


def test_the_endpoint_wants_the_token_and_refuses_foreign_origins(
    address: GatewayAddress,
) -> None:
    url = address.streaming_url
    bearer = {"Authorization": f"Bearer {MCP_GATEWAY_TOKEN}"}

    missing = initialize(url, {})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "bearer token is required" in missing.json()["error"]
    assert initialize(url, {"Authorization": "Bearer not-the-token"}).status_code == 401
    assert initialize(url, {"Authorization": MCP_GATEWAY_TOKEN}).status_code == 401

    foreign = initialize(url, {**bearer, "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert "origin http://evil.example is not allowed" in foreign.json()["error"]

    port = urlsplit(url).port
    for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{port}"):
        accepted = initialize(url, {**bearer, "Origin": origin})
        assert accepted.status_code == 200, accepted.text
        assert '"serverInfo":{"name":"berth"' in accepted.text.replace(" ", "")
        end_session(url, accepted, bearer)

    # The legacy SSE endpoint: the same rules, before any stream opens.
    assert httpx2.get(address.sse_url, timeout=30).status_code == 401
    evil = {**bearer, "Origin": "http://evil.example"}
    assert httpx2.get(address.sse_url, headers=evil, timeout=30).status_code == 403


# -- 5. the MCP inspector ------------------------------------------------------------------


def inspector(address: GatewayAddress, *args: str) -> Any:
    """`mcp-inspector-cli --cli URL --transport http ARGS` with the token; its JSON output."""
    result = subprocess.run(
        [
            str(INSPECTOR),
            "--cli",
            address.streaming_url,
            "--transport",
            "http",
            "--header",
            f"Authorization: Bearer {MCP_GATEWAY_TOKEN}",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=INSPECTOR_CWD,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_mcp_inspector_lists_and_calls_tools(address: GatewayAddress) -> None:
    listed = inspector(address, "--method", "tools/list")
    names = {tool["name"] for tool in listed["tools"]}
    assert TIME_TOOLS | {"echo", "get-sum"} <= names

    called = inspector(
        address, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=hi"
    )
    assert called["content"] == [{"type": "text", "text": "Echo: hi"}]
    summed = inspector(
        address, "--method", "tools/call", "--tool-name", "get-sum", "--tool-arg", "a=2", "b=40"
    )
    assert summed["content"][0]["text"] == "The sum of 2 and 40 is 42."
