"""The gateway as an MCP client of one server: one Link, the initialize handshake, request
ids of its own, and the server's lists cached until the server says they changed.

Requests the server sends (sampling, elicitation, roots) and its notifications go to the
`UpstreamPeer` that owns the connection, which relays them to its MCP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from berth.mcp.domain.launch import Launch
from berth.mcp.gateway import messages as rpc
from berth.mcp.gateway.links import Link, LinkError
from berth.mcp.gateway.messages import Message, RpcError

log = structlog.get_logger("berth.mcp.upstream")

PROTOCOL_VERSION = "2025-11-25"
START_TIMEOUT_S = 120.0  # npx may download its package on the first start
LIST_TIMEOUT_S = 30.0
READER_END_S = 3.0
# What a list_changed notification invalidates, and the list request each cache holds.
LISTS = {
    "tools": ("tools/list", "notifications/tools/list_changed"),
    "prompts": ("prompts/list", "notifications/prompts/list_changed"),
    "resources": ("resources/list", "notifications/resources/list_changed"),
    "resourceTemplates": ("resources/templates/list", "notifications/resources/list_changed"),
}
CAPABILITY_OF = {
    "tools": "tools",
    "prompts": "prompts",
    "resources": "resources",
    "resourceTemplates": "resources",
}


class UpstreamPeer(Protocol):
    """The owner of an upstream connection: where the server's own messages go."""

    async def server_request(self, upstream: Upstream, message: Message) -> dict[str, Any]: ...
    def server_notification(self, upstream: Upstream, message: Message) -> None: ...


LinkOpener = Callable[[Launch], Awaitable[Link]]


