"""The OpenAI HTTP API of one engine, over its unix socket.

Errors are berth's, with the engine's own message: the engine refusing a request (4xx) is
InvalidArgument with the engine's error code as reason; the engine failing (5xx) or going away
(refused, reset, cut mid-stream) is Unavailable, reason ENGINE_FAILED. Closing a stream
closes its connection, which is how the engine learns to stop generating.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx2

from berth.common.errors import BerthError, InvalidArgument, Unavailable

# A request the engine refused without saying why in a code of its own.
REQUEST_REFUSED = "REQUEST_REFUSED"
ENGINE_FAILED = "ENGINE_FAILED"
DONE = "[DONE]"
# Headers about one hop's connection, not the message: each side sets its own.
HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade", "te"}
)
MAX_MESSAGE = 2000


class EngineClient:
    def __init__(self, socket: Path, timeout_s: float = 600.0) -> None:
        self.socket = socket
        self._client = httpx2.AsyncClient(
            transport=httpx2.AsyncHTTPTransport(uds=str(socket)),
            base_url="http://engine",
            timeout=httpx2.Timeout(timeout_s),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON request, return the JSON reply."""
        try:
            reply = await self._client.post(path, json=body)
        except httpx2.TransportError as error:
            raise unavailable(error) from error
        if reply.is_error:
            raise engine_error(reply.status_code, reply.content)
        try:
            result = reply.json()
        except ValueError as error:
            raise malformed(f"a reply that is not JSON ({error})") from error
        if not isinstance(result, dict):
            raise malformed("a reply that is not a JSON object")
        return result

    async def stream_sse(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST a streaming request; each `data: {...}` event, until `data: [DONE]`. Closing
        the iterator (aclose, or cancelling its consumer) closes the connection."""
        try:
            async with self._client.stream("POST", path, json={**body, "stream": True}) as reply:
                if reply.is_error:
                    await reply.aread()
                    raise engine_error(reply.status_code, reply.content)
                async for line in reply.aiter_lines():
                    data = _event_data(line)
                    if data is None:
                        continue
                    if data == DONE:
                        return
                    yield _chunk(data)
        except httpx2.TransportError as error:
            raise unavailable(error) from error
        raise Unavailable(
            "the engine ended the stream before it was done",
            reason=ENGINE_FAILED,
            metadata={"socket": str(self.socket)},
        )

    async def forward(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], EngineBody]:
        """Pass a request on as it is; the reply's status, headers and body as it comes (the
        body must be read to its end or closed)."""
        kept = {name: value for name, value in headers.items() if name.lower() not in HOP_HEADERS}
        request = self._client.build_request(method, path, content=body, headers=kept)
        try:
            reply = await self._client.send(request, stream=True)
        except httpx2.TransportError as error:
            raise unavailable(error) from error
        reply_headers = {
            name: value for name, value in reply.headers.items() if name.lower() not in HOP_HEADERS
        }
        return reply.status_code, reply_headers, EngineBody(reply)


class EngineBody:
    """An engine's reply body, chunk by chunk as it comes; `aclose` ends the request."""

    def __init__(self, reply: httpx2.Response) -> None:
        self._reply = reply
        self._chunks = reply.aiter_raw()

    def __aiter__(self) -> EngineBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            await self.aclose()
            raise
        except httpx2.TransportError as error:
            await self.aclose()
            raise unavailable(error) from error

    async def aclose(self) -> None:
        await self._reply.aclose()


def engine_error(status: int, content: bytes) -> BerthError:
    """The engine's error reply as berth's error, with the engine's own message; a request
    the engine refuses keeps the engine's code as reason (CONTEXT_LENGTH_EXCEEDED)."""
    message = error_message(content) or f"the engine answered HTTP {status}"
    metadata = {"status": str(status)}
    if status >= 500:
        return Unavailable(message, reason=ENGINE_FAILED, metadata=metadata)
    reason = error_code(content) or REQUEST_REFUSED
    return InvalidArgument([], message=message, reason=reason, metadata=metadata)


def error_code(content: bytes) -> str | None:
    """An OpenAI error's `code` ("context_length_exceeded") in UPPER_SNAKE, if it has one."""
    try:
        error = json.loads(content).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,63}", code):
        return code.upper()
    return None


def error_message(content: bytes) -> str:
    """The message of an OpenAI error (`{"error": {"message": ...}}`) or a FastAPI one
    (`{"detail": "..."}` or a list of validation errors); else the body's text."""
    text = content.decode(errors="replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:MAX_MESSAGE]
    if not isinstance(payload, dict):
        return text[:MAX_MESSAGE]
    error, detail = payload.get("error"), payload.get("detail")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:MAX_MESSAGE]
    if isinstance(error, str):
        return error[:MAX_MESSAGE]
    if isinstance(detail, str):
        return detail[:MAX_MESSAGE]
    if isinstance(detail, list):
        return "; ".join(_validation_error(item) for item in detail)[:MAX_MESSAGE]
    return text[:MAX_MESSAGE]


def _validation_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()))
    return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", ""))


def unavailable(error: httpx2.TransportError) -> Unavailable:
    detail = str(error) or type(error).__name__
    return Unavailable(f"the engine is unreachable or went away: {detail}", reason=ENGINE_FAILED)


def malformed(what: str) -> BerthError:
    return BerthError(f"the engine sent {what}", reason=ENGINE_FAILED)


def _event_data(line: str) -> str | None:
    """The data of a `data:` line of an event stream; None for any other line."""
    if not line.startswith("data:"):
        return None
    data = line[len("data:") :]
    return data[1:] if data.startswith(" ") else data


def _chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError as error:
        raise malformed(f"an event that is not JSON ({error})") from error
    if not isinstance(chunk, dict):
        raise malformed("an event that is not a JSON object")
    if "error" in chunk and "choices" not in chunk:
        # Engines that fail mid-stream (vLLM does) send the error as an event.
        raise Unavailable(error_message(data.encode()), reason=ENGINE_FAILED)
    return chunk
