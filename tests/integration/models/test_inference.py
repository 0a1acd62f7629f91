"""Inference end to end on llama.cpp with the real SmolLM2 GGUF: gRPC, the CLI and the
OpenAI-compatible HTTP API (driven by the official `openai` client), and the engines' life:
load on demand, two at once, idle unload, a crashed engine, cancellation, a stopped runner."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import grpc
import openai
import pytest
from google.protobuf.duration_pb2 import Duration

from berth.api.models.v1 import inference_service_pb2 as inf
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1 import runner_service_pb2 as runner_pb
from berth.api.models.v1.inference_service_pb2_grpc import InferenceServiceStub
from berth.api.models.v1.runner_service_pb2_grpc import RunnerServiceStub
from tests.integration.models.conftest import (
    QUESTION,
    SYSTEM,
    ModelStack,
    france_chat,
)
from tests.support.cluster import error_info
from tests.support.processes import poll

pytestmark = pytest.mark.timeout(300)

MODEL = "ai/smollm2"


def test_chat_over_grpc_streamed_and_not(runner: ModelStack) -> None:
    stub = InferenceServiceStub(runner.channel())
    streamed = list(stub.Chat(france_chat(MODEL, stream=True), timeout=120))
    answer = "".join(r.content for r in streamed)
    assert "Paris" in answer
    assert len(streamed) > 3, "the answer came token by token"
    last = streamed[-1]
    assert last.finish_reason in (inf.FINISH_REASON_STOP, inf.FINISH_REASON_LENGTH)
    assert last.usage.completion_tokens > 0
    assert {r.id for r in streamed} == {last.id} and last.id.startswith("chatcmpl-")
    assert last.backend == res.BACKEND_LLAMA_CPP and last.model == "ai/smollm2:latest"

    [whole] = list(stub.Chat(france_chat(MODEL, stream=False), timeout=120))
    assert whole.content == answer, "temperature 0 answers the same either way"
    assert whole.usage.prompt_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_streamed_answers_count_their_tokens_as_whole_ones_do(runner: ModelStack) -> None:
    stub = InferenceServiceStub(runner.channel())
    *_, streamed = stub.Chat(france_chat(MODEL, stream=True), timeout=120)
    [whole] = list(stub.Chat(france_chat(MODEL, stream=False), timeout=120))
    assert streamed.usage.prompt_tokens > 0
    assert streamed.usage == whole.usage, "temperature 0: the same prompt and answer"

    request = inf.GenerateRequest(
        model=MODEL,
        prompt="The capital of France is",
        sampling=inf.SamplingParams(temperature=0, max_tokens=8),
        stream=True,
    )
    *_, last = InferenceServiceStub(runner.channel()).Generate(request, timeout=120)
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens == 8


def test_the_http_stream_ends_with_the_usage_when_asked(runner: ModelStack) -> None:
    client = openai.OpenAI(base_url=f"{runner.runner_status().endpoint}/v1", api_key="unused")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    asked = {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 32}
    whole = client.chat.completions.create(**asked)
    chunks = list(
        client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert whole.usage is not None and whole.usage.prompt_tokens > 0
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_a_prompt_longer_than_the_context_is_refused_readably(runner: ModelStack) -> None:
    too_long = "word " * 5000  # about 5000 tokens; the engine's context is 4096
    stub = InferenceServiceStub(runner.channel())
    for stream in (True, False):
        request = inf.ChatRequest(
            model=MODEL,
            messages=[inf.ChatMessage(role=inf.CHAT_ROLE_USER, content=too_long)],
            stream=stream,
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Chat(request, timeout=120))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, stream
        assert "maximum context length is 4096 tokens" in (refused.value.details() or "")
        info = error_info(refused.value)
        assert info is not None and info.reason == "CONTEXT_LENGTH_EXCEEDED"

    client = openai.OpenAI(base_url=f"{runner.runner_status().endpoint}/v1", api_key="unused")
    for stream in (True, False):
        with pytest.raises(openai.BadRequestError) as bad:
            # a stream refused before it starts: the client raises at once
            client.completions.create(model=MODEL, prompt=too_long, stream=stream)
        assert bad.value.status_code == 400, stream
        assert "maximum context length is 4096 tokens" in bad.value.message
    [whole] = list(stub.Chat(france_chat(MODEL, stream=False), timeout=120))
    assert "Paris" in whole.content, "the engine serves the next request"


def test_generate_completes_a_raw_prompt(runner: ModelStack) -> None:
    request = inf.GenerateRequest(
        model=MODEL,
        prompt="The capital of France is",
        sampling=inf.SamplingParams(temperature=0, max_tokens=8),
    )
    [answer] = list(InferenceServiceStub(runner.channel()).Generate(request, timeout=120))
    assert "Paris" in answer.text
    assert answer.finish_reason == inf.FINISH_REASON_LENGTH
    assert answer.usage.completion_tokens == 8


def test_berth_model_run_answers(runner: ModelStack) -> None:
    answered = runner.ok("model", "run", "--system", SYSTEM, "--temperature", "0", MODEL, QUESTION)
    assert "Paris" in answered
    ps = runner.ok("model", "ps")
    assert "smollm2" in ps and "llama.cpp" in ps


def test_the_openai_client_against_the_http_api(runner: ModelStack) -> None:
    endpoint = runner.runner_status().endpoint
    client = openai.OpenAI(base_url=f"{endpoint}/engines/v1", api_key="unused")
    assert "ai/smollm2:latest" in [m.id for m in client.models.list()]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=32
    )
    assert "Paris" in (whole.choices[0].message.content or "")
    assert whole.model == MODEL and whole.usage and whole.usage.completion_tokens > 0
    chunks = client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=32, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ai/never-pulled", messages=messages)


def test_cancelling_a_stream_stops_the_request(runner: ModelStack) -> None:
    stub = InferenceServiceStub(runner.channel())
    call = stub.Chat(france_chat(MODEL, stream=True, max_tokens=2000))
    next(call)
    call.cancel()
    poll(
        lambda: all(e.active_requests == 0 for e in runner.runner_status().engines),
        30,
        "the cancelled request to end",
    )
    [whole] = list(stub.Chat(france_chat(MODEL, stream=False), timeout=60))
    assert "Paris" in whole.content


def test_a_killed_engine_fails_its_request_and_the_next_one_works(runner: ModelStack) -> None:
    stub = InferenceServiceStub(runner.channel())
    call = stub.Chat(france_chat(MODEL, stream=True, max_tokens=2000))
    next(call)
    [engine] = [e for e in runner.runner_status().engines if e.model == "ai/smollm2:latest"]
    os.kill(engine.pid, signal.SIGKILL)
    with pytest.raises(grpc.RpcError) as failed:
        list(call)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "engine" in (failed.value.details() or "").lower()
    [whole] = list(stub.Chat(france_chat(MODEL, stream=False), timeout=120))
    assert "Paris" in whole.content
    assert [e.pid for e in runner.runner_status().engines if e.model == "ai/smollm2:latest"] != [
        engine.pid
    ]


def test_two_models_loaded_then_idle_ones_unload(runner: ModelStack) -> None:
    runner.ok("model", "package", "--from", MODEL, "--context-size", "1024", "ai/smollm2-1k")
    stub = RunnerServiceStub(runner.channel())
    models = (MODEL, "ai/smollm2-1k")
    for model in models:
        stub.RunModel(runner_pb.RunModelRequest(model=model), timeout=120)
    loaded = {e.model: e for e in runner.runner_status().engines}
    assert {"ai/smollm2:latest", "ai/smollm2-1k:latest"} <= set(loaded)
    assert loaded["ai/smollm2-1k:latest"].context_size == 1024
    pids = [e.pid for e in loaded.values()]
    # A keep-alive of 0: idle from the end of this request on.
    for model in models:
        stub.RunModel(runner_pb.RunModelRequest(model=model, keep_alive=Duration()), timeout=120)
    poll(lambda: not runner.runner_status().engines, 30, "idle engines to unload")
    poll(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 10, "processes gone")


def test_a_stopped_runner_refuses_inference_until_started(runner: ModelStack) -> None:
    runner.ok("model", "stop-runner")
    with pytest.raises(grpc.RpcError) as refused:
        list(
            InferenceServiceStub(runner.channel()).Chat(
                france_chat(MODEL, stream=False), timeout=30
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not runner.runner_status().running
    runner.ok("model", "start-runner")
    status = json.loads(runner.ok("model", "status", "--json"))
    assert status["running"] is True
    [whole] = list(
        InferenceServiceStub(runner.channel()).Chat(france_chat(MODEL, stream=False), timeout=120)
    )
    assert "Paris" in whole.content
