"""The MCP server processes behind the gateway: their state, pid and restarts in
`berth mcp server ls`, servers that cannot start, per-call timeouts, GatewayService's status,
and no process left behind when berth-mcpd stops or is killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx2
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from berth.api.mcp.v1 import catalog_service_pb2 as catalog_pb
from berth.api.mcp.v1 import catalog_service_pb2_grpc as catalog_rpc
from berth.api.mcp.v1 import gateway_service_pb2 as gateway_pb
from berth.api.mcp.v1 import gateway_service_pb2_grpc as gateway_rpc
from berth.api.mcp.v1 import resources_pb2 as res
from berth.api.mcp.v1 import server_service_pb2 as server_pb
from berth.api.mcp.v1 import server_service_pb2_grpc as server_rpc
from berth.api.mcp.v1 import tool_service_pb2 as tool_pb
from berth.api.mcp.v1 import tool_service_pb2_grpc as tool_rpc
from tests.integration.mcp.test_catalog_service import berth
from tests.integration.mcp.test_tools_cli import EVERYTHING, enable, ok, refused, reset_all
from tests.support.mcp import MCP_GATEWAY_TOKEN, endpoint_url, import_test_catalog, private_mcpd
from tests.support.processes import poll
from tests.support.stack import Stack

BROKEN_CATALOG = """\
name: berth-test-broken
servers:
  no-such-command:
    title: Missing program
    command: /nonexistent/berth-test-missing-server
  exits-at-once:
    title: Exits at once
    command: sh
    args: ["-c", "echo 'cannot open the database' >&2; exit 3"]
