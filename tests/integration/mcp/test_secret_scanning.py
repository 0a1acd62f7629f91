"""Secret scanning of tool calls (`block-secrets`, on by default) in the real berth-mcpd
with the real reference server: a key in a call's arguments or only in its result is
refused, by `berth mcp tools call`, by ToolService and for MCP clients, with a message that
says what and where but never the key; ordinary calls pass; switching the feature off lets
keys through.

The keys are put together from pieces at run time (no literal a scanner would flag)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mcp import types
from mcp.shared.exceptions import MCPError

from berth.api.mcp.v1 import catalog_service_pb2 as catalog_pb
from berth.api.mcp.v1 import catalog_service_pb2_grpc as catalog_rpc
from berth.api.mcp.v1 import tool_service_pb2 as pb
from berth.api.mcp.v1 import tool_service_pb2_grpc as rpc
from tests.integration.mcp.test_tools_cli import EVERYTHING, ok, refused
from tests.support.mcp import (
    GATEWAY_TRANSPORTS,
    NODE_BIN,
    GatewayAddress,
    client_session,
    gateway_address,
    gateway_streams,
    import_test_catalog,
)
from tests.support.stack import Stack

FEATURE = "block-secrets"
CHARS = "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xYz" * 2
KEYS = {
    "GitHub Token": "ghp_" + CHARS[:36],
    "AWS Access Key": "AKIA" + "IOSFODNN7EXAMPLE",
    "Slack Token": "xoxb-" + "123456789012-1234567890123-" + CHARS[:24].lower(),
    "Stripe Access Key": "sk_" + "live_" + CHARS[:24],
}
STRIPE = KEYS["Stripe Access Key"]
# The reference server again, with a key in its environment: its `get-env` tool returns it.
LEAKY = "leaky-env"
CATALOG = "secret-scan-tests"
LEAKY_CATALOG = f"""\
name: {CATALOG}
servers:
  {LEAKY}:
    title: Leaky environment
    description: The reference server with a deploy key in its environment
    command: {NODE_BIN / "mcp-server-everything"}
    env: {{DEPLOY_KEY: "{STRIPE}"}}
"""
ORDINARY = "deploy 9f2c1e7 (a94a8fe5ccb19ba61c4c0873d391e987982fbbd3) to https://example.com/app"


def refusal(where: str, tool: str, server: str, found: str) -> str:
    verb = "contain" if where == "arguments" else "contains"
    return (
        f"refused: the {where} of tool {tool} (server {server}) {verb} a secret ({found}); "
        "berth does not pass secrets through tool calls. "
        "To allow it: berth mcp feature disable block-secrets"
    )


def arguments(**values: str) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the status")


@pytest.fixture(scope="module", autouse=True)
def catalogs(stack: Stack) -> Iterator[None]:
    """The test catalog (everything-local) and this module's own (leaky-env)."""
    with stack.channel() as channel:
        import_test_catalog(channel)
        catalog_rpc.CatalogServiceStub(channel).ImportCatalog(
            catalog_pb.ImportCatalogRequest(content=LEAKY_CATALOG, source=__file__)
        )
    yield
    with stack.channel() as channel:
        catalog_rpc.CatalogServiceStub(channel).RemoveCatalog(
            catalog_pb.RemoveCatalogRequest(name=CATALOG)
        )


@pytest.fixture(autouse=True)
def everything(stack: Stack) -> Iterator[None]:
    """Only everything-local enabled and scanning on, before and after each test (the
    feature is switched back on even when a test fails)."""
    ok(stack, "mcp", "server", "reset")
    ok(stack, "mcp", "feature", "enable", FEATURE)
    ok(stack, "mcp", "server", "enable", EVERYTHING)
    try:
        yield
    finally:
        ok(stack, "mcp", "feature", "enable", FEATURE)
        ok(stack, "mcp", "server", "reset")


@pytest.fixture
def tools(stack: Stack) -> Iterator[rpc.ToolServiceStub]:
    with stack.channel() as channel:
        yield rpc.ToolServiceStub(channel)


@pytest.fixture(scope="module")
def address(stack: Stack) -> GatewayAddress:
    with stack.channel() as channel:
        return gateway_address(stack.socket, channel)


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_the_cli_refuses_a_key_in_the_arguments(stack: Stack, kind: str) -> None:
    stderr = refused(stack, "mcp", "tools", "call", "echo", f"message=my key is {KEYS[kind]}")
    found = f"{kind} at arguments.message"
    assert stderr == f"berth: {refusal('arguments', 'echo', EVERYTHING, found)}\n"


