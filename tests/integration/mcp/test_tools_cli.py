"""`berth mcp tools ...` and ToolService through the gateway, the real berth-mcpd and real
MCP servers (mcp-server-time, the reference `everything` server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct

from berth.api.mcp.v1 import feature_service_pb2 as feature_pb
from berth.api.mcp.v1 import feature_service_pb2_grpc as feature_rpc
from berth.api.mcp.v1 import server_service_pb2 as server_pb
from berth.api.mcp.v1 import server_service_pb2_grpc as server_rpc
from berth.api.mcp.v1 import tool_service_pb2 as pb
from berth.api.mcp.v1 import tool_service_pb2_grpc as rpc
from tests.integration.mcp.test_catalog_service import berth
from tests.support.mcp import import_test_catalog
from tests.support.stack import Stack

EVERYTHING = "everything-local"
PREFIX = "tool-name-prefix"


def ok(stack: Stack, *args: str) -> str:
    result = berth(stack, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(stack: Stack, *args: str) -> str:
    """The stderr of a command that must fail with status 1 and print nothing on stdout."""
    result = berth(stack, *args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return result.stderr


def listed(stack: Stack, *args: str) -> list[dict[str, Any]]:
    """`tools ls --format json` with extra flags."""
    found: list[dict[str, Any]] = json.loads(
        ok(stack, "mcp", "tools", "ls", "--format", "json", *args)
    )
    return found


def exposed_names(stack: Stack, *args: str) -> list[str]:
    return [tool["exposed_name"] for tool in listed(stack, *args)]


def reset_all(stack: Stack) -> None:
    with stack.channel() as channel:
        feature_rpc.FeatureServiceStub(channel).DisableFeature(
            feature_pb.DisableFeatureRequest(name=PREFIX)
        )
        servers = server_rpc.ServerServiceStub(channel)
        servers.ResetServers(server_pb.ResetServersRequest())
        servers.ResetServerConfig(server_pb.ResetServerConfigRequest())


def enable(stack: Stack, *names: str) -> None:
    with stack.channel() as channel:
        server_rpc.ServerServiceStub(channel).EnableServers(
            server_pb.EnableServersRequest(names=list(names))
        )


@pytest.fixture(scope="module", autouse=True)
def test_catalog(stack: Stack) -> None:
    """The catalog with `everything-local` and `time-utc` (re-importing replaces it)."""
    with stack.channel() as channel:
        import_test_catalog(channel)


@pytest.fixture(autouse=True)
def clean(stack: Stack) -> Iterator[None]:
    """Every test starts and ends with no server enabled, no config, no prefix feature."""
    reset_all(stack)
    yield
    reset_all(stack)


@pytest.fixture
def tools(stack: Stack) -> Iterator[rpc.ToolServiceStub]:
    with stack.channel() as channel:
        yield rpc.ToolServiceStub(channel)


@pytest.fixture
def time_and_everything(stack: Stack) -> None:
    enable(stack, "time", EVERYTHING)


def count(tools: rpc.ToolServiceStub) -> int:
    return tools.CountTools(pb.CountToolsRequest()).count


def arguments(**values: Any) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


@pytest.mark.usefixtures("time_and_everything")
def test_ls_lists_the_tools_of_every_enabled_server(stack: Stack) -> None:
    as_json = listed(stack)
    by_name = {tool["exposed_name"]: tool for tool in as_json}
    assert [t["exposed_name"] for t in as_json] == sorted(by_name)
    assert {"get_current_time", "convert_time", "echo", "get-sum"} <= set(by_name)
    assert by_name["get_current_time"]["server"] == "time"
    assert by_name["echo"]["server"] == EVERYTHING
    assert all(tool["enabled"] for tool in as_json)
    # JSON carries the schemas as objects.
    schema = by_name["get_current_time"]["input_schema"]
    assert schema["required"] == ["timezone"]

    text = ok(stack, "mcp", "tools", "ls")
    lines = text.splitlines()
    assert lines[0] == f"{len(as_json)} tools:"
    assert " - get_current_time - Get current time in a specific timezone" in lines
    assert " - echo - Echoes back the input string" in lines
    assert "timezone (string, required)" not in text  # parameters only with --verbose
    assert ok(stack, "mcp", "tools", "list") == text  # Docker's alias

    verbose = ok(stack, "mcp", "tools", "ls", "--verbose", "--server", "time")
    lines = verbose.splitlines()
    assert lines[0] == "2 tools:"
    assert lines[1] == " - convert_time - Convert time between timezones"
    assert "     server: time" in lines
    assert any(
        line.startswith("     timezone (string, required) - IANA timezone") for line in lines
    )
    assert "echo" not in verbose
    # The group's flags work before the subcommand too.
    assert ok(stack, "mcp", "tools", "--verbose", "ls", "--server", "time") == verbose
    assert exposed_names(stack, "--server", "time") == ["convert_time", "get_current_time"]


@pytest.mark.usefixtures("time_and_everything")
def test_count_and_inspect(stack: Stack, tools: rpc.ToolServiceStub) -> None:
    everything = len(tools.ListTools(pb.ListToolsRequest(servers=[EVERYTHING])).tools)
    total = everything + 2
    assert ok(stack, "mcp", "tools", "count") == f"{total} tools\n"
    rows = [line.split() for line in ok(stack, "mcp", "tools", "count", "--verbose").splitlines()]
    assert rows == [
        [f"{total}", "tools"],
        ["SERVER", "TOOLS"],
        [EVERYTHING, f"{everything}"],
        ["time", "2"],
    ]
    counted = json.loads(ok(stack, "mcp", "tools", "count", "--format", "json", "--server", "time"))
    assert counted == {"count": 2, "servers": {"time": 2}}
    reply = tools.CountTools(pb.CountToolsRequest())
    assert (reply.count, dict(reply.server_counts)) == (total, {EVERYTHING: everything, "time": 2})
    assert len(tools.ListTools(pb.ListToolsRequest()).tools) == total

    shown = ok(stack, "mcp", "tools", "inspect", "get-sum").splitlines()
    assert shown[0] == f"get-sum ({EVERYTHING})"
    assert "  parameters:" in shown
    assert any(line.startswith("    a (number, required)") for line in shown)
    assert any(line.startswith("    b (number, required)") for line in shown)
    as_json = json.loads(ok(stack, "mcp", "tools", "inspect", "convert_time", "--format", "json"))
    assert as_json["server"] == "time"
    assert set(as_json["input_schema"]["properties"]) == {
        "source_timezone",
        "time",
        "target_timezone",
    }
    assert "no enabled server offers the tool 'nope'" in refused(
        stack, "mcp", "tools", "inspect", "nope"
    )


@pytest.mark.usefixtures("time_and_everything")
def test_call_parses_json_values_and_prints_the_result(stack: Stack) -> None:
    # Numbers reach the tool as numbers.
    assert ok(stack, "mcp", "tools", "call", "get-sum", "a=2", "b=3.5") == (
        "The sum of 2 and 3.5 is 5.5.\n"
    )
    # What does not parse as JSON is text; a JSON string stays a string.
    assert ok(stack, "mcp", "tools", "call", "echo", "message=hello world") == "Echo: hello world\n"
    assert ok(stack, "mcp", "tools", "call", "echo", 'message="42"') == "Echo: 42\n"
    # A JSON object is sent as an object, which `echo` rejects as a tool error.
    stderr = refused(stack, "mcp", "tools", "call", "echo", 'message={"a": [1, 2]}')
    assert "expected string, received object" in stderr

    current = json.loads(ok(stack, "mcp", "tools", "call", "get_current_time", "timezone=UTC"))
    assert current["timezone"] == "UTC"

    as_json = json.loads(
        ok(stack, "mcp", "tools", "--format", "json", "call", "echo", "message=hi")
    )
    assert as_json == {
        "content": [{"text": {"text": "Echo: hi"}}],
        "server": EVERYTHING,
        "tool": "echo",
        "is_error": False,
    }


@pytest.mark.usefixtures("time_and_everything")
def test_a_tool_error_exits_1_with_its_text_on_stderr(
    stack: Stack, tools: rpc.ToolServiceStub
) -> None:
    stderr = refused(stack, "mcp", "tools", "call", "get_current_time", "timezone=Nowhere/Bad")
    assert "Invalid timezone" in stderr and "Nowhere/Bad" in stderr

    result = berth(
        stack,
        "mcp",
        "tools",
        "call",
        "get_current_time",
        "timezone=Nowhere/Bad",
        "--format",
        "json",
    )
    assert result.returncode == 1
    as_json = json.loads(result.stdout)
    assert as_json["is_error"] is True
    assert "Invalid timezone" in as_json["content"][0]["text"]["text"]

    reply = tools.CallTool(
        pb.CallToolRequest(name="get_current_time", arguments=arguments(timezone="Nowhere/Bad"))
    )
    assert reply.is_error and reply.server == "time"


@pytest.mark.usefixtures("time_and_everything")
def test_an_unknown_tool_is_refused_clearly(stack: Stack, tools: rpc.ToolServiceStub) -> None:
    stderr = refused(stack, "mcp", "tools", "call", "no-such-tool", "a=1")
    assert stderr == (
        "berth: no enabled server offers the tool 'no-such-tool' (see `berth mcp tools ls`)\n"
    )
    stderr = refused(stack, "mcp", "tools", "call", "echo", "--server", "time", "message=x")
    assert "no enabled server offers the tool 'echo' on server time" in stderr
    with pytest.raises(grpc.RpcError) as raised:
        tools.CallTool(pb.CallToolRequest(name="no-such-tool"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as raised:
        tools.CallTool(pb.CallToolRequest())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_name_two_servers_offer_is_prefixed_and_the_bare_name_refused(
    stack: Stack, tools: rpc.ToolServiceStub
) -> None:
    enable(stack, "time", "time-utc")
    ok(stack, "mcp", "config", "write", "time-utc", "zone: UTC")
    names = exposed_names(stack)
    assert names == [
        "time-utc__convert_time",
        "time-utc__get_current_time",
        "time__convert_time",
        "time__get_current_time",
    ]

    stderr = refused(stack, "mcp", "tools", "call", "get_current_time", "timezone=UTC")
    assert "several servers offer the tool 'get_current_time' (time, time-utc)" in stderr
    with pytest.raises(grpc.RpcError) as raised:
        tools.CallTool(pb.CallToolRequest(name="get_current_time"))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    for how in (["time-utc__get_current_time"], ["get_current_time", "--server", "time-utc"]):
        answer = json.loads(ok(stack, "mcp", "tools", "call", *how, "timezone=UTC"))
        assert answer["timezone"] == "UTC"
    reply = tools.CallTool(
        pb.CallToolRequest(name="time__get_current_time", arguments=arguments(timezone="UTC"))
    )
    assert (reply.server, reply.tool, reply.is_error) == ("time", "get_current_time", False)


@pytest.mark.usefixtures("time_and_everything")
def test_the_prefix_feature_prefixes_every_tool(stack: Stack) -> None:
    ok(stack, "mcp", "feature", "enable", PREFIX)
    names = exposed_names(stack)
    assert "time__get_current_time" in names and f"{EVERYTHING}__echo" in names
    assert all(name.startswith(("time__", f"{EVERYTHING}__")) for name in names)
    assert ok(stack, "mcp", "tools", "call", f"{EVERYTHING}__echo", "message=x") == "Echo: x\n"

    ok(stack, "mcp", "feature", "disable", PREFIX)
    names = exposed_names(stack)
    assert "get_current_time" in names and "echo" in names


@pytest.mark.usefixtures("time_and_everything")
def test_a_disabled_tool_is_hidden_and_refused_until_enabled(
    stack: Stack, tools: rpc.ToolServiceStub
) -> None:
    before = count(tools)
    try:
        assert ok(stack, "mcp", "tools", "disable", "echo") == (
            f"Disabled tool echo of server {EVERYTHING}\n"
        )
        assert "echo" not in exposed_names(stack)
        assert ok(stack, "mcp", "tools", "count") == f"{before - 1} tools\n"
        everything = {t["exposed_name"]: t for t in listed(stack, "-a")}
        assert len(everything) == before
        assert everything["echo"]["enabled"] is False
        assert (
            " - echo (disabled) - Echoes back the input string"
            in ok(stack, "mcp", "tools", "ls", "-a").splitlines()
        )

        stderr = refused(stack, "mcp", "tools", "call", "echo", "message=x")
        assert stderr == "berth: the tool 'echo' is disabled (`berth mcp tools enable echo`)\n"
        with pytest.raises(grpc.RpcError) as raised:
            tools.CallTool(pb.CallToolRequest(name="echo"))
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        enabled = ok(stack, "mcp", "tools", "enable", "echo")
    assert enabled == f"Enabled tool echo of server {EVERYTHING}\n"
    assert count(tools) == before
    assert ok(stack, "mcp", "tools", "call", "echo", "message=back") == "Echo: back\n"


@pytest.mark.usefixtures("time_and_everything")
def test_switching_an_unknown_tool_changes_nothing(
    stack: Stack, tools: rpc.ToolServiceStub
) -> None:
    def all_enabled() -> bool:
        everything = tools.ListTools(pb.ListToolsRequest(include_disabled=True)).tools
        return len(everything) > 2 and all(tool.enabled for tool in everything)

    stderr = refused(stack, "mcp", "tools", "disable", "echo", "no-such-tool")
    assert "no enabled server offers the tool 'no-such-tool'" in stderr
    assert all_enabled()
    with pytest.raises(grpc.RpcError) as raised:
        tools.DisableTools(pb.DisableToolsRequest(names=["get-sum", "no-such-tool"]))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as raised:
        tools.DisableTools(pb.DisableToolsRequest(server="time", names=["echo"]))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as raised:
        tools.DisableTools(pb.DisableToolsRequest())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert all_enabled()


def test_server_inspect_shows_the_tools_the_server_offered_once_it_ran(stack: Stack) -> None:
    enable(stack, "time")
    with stack.channel() as channel:
        servers = server_rpc.ServerServiceStub(channel)
        declared = servers.InspectServer(server_pb.InspectServerRequest(name="time")).tools
        assert {tool.name for tool in declared} == {"get_current_time", "convert_time"}
        assert all(not tool.exposed_name for tool in declared)  # from the catalog entry
        ok(stack, "mcp", "tools", "disable", "convert_time")
        try:
            live = servers.InspectServer(server_pb.InspectServerRequest(name="time")).tools
        finally:
            ok(stack, "mcp", "tools", "enable", "convert_time")  # the other tests' time server
    by_name = {tool.name: tool for tool in live}
    assert set(by_name) == {"get_current_time", "convert_time"}
    assert by_name["convert_time"].exposed_name == "convert_time"
    assert not by_name["convert_time"].enabled and by_name["get_current_time"].enabled
    assert "source_timezone" in by_name["convert_time"].input_schema  # the server's own schema
