"""The runner's OpenAI-compatible HTTP API, as Docker Model Runner serves it (127.0.0.1:12434).

Every route is served under `/v1`, `/engines/v1` and `/engines/{backend}/v1`. The model list
comes from the store; chat, completion and embedding requests go to the engine of the model
asked for, loaded on demand by the router. Bodies pass through untouched except `model` (the
engine's name on the way in, the client's on the way out) and `keep_alive`, which is the
router's and is taken out. Streams are relayed event by event; a client that goes away closes
the engine request, which stops generation there, and gives the engine back.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import timedelta
from fractions import Fraction
from typing import Any, Protocol

import anyio
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from berth.common.errors import BerthError, Code, InvalidArgument
from berth.models.domain.engines import BACKENDS
from berth.models.domain.reference import parse_reference
from berth.models.engines.client import EngineClient
from berth.models.store.local import ModelView

log = structlog.get_logger("berth.models.http")

Endpoint = Callable[[Request], Awaitable[Response]]


class LeaseLike(Protocol):
    """What a request needs of the engine lent to it."""

    @property
    def client(self) -> EngineClient: ...

    # The name the engine serves the model under.
    @property
    def model(self) -> str: ...


class EngineRouter(Protocol):
    def acquire(
        self,
        model: str,
        *,
        backend: str | None,
        embedding: bool,
        keep_alive: timedelta | None,
    ) -> AbstractAsyncContextManager[LeaseLike]: ...

    def list_models(self) -> list[ModelView]: ...


def openai_app(router: EngineRouter) -> Starlette:
    api = _Api(router)
    endpoints: list[tuple[str, Endpoint, str]] = [
        ("/models", api.list_models, "GET"),
        ("/models/{model:path}", api.get_model, "GET"),
        ("/chat/completions", api.chat, "POST"),
        ("/completions", api.completions, "POST"),
        ("/embeddings", api.embeddings, "POST"),
    ]
    routes = [
        Route(f"{prefix}/v1{path}", _answering_errors(endpoint), methods=[method])
        for prefix in ("", "/engines", "/engines/{backend}")
        for path, endpoint, method in endpoints
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


# --- the endpoints ---


class _Api:
    def __init__(self, router: EngineRouter) -> None:
        self.router = router

    async def list_models(self, request: Request) -> Response:
        _backend(request)
        models = [_model_json(view, _first_name(view)) for view in self.router.list_models()]
        return JSONResponse({"object": "list", "data": models})

    async def get_model(self, request: Request) -> Response:
        _backend(request)
        text = request.path_params["model"]
        found = _find_model(self.router.list_models(), text)
        if found is None:
            raise _model_not_found(text)
        return JSONResponse(_model_json(*found))

    async def chat(self, request: Request) -> Response:
        return await self._forward(request, "/v1/chat/completions", embedding=False)

    async def completions(self, request: Request) -> Response:
        return await self._forward(request, "/v1/completions", embedding=False)

    async def embeddings(self, request: Request) -> Response:
        return await self._forward(request, "/v1/embeddings", embedding=True)

    async def _forward(self, request: Request, path: str, *, embedding: bool) -> Response:
        backend = _backend(request)
        body = await _json_body(request)
        keep_alive = parse_keep_alive(body.pop("keep_alive", None))
        asked: str = body["model"]
        held = AsyncExitStack()
        try:
            lease = await held.enter_async_context(
                self.router.acquire(
                    asked, backend=backend, embedding=embedding, keep_alive=keep_alive
                )
            )
            payload = json.dumps({**body, "model": lease.model}).encode()
            status, headers, chunks = await lease.client.forward(
                "POST", path, payload, {"content-type": "application/json"}
            )
            held.push_async_callback(chunks.aclose)
        except BaseException as error:
            await _release(held, error)
            raise
        # The engine client gives header names lower-cased.
        content_type = headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return _EventStream(_renamed_events(chunks, asked), status, held)
        try:
            raw = b"".join([chunk async for chunk in chunks])
        except BaseException as error:
            await _release(held, error)
            raise
        await _release(held, None)
        return Response(_renamed(raw, asked), status, media_type=content_type or "application/json")


async def _release(held: AsyncExitStack, error: BaseException | None) -> None:
    """Close the engine request and give the lease back, telling it how the request ended."""
    with anyio.CancelScope(shield=True):
        if error is None:
            await held.aclose()
        else:
            await held.__aexit__(type(error), error, error.__traceback__)


# --- requests ---


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise _ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _ApiError(400, "model is required: the name of a model", param="model")
    return body


def _backend(request: Request) -> str | None:
    backend = request.path_params.get("backend")
    if backend is not None and backend not in BACKENDS:
        raise _ApiError(
            404,
            f"unknown backend {backend!r}: use {' or '.join(BACKENDS)}",
            code="backend_not_found",
        )
    return backend


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9}
_NANOS |= {"m": 60 * 10**9, "h": 3600 * 10**9}


def parse_keep_alive(value: object) -> timedelta | None:
    """`keep_alive` as Docker Model Runner and Ollama take it: seconds (a number, or a string
    holding one) or a Go duration ("5m", "1h30m"); 0 unloads when done, negative never.
    None when absent."""
    if value is None:
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _seconds(value)
        if isinstance(value, str):
            try:
                return _seconds(float(value))
            except ValueError:
                return _go_duration(value.strip())
    except (ValueError, OverflowError):
        pass
    raise _ApiError(
        400,
        f"invalid keep_alive {value!r}: use seconds or a duration such as 30s, 5m, 1h, 0 or -1",
        param="keep_alive",
    )


def _seconds(seconds: float) -> timedelta:
    if not math.isfinite(seconds):
        raise ValueError(seconds)
    return timedelta(seconds=seconds)


def _go_duration(text: str) -> timedelta:
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text.startswith(("+", "-")) else text
    if not body:
        raise ValueError(text)
    nanos = Fraction(0)
    position = 0
    while position < len(body):
        part = _DURATION_PART.match(body, position)
        if part is None:
            raise ValueError(text)
        nanos += Fraction(part[1]) * _NANOS[part[2]]
        position = part.end()
    return timedelta(microseconds=sign * round(nanos / 1000))


# --- answers ---


def _renamed(raw: bytes, model: str) -> bytes:
    """A JSON object with its `model` set to the name the client used; anything else as is."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(data, dict) or "model" not in data:
        return raw
    data["model"] = model
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class _SseSplitter:
    """Cuts a byte stream into server-sent events, whatever line ends the engine uses."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        text = self._rest + chunk
        # A trailing CR may be the first half of a CRLF.
        held = b"\r" if text.endswith(b"\r") else b""
        text = text[: len(text) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *events, rest = text.split(b"\n\n")
        self._rest = rest + held
        return [e for e in (event.lstrip(b"\n") for event in events) if e]

    def rest(self) -> bytes:
        return self._rest.strip(b"\r\n")


def _renamed_event(event: bytes, model: str) -> bytes:
    if event.startswith(b"data:") and b"\n" not in event:
        data = event[5:].lstrip(b" ")
        if data.startswith(b"{"):
            event = b"data: " + _renamed(data, model)
    return event + b"\n\n"


async def _renamed_events(chunks: AsyncIterator[bytes], model: str) -> AsyncGenerator[bytes]:
    splitter = _SseSplitter()
    try:
        async for chunk in chunks:
            events = splitter.feed(chunk)
            if events:
                yield b"".join(_renamed_event(event, model) for event in events)
        if rest := splitter.rest():
            yield _renamed_event(rest, model)
    except BerthError as error:
        # The answer has started: the error can only be told as an event (the OpenAI
        # clients raise it).
        log.warning("engine_stream_failed", reason=error.reason)
        yield b"data: " + json.dumps(_berth_error_json(error)[1]).encode() + b"\n\n"
    except Exception:
        log.exception("engine_stream_failed")
        yield b"data: " + json.dumps(_INTERNAL_ERROR).encode() + b"\n\n"


class _EventStream(Response):
    """The engine's events, relayed as they come. However the stream ends (done, the client
    gone, the server stopping) the engine request is closed and the lease given back."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes], status: int, held: AsyncExitStack) -> None:
        self.status_code = status
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._events = events
        self._held = held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Plain tasks, so that a client going away cancels the engine read exactly once and
        # the engine client's own clean-up runs (anyio's cancel scopes would cancel it too).
        pump = asyncio.create_task(self._pump(send))
        gone = asyncio.create_task(_disconnected(receive))
        error: BaseException | None = None
        try:
            done, _ = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            if pump in done:
                pump.result()
        except BaseException as raised:
            error = raised
            raise
        finally:
            pump.cancel()
            gone.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(pump, gone, return_exceptions=True)
                await self._events.aclose()
            await _release(self._held, error)

    async def _pump(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        async for chunk in self._events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _model_json(view: ModelView, name: str) -> dict[str, Any]:
    created = int(view.created.timestamp()) if view.created else 0
    return {"id": name, "object": "model", "created": created, "owned_by": "docker"}


def _first_name(view: ModelView) -> str:
    return view.tags[0] if view.tags else view.id


def _find_model(views: list[ModelView], text: str) -> tuple[ModelView, str] | None:
    """The model `text` names (a reference or an ID) and the name to show for it."""
    try:
        name = parse_reference(text).name
    except BerthError:
        name = text
    for view in views:
        if name in view.tags:
            return view, name
        if text in (view.id, view.id.removeprefix("sha256:")):
            return view, _first_name(view)
    return None


# --- errors, in OpenAI's shape ---


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = _error_json(message, status, code, param)


_INTERNAL_ERROR = {
    "error": {
        "message": "internal error",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
}
_STATUS_OF_CODE = {
    Code.NOT_FOUND: 404,
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.UNAVAILABLE: 503,
    Code.RESOURCE_EXHAUSTED: 503,
    Code.UNIMPLEMENTED: 501,
}
_UNAVAILABLE_REASONS = {"ENGINE_FAILED", "RUNNER_NOT_RUNNING"}


def _error_json(message: str, status: int, code: str | None, param: str | None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _berth_error_json(error: BerthError) -> tuple[int, dict[str, Any]]:
    status = 503 if error.reason in _UNAVAILABLE_REASONS else _STATUS_OF_CODE.get(error.code)
    if status is None:
        return 500, _INTERNAL_ERROR
    param = None
    if isinstance(error, InvalidArgument) and error.violations:
        param = error.violations[0].field
    return status, _error_json(error.message, status, error.reason.lower(), param)


def _model_not_found(text: str) -> _ApiError:
    return _ApiError(404, f"model {text!r} not found", code="model_not_found", param="model")


def _answering_errors(endpoint: Endpoint) -> Endpoint:
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except _ApiError as error:
            return JSONResponse(error.body, error.status)
        except BerthError as error:
            status, body = _berth_error_json(error)
            if status == 500:
                log.error("http_request_failed", path=request.url.path, reason=error.reason)
            return JSONResponse(body, status)
        except Exception:
            log.exception("http_request_failed", path=request.url.path)
            return JSONResponse(_INTERNAL_ERROR, 500)

    return answer


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    else:
        message = error.detail
    return JSONResponse(
        _error_json(message, error.status_code, None, None),
        error.status_code,
        headers=error.headers,
    )