class Upstream:
    """One initialized connection to one server. Once `alive` is false it stays so: the
    owner makes a new one (a restart)."""

    def __init__(self, launch: Launch, link: Link, peer: UpstreamPeer) -> None:
        self.launch = launch
        self.name = launch.server
        self.link = link
        self.pid = link.pid
        self.peer = peer
        self.start_time = datetime.now(UTC)
        self.last_used = time.monotonic()
        self.alive = True
        self.failure = ""
        self.capabilities: dict[str, Any] = {}
        self.server_info: dict[str, Any] = {}
        self.protocol_version = ""
        self._ids = itertools.count(1)
        self._pending: dict[rpc.RequestId, asyncio.Future[Message]] = {}
        self._lists: dict[str, list[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader = asyncio.create_task(self._read(), name=f"mcp-upstream-{self.name}")

    @classmethod
    async def start(
        cls,
        launch: Launch,
        peer: UpstreamPeer,
        client_capabilities: dict[str, Any],
        client_info: dict[str, Any],
        opener: LinkOpener,
        log_level: str | None = None,
    ) -> Upstream:
        """Starts (or connects to) the server and completes the MCP handshake."""
        link = await opener(launch)
        upstream = cls(launch, link, peer)
        try:
            initialized = await upstream.request(
                "initialize",
                {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": client_capabilities,
                    "clientInfo": client_info,
                },
                timeout_s=START_TIMEOUT_S,
            )
            upstream.capabilities = dict(initialized.get("capabilities") or {})
            upstream.server_info = dict(initialized.get("serverInfo") or {})
            upstream.protocol_version = str(initialized.get("protocolVersion", ""))
            await upstream.notify("notifications/initialized")
            if log_level and "logging" in upstream.capabilities:
                await upstream.request("logging/setLevel", {"level": log_level})
        except (RpcError, LinkError) as error:
            await upstream.close()
            raise LinkError(upstream.failure or str(error)) from None
        except BaseException:
            await upstream.close()
            raise
        return upstream

    def cached(self, kind: str) -> list[dict[str, Any]] | None:
        """One of the server's lists as last fetched, without asking the server."""
        return self._lists.get(kind)

    def offers(self, kind: str) -> bool:
        return CAPABILITY_OF[kind] in self.capabilities

    async def listing(self, kind: str) -> list[dict[str, Any]]:
        """Every item of one of the server's lists (all pages), cached until list_changed."""
        cached = self._lists.get(kind)
        if cached is not None:
            return cached
        method, _ = LISTS[kind]
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"cursor": cursor} if cursor else {}
            page = await self.request(method, params, timeout_s=LIST_TIMEOUT_S)
            items.extend(item for item in page.get(kind) or [] if isinstance(item, dict))
            cursor = page.get("nextCursor")
            if not cursor:
                break
        self._lists[kind] = items
        return items

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """The result of one request; RpcError for an error answer, a timeout (the request
        is cancelled on the server) or a server that went away."""
        if not self.alive:
            raise self._gone()
        self.last_used = time.monotonic()
        request_id = next(self._ids)
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            await self._send(rpc.request(request_id, method, params))
            message = await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            self._cancel_later(request_id, "timed out")
            late = f"server {self.name} did not answer {method} in {timeout_s:g} s"
            raise RpcError(rpc.REQUEST_TIMEOUT, late) from None
        except asyncio.CancelledError:
            self._cancel_later(request_id, "cancelled by the client")
            raise
        finally:
            self._pending.pop(request_id, None)
            if answer.done() and not answer.cancelled():
                # Failed by a server that died while the request was being written: read,
                # so that asyncio does not log it as an exception nobody retrieved.
                answer.exception()
        if "error" in message:
            raise RpcError.from_error(message["error"])
        value = message.get("result")
        return value if isinstance(value, dict) else {}

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        await self._send(rpc.notification(method, params))

    async def close(self) -> None:
        self.alive = False
        self._reader.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.link.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._fail_pending()

    # -- internals -------------------------------------------------------------------------

    async def _send(self, message: Message) -> None:
        try:
            await self.link.send(message)
        except LinkError as error:
            # A server that died has usually closed its output too: let the reader see the
            # end, so that the failure says how it ended (exit status, stderr).
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._reader), READER_END_S)
            self._mark_gone(str(error))
            raise self._gone() from None

    def _cancel_later(self, request_id: rpc.RequestId, reason: str) -> None:
        if self.alive:
            params = {"requestId": request_id, "reason": reason}
            self._spawn(self.notify("notifications/cancelled", params))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("upstream task failed", server=self.name, error=str(task.exception()))

    async def _read(self) -> None:
        while (message := await self.link.receive()) is not None:
            if rpc.is_response(message):
                answer = self._pending.get(message.get("id"))  # type: ignore[arg-type]
                if answer is not None and not answer.done():
                    answer.set_result(message)
            elif rpc.is_request(message):
                self._spawn(self._answer(message))
            elif rpc.is_notification(message):
                self._on_notification(message)
        self._mark_gone(self.link.failure())
        self._fail_pending()

    def _on_notification(self, message: Message) -> None:
        method = message["method"]
        for kind, (_, changed) in LISTS.items():
            if method == changed:
                self._lists.pop(kind, None)
        self.peer.server_notification(self, message)

    async def _answer(self, message: Message) -> None:
        request_id = message["id"]
        try:
            if message["method"] == "ping":
                value: dict[str, Any] = {}
            else:
                value = await self.peer.server_request(self, message)
            reply = rpc.result(request_id, value)
        except RpcError as error:
            reply = rpc.error(request_id, error)
        with contextlib.suppress(RpcError):
            await self._send(reply)

    def _mark_gone(self, why: str) -> None:
        if self.alive:
            self.alive = False
            self.failure = why
            log.info("mcp server ended", server=self.name, pid=self.pid, why=why)

    def _gone(self) -> RpcError:
        return RpcError(
            rpc.SERVER_UNAVAILABLE,
            f"server {self.name} {self.failure or 'is not running'}; it restarts on the next call",
        )

    def _fail_pending(self) -> None:
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(self._gone())
        self._pending.clear()
