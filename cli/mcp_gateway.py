"""`berth mcp gateway run`: the aggregated MCP endpoint, for one client (GatewayService).

berth-mcpd serves the endpoint itself. Over stdio this command is the MCP server a client
starts: it relays each line of stdin (one JSON-RPC message) to a RunGateway stream and
each message of the stream to a line of stdout. For the HTTP transports it only says
where the daemon listens.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, BinaryIO, TextIO
from urllib.parse import urlsplit

import typer

from berth.api.mcp.v1 import gateway_service_pb2 as pb
from berth.api.mcp.v1 import gateway_service_pb2_grpc as rpc
from berth.cli.errors import CliError
from berth.cli.mcp_common import TRANSPORT_PROTO, Transport, emit, note, split_list, stub

app = typer.Typer(help="Manage the MCP Server gateway", no_args_is_help=True)

DEFAULT_PORT = 8811
READ_SIZE = 65536


def _gateway() -> rpc.GatewayServiceStub:
    return stub(rpc.GatewayServiceStub)


# -- stdio ----------------------------------------------------------------------------


def fd_lines(fd: int) -> Iterator[bytes]:
    """Lines read straight from a file descriptor, each yielded as soon as it is complete."""
    pending = b""
    while chunk := os.read(fd, READ_SIZE):
        *lines, pending = (pending + chunk).split(b"\n")
        yield from lines
    if pending:
        yield pending


def stdin_lines(stream: TextIO) -> Iterator[bytes]:
    """stdin's lines. The reading thread may still be blocked when the daemon ends the
    session; reading the descriptor itself, not the buffered reader, lets Python exit then
    (a thread holding the buffered reader's lock aborts interpreter shutdown).
    """
    try:
        return fd_lines(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no descriptor: a test's in-memory stdin
        return iter(stream.buffer.readline, b"")


def gateway_requests(
    lines: Iterable[bytes], servers: list[str], tools: list[str]
) -> Iterator[pb.RunGatewayRequest]:
    """The session's limits first (when any), then one message per non-empty line."""
    if servers or tools:
        yield pb.RunGatewayRequest(options=pb.GatewaySessionOptions(servers=servers, tools=tools))
    for line in lines:
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if text.strip():
            yield pb.RunGatewayRequest(message=text)


def relay_responses(
    responses: Iterable[pb.RunGatewayResponse],
    out: BinaryIO,
    on_session: Callable[[pb.GatewaySession], None],
) -> None:
    """Each JSON-RPC message of the stream as one line of `out`, flushed at once."""
    for response in responses:
        kind = response.WhichOneof("kind")
        if kind == "message":
            out.write(response.message.encode("utf-8") + b"\n")
            out.flush()
        elif kind == "session":
            on_session(response.session)


def run_stdio(servers: list[str], tools: list[str], verbose: bool) -> None:
    def on_session(session: pb.GatewaySession) -> None:
        if verbose:
            note(f"berth: MCP session {session.id} ({session.peer or 'grpc'})")

    requests = gateway_requests(stdin_lines(sys.stdin), servers, tools)
    call = _gateway().RunGateway(requests)
    try:
        relay_responses(call, sys.stdout.buffer, on_session)
    except KeyboardInterrupt:
        call.cancel()
        raise


# -- sse, streaming -------------------------------------------------------------------


def endpoint_url(status: pb.GetGatewayStatusResponse, transport: Transport) -> str:
    wanted = TRANSPORT_PROTO[transport]
    for endpoint in status.endpoints:
        if endpoint.transport == wanted:
            return endpoint.url
    raise CliError(
        f"berth-mcpd is not serving MCP over {transport.value}: enable its HTTP endpoint, "
        "or use --transport stdio"
    )


def port_mismatch(url: str, port: int | None) -> str | None:
    """A warning when --port asks for another port than the daemon listens on."""
    listening = urlsplit(url).port
    if port is None or listening is None or listening == port:
        return None
    return (
        f"berth: the daemon serves the endpoint on port {listening}, not {port} (its own setting)"
    )


def show_endpoint(transport: Transport, port: int | None) -> None:
    url = endpoint_url(_gateway().GetGatewayStatus(pb.GetGatewayStatusRequest()), transport)
    warning = port_mismatch(url, port)
    if warning:
        note(warning)
    emit(url)
    note(
        "berth: clients send `Authorization: Bearer <token>`; "
        f"`berth mcp client connect CLIENT --transport {transport.value}` configures one"
    )


@app.command("run")
def run(
    transport: Annotated[
        Transport, typer.Option("--transport", help="stdio, sse or streaming")
    ] = Transport.STDIO,
    port: Annotated[
        int | None,
        typer.Option("--port", help=f"Port of the HTTP transports (default {DEFAULT_PORT})"),
    ] = None,
    servers: Annotated[
        list[str] | None, typer.Option("--servers", help="Only these servers (comma-separated)")
    ] = None,
    tools: Annotated[
        list[str] | None, typer.Option("--tools", help="Only these tools (comma-separated)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Verbose output on stderr")] = False,
) -> None:
    """Run the gateway for an MCP client (stdio), or show the daemon's HTTP endpoint."""
    server_list, tool_list = split_list(servers), split_list(tools)
    if transport is Transport.STDIO:
        run_stdio(server_list, tool_list, verbose)
        return
    if server_list or tool_list:
        raise CliError("--servers and --tools limit a stdio session; the HTTP endpoint offers all")
    show_endpoint(transport, port)