def test_tool_service_refuses_with_permission_denied_and_secret_detected(
    tools: rpc.ToolServiceStub,
) -> None:
    key = KEYS["GitHub Token"]
    with pytest.raises(grpc.RpcError) as raised:
        tools.CallTool(pb.CallToolRequest(name="echo", arguments=arguments(message=key)))
    error = raised.value
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == refusal(
        "arguments", "echo", EVERYTHING, "GitHub Token at arguments.message"
    )
    info = error_info(error)
    assert info.reason == "SECRET_DETECTED"
    assert dict(info.metadata) == {
        "tool": "echo",
        "server": EVERYTHING,
        "where": "arguments",
        "kinds": "GitHub Token",
    }
    assert key not in str(error)


def test_ordinary_calls_pass(stack: Stack, tools: rpc.ToolServiceStub) -> None:
    assert ok(stack, "mcp", "tools", "call", "echo", f"message={ORDINARY}") == (
        f"Echo: {ORDINARY}\n"
    )
    assert ok(stack, "mcp", "tools", "call", "get-sum", "a=2", "b=40") == (
        "The sum of 2 and 40 is 42.\n"
    )
    # The server's own environment (PATH, HOME...) is no secret.
    environment = json.loads(ok(stack, "mcp", "tools", "call", "get-env"))
    assert "PATH" in environment
    # A tiny PNG, whose base64 data is not scanned.
    reply = tools.CallTool(pb.CallToolRequest(name="get-tiny-image"))
    assert any(item.image.data for item in reply.content) and not reply.is_error


def test_a_key_only_in_the_result_is_refused(stack: Stack, tools: rpc.ToolServiceStub) -> None:
    ok(stack, "mcp", "server", "reset")
    ok(stack, "mcp", "server", "enable", LEAKY)
    expected = refusal("result", "get-env", LEAKY, "Stripe Access Key at result.content[0].text")
    assert refused(stack, "mcp", "tools", "call", "get-env") == f"berth: {expected}\n"
    with pytest.raises(grpc.RpcError) as raised:
        tools.CallTool(pb.CallToolRequest(name="get-env"))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert dict(error_info(raised.value).metadata)["where"] == "result"
    # Its other tools still answer.
    assert ok(stack, "mcp", "tools", "call", "echo", "message=hi") == "Echo: hi\n"


@pytest.mark.parametrize("transport", GATEWAY_TRANSPORTS)
async def test_an_mcp_client_gets_the_refusal_and_carries_on(
    transport: str, address: GatewayAddress
) -> None:
    key = KEYS["Slack Token"]
    async with (
        gateway_streams(address, transport) as streams,
        client_session(streams) as session,
    ):
        with pytest.raises(MCPError) as raised:
            await session.call_tool("echo", {"message": key})
        assert raised.value.message == refusal(
            "arguments", "echo", EVERYTHING, "Slack Token at arguments.message"
        )
        answer = await session.call_tool("echo", {"message": ORDINARY})
        assert answer.content == [types.TextContent(type="text", text=f"Echo: {ORDINARY}")]


async def test_switching_the_feature_off_lets_keys_through_at_once(
    stack: Stack, address: GatewayAddress
) -> None:
    key = KEYS["AWS Access Key"]
    async with (
        gateway_streams(address, "streaming") as streams,
        client_session(streams) as session,
    ):
        with pytest.raises(MCPError, match="AWS Access Key at arguments"):
            await session.call_tool("echo", {"message": key})
        try:
            ok(stack, "mcp", "feature", "disable", FEATURE)
            assert ok(stack, "mcp", "tools", "call", "echo", f"message={key}") == (f"Echo: {key}\n")
            answer = await session.call_tool("echo", {"message": key})  # the same session
            assert answer.content == [types.TextContent(type="text", text=f"Echo: {key}")]
        finally:
            ok(stack, "mcp", "feature", "enable", FEATURE)
        with pytest.raises(MCPError, match="AWS Access Key at arguments"):
            await session.call_tool("echo", {"message": key})
    refused(stack, "mcp", "tools", "call", "echo", f"message={key}")


def test_refused_keys_reach_no_log(stack: Stack) -> None:
    key = KEYS["GitHub Token"]
    refused(stack, "mcp", "tools", "call", "echo", f"message={key}")
    ok(stack, "mcp", "server", "reset")
    ok(stack, "mcp", "server", "enable", LEAKY)
    refused(stack, "mcp", "tools", "call", "get-env")
    mcpd = stack.daemons["mcp"].log_path.read_text()
    assert "mcp tool call refused" in mcpd
    for log in (mcpd, stack.gateway.log_path.read_text()):
        assert key not in log and STRIPE not in log
