"""Forwarding of every fronted call to the daemon that serves it, as raw bytes.

Handlers are registered per method (registered methods are cheaper for grpc's core than
a generic lookup), with no (de)serializers: a message is never decoded on the data path.
Request metadata goes upstream (less the caller's token and routing keys, plus the
request id), the caller's deadline becomes the upstream timeout, a caller that cancels
cancels the upstream call, and the daemon's metadata and status come back unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio

from berth.common.errors import BerthError, Unavailable
from berth.common.interceptors import REQUEST_ID_KEY, current_request_id
from berth.common.status import to_status
from berth.gateway.auth import TokenFile
from berth.gateway.backends import Backend, HostRegistry
from berth.gateway.routes import Route

HOST_KEY = "x-berth-host"
AUTHORIZATION_KEY = "authorization"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Keys that stop at the gateway: credentials, routing, and what grpc sets per hop.
HOP_KEYS = frozenset({AUTHORIZATION_KEY, HOST_KEY, "user-agent", REQUEST_ID_KEY})

Handlers = dict[str, dict[str, grpc.RpcMethodHandler]]


class Forwarder:
    def __init__(
        self,
        routes: dict[str, Route],
        hosts: HostRegistry,
        domains: dict[str, Backend],
        tokens: TokenFile,
    ) -> None:
        self.routes = routes
        self.hosts = hosts
        self.domains = domains
        self.tokens = tokens

    def handlers(self) -> Handlers:
        """Method handlers by service name, for server.add_registered_method_handlers."""
        by_service: Handlers = {}
        for route in self.routes.values():
            method = route.path.rsplit("/", 1)[1]
            by_service.setdefault(route.service, {})[method] = self._handler(route)
        return by_service

    def _handler(self, route: Route) -> grpc.RpcMethodHandler:
        if route.request_streaming and route.response_streaming:
            return grpc.stream_stream_rpc_method_handler(self._streaming(route))
        if route.request_streaming:
            return grpc.stream_unary_rpc_method_handler(self._unary(route))
        if route.response_streaming:
            return grpc.unary_stream_rpc_method_handler(self._streaming(route))
        return grpc.unary_unary_rpc_method_handler(self._unary(route))

    async def _prepare(self, route: Route, context: grpc.aio.ServicerContext) -> tuple[Any, list]:
        """Check the caller, pick the backend, and build the upstream metadata."""
        host = ""
        authorization = None
        metadata = [(REQUEST_ID_KEY, current_request_id.get())]
        for key, value in context.invocation_metadata() or ():
            if key not in HOP_KEYS:
                metadata.append((key, value))
            elif key == HOST_KEY:
                host = str(value)
            elif key == AUTHORIZATION_KEY:
                authorization = str(value)
        if not context.peer().startswith("unix:"):
            self.tokens.book().authorize(authorization, route.domain, route.access, route.path)
        backend = (
            await self.hosts.agent(host)
            if route.domain == "network"
            else self.domains[route.domain]
        )
        call = backend.callable(route.path, route.request_streaming, route.response_streaming)
        return (backend, call), metadata

    def _unary(self, route: Route) -> Callable[..., Any]:
        async def forward(request: Any, context: grpc.aio.ServicerContext) -> bytes:
            try:
                (backend, multicallable), metadata = await self._prepare(route, context)
            except BerthError as error:
                await context.abort_with_status(to_status(error, route.domain))
            call = multicallable(request, metadata=metadata, timeout=context.time_remaining())
            try:
                response = await call
            except grpc.aio.AioRpcError as error:
                await _relay_error(context, error, backend, route)
            except asyncio.CancelledError:
                call.cancel()
                if _caller_cancelled():
                    raise
                await _relay_dropped(context, backend, route)
            except BaseException:
                call.cancel()
                raise
            await _relay_metadata(context, call)
            return response

        return forward

    def _streaming(self, route: Route) -> Callable[..., Any]:
        async def forward(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            try:
                (backend, multicallable), metadata = await self._prepare(route, context)
            except BerthError as error:
                await context.abort_with_status(to_status(error, route.domain))
            call = multicallable(request, metadata=metadata, timeout=context.time_remaining())
            try:
                initial = await call.initial_metadata()
                if initial:
                    await context.send_initial_metadata(initial)
                async for message in call:
                    yield message
                trailing = await call.trailing_metadata()
                if trailing:
                    context.set_trailing_metadata(tuple(trailing))
            except grpc.aio.AioRpcError as error:
                await _relay_error(context, error, backend, route)
            except asyncio.CancelledError:
                if _caller_cancelled():
                    raise
                await _relay_dropped(context, backend, route)
            finally:
                call.cancel()

        return forward


async def _relay_metadata(context: grpc.aio.ServicerContext, call: Any) -> None:
    initial = await call.initial_metadata()
    if initial:
        await context.send_initial_metadata(initial)
    trailing = await call.trailing_metadata()
    if trailing:
        context.set_trailing_metadata(tuple(trailing))


def _caller_cancelled() -> bool:
    """Whether this handler's own task was cancelled (its caller went away), rather than
    the upstream call under it (grpc cancels a closed channel's calls)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _relay_dropped(context: grpc.aio.ServicerContext, backend: Backend, route: Route) -> None:
    """The channel to the daemon was closed mid-call: its host left the cluster."""
    failure = Unavailable(
        f"the {route.domain} daemon on host {backend.host!r} ({backend.address}) went away "
        "during the call: the host left the cluster",
        reason="BACKEND_UNAVAILABLE",
        metadata={"host": backend.host, "address": backend.address},
    )
    await context.abort_with_status(to_status(failure, route.domain))


async def _relay_error(
    context: grpc.aio.ServicerContext, error: grpc.aio.AioRpcError, backend: Backend, route: Route
) -> None:
    """Pass the daemon's status through; explain a daemon the gateway cannot reach."""
    trailing = tuple(error.trailing_metadata() or ())
    unreachable = error.code() == grpc.StatusCode.UNAVAILABLE and not any(
        key == STATUS_DETAILS_KEY for key, _ in trailing
    )
    if unreachable:
        failure = Unavailable(
            f"the {route.domain} daemon on host {backend.host!r} ({backend.address}) is "
            f"unavailable: {error.details()}{backend.hint()}",
            reason="BACKEND_UNAVAILABLE",
            metadata={"host": backend.host, "address": backend.address},
        )
        await context.abort_with_status(to_status(failure, route.domain))
    await context.abort(error.code(), error.details() or "", trailing)