"""
LONG_CALL = ["trigger-long-running-operation", "duration=30", "steps=3"]


# -- helpers --------------------------------------------------------------------------


def processes_under(root: Path) -> list[int]:
    """The live processes whose working directory is `root` or below it (from /proc)."""
    prefix = str(root.resolve())
    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            where = os.readlink(cwd)
        except OSError:  # gone, a zombie, or not ours to read
            continue
        if where == prefix or where.startswith(prefix + os.sep):
            found.append(int(cwd.parent.name))
    return found


def servers_json(stack: Stack) -> dict[str, dict[str, Any]]:
    rows = json.loads(ok(stack, "mcp", "server", "ls", "--json"))
    return {row["name"]: row for row in rows}


def ok_with_stderr(stack: Stack, *args: str) -> tuple[str, str]:
    result = berth(stack, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def server_row(servers: server_rpc.ServerServiceStub, name: str) -> res.Server:
    listed = servers.ListServers(server_pb.ListServersRequest()).servers
    return next(server for server in listed if server.name == name)


def reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def arguments(**values: Any) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


class HttpSession:
    """A minimal MCP client session over streamable HTTP: it stays open on the server
    until `close()` (DELETE), with no connection held in between."""

    def __init__(self, url: str, token: str, client_name: str) -> None:
        self.url = url
        self.http = httpx2.Client(
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
            },
            timeout=60,
        )
        self._ids = 0
        self.headers: dict[str, str] = {}
        try:
            reply = self._post(
                {
                    "jsonrpc": "2.0",
                    "id": self._next_id(),
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": client_name, "version": "1.2.3"},
                    },
                }
            )
            self.id = reply.headers["mcp-session-id"]
            self.headers = {"Mcp-Session-Id": self.id, "MCP-Protocol-Version": "2025-06-18"}
            self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        except BaseException:
            self.http.close()
            raise

    def call_tool(self, name: str, **args: Any) -> dict[str, Any]:
        request_id = self._next_id()
        request = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": args},
        }
        reply = self._post(request)
        for message in _messages(reply):
            if message.get("id") == request_id:
                assert "result" in message, message
                result: dict[str, Any] = message["result"]
                return result
        raise AssertionError(f"no answer to tools/call in {reply.text!r}")

    def close(self) -> None:
        with contextlib.suppress(httpx2.HTTPError):
            if self.headers:
                self.http.delete(self.url, headers=self.headers)
        self.http.close()

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _post(self, message: dict[str, Any]) -> httpx2.Response:
        reply = self.http.post(self.url, json=message, headers=self.headers)
        assert reply.status_code in (200, 202), (reply.status_code, reply.text)
        return reply


def _messages(reply: httpx2.Response) -> list[dict[str, Any]]:
    if reply.headers.get("content-type", "").startswith("application/json"):
        body = reply.json()
        return body if isinstance(body, list) else [body]
    return [
        json.loads(line[len("data:") :])
        for line in reply.text.splitlines()
        if line.startswith("data:") and line[len("data:") :].strip()
    ]


@contextlib.contextmanager
def http_session(url: str, token: str, client_name: str) -> Iterator[HttpSession]:
    session = HttpSession(url, token, client_name)
    try:
        yield session
    finally:
        session.close()


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def catalogs(stack: Stack) -> Iterator[None]:
    with stack.channel() as channel:
        stub = catalog_rpc.CatalogServiceStub(channel)
        import_test_catalog(channel)
        stub.ImportCatalog(catalog_pb.ImportCatalogRequest(content=BROKEN_CATALOG))
        try:
            yield
        finally:
            reset_all(stack)
            stub.RemoveCatalog(catalog_pb.RemoveCatalogRequest(name="berth-test-broken"))


@pytest.fixture(autouse=True)
def clean(stack: Stack) -> Iterator[None]:
    reset_all(stack)
    yield
    reset_all(stack)


@pytest.fixture
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with stack.channel() as opened:
        yield opened


@pytest.fixture
def tools(channel: grpc.Channel) -> tool_rpc.ToolServiceStub:
    return tool_rpc.ToolServiceStub(channel)


@pytest.fixture
def servers(channel: grpc.Channel) -> server_rpc.ServerServiceStub:
    return server_rpc.ServerServiceStub(channel)


# -- on the shared stack ----------------------------------------------------------------


def test_a_killed_server_restarts_on_the_next_call(
    stack: Stack, servers: server_rpc.ServerServiceStub
) -> None:
    enable(stack, "time")
    assert json.loads(ok(stack, "mcp", "tools", "call", "get_current_time", "timezone=UTC"))

    row = servers_json(stack)["time"]
    assert (row["state"], row["restart_count"], row["last_error"]) == (
        "SERVER_STATE_RUNNING",
        0,
        "",
    )
    pid = row["pid"]
    assert pid > 0 and row["implementation_name"] == "mcp-time"
    assert os.readlink(f"/proc/{pid}/cwd") == str(stack.root / "mcp" / "servers" / "time")
    inspected = json.loads(ok(stack, "mcp", "server", "inspect", "time"))["server"]
    assert (inspected["state"], inspected["pid"]) == ("SERVER_STATE_RUNNING", pid)

    os.kill(pid, signal.SIGKILL)
    poll(
        lambda: server_row(servers, "time").state == res.SERVER_STATE_FAILED,
        10,
        "berth-mcpd to notice the killed server",
    )
    assert ok(stack, "mcp", "server", "ls").splitlines()[1].split()[:6] == [
        "time",
        "-",
        "-",
        "-",
        "-",
        "failed",
    ]

    again = json.loads(ok(stack, "mcp", "tools", "call", "get_current_time", "timezone=UTC"))
    assert again["timezone"] == "UTC"
    row = servers_json(stack)["time"]
    assert (row["state"], row["restart_count"]) == ("SERVER_STATE_RUNNING", 1)
    assert row["pid"] not in (0, pid)


def test_a_server_that_cannot_start_is_reported_and_the_others_still_work(
    stack: Stack, tools: tool_rpc.ToolServiceStub
) -> None:
    enable(stack, "time", "no-such-command", "exits-at-once")
    stdout, stderr = ok_with_stderr(stack, "mcp", "tools", "ls")
    assert stdout.splitlines() == [
        "2 tools:",
        " - convert_time - Convert time between timezones",
        " - get_current_time - Get current time in a specific timezone",
    ]
    lines = stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("berth: server exits-at-once: could not start: ")
    assert lines[0].endswith("cannot open the database")
    assert lines[1] == (
        "berth: server no-such-command: could not start: "
        "command '/nonexistent/berth-test-missing-server' not found on PATH"
    )

    rows = servers_json(stack)
    assert rows["exits-at-once"]["state"] == "SERVER_STATE_FAILED"
    assert "cannot open the database" in rows["exits-at-once"]["last_error"]
    assert rows["no-such-command"]["state"] == "SERVER_STATE_FAILED"
    assert "not found" in rows["no-such-command"]["last_error"]

    with pytest.raises(grpc.RpcError) as raised:
        tools.CallTool(tool_pb.CallToolRequest(name="anything", server="exits-at-once"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason(raised.value) == "SERVER_UNAVAILABLE"
    assert "cannot open the database" in str(raised.value.details())
    with pytest.raises(grpc.RpcError) as raised:
        tools.DisableTools(tool_pb.DisableToolsRequest(server="no-such-command", names=["x"]))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not found on PATH" in str(raised.value.details())
    with pytest.raises(grpc.RpcError) as raised:
        tools.CallTool(tool_pb.CallToolRequest(name="anything"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "could not list their tools: exits-at-once" in str(raised.value.details())

    # The others still answer.
    answer = json.loads(ok(stack, "mcp", "tools", "call", "get_current_time", "timezone=UTC"))
    assert answer["timezone"] == "UTC"


def test_the_cli_shows_why_a_server_is_down_not_a_connection_hint(stack: Stack) -> None:
    enable(stack, "time", "no-such-command")
    stderr = refused(stack, "mcp", "tools", "call", "anything", "--server", "no-such-command")
    assert "could not start: command '/nonexistent/berth-test-missing-server' not found" in stderr
    # berth itself answered: the CLI must not ask whether berth is running.
    assert "cannot reach berth" not in stderr
    assert "Is it running?" not in stderr


def test_a_call_past_its_timeout_fails_quickly_and_the_server_still_answers(
    stack: Stack, tools: tool_rpc.ToolServiceStub, servers: server_rpc.ServerServiceStub
) -> None:
    enable(stack, EVERYTHING)
    assert ok(stack, "mcp", "tools", "call", "echo", "message=up") == "Echo: up\n"
    pid = server_row(servers, EVERYTHING).pid

    started = time.monotonic()
    stderr = refused(stack, "mcp", "tools", "call", *LONG_CALL, "--timeout", "1s")
    assert time.monotonic() - started < 15  # 1 s, and the CLI's own start on a busy machine
    assert stderr == f"berth: server {EVERYTHING} did not answer tools/call in 1 s\n"

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        tools.CallTool(
            tool_pb.CallToolRequest(
                name=LONG_CALL[0],
                arguments=arguments(duration=30, steps=3),
                timeout=Duration(nanos=500_000_000),
            )
        )
    assert time.monotonic() - started < 5
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert reason(raised.value) == "TOOL_CALL_TIMEOUT"

    # The same process answers the next call at once.
    reply = tools.CallTool(
        tool_pb.CallToolRequest(name="echo", arguments=arguments(message="still here")),
        timeout=10,
    )
    assert reply.content[0].text.text == "Echo: still here"
    row = server_row(servers, EVERYTHING)
    assert (row.state, row.pid, row.restart_count) == (res.SERVER_STATE_RUNNING, pid, 0)


def test_a_server_without_its_config_names_the_config(
    stack: Stack, tools: tool_rpc.ToolServiceStub
) -> None:
    enable(stack, "time-utc")
    needs = "needs config time-utc.zone: set it with `berth mcp config write time-utc`"
    stdout, stderr = ok_with_stderr(stack, "mcp", "tools", "ls")
    assert stdout == "0 tools:\n"
    assert stderr == f"berth: server time-utc: {needs}\n"
    stderr = refused(
        stack, "mcp", "tools", "call", "get_current_time", "--server", "time-utc", "timezone=UTC"
    )
    assert stderr == f"berth: server time-utc {needs}\n"
    with pytest.raises(grpc.RpcError) as raised:
        tools.CallTool(tool_pb.CallToolRequest(name="get_current_time", server="time-utc"))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(raised.value) == "CONFIG_REQUIRED"
    stderr = refused(stack, "mcp", "tools", "disable", "--server", "time-utc", "convert_time")
    assert stderr == f"berth: server time-utc {needs}\n"

    ok(stack, "mcp", "config", "write", "time-utc", "zone: UTC")
    answer = json.loads(ok(stack, "mcp", "tools", "call", "get_current_time", "timezone=UTC"))
    assert answer["timezone"] == "UTC"


def test_gateway_status_lists_endpoints_servers_and_open_sessions(
    stack: Stack, channel: grpc.Channel
) -> None:
    enable(stack, "time")
    gateway = gateway_rpc.GatewayServiceStub(channel)
    token = gateway.GetGatewayToken(gateway_pb.GetGatewayTokenRequest()).token
    assert token == MCP_GATEWAY_TOKEN

    status = gateway.GetGatewayStatus(gateway_pb.GetGatewayStatusRequest())
    urls = {endpoint.transport: endpoint.url for endpoint in status.endpoints}
    assert set(urls) == {res.GATEWAY_TRANSPORT_STREAMING, res.GATEWAY_TRANSPORT_SSE}
    streaming, sse = urls[res.GATEWAY_TRANSPORT_STREAMING], urls[res.GATEWAY_TRANSPORT_SSE]
    assert streaming.startswith("http://127.0.0.1:") and streaming.endswith("/mcp")
    assert sse == streaming.removesuffix("/mcp") + "/sse"
    assert [server.name for server in status.servers] == ["time"]
    assert status.start_time.seconds > 0

    with http_session(streaming, token, "berth-status-test") as session:
        answer = session.call_tool("get_current_time", timezone="UTC")
        assert json.loads(answer["content"][0]["text"])["timezone"] == "UTC"
        status = gateway.GetGatewayStatus(gateway_pb.GetGatewayStatusRequest())
        (mine,) = [s for s in status.sessions if s.id == session.id]
        assert (mine.transport, mine.client_name, mine.client_version) == (
            res.GATEWAY_TRANSPORT_STREAMING,
            "berth-status-test",
            "1.2.3",
        )
        assert mine.protocol_version == "2025-06-18"
        assert mine.peer.startswith("127.0.0.1")
        assert status.tool_count >= 0
    poll(
        lambda: (
            session.id
            not in {
                s.id
                for s in gateway.GetGatewayStatus(gateway_pb.GetGatewayStatusRequest()).sessions
            }
        ),
        10,
        "the closed session to leave the status",
    )

    refused_reply = httpx2.post(
        streaming,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Authorization": "Bearer wrong", "Accept": "application/json, text/event-stream"},
        timeout=10,
    )
    assert refused_reply.status_code == 401


# -- a private berth-mcpd ----------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_no_server_process_outlives_the_daemon(tmp_path: Path, stop_signal: int) -> None:
    state = tmp_path / "state"
    daemon = private_mcpd(state, "--gateway-port", "0", "--gateway-token", "private-token")
    try:
        with grpc.insecure_channel(daemon.target) as channel:
            import_test_catalog(channel)
            server_rpc.ServerServiceStub(channel).EnableServers(
                server_pb.EnableServersRequest(names=["time", EVERYTHING])
            )
            tools = tool_rpc.ToolServiceStub(channel)
            for name, args in [
                ("echo", {"message": "x"}),
                ("get_current_time", {"timezone": "UTC"}),
            ]:
                reply = tools.CallTool(
                    tool_pb.CallToolRequest(name=name, arguments=arguments(**args)), timeout=60
                )
                assert not reply.is_error
            url = endpoint_url(channel)
        with http_session(url, "private-token", "berth-orphan-test") as session:
            assert session.call_tool("echo", message="y")["content"][0]["text"] == "Echo: y"
            # Two servers for the gRPC services' session, two for the HTTP session.
            running = poll(
                lambda: len(processes_under(state)) >= 4 and processes_under(state),
                30,
                "four server processes",
            )
            assert os.getpid() not in running
            daemon.stop(stop_signal)
        poll(
            lambda: not processes_under(state),
            15,
            f"no process under {state} after {signal.Signals(stop_signal).name}",
        )
    finally:
        daemon.stop(signal.SIGKILL)
        for pid in processes_under(state):  # only on failure: leave nothing behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_server_the_tools_commands_started_stops_when_idle(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = private_mcpd(state, "--gateway-port", "-1", "--server-idle-timeout", "1")
    try:
        with grpc.insecure_channel(daemon.target) as channel:
            servers = server_rpc.ServerServiceStub(channel)
            servers.EnableServers(server_pb.EnableServersRequest(names=["time"]))
            tools = tool_rpc.ToolServiceStub(channel)
            request = tool_pb.CallToolRequest(
                name="get_current_time", arguments=arguments(timezone="UTC")
            )
            assert not tools.CallTool(request, timeout=60).is_error
            assert server_row(servers, "time").state == res.SERVER_STATE_RUNNING
            poll(
                lambda: (
                    server_row(servers, "time").state == res.SERVER_STATE_STOPPED
                    and not processes_under(state)
                ),
                15,
                "the idle server stopped",
            )
            assert not tools.CallTool(request, timeout=60).is_error  # started again on demand
            assert server_row(servers, "time").restart_count == 0  # not counted as a crash
    finally:
        daemon.stop(signal.SIGKILL)
