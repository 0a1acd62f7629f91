"""Server interceptors shared by every daemon.

TelemetryInterceptor: one structured log line and Prometheus samples per RPC, with a
request id taken from `x-request-id` (the gateway sets it) or made up.
ErrorInterceptor: decodes requests itself so undecodable bytes become INVALID_ARGUMENT
(not INTERNAL), and maps domain errors (BerthError) to statuses with details.

Both wrap a method's handler once and cache it, so the per-call cost is the wrapper only.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import structlog
from google.protobuf.message import DecodeError

from berth.common import metrics
from berth.common.errors import BerthError, FieldViolation, InvalidArgument
from berth.common.status import abort

REQUEST_ID_KEY = "x-request-id"
Behavior = Callable[..., Any]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]

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
    return uuid.uuid4().hex[:16]


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    code = context.code()
    if code is not None:
        return code if isinstance(code, grpc.StatusCode) else _code_from_int(code)
    return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK


def _code_from_int(value: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


class MethodWrappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once; subclasses say how to wrap one behavior."""

    def __init__(self) -> None:
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if self.applies_to(method, handler):
            handler = self.wrap(method, handler)
        self._cache[method] = handler
        return handler

    def applies_to(self, method: str, handler: grpc.RpcMethodHandler) -> bool:
        return True

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


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


class TelemetryInterceptor(MethodWrappingInterceptor):
    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        field = behavior_field(handler)
        behavior = getattr(handler, field)
        if handler.response_streaming:

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _Observed(method, context) as observed:
                    async for item in drive(behavior(request, context)):
                        observed.messages += 1
                        yield item

            return handler._replace(**{field: streaming})

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with _Observed(method, context):
                return await behavior(request, context)

        return handler._replace(**{field: unary})


class _Observed:
    """Times one RPC, counts it in flight, and logs it when it ends."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.method = method
        self.context = context
        self.messages = 0

    def __enter__(self) -> _Observed:
        self.start = time.perf_counter()
        self.request_id = request_id_of(self.context)
        self.peer = self.context.peer()
        self.deadline = self.context.time_remaining()
        current_request_id.set(self.request_id)
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        metrics.RPC_IN_FLIGHT.labels(self.method).inc()
        return self

    def __exit__(self, _type: Any, error: BaseException | None, _tb: Any) -> None:
        seconds = time.perf_counter() - self.start
        code = final_code(self.context, error)
        metrics.RPC_IN_FLIGHT.labels(self.method).dec()
        metrics.RPC_TOTAL.labels(self.method, code.name).inc()
        metrics.RPC_SECONDS.labels(self.method).observe(seconds)
        fields: dict[str, Any] = {
            "method": self.method,
            "peer": self.peer,
            "code": code.name,
            "duration_ms": round(seconds * 1000, 3),
        }
        if self.deadline is not None:
            fields["deadline_ms"] = round(self.deadline * 1000, 1)
        if self.messages:
            fields["messages"] = self.messages
        log.info("rpc", **fields)
        structlog.contextvars.unbind_contextvars("request_id")


class ErrorInterceptor(MethodWrappingInterceptor):
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
