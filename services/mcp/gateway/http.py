"""The aggregated endpoint over HTTP: MCP streamable HTTP at `/mcp`, the legacy HTTP+SSE
transport at `/sse` (messages posted to `/messages/`).

The wire protocols are the MCP SDK's server transports; each connected client gets its
own GatewaySession. Every request must carry `Authorization: Bearer <token>`, and a request
from a browser page of a foreign origin is refused whatever it carries (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import anyio
import structlog
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import jsonrpc_message_adapter
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth.mcp.gateway.hub import Hub
from berth.mcp.gateway.messages import RequestId
from berth.mcp.gateway.session import GatewaySession

log = structlog.get_logger("berth.mcp.http")

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
IDLE_SESSION_S = 1800.0
MESSAGES_PATH = "/messages/"


class McpEndpoint:
    """The ASGI app of the endpoint. `allowed_hosts` are the hosts a browser Origin may name
    besides localhost."""

    def __init__(self, hub: Hub, token: str, allowed_hosts: set[str]) -> None:
        self.token = token
        self.allowed_hosts = LOCAL_HOSTS | allowed_hosts
        self.streamable = StreamableSessions(hub)
        sse = SseSessions(hub)
        self.routes: dict[str, ASGIApp] = {
            "/mcp": self.streamable,
            "/mcp/": self.streamable,
            "/sse": sse.connect,
            MESSAGES_PATH: sse.post,
            MESSAGES_PATH.rstrip("/"): sse.post,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        refusal = _refusal(Headers(scope=scope), self.token, self.allowed_hosts)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        route = self.routes.get(scope["path"])
        if route is None:
            await JSONResponse({"error": "not found: use /mcp or /sse"}, 404)(scope, receive, send)
            return
        await route(scope, receive, send)

    async def close(self) -> None:
        """Ends the streamable HTTP sessions (SSE streams end with their connections)."""
        await self.streamable.close()


def _refusal(headers: Headers, token: str, allowed_hosts: set[str]) -> Response | None:
    origin = headers.get("origin")
    if origin and urlsplit(origin).hostname not in allowed_hosts:
        return JSONResponse({"error": f"origin {origin} is not allowed"}, 403)
    given = headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return JSONResponse(
            {"error": "a bearer token is required (`berth mcp client connect` configures it)"},
            401,
            headers={"WWW-Authenticate": 'Bearer realm="berth"'},
        )
    return None


def _sender(write: Any) -> Callable[[dict[str, Any], RequestId | None], Awaitable[None]]:
    async def send(message: dict[str, Any], related: RequestId | None) -> None:
        typed = jsonrpc_message_adapter.validate_python(message)
        metadata = (
            ServerMessageMetadata(related_request_id=related) if related is not None else None
        )
        await write.send(SessionMessage(typed, metadata=metadata))

    return send


async def _pump(read: Any, session: GatewaySession) -> None:
    """The client's messages into its session, until its stream ends. A streamable HTTP
    session that the client ends (DELETE) closes the stream under this reader."""
    with contextlib.suppress(anyio.ClosedResourceError):
        async for item in read:
            if isinstance(item, Exception):
                continue
            await session.receive(
                item.message.model_dump(by_alias=True, mode="json", exclude_unset=True)
            )


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


class StreamableSessions:
    """Streamable HTTP sessions by `Mcp-Session-Id`; a POST without one must be an
    initialize request, which opens a session."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.transports: dict[str, StreamableHTTPServerTransport] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = Headers(scope=scope).get("mcp-session-id")
        if session_id:
            transport = self.transports.get(session_id)
            if transport is None:
                await _rpc_error("session not found (it ended or expired)", 404)(
                    scope, receive, send
                )
                return
            await transport.handle_request(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _rpc_error("a session id (Mcp-Session-Id) is required", 400)(scope, receive, send)
            return
        body, replay = await _read_body(receive)
        if not _is_initialize(body):
            await _rpc_error("the first request of a session is initialize", 400)(
                scope, receive, send
            )
            return
        transport = await self._open(_peer(scope))
        await transport.handle_request(scope, replay, send)

    async def _open(self, peer: str) -> StreamableHTTPServerTransport:
        transport = StreamableHTTPServerTransport(uuid4().hex, idle_timeout=IDLE_SESSION_S)
        session_id = transport.mcp_session_id
        assert session_id is not None
        self.transports[session_id] = transport
        ready = asyncio.Event()
        task = asyncio.create_task(self._serve(transport, session_id, peer, ready))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await ready.wait()
        return transport

    async def _serve(
        self,
        transport: StreamableHTTPServerTransport,
        session_id: str,
        peer: str,
        ready: asyncio.Event,
    ) -> None:
        try:
            async with transport.connect() as (read, write):
                session = self.hub.open_session(
                    _sender(write), "streaming", peer, session_id=session_id
                )
                ready.set()
                try:
                    idle = transport.idle_scope
                    assert idle is not None
                    with idle:
                        await _pump(read, session)
                finally:
                    await self.hub.close_session(session)
        finally:
            ready.set()
            self.transports.pop(session_id, None)
            if not transport.is_terminated:
                with contextlib.suppress(Exception):
                    await transport.terminate()

    async def close(self) -> None:
        for transport in list(self.transports.values()):
            with contextlib.suppress(Exception):
                await transport.terminate()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class SseSessions:
    """The legacy transport: GET /sse holds the stream, POST /messages/ brings messages."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.transport = SseServerTransport(MESSAGES_PATH)

    async def connect(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await JSONResponse({"error": "use GET"}, 405)(scope, receive, send)
            return
        async with self.transport.connect_sse(scope, receive, send) as (read, write):
            session = self.hub.open_session(_sender(write), "sse", _peer(scope))
            try:
                await _pump(read, session)
            finally:
                await self.hub.close_session(session)

    async def post(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.transport.handle_post_message(scope, receive, send)


def _rpc_error(text: str, status: int) -> Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": text}}
    return JSONResponse(body, status)


def _is_initialize(body: bytes) -> bool:
    try:
        message = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(message, dict) and message.get("method") == "initialize"


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a `receive` that gives it again to the next reader."""
    chunks = []
    while True:
        event = await receive()
        if event["type"] != "http.request":
            break
        chunks.append(event.get("body", b""))
        if not event.get("more_body"):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
