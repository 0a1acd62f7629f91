"""A stand-in for an engine's OpenAI-compatible server (llama.cpp's or vLLM's): uvicorn on a
unix socket, in a thread of its own, so sync and async tests can both use it.

Like a real engine it serves one model, under its own name (`served_as`) whatever `model` a
request names, and answers:
- `GET /v1/models`;
- `POST /v1/chat/completions`: "You said: <the last message>"; streamed word by word as
  llama-cpp-python's server frames it (`data: {...}\\r\\n\\r\\n`, then `data: [DONE]`);
- `POST /v1/completions`: "You wrote: <the prompt>", likewise;
- `POST /v1/embeddings`: a 4-number vector per input, its first number the input's length.
`max_tokens` makes an answer exactly that many words (the words repeated), each streamed
chunk `token_interval_s` after the previous one. Every request's path and JSON body is
recorded in `received`; a stream whose client goes away before its end counts in
`disconnects`, one sent to its end in `completed_streams`. With `cut_streams_after=n` a
stream stops short after n events, its connection dropped, as when an engine crashes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.support.processes import poll


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]


@dataclass
class FakeEngine:
    socket: Path
    served_as: str = "/models/engine-model.gguf"
    token_interval_s: float = 0.005
    cut_streams_after: int | None = None
    received: list[Received] = field(default_factory=list)
    disconnects: int = 0
    completed_streams: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            ]
        )

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r.body for r in self.received if r.path == path]

    def _count(self, completed: bool) -> None:
        with self._lock:
            if completed:
                self.completed_streams += 1
            else:
                self.disconnects += 1

    async def _record(self, request: Request) -> dict[str, Any]:
        body = json.loads(await request.body())
        with self._lock:
            self.received.append(Received(request.url.path, body))
        return body

    async def _models(self, request: Request) -> Response:
        model = {"id": self.served_as, "object": "model", "created": 0, "owned_by": "me"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _chat(self, request: Request) -> Response:
        body = await self._record(request)
        content = body["messages"][-1]["content"] if body.get("messages") else ""
        words = _words(f"You said: {content}", body.get("max_tokens"))
        if body.get("stream"):
            return self._stream(self._chat_chunks(words))
        message = {"role": "assistant", "content": "".join(words)}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return JSONResponse(self._answer("chatcmpl-1", "chat.completion", choice, len(words)))

    async def _completions(self, request: Request) -> Response:
        body = await self._record(request)
        words = _words(f"You wrote: {body.get('prompt', '')}", body.get("max_tokens"))
        if body.get("stream"):
            return self._stream(self._completion_chunks(words))
        choice = {"index": 0, "text": "".join(words), "logprobs": None, "finish_reason": "stop"}
        return JSONResponse(self._answer("cmpl-1", "text_completion", choice, len(words)))

    async def _embeddings(self, request: Request) -> Response:
        body = await self._record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text)), 0.5, -0.5, 0.0]}
            for i, text in enumerate(inputs)
        ]
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        return JSONResponse(
            {"object": "list", "data": data, "model": self.served_as, "usage": usage}
        )

    def _answer(self, id_: str, kind: str, choice: dict[str, Any], tokens: int) -> dict[str, Any]:
        usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}
        return {
            "id": id_,
            "object": kind,
            "created": int(time.time()),
            "model": self.served_as,
            "choices": [choice],
            "usage": usage,
        }

    async def _chat_chunks(self, words: list[str]) -> AsyncIterator[dict[str, Any]]:
        deltas = [{"role": "assistant"}, *({"content": word} for word in words)]
        for delta in deltas:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            yield self._chunk("chatcmpl-1", "chat.completion.chunk", choice)
            await asyncio.sleep(self.token_interval_s)
        last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
        yield self._chunk("chatcmpl-1", "chat.completion.chunk", last)

    async def _completion_chunks(self, words: list[str]) -> AsyncIterator[dict[str, Any]]:
        for word in words:
            choice = {"index": 0, "text": word, "logprobs": None, "finish_reason": None}
            yield self._chunk("cmpl-1", "text_completion", choice)
            await asyncio.sleep(self.token_interval_s)
        last = {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}
        yield self._chunk("cmpl-1", "text_completion", last)

    def _chunk(self, id_: str, kind: str, choice: dict[str, Any]) -> dict[str, Any]:
        created = int(time.time())
        return {
            "id": id_,
            "object": kind,
            "created": created,
            "model": self.served_as,
            "choices": [choice],
        }

    def _stream(self, chunks: AsyncIterator[dict[str, Any]]) -> Response:
        return _CountedStream(self, _sse(chunks, self.cut_streams_after))


class _CountedStream(StreamingResponse):
    """A stream that tells its engine whether it was sent to its end."""

    def __init__(self, engine: FakeEngine, events: AsyncIterator[bytes]) -> None:
        self._engine = engine
        self._sent_all = False
        super().__init__(self._watched(events), media_type="text/event-stream")

    async def _watched(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for event in events:
            yield event
        self._sent_all = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._engine._count(completed=self._sent_all)


class EngineCrash(Exception):
    """Raised in a stream to make uvicorn drop its connection mid-answer."""


async def _sse(
    chunks: AsyncIterator[dict[str, Any]], cut_after: int | None
) -> AsyncIterator[bytes]:
    sent = 0
    async for chunk in chunks:
        if sent == cut_after:
            raise EngineCrash(f"the stream is cut after {sent} events")
        yield b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
        sent += 1
    yield b"data: [DONE]\r\n\r\n"


def _words(text: str, max_tokens: int | None) -> list[str]:
    words = [f"{word} " for word in text.split()]
    words[-1] = words[-1].rstrip()
    if max_tokens is None:
        return words
    return list(itertools.islice(itertools.cycle(words), max_tokens))


@contextmanager
def fake_engine(socket: Path, **options: Any) -> Iterator[FakeEngine]:
    """A FakeEngine listening on `socket` until the block ends."""
    engine = FakeEngine(socket, **options)
    config = uvicorn.Config(
        engine.app(),
        uds=str(socket),
        log_config=None,
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-engine", daemon=True)
    thread.start()
    try:
        poll(lambda: server.started or not thread.is_alive(), what="the fake engine to listen")
        if not server.started:
            raise RuntimeError("the fake engine did not start")
        yield engine
    finally:
        server.should_exit = True
        thread.join(timeout=10)
