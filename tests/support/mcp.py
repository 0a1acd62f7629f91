"""MCP test helpers: the real servers the tests run, and how to reach the endpoint."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from berth.api.mcp.v1 import catalog_service_pb2 as catalog_pb
from berth.api.mcp.v1 import catalog_service_pb2_grpc as catalog_rpc
from berth.api.mcp.v1 import gateway_service_pb2 as gateway_pb
from berth.api.mcp.v1 import gateway_service_pb2_grpc as gateway_rpc
from berth.api.mcp.v1 import resources_pb2 as res
from tests.support.processes import BIN, DaemonProcess, start

REPO = Path(__file__).resolve().parents[2]
NODE_BIN = REPO / "node_modules" / ".bin"
# The bearer token the test stacks' endpoint requires.
MCP_GATEWAY_TOKEN = "berth-test-mcp-token"
# Real servers, installed by `make setup`: the PyPI ones in the virtual environment, the npm
# ones under node_modules (run directly: `npx -y` would fetch them from the registry).
TEST_CATALOG = f"""\
name: test-servers
servers:
  everything-local:
    title: Everything (local)
    description: The MCP reference test server, from node_modules
    command: {NODE_BIN / "mcp-server-everything"}
  time-utc:
    title: Time in UTC
    description: mcp-server-time, told its local time zone
    command: {BIN / "mcp-server-time"}
    args: ["--local-timezone", "{{{{time-utc.zone}}}}"]
    config:
      type: object
      properties: {{zone: {{type: string}}}}
      required: [zone]
"""


def import_test_catalog(channel: object) -> None:
    """Imports TEST_CATALOG (again: the import replaces it), for `everything-local`."""
    catalog_rpc.CatalogServiceStub(channel).ImportCatalog(
        catalog_pb.ImportCatalogRequest(content=TEST_CATALOG, source="tests/support/mcp.py")
    )


def endpoint_url(channel: object, transport: int = res.GATEWAY_TRANSPORT_STREAMING) -> str:
    """Where berth-mcpd serves MCP over HTTP (`/mcp` or `/sse`)."""
    stub = gateway_rpc.GatewayServiceStub(channel)
    status = stub.GetGatewayStatus(gateway_pb.GetGatewayStatusRequest())
    return next(e.url for e in status.endpoints if e.transport == transport)


# -- real MCP clients ------------------------------------------------------------------------

GATEWAY_TRANSPORTS = ("stdio", "sse", "streaming")
AUTHORIZATION = {"Authorization": f"Bearer {MCP_GATEWAY_TOKEN}"}
Streams = tuple[Any, Any]


@dataclass(frozen=True)
class GatewayAddress:
    """How a client reaches one stack's aggregated endpoint, over each transport."""

    socket: Path  # berth's own socket: `berth mcp gateway run` relays stdio through it
    streaming_url: str
    sse_url: str


def gateway_address(socket: Path, channel: object) -> GatewayAddress:
    return GatewayAddress(
        socket,
        endpoint_url(channel, res.GATEWAY_TRANSPORT_STREAMING),
        endpoint_url(channel, res.GATEWAY_TRANSPORT_SSE),
    )


def berth_env(socket: Path) -> dict[str, str]:
    """The environment of a `berth` command that talks to the stack behind `socket`."""
    return {**os.environ, "BERTH_HOST": f"unix://{socket}"}


@asynccontextmanager
async def gateway_streams(address: GatewayAddress, transport: str) -> AsyncIterator[Streams]:
    """The SDK client transport to the endpoint: stdio (through `berth mcp gateway run`),
    SSE or streamable HTTP (with the bearer token)."""
    if transport == "stdio":
        server = StdioServerParameters(
            command=str(BIN / "berth"),
            args=["mcp", "gateway", "run"],
            env=berth_env(address.socket),
        )
        async with stdio_client(server) as streams:
            yield streams
    elif transport == "sse":
        async with sse_client(address.sse_url, headers=AUTHORIZATION) as streams:
            yield streams
    elif transport == "streaming":
        async with (
            httpx2.AsyncClient(headers=AUTHORIZATION, timeout=httpx2.Timeout(30, read=300)) as http,
            streamable_http_client(address.streaming_url, http_client=http) as streams,
        ):
            yield streams
    else:
        raise ValueError(f"no MCP transport {transport!r}")


@asynccontextmanager
async def server_streams(
    command: str | Path, args: Sequence[str] = (), cwd: Path | None = None
) -> AsyncIterator[Streams]:
    """The SDK stdio client transport straight to one server process (no berth between)."""
    server = StdioServerParameters(
        command=str(command), args=list(args), env=dict(os.environ), cwd=cwd
    )
    async with stdio_client(server) as streams:
        yield streams


@asynccontextmanager
async def client_session(streams: Streams, **callbacks: Any) -> AsyncIterator[ClientSession]:
    """An initialized SDK ClientSession over `streams`; callbacks as ClientSession takes them
    (sampling_callback, elicitation_callback, logging_callback, message_handler)."""
    read, write = streams
    async with ClientSession(read, write, read_timeout_seconds=60, **callbacks) as session:
        await session.initialize()
        yield session


class Inbox:
    """What a client was sent (notifications, log messages), awaited with a deadline."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._arrived = asyncio.Event()

    async def __call__(self, item: Any) -> None:
        self.items.append(item)
        self._arrived.set()

    async def wait_for(
        self,
        check: Callable[[Any], bool],
        what: str = "a message",
        within_s: float = 20.0,
        after: int = 0,
    ) -> Any:
        """The first item (already here or still to come, skipping the first `after`) for
        which check() is true."""
        seen = after
        try:
            async with asyncio.timeout(within_s):
                while True:
                    for item in self.items[seen:]:
                        if check(item):
                            return item
                    seen = len(self.items)
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {within_s:g} s waiting for {what}") from None

    def methods(self) -> list[str]:
        return [str(getattr(item, "method", "")) for item in self.items]


def private_mcpd(state: Path, *args: str, env: dict[str, str] | None = None) -> DaemonProcess:
    """A berth-mcpd of the test's own (state in `state`, its socket and log beside it)."""
    root = state.parent
    return start(
        "mcpd-private",
        "berth.mcp.main",
        root / "mcpd.sock",
        ["--state-dir", str(state), "--runtime-dir", str(root / "mcp-run"), *args],
        root,
        env=env,
    )
