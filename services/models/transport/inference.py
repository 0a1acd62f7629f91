"""berth.models.v1.InferenceService: chat and completions on the model's engine, and bench.

A streamed answer is the engine's stream (its OpenAI-compatible server, SSE) passed on delta by
delta; an answer asked for whole is one engine request without a stream. Cancelling the call
closes the engine request, which stops generation there. BenchModel starts a bench operation
and streams its events until it ends (the run goes on if the client leaves).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from berth.api.models.v1 import inference_service_pb2 as pb
from berth.api.models.v1 import inference_service_pb2_grpc as pb_grpc
from berth.api.models.v1 import resources_pb2 as res
from berth.common.errors import FieldViolation, InvalidArgument
from berth.models.domain.bench import BenchPlan, bench_plan
from berth.models.runner import openai
from berth.models.runner.bench import Bench
from berth.models.runner.engines import EngineManager, Lease
from berth.models.transport import convert
from berth.models.transport.convert import BACKEND_NAMES, BACKEND_VALUES

FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH}


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    def __init__(
        self, engines: EngineManager, require_running: Callable[[], None], bench: Bench
    ) -> None:
        self.engines = engines
        self.require_running = require_running
        self.bench = bench

    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatResponse]:
        self.require_running()
        messages = _messages(request)
        async with lease_for(self.engines, request) as lease:
            sampling = _sampling(request.sampling)
            body = openai.chat_body(lease.model, messages, sampling, lease.backend)
            answer = _Answer("chatcmpl", lease, request.stream)
            async for delta in answer.run(lease, "/v1/chat/completions", body, chat=True):
                yield pb.ChatResponse(content=delta, **answer.common())
            yield pb.ChatResponse(**answer.last("content"))

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        self.require_running()
        _require(request.model, "model")
        async with lease_for(self.engines, request) as lease:
            sampling = _sampling(request.sampling)
            body = openai.completion_body(lease.model, request.prompt, sampling, lease.backend)
            answer = _Answer("cmpl", lease, request.stream)
            async for delta in answer.run(lease, "/v1/completions", body, chat=False):
                yield pb.GenerateResponse(text=delta, **answer.common())
            yield pb.GenerateResponse(**answer.last("text"))

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        self.require_running()
        _require(request.model, "model")
        if not request.inputs:
            raise InvalidArgument([FieldViolation("inputs", "at least one input is required")])
        async with lease_for(self.engines, request, embedding=True) as lease:
            body: dict[str, Any] = {"model": lease.model, "input": list(request.inputs)}
            if request.HasField("dimensions"):
                body["dimensions"] = request.dimensions
            answer = await lease.client.post_json("/v1/embeddings", body)
        vectors = sorted(answer.get("data") or [], key=lambda item: item.get("index", 0))
        usage = answer.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        return pb.EmbedResponse(
            model=lease.model,
            embeddings=[pb.Embedding(values=item.get("embedding") or []) for item in vectors],
            usage=pb.Usage(prompt_tokens=prompt, total_tokens=prompt),
        )

    async def BenchModel(
        self, request: pb.BenchModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BenchModelResponse]:
        self.require_running()
        operation = self.bench.start(_bench_plan(request))
        async for event in convert.operation_events(operation):
            yield pb.BenchModelResponse(event=event)


def lease_for(
    engines: EngineManager, request: Any, embedding: bool = False
) -> AbstractAsyncContextManager[Lease]:
    """The engine a request asks for (Chat, Generate, Embed, RunModel all carry `model`,
    `backend` and `keep_alive`)."""
    keep_alive = request.keep_alive.ToTimedelta() if request.HasField("keep_alive") else None
    return engines.acquire(
        request.model,
        backend=BACKEND_NAMES.get(request.backend),
        embedding=embedding,
        keep_alive=keep_alive,
    )


class _Answer:
    """One completion as it streams: its ID, the text so far, and how it ended."""

    def __init__(self, prefix: str, lease: Lease, stream: bool) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.model = lease.model
        self.backend = BACKEND_VALUES.get(lease.backend, res.BACKEND_UNSPECIFIED)
        self.created = Timestamp(seconds=int(time.time()))
        self.stream = stream
        self.parts: list[str] = []
        self.finish: str | None = None
        self.usage: tuple[int, int] | None = None
        self.pieces = 0

    async def run(
        self, lease: Lease, path: str, body: dict[str, Any], chat: bool
    ) -> AsyncIterator[str]:
        """The text deltas to send now: the engine's stream when the caller streams (its last
        chunk carries the usage, as the body asks); else one whole answer."""
        if not self.stream:
            whole = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
            self._read(await lease.client.post_json(path, whole), chat)
            return
        async with aclosing(lease.client.stream_sse(path, body)) as chunks:
            async for chunk in chunks:
                delta = self._read(chunk, chat)
                if delta:
                    yield delta

    def _read(self, chunk: dict[str, Any], chat: bool) -> str:
        delta = openai.read_chunk(chunk, chat)
        self.finish = delta.finish_reason or self.finish
        self.usage = delta.usage or self.usage
        if delta.text:
            self.pieces += 1
            self.parts.append(delta.text)
        return delta.text

    def common(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "created_time": self.created,
            "backend": self.backend,
        }

    def last(self, text_field: str) -> dict[str, Any]:
        # An engine that does not report usage: the deltas are about one token each.
        prompt, completion = self.usage or (0, self.pieces)
        return {
            **self.common(),
            text_field: "" if self.stream else "".join(self.parts),
            "finish_reason": FINISH.get(self.finish or "stop", pb.FINISH_REASON_STOP),
            "usage": pb.Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
            ),
        }


def _messages(request: pb.ChatRequest) -> list[tuple[str, str]]:
    _require(request.model, "model")
    if not request.messages:
        raise InvalidArgument([FieldViolation("messages", "at least one message is required")])
    found = []
    for index, message in enumerate(request.messages):
        role = openai.ROLES.get(message.role)
        if role is None:
            raise InvalidArgument(
                [FieldViolation(f"messages[{index}].role", "must be system, user or assistant")]
            )
        found.append((role, message.content))
    return found


def _sampling(params: pb.SamplingParams) -> openai.Sampling:
    def given(name: str) -> Any:
        return getattr(params, name) if params.HasField(name) else None

    if params.HasField("max_tokens") and params.max_tokens <= 0:
        raise InvalidArgument([FieldViolation("sampling.max_tokens", "must be positive")])
    return openai.Sampling(
        temperature=given("temperature"),
        top_p=given("top_p"),
        top_k=given("top_k"),
        min_p=given("min_p"),
        seed=given("seed"),
        max_tokens=given("max_tokens"),
        stop=list(params.stop),
        presence_penalty=given("presence_penalty"),
        frequency_penalty=given("frequency_penalty"),
        repetition_penalty=given("repetition_penalty"),
    )


def _bench_plan(request: pb.BenchModelRequest) -> BenchPlan:
    def seconds(name: str) -> float | None:
        if not request.HasField(name):
            return None
        return float(getattr(request, name).ToNanoseconds()) / 1e9

    return bench_plan(
        model=request.model,
        levels=list(request.concurrency),
        duration_s=seconds("duration"),
        prompt=request.prompt,
        timeout_s=seconds("timeout"),
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        backend=BACKEND_NAMES.get(request.backend),
    )


def _require(value: str, field_name: str) -> None:
    if not value:
        raise InvalidArgument([FieldViolation(field_name, "is required")])
