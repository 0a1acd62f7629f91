"""One MCP client session of the aggregated endpoint: the router between that client and the
enabled servers.

Each session has its own connection to each server it uses (started on first need, kept
for the session, restarted on the next call after a crash), so whatever a server asks back
(sampling, elicitation, roots) and whatever it tells (progress, logging, list changes)
belongs to exactly one client, as with a direct connection. Messages are routed as plain
JSON: only names are rewritten (`server__tool` on a clash) and ids mapped.

Outgoing messages go through one queue, in order: a call's progress notifications always
reach the client before its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

from berth.common.errors import BerthError, Code, FailedPrecondition, NotFound
from berth.common.version import berth_version
from berth.mcp.domain.launch import Launch
from berth.mcp.domain.secret_scan import refuse_secrets
from berth.mcp.domain.tools import Exposed, expose, find
from berth.mcp.gateway import messages as rpc
from berth.mcp.gateway.links import Link, LinkError
from berth.mcp.gateway.messages import Message, RequestId, RpcError
from berth.mcp.gateway.upstream import Upstream

log = structlog.get_logger("berth.mcp.session")

SERVER_INFO = {"name": "berth", "title": "berth MCP gateway", "version": berth_version()}
CLIENT_INFO = {"name": "berth-mcpd", "version": berth_version()}
CAPABILITIES = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "logging": {},
    "completions": {},
}
# Requests a server may send its client, and the client capability each needs.
CLIENT_FEATURES = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
LIST_CHANGED = (
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
)
# How domain errors reach an MCP client.
RPC_CODES = {Code.NOT_FOUND: rpc.INVALID_PARAMS, Code.INVALID_ARGUMENT: rpc.INVALID_PARAMS}

Send = Callable[[Message, RequestId | None], Awaitable[None]]


class Fleet(Protocol):
    """What the hub tells a session about the servers."""

    call_timeout_s: float

    def enabled(self) -> list[str]: ...
    def launch(self, server: str) -> Launch: ...
    async def open_link(self, launch: Launch) -> Link: ...
    def given_secrets(self, server: str) -> frozenset[str]: ...
    def disabled_tools(self) -> dict[str, set[str]]: ...
    def prefix_all(self) -> bool: ...
    def block_secrets(self) -> bool: ...


@dataclass
class SessionInfo:
    """The session as `GetGatewayStatus` lists it."""

    id: str
    transport: str  # "stdio", "sse", "streaming" or "grpc"
    peer: str = ""
    servers: list[str] = field(default_factory=list)  # limits; empty: every enabled server
    tools: list[str] = field(default_factory=list)
    start_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    client_name: str = ""
    client_version: str = ""
    protocol_version: str = ""


@dataclass
class Slot:
    """One server in one session: its current connection and its history."""

    upstream: Upstream | None = None
    restarts: int = 0
    failure: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Table:
    """The exposed tools or prompts, and the servers that could not list theirs."""

    items: list[Exposed]
    errors: dict[str, str]


class GatewaySession:
    def __init__(self, fleet: Fleet, send: Send, info: SessionInfo, *, implicit: bool = False):
        self.fleet = fleet
        self.info = info
        self._send = send
        # The gRPC services' own session has no client to initialize it, nor to ask back.
        self.ready = implicit
        self.client_capabilities: dict[str, Any] = {}
        self.log_level: str | None = None
        self.slots: dict[str, Slot] = {}
        self._tables: dict[str, Table] = {}
        self._uri_owner: dict[str, str] = {}
        self._template_owner: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._inflight: dict[RequestId, asyncio.Task[None]] = {}
        self._active: dict[str, list[RequestId]] = {}  # server -> client requests it serves
        self._progress: dict[Any, RequestId] = {}  # progress token -> client request
        self._asked: dict[RequestId, asyncio.Future[Message]] = {}  # our requests to the client
        self._relayed: dict[tuple[str, RequestId], RequestId] = {}  # (server, its id) -> ours
        self._background: set[asyncio.Task[Any]] = set()
        self._outbox: asyncio.Queue[tuple[Message, RequestId | None]] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write(), name=f"mcp-session-{info.id}")

    # -- from the client ------------------------------------------------------------------

    async def receive(self, message: Message) -> None:
        """One message from the client; requests are answered concurrently."""
        if rpc.is_request(message):
            request_id = message["id"]
            task = asyncio.create_task(self._answer(message))
            self._inflight[request_id] = task
            task.add_done_callback(lambda _: self._inflight.pop(request_id, None))
        elif rpc.is_response(message):
            asked = self._asked.pop(message.get("id"), None)  # type: ignore[arg-type]
            if asked is not None and not asked.done():
                asked.set_result(message)
        elif rpc.is_notification(message):
            await self._on_client_notification(message)
        elif "id" in message:
            self._emit(rpc.error(message["id"], RpcError(rpc.INVALID_REQUEST, "not JSON-RPC")))

    async def _answer(self, message: Message) -> None:
        request_id, method = message["id"], message["method"]
        handler = self._handlers().get(method)
        try:
            if handler is None:
                raise RpcError(rpc.METHOD_NOT_FOUND, f"method not found: {method}")
            if not self.ready and method not in ("initialize", "ping"):
                raise RpcError(rpc.INVALID_REQUEST, "the session is not initialized")
            reply = rpc.result(request_id, await handler(rpc.params_of(message), request_id))
        except RpcError as error:
            reply = rpc.error(request_id, error)
        except BerthError as error:
            code = RPC_CODES.get(error.code, rpc.REFUSED)
            reply = rpc.error(request_id, RpcError(code, error.message))
        except asyncio.CancelledError:
            return  # cancelled by the client: no answer (MCP cancellation)
        except Exception:
            log.exception("mcp request failed", method=method)
            reply = rpc.error(request_id, RpcError(rpc.INTERNAL_ERROR, "internal error"))
        self._emit(reply, None)

    async def _on_client_notification(self, message: Message) -> None:
        method, params = message["method"], rpc.params_of(message)
        if method == "notifications/initialized":
            self.ready = True
        elif method == "notifications/cancelled":
            task = self._inflight.get(params.get("requestId"))  # type: ignore[arg-type]
            if task is not None:
                task.cancel()
        elif method == "notifications/roots/list_changed":
            for upstream in self._running():
                self._spawn(upstream.notify(method))

    def _handlers(
        self,
    ) -> dict[str, Callable[[dict[str, Any], RequestId], Coroutine[Any, Any, dict[str, Any]]]]:
        return {
            "initialize": self._initialize,
            "ping": self._ping,
            "tools/list": self._list_tools,
            "tools/call": self._call_tool,
            "prompts/list": self._list_prompts,
            "prompts/get": self._get_prompt,
            "resources/list": self._list_resources,
            "resources/templates/list": self._list_templates,
            "resources/read": self._resource_request("resources/read"),
            "resources/subscribe": self._resource_request("resources/subscribe"),
            "resources/unsubscribe": self._resource_request("resources/unsubscribe"),
            "completion/complete": self._complete,
            "logging/setLevel": self._set_level,
        }

    # -- the methods ----------------------------------------------------------------------

    async def _initialize(self, params: dict[str, Any], _: RequestId) -> dict[str, Any]:
        self.client_capabilities = dict(params.get("capabilities") or {})
        client = params.get("clientInfo") or {}
        self.info.client_name = str(client.get("name", ""))
        self.info.client_version = str(client.get("version", ""))
        asked = params.get("protocolVersion")
        version = asked if asked in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        self.info.protocol_version = version
        self._spawn(self._warm_up())
        return {"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO}

    async def _ping(self, _: dict[str, Any], __: RequestId) -> dict[str, Any]:
        return {}

    async def _list_tools(self, _: dict[str, Any], __: RequestId) -> dict[str, Any]:
        table = await self.table("tools")
        return {"tools": [tool.as_offered() for tool in table.items if self._offered(tool)]}

    async def _call_tool(self, params: dict[str, Any], request_id: RequestId) -> dict[str, Any]:
        tool = await self.find_tool(str(params.get("name", "")))
        timeout = self.fleet.launch(tool.server).call_timeout_s or self.fleet.call_timeout_s
        forwarded = {**params, "name": tool.name}
        return await self._call(tool, forwarded, request_id, timeout)

    async def _list_prompts(self, _: dict[str, Any], __: RequestId) -> dict[str, Any]:
        table = await self.table("prompts")
        return {"prompts": [prompt.as_offered() for prompt in table.items]}

    async def _get_prompt(self, params: dict[str, Any], request_id: RequestId) -> dict[str, Any]:
        prompt = find(
            (await self.table("prompts")).items, str(params.get("name", "")), "", "prompt"
        )
        forwarded = {**params, "name": prompt.name}
        return await self._forward(prompt.server, "prompts/get", forwarded, request_id)

    async def _list_resources(self, _: dict[str, Any], __: RequestId) -> dict[str, Any]:
        resources = []
        for server, items in await self._gather("resources"):
            for item in items:
                self._uri_owner.setdefault(str(item.get("uri")), server)
                resources.append(item)
        return {"resources": resources}

    async def _list_templates(self, _: dict[str, Any], __: RequestId) -> dict[str, Any]:
        templates = []
        for server, items in await self._gather("resourceTemplates"):
            for item in items:
                self._template_owner.setdefault(str(item.get("uriTemplate")), server)
                templates.append(item)
        return {"resourceTemplates": templates}

    def _resource_request(
        self, method: str
    ) -> Callable[[dict[str, Any], RequestId], Coroutine[Any, Any, dict[str, Any]]]:
        """resources/read, subscribe and unsubscribe: each names one resource by its URI."""

        async def forward(params: dict[str, Any], request_id: RequestId) -> dict[str, Any]:
            server = await self._resource_owner(str(params.get("uri", "")))
            return await self._forward(server, method, params, request_id)

        return forward

    async def _complete(self, params: dict[str, Any], request_id: RequestId) -> dict[str, Any]:
        ref = dict(params.get("ref") or {})
        if ref.get("type") == "ref/prompt":
            prompt = find(
                (await self.table("prompts")).items, str(ref.get("name", "")), "", "prompt"
            )
            server, ref["name"] = prompt.server, prompt.name
        else:
            server = await self._resource_owner(str(ref.get("uri", "")))
        forwarded = {**params, "ref": ref}
        return await self._forward(server, "completion/complete", forwarded, request_id)

    async def _set_level(self, params: dict[str, Any], _: RequestId) -> dict[str, Any]:
        self.log_level = str(params.get("level", "info"))
        running = [u for u in self._running() if "logging" in u.capabilities]
        await asyncio.gather(
            *(u.request("logging/setLevel", {"level": self.log_level}) for u in running),
            return_exceptions=True,
        )
        return {}

    # -- what the gRPC services use too ---------------------------------------------------

    async def table(self, kind: str) -> Table:
        """The session's tools or prompts with their exposed names; disabled tools included."""
        cached = self._tables.get(kind)
        if cached is not None:
            return cached
        offers, errors = await self._gather_with_errors(kind)
        disabled = self.fleet.disabled_tools() if kind == "tools" else {}
        table = Table(expose(offers, self.fleet.prefix_all(), disabled), errors)
        if not errors:
            self._tables[kind] = table
        return table

    def known_tools(self, server: str) -> list[Exposed] | None:
        """The server's tools as it last listed them in this session, named and switched as
        now, without starting anything (None when it never listed them)."""
        offers = []
        for name in self._scope():
            slot = self.slots.get(name)
            cached = slot.upstream.cached("tools") if slot and slot.upstream else None
            if cached is not None:
                offers.append((name, cached))
        if server not in {name for name, _ in offers}:
            return None
        exposed = expose(offers, self.fleet.prefix_all(), self.fleet.disabled_tools())
        return [tool for tool in exposed if tool.server == server]

    def known_tool_count(self) -> int:
        """Enabled tools as last listed, without starting anything (0 before any listing)."""
        table = self._tables.get("tools")
        return sum(1 for tool in table.items if tool.enabled) if table else 0

    async def find_tool(self, name: str, server: str = "") -> Exposed:
        """The enabled tool a call names; NotFound or FailedPrecondition otherwise."""
        tool = find((await self.table("tools")).items, name, server)
        if not tool.enabled:
            raise FailedPrecondition(
                f"the tool {name!r} is disabled (`berth mcp tools enable {tool.exposed}`)",
                reason="TOOL_DISABLED",
                metadata={"name": name, "server": tool.server},
            )
        if not self._offered(tool):
            raise NotFound(
                f"the tool {name!r} is not offered in this session", reason="TOOL_NOT_FOUND"
            )
        return tool

    async def call_tool(
        self, tool: Exposed, arguments: dict[str, Any], timeout_s: float | None
    ) -> dict[str, Any]:
        """tools/call on the tool's server, for callers that are not MCP clients."""
        timeout = timeout_s or self.fleet.launch(tool.server).call_timeout_s
        params = {"name": tool.name, "arguments": arguments}
        request_id = f"grpc-{next(self._ids)}"
        return await self._call(tool, params, request_id, timeout or self.fleet.call_timeout_s)

    def changed(self) -> None:
        """The enabled servers, their config, the disabled tools or a feature changed."""
        scope = set(self._scope())
        for name in [n for n in self.slots if n not in scope]:
            slot = self.slots.pop(name)
            if slot.upstream is not None:
                self._spawn(slot.upstream.close())
        self._forget_lists()
        if self.ready:
            for method in LIST_CHANGED:
                self._emit(rpc.notification(method), None)

    async def stop_idle(self, idle_s: float) -> list[str]:
        """Stops the connections no request used for `idle_s` (long-lived servers excepted);
        they start again when next needed. Returns the servers stopped."""
        now = time.monotonic()
        stopped = []
        for name, slot in self.slots.items():
            upstream = slot.upstream
            if (
                upstream is None
                or slot.lock.locked()
                or upstream.launch.long_lived
                or self._active.get(name)
                or now - upstream.last_used < idle_s
            ):
                continue
            slot.upstream, slot.failure = None, ""
            await upstream.close()
            stopped.append(name)
        return stopped

    def start_long_lived(self) -> None:
        """Starts the servers whose entries say `longLived`, in the background."""
        for name in self._scope():
            with contextlib.suppress(BerthError):
                if self.fleet.launch(name).long_lived:
                    self._spawn(self.upstream(name))

    async def close(self) -> None:
        """Ends the session: its requests, its server connections, its writer."""
        for task in list(self._inflight.values()) + list(self._background):
            task.cancel()
        for asked in self._asked.values():
            asked.cancel()
        upstreams = [slot.upstream for slot in self.slots.values() if slot.upstream]
        await asyncio.gather(*(u.close() for u in upstreams), return_exceptions=True)
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    async def upstream(self, server: str) -> Upstream:
        """The session's live connection to `server`, started (or restarted) if needed."""
        if server not in self._scope():
            raise NotFound(f"server {server!r} is not enabled", reason="SERVER_NOT_ENABLED")
        slot = self.slots.setdefault(server, Slot())
        async with slot.lock:
            current = slot.upstream
            if current is not None:
                if current.alive and not self._token_renewal_due(current):
                    return current
                if current.alive:
                    log.info(
                        "mcp server restarts to take a refreshed oauth token",
                        session=self.info.id,
                        server=server,
                    )
                else:
                    slot.restarts += 1
                    slot.failure = current.failure
                slot.upstream = None
                self._forget_lists()
                await current.close()
            launch = self.fleet.launch(server)
            try:
                slot.upstream = await Upstream.start(
                    launch,
                    self,
                    self._asked_capabilities(),
                    CLIENT_INFO,
                    self.fleet.open_link,
                    self.log_level,
                )
            except LinkError as error:
                slot.failure = str(error)
                raise RpcError(
                    rpc.SERVER_UNAVAILABLE, f"server {server} could not start: {error}"
                ) from None
            return slot.upstream

    # -- from the servers (UpstreamPeer) --------------------------------------------------

    async def server_request(self, upstream: Upstream, message: Message) -> dict[str, Any]:
        method = message["method"]
        feature = CLIENT_FEATURES.get(method)
        if feature is None or feature not in self.client_capabilities:
            who = self.info.client_name or f"the {self.info.transport} client"
            raise RpcError(rpc.METHOD_NOT_FOUND, f"{who} does not support {feature or method}")
        ours = f"berth-{next(self._ids)}"
        asked: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._asked[ours] = asked
        self._relayed[(upstream.name, message["id"])] = ours
        try:
            self._emit(
                rpc.request(ours, method, message.get("params")), self._latest(upstream.name)
            )
            reply = await asked
        finally:
            self._asked.pop(ours, None)
            self._relayed.pop((upstream.name, message["id"]), None)
        if "error" in reply:
            raise RpcError.from_error(reply["error"])
        value = reply.get("result")
        return value if isinstance(value, dict) else {}

    def server_notification(self, upstream: Upstream, message: Message) -> None:
        method, params = message["method"], rpc.params_of(message)
        if method in LIST_CHANGED:
            self._forget_lists()
            if self.ready:
                self._emit(message, None)
            return
        if method == "notifications/cancelled":
            ours = self._relayed.get((upstream.name, params.get("requestId")))  # type: ignore[arg-type]
            asked = self._asked.get(ours) if ours is not None else None
            if ours is None or asked is None:
                return
            asked.cancel()
            message = rpc.notification(method, {**params, "requestId": ours})
            self._emit(message, None)
            return
        if method == "notifications/progress":
            related = self._progress.get(params.get("progressToken"))
        else:
            related = self._latest(upstream.name)
        self._emit(message, related)

    # -- internals ------------------------------------------------------------------------

    async def _call(
        self, tool: Exposed, params: dict[str, Any], request_id: RequestId, timeout_s: float
    ) -> dict[str, Any]:
        """tools/call, refused (PermissionDenied, SECRET_DETECTED) when `block-secrets` is on
        and the arguments or the result hold a secret: a refused result is not returned."""
        scan = self.fleet.block_secrets()
        if scan:
            self._refuse_secrets(tool, "arguments", params.get("arguments") or {})
        result = await self._forward(tool.server, "tools/call", params, request_id, timeout_s)
        if scan:
            self._refuse_secrets(tool, "result", result)
        return result

    def _refuse_secrets(self, tool: Exposed, where: str, value: Any) -> None:
        try:
            known = self.fleet.given_secrets(tool.server)
            refuse_secrets(value, where, tool.name, tool.server, known)
        except BerthError as refusal:
            log.warning(
                "mcp tool call refused: it holds a secret",
                session=self.info.id,
                server=tool.server,
                tool=tool.name,
                where=where,
                kinds=refusal.metadata.get("kinds", ""),
            )
            raise

    async def _forward(
        self,
        server: str,
        method: str,
        params: dict[str, Any],
        request_id: RequestId,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        upstream = await self.upstream(server)
        token = rpc.progress_token(params)
        if token is not None:
            self._progress[token] = request_id
        active = self._active.setdefault(server, [])
        active.append(request_id)
        try:
            return await upstream.request(method, params, timeout_s)
        finally:
            active.remove(request_id)
            if token is not None:
                self._progress.pop(token, None)

    def _token_renewal_due(self, upstream: Upstream) -> bool:
        """Whether to restart a stdio server now so that it gets a refreshed OAuth token:
        a fresher one can be had, and none of this session's requests is waiting on it."""
        renew_at = upstream.link.renew_at
        return (
            renew_at is not None and time.time() >= renew_at and not self._active.get(upstream.name)
        )

    def _latest(self, server: str) -> RequestId | None:
        """The client request a server's unsolicited message most likely belongs to."""
        active = self._active.get(server)
        return active[-1] if active else None

    def _scope(self) -> list[str]:
        enabled = self.fleet.enabled()
        limit = self.info.servers
        return [name for name in enabled if name in limit] if limit else enabled

    def _offered(self, tool: Exposed) -> bool:
        return tool.enabled and (not self.info.tools or tool.exposed in self.info.tools)

    def _running(self) -> list[Upstream]:
        return [s.upstream for s in self.slots.values() if s.upstream and s.upstream.alive]

    def _asked_capabilities(self) -> dict[str, Any]:
        """What the gateway tells servers it supports: what its client supports."""
        return {k: v for k, v in self.client_capabilities.items() if k in CLIENT_FEATURES.values()}

    async def _warm_up(self) -> None:
        await asyncio.gather(*(self.upstream(s) for s in self._scope()), return_exceptions=True)

    async def _gather(self, kind: str) -> list[tuple[str, list[dict[str, Any]]]]:
        offers, _ = await self._gather_with_errors(kind)
        return offers

    async def _gather_with_errors(
        self, kind: str
    ) -> tuple[list[tuple[str, list[dict[str, Any]]]], dict[str, str]]:
        servers = self._scope()
        found = await asyncio.gather(
            *(self._listing(s, kind) for s in servers), return_exceptions=True
        )
        offers, errors = [], {}
        for server, outcome in zip(servers, found, strict=True):
            if isinstance(outcome, BaseException):
                errors[server] = _describe(outcome)
                log.debug(
                    "mcp server could not list", server=server, kind=kind, error=errors[server]
                )
            else:
                offers.append((server, outcome))
        return offers, errors

    async def _listing(self, server: str, kind: str) -> list[dict[str, Any]]:
        upstream = await self.upstream(server)
        return await upstream.listing(kind) if upstream.offers(kind) else []

    async def _resource_owner(self, uri: str) -> str:
        if uri not in self._uri_owner:
            await self._list_resources({}, "")
            await self._list_templates({}, "")
        owner = self._uri_owner.get(uri) or _template_match(self._template_owner, uri)
        if owner is None:
            raise RpcError(rpc.INVALID_PARAMS, f"no enabled server offers the resource {uri!r}")
        return owner

    def _forget_lists(self) -> None:
        self._tables.clear()

    def _emit(self, message: Message, related: RequestId | None) -> None:
        self._outbox.put_nowait((message, related))

    async def _write(self) -> None:
        while True:
            message, related = await self._outbox.get()
            try:
                await self._send(message, related)
            except Exception as error:  # a client gone mid-write ends nothing else
                log.debug("mcp message not delivered", session=self.info.id, error=str(error))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _template_match(owners: dict[str, str], uri: str) -> str | None:
    """The server whose URI template (RFC 6570, simple expressions) matches `uri`."""
    for template, server in owners.items():
        pattern = re.sub(
            r"\\\{([+#]?)[^}]*\\\}",
            lambda m: ".*" if m.group(1) else "[^/]*",
            re.escape(template),
        )
        if re.fullmatch(pattern, uri):
            return server
    return None


def _describe(error: BaseException) -> str:
    if isinstance(error, (RpcError, BerthError)):
        return error.message
    return str(error) or type(error).__name__
