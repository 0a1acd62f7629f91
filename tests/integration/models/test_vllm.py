"""Inference on vLLM with the real SmolLM2, as a safetensors model made from its GGUF: packaged
with `berth model package --safetensors-dir`, served by vLLM (CPU build, its own environment)
through gRPC, the CLI and the OpenAI-compatible HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import openai
import pytest

from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1.inference_service_pb2_grpc import InferenceServiceStub
from tests.integration.models.conftest import (
    QUESTION,
    SYSTEM,
    ModelStack,
    france_chat,
    start_model_stack,
)
from tests.support.cluster import error_info
from tests.support.models import smollm2_safetensors, vllm_python
from tests.support.processes import group_members, poll

# vLLM on two CPUs: ~30 s to load, a few seconds an answer.
pytestmark = pytest.mark.timeout(600)

MODEL = "ai/smollm2-vllm"


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStack]:
    weights = smollm2_safetensors()
    stack = start_model_stack(
        tmp_path_factory.mktemp("vllm"),
        [
            *("--keep-alive", "900"),
            *("--vllm-python", str(vllm_python())),
            # Compiling the model would add ~40 s to the load for little on this model.
            "--vllm-args=--enforce-eager",
        ],
    )
    try:
        stack.ok("model", "package", "--safetensors-dir", str(weights), MODEL)
        yield stack
    finally:
        stack.stop()


def test_chat_over_grpc_on_vllm(runner: ModelStack) -> None:
    stub = InferenceServiceStub(runner.channel())
    streamed = list(stub.Chat(france_chat(MODEL, stream=True), timeout=300))
    answer = "".join(r.content for r in streamed)
    assert "Paris" in answer
    assert len(streamed) > 3, "the answer came token by token"
    last = streamed[-1]
    assert last.backend == res.BACKEND_VLLM and last.model == f"{MODEL}:latest"
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0

    [whole] = list(stub.Chat(france_chat(MODEL, stream=False), timeout=300))
    assert whole.content == answer, "temperature 0 answers the same either way"
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_status_shows_the_vllm_backend_and_its_engine(runner: ModelStack) -> None:
    list(InferenceServiceStub(runner.channel()).Chat(france_chat(MODEL, stream=False), timeout=300))
    status = json.loads(runner.ok("model", "status", "--json"))
    assert status["running"] is True
    text = json.dumps(status)
    assert "vllm" in text and "0.32.0" in text
    ps = runner.ok("model", "ps")
    assert "smollm2-vllm" in ps and "vllm" in ps


def test_berth_model_run_on_vllm(runner: ModelStack) -> None:
    answered = runner.ok("model", "run", "--temperature", "0", MODEL, QUESTION)
    assert "Paris" in answered


def test_the_openai_client_on_vllm(runner: ModelStack) -> None:
    endpoint = runner.runner_status().endpoint
    client = openai.OpenAI(base_url=f"{endpoint}/engines/vllm/v1", api_key="unused")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=32
    )
    assert "Paris" in (whole.choices[0].message.content or "")
    assert whole.model == MODEL and whole.usage and whole.usage.prompt_tokens > 0
    chunks = client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=32, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    completion = client.completions.create(
        model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=8
    )
    assert "Paris" in completion.choices[0].text


def test_llama_cpp_cannot_serve_a_safetensors_model(runner: ModelStack) -> None:
    request = france_chat(MODEL, stream=False)
    request.backend = res.BACKEND_LLAMA_CPP
    with pytest.raises(grpc.RpcError) as failure:
        list(InferenceServiceStub(runner.channel()).Chat(request, timeout=60))
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(failure.value)
    assert info is not None and info.reason == "UNSUPPORTED_FORMAT"
    assert "llama.cpp serves gguf" in (failure.value.details() or "")


def test_embeddings_on_vllm(runner: ModelStack) -> None:
    endpoint = runner.runner_status().endpoint
    client = openai.OpenAI(base_url=f"{endpoint}/engines/vllm/v1", api_key="unused")
    answer = client.embeddings.create(model=MODEL, input=["Paris", "a whale"])
    first, second = (item.embedding for item in answer.data)
    assert len(first) == len(second) == 576, "SmolLM2-135M's hidden size"
    assert first != second


def test_unloading_ends_every_process_of_the_engine(runner: ModelStack) -> None:
    list(InferenceServiceStub(runner.channel()).Chat(france_chat(MODEL, stream=False), timeout=300))
    pids = [e.pid for e in runner.runner_status().engines if e.model == f"{MODEL}:latest"]
    assert pids and all(len(group_members(pid)) > 1 for pid in pids), "vLLM runs more processes"

    runner.ok("model", "unload", MODEL)

    assert not [e for e in runner.runner_status().engines if e.model == f"{MODEL}:latest"]
    poll(
        lambda: not any(group_members(pid) for pid in pids),
        timeout=30,
        what="every process of the engines to end",
    )
