"""Interceptors shared by every daemon, applied to handlers as they are registered.

TelemetryInterceptor: one structured log line and Prometheus samples per RPC, with a
request id taken from `x-request-id` (the gateway sets it) or made up.
ErrorInterceptor: decodes requests itself so undecodable bytes become INVALID_ARGUMENT
(not INTERNAL), and maps domain errors (BerthError) to statuses with details.

Both wrap a method's handler once, at registration, so a call pays for the wrapper only.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import structlog
from google.protobuf.message import DecodeError

from berth.common import metrics
from berth.common.errors import BerthError, FieldViolation, InvalidArgument
from berth.common.logging import rpc_log
from berth.common.status import abort

REQUEST_ID_KEY = "x-request-id"
Behavior = Callable[..., Any]

log = structlog.get_logger("berth.rpc")

# The id of the RPC being handled, for code that passes it on (the gateway forwards it).
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def berth_domain(method: str) -> str | None:
    """'/berth.network.v1.NetworkService/CreateNetwork' -> 'network'; None for others."""
    parts = method.lstrip("/").split(".")
    return parts[1] if len(parts) > 3 and parts[0] == "berth" else None


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY:
            return str(value)[:64]
    return secrets.token_hex(8)


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    # A streaming handler whose client went away is either cancelled or, when it was waiting
    # at a `yield`, closed by grpc (GeneratorExit): both are the call being cancelled.
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    code = context.code()
    if code is not None:
        return code if isinstance(code, grpc.StatusCode) else _code_from_int(code)
    return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK


def _code_from_int(value: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


class HandlerInterceptor:
    """Wraps method handlers when they are registered (see WrappingServer).

    grpc.aio's own interceptors run a coroutine pipeline on every call; wrapping each
    handler once at registration gives the same behaviour at the cost of the wrapper only.
    """

    def applies_to(self, method: str, handler: grpc.RpcMethodHandler) -> bool:
        return True

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class WrappingServer:
    """Stands in for a grpc.aio.Server while services register: every handler added
    through it is wrapped by the interceptors, the first one outermost."""

    def __init__(self, server: grpc.aio.Server, interceptors: list[HandlerInterceptor]) -> None:
        self.server = server
        self.interceptors = interceptors

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for interceptor in reversed(self.interceptors):
            if interceptor.applies_to(method, handler):
                handler = interceptor.wrap(method, handler)
        return handler

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        wrapped = {name: self.wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        self.server.add_registered_method_handlers(service, wrapped)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers([_WrappedGeneric(h, self.wrap) for h in handlers])


class _WrappedGeneric(grpc.GenericRpcHandler):
    def __init__(
        self,
        inner: grpc.GenericRpcHandler,
        wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler],
    ) -> None:
        self.inner = inner
        self.wrapper = wrap
        self.cache: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        cached = self.cache.get(details.method)
        if cached is None:
            handler = self.inner.service(details)
            if handler is None:
                return None
            cached = self.cache[details.method] = self.wrapper(details.method, handler)
        return cached


def behavior_field(handler: grpc.RpcMethodHandler) -> str:
    prefix = "stream" if handler.request_streaming else "unary"
    suffix = "stream" if handler.response_streaming else "unary"
    return f"{prefix}_{suffix}"


async def drive(result: Any) -> AsyncIterator[Any]:
    """Iterate a streaming behavior's result, whether it yields or writes via context."""
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    else:
        await result


class TelemetryInterceptor(HandlerInterceptor):
    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        field = behavior_field(handler)
        behavior = getattr(handler, field)
        counters = metrics.MethodMetrics(method)
        if handler.response_streaming:

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _Observed(counters, context) as observed:
                    async for item in drive(behavior(request, context)):
                        observed.messages += 1
                        yield item

            return handler._replace(**{field: streaming})

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with _Observed(counters, context):
                return await behavior(request, context)

        return handler._replace(**{field: unary})


class _Observed:
    """Times one RPC, counts it in flight, and logs it when it ends."""

    def __init__(self, counters: metrics.MethodMetrics, context: grpc.aio.ServicerContext) -> None:
        self.counters = counters
        self.context = context
        self.messages = 0

    def __enter__(self) -> _Observed:
        self.start = time.perf_counter()
        self.request_id = request_id_of(self.context)
        self.peer = self.context.peer()
        self.deadline = self.context.time_remaining()
        current_request_id.set(self.request_id)
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        self.counters.started()
        return self

    def __exit__(self, _type: Any, error: BaseException | None, _tb: Any) -> None:
        seconds = time.perf_counter() - self.start
        code = final_code(self.context, error)
        self.counters.finished(code.name, seconds)
        fields: dict[str, Any] = {
            "method": self.counters.method,
            "peer": self.peer,
            "code": code.name,
            "duration_ms": round(seconds * 1000, 3),
        }
        if self.deadline is not None:
            fields["deadline_ms"] = round(self.deadline * 1000, 1)
        if self.messages:
            fields["messages"] = self.messages
        rpc_log(request_id=self.request_id, **fields)
        structlog.contextvars.unbind_contextvars("request_id")


class ErrorInterceptor(HandlerInterceptor):
    """Safe decoding and the mapping of BerthError, for berth's own services only."""

    def applies_to(self, method: str, handler: grpc.RpcMethodHandler) -> bool:
        # Handlers without a deserializer pass bytes through (the gateway): nothing to map.
        return berth_domain(method) is not None and handler.request_deserializer is not None

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        domain = berth_domain(method) or "berth"
        decode = handler.request_deserializer
        field = behavior_field(handler)
        behavior = getattr(handler, field)
        type_name = _request_type_name(decode)

        async def parse(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                return decode(raw) if decode else raw
            except (DecodeError, ValueError, TypeError):
                bad = FieldViolation("request", f"not a valid {type_name} message")
                await abort(context, InvalidArgument([bad], reason="MALFORMED_REQUEST"), domain)

        async def requests(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            async for item in raw:
                yield await parse(item, context)

        async def prepare(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            if handler.request_streaming:
                return requests(raw, context)
            return await parse(raw, context)

        if handler.response_streaming:

            async def streaming(raw: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    async for item in drive(behavior(await prepare(raw, context), context)):
                        yield item
                except Exception as error:
                    await _fail(context, error, domain)

            wrapped: Behavior = streaming
        else:

            async def unary(raw: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await behavior(await prepare(raw, context), context)
                except Exception as error:
                    await _fail(context, error, domain)

            wrapped = unary
        return handler._replace(request_deserializer=None, **{field: wrapped})


async def _fail(context: grpc.aio.ServicerContext, error: Exception, domain: str) -> None:
    """Map a domain error; hide anything else behind INTERNAL (its text may hold secrets)."""
    if isinstance(error, grpc.aio.AbortError):
        raise error
    if not isinstance(error, BerthError):
        log.exception("unhandled error", error_type=type(error).__name__)
        error = BerthError("internal error; the daemon's log has the details")
    await abort(context, error, domain)


def _request_type_name(decode: Callable[[bytes], Any] | None) -> str:
    owner = getattr(decode, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return descriptor.full_name if descriptor is not None else "request"
