"""The llama.cpp engine as the runner drives it: a real child process serving the real SmolLM2
GGUF on a unix socket, started and stopped by EngineProcess, spoken to by EngineClient."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from berth.common.errors import BerthError, Code, FailedPrecondition, InvalidArgument, Unavailable
from berth.models.engines.backends import EngineHost, engine_command
from berth.models.engines.client import EngineClient
from berth.models.engines.process import EngineProcess, EngineSpec
from tests.support.models import smollm2_gguf
from tests.support.processes import group_members, poll

READY_TIMEOUT_S = 60.0
FRANCE = "What is the capital of France?"
# With the model's own default system prompt this Q4_1 model drifts into French at
# temperature 0; with this one it answers plainly.
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
# SmolLM2's end-of-generation tokens (<|endoftext|>, <|im_end|>, <reponame>), forbidden so
# that a long generation runs to max_tokens.
NO_END = {"0": -100, "2": -100, "4": -100}
LONG_CHAT = {
    "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
    "max_tokens": 2000,
    "temperature": 0,
    "logit_bias": NO_END,
}
# Asks about France whatever the user says: an answer naming Paris shows the template is used.
RUNNER = """
import subprocess, sys, time
engine = subprocess.Popen(sys.argv[1:], start_new_session=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
print(engine.pid, flush=True)
engine.wait()
"""
FRANCE_TEMPLATE = (
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{{ '<|im_start|>user\\nWhat is the capital of France?<|im_end|>\\n' }}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass
class Engine:
    process: EngineProcess
    client: EngineClient
    lines: list[str]

    async def chat(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        body = {"messages": messages, "temperature": 0, "max_tokens": 24}
        return await self.client.post_json("/v1/chat/completions", body)


HOST = EngineHost()


async def launch(spec: EngineSpec, on_line: Callable[[str], None]) -> EngineProcess:
    return await EngineProcess.start(spec, engine_command(spec, HOST), HOST.environment(), on_line)


def engine_spec(tmp_path: Path, **overrides: Any) -> EngineSpec:
    fields: dict[str, Any] = {
        "backend": "llama.cpp",
        "model_paths": [smollm2_gguf()],
        "socket": tmp_path / "engine.sock",
        "context_size": None,
    }
    return EngineSpec(**{**fields, **overrides})


@pytest.fixture
async def start_engine(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Starts engines (ready to use); stops every one at the end, even on failure."""
    started: list[Engine] = []

    async def start(**overrides: Any) -> Engine:
        lines: list[str] = []
        spec = engine_spec(tmp_path, **overrides)
        process = await launch(spec, lines.append)
        engine = Engine(process, EngineClient(spec.socket), lines)
        started.append(engine)
        await process.wait_ready(READY_TIMEOUT_S)
        return engine

    yield start
    for engine in started:
        await engine.client.aclose()
        await engine.process.stop()


@pytest.fixture
async def engine(start_engine: Callable[..., Any]) -> Engine:
    return await start_engine()


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)


async def read_all(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


async def test_the_engine_lists_its_model(engine: Engine) -> None:
    status, headers, body = await engine.client.forward("GET", "/v1/models", b"", {})

    assert status == 200
    assert headers["content-type"] == "application/json"
    # Without an alias, the engine names its model by its path.
    models = json.loads(await read_all(body))["data"]
    assert [model["id"] for model in models] == [str(smollm2_gguf())]


async def test_a_chat_answers_with_its_token_counts(engine: Engine) -> None:
    reply = await engine.chat([SYSTEM, {"role": "user", "content": FRANCE}])

    assert "Paris" in reply["choices"][0]["message"]["content"]
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_a_chat_streams_its_answer(engine: Engine) -> None:
    body = {
        "messages": [SYSTEM, {"role": "user", "content": FRANCE}],
        "temperature": 0,
        "max_tokens": 24,
    }
    chunks = [chunk async for chunk in engine.client.stream_sse("/v1/chat/completions", body)]

    assert len(chunks) > 2
    assert "Paris" in text_of(chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_forward_passes_a_stream_through_as_it_comes(engine: Engine) -> None:
    body = {
        "messages": [SYSTEM, {"role": "user", "content": FRANCE}],
        "temperature": 0,
        "max_tokens": 24,
        "stream": True,
    }
    headers = {"content-type": "application/json", "host": "127.0.0.1:12434"}
    status, reply_headers, chunks = await engine.client.forward(
        "POST", "/v1/chat/completions", json.dumps(body).encode(), headers
    )
    events = (await read_all(chunks)).decode()

    assert status == 200
    assert reply_headers["content-type"].startswith("text/event-stream")
    assert "transfer-encoding" not in reply_headers
    assert "Paris" in events
    assert events.rstrip().endswith("data: [DONE]")


async def test_a_raw_completion_continues_the_prompt(engine: Engine) -> None:
    body = {"prompt": "The capital of France is", "temperature": 0, "max_tokens": 12}
    reply = await engine.client.post_json("/v1/completions", body)

    assert "Paris" in reply["choices"][0]["text"]


async def test_closing_a_stream_stops_the_generation(engine: Engine) -> None:
    stream = engine.client.stream_sse("/v1/chat/completions", LONG_CHAT)
    assert text_of([await anext(stream), await anext(stream)]).strip()
    await stream.aclose()

    # The engine runs one request at a time: this one is answered once the first has ended.
    body = {"prompt": "The capital of France is", "temperature": 0, "max_tokens": 4}
    await engine.client.post_json("/v1/completions", body)

    def logged() -> bool:
        disconnected = any("Disconnected from client" in line for line in engine.lines)
        return disconnected and any(" runs " in line for line in engine.lines)

    await asyncio.to_thread(poll, logged, 30, "the engine's log of both requests")
    # llama.cpp logs "eval time = ... / N runs" for each generation that ran to its end: only
    # the short one did.
    runs = [line for line in engine.lines if " runs " in line]
    assert len(runs) == 1, runs


async def test_an_engine_killed_mid_stream_fails_the_stream(engine: Engine) -> None:
    stream = engine.client.stream_sse("/v1/chat/completions", LONG_CHAT)
    await anext(stream)
    await anext(stream)
    os.kill(engine.process.pid, signal.SIGKILL)

    with pytest.raises(Unavailable) as failure:
        async for _ in stream:
            pass
    assert failure.value.reason == "ENGINE_FAILED"
    assert await engine.process.wait_exit() == -signal.SIGKILL
    assert not engine.process.alive
    with pytest.raises(Unavailable) as refused:
        await engine.chat([{"role": "user", "content": FRANCE}])
    assert refused.value.reason == "ENGINE_FAILED"


async def test_a_bad_model_file_fails_to_load_with_the_engines_words(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model at all\n" * 64)
    lines: list[str] = []
    process = await launch(engine_spec(tmp_path, model_paths=[broken]), lines.append)
    try:
        with pytest.raises(BerthError) as failure:
            await process.wait_ready(READY_TIMEOUT_S)
    finally:
        await process.stop()

    assert failure.value.reason == "ENGINE_FAILED"
    assert str(broken) in failure.value.message
    assert "invalid magic characters" in failure.value.message
    assert lines and all(line in lines for line in failure.value.message.splitlines()[1:])
    assert not process.alive
    assert group_members(process.pid) == []


async def test_an_engine_not_ready_in_time_is_killed(tmp_path: Path) -> None:
    process = await launch(engine_spec(tmp_path), lambda line: None)
    try:
        with pytest.raises(BerthError) as failure:
            await process.wait_ready(0.01)
    finally:
        await process.stop()

    assert failure.value.reason == "ENGINE_FAILED"
    assert "was not ready after 0.01s" in failure.value.message
    assert not process.alive
    assert group_members(process.pid) == []


async def test_stop_ends_the_engine_and_its_group(engine: Engine) -> None:
    pid = engine.process.pid
    assert engine.process.rss_bytes() > 0
    assert group_members(pid) == [pid]

    await engine.process.stop()

    assert await engine.process.wait_exit() == 0
    assert not engine.process.alive
    assert engine.process.rss_bytes() == 0
    assert group_members(pid) == []
    assert not engine.process.spec.socket.exists()


async def test_stop_kills_an_engine_that_does_not_stop(engine: Engine) -> None:
    os.kill(engine.process.pid, signal.SIGSTOP)

    await engine.process.stop(grace_s=0.5)

    assert await engine.process.wait_exit() == -signal.SIGKILL
    assert group_members(engine.process.pid) == []


def test_an_engine_ends_when_the_process_that_started_it_dies(tmp_path: Path) -> None:
    socket = tmp_path / "engine.sock"
    engine = [sys.executable, "-m", "berth.models.engines.llama_server"]
    engine += ["--model", str(smollm2_gguf()), "--socket", str(socket)]
    # A stand-in for a runner that crashes: it starts an engine, then is killed.
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, *engine], stdout=subprocess.PIPE, text=True
    )
    assert runner.stdout is not None
    pid = int(runner.stdout.readline())
    try:
        poll(socket.exists, READY_TIMEOUT_S, "the engine's socket")
        runner.kill()
        runner.wait()
        poll(lambda: not running(pid), 30, "the orphaned engine to end")
    finally:
        runner.kill()
        runner.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


async def test_a_chat_template_file_replaces_the_models_own(
    tmp_path: Path, start_engine: Callable[..., Any]
) -> None:
    template = tmp_path / "france.jinja"
    template.write_text(FRANCE_TEMPLATE)
    engine = await start_engine(chat_template=template)

    reply = await engine.chat([{"role": "user", "content": "What colour is the sky?"}])

    assert "Paris" in reply["choices"][0]["message"]["content"]


async def test_an_embedding_engine_embeds(start_engine: Callable[..., Any]) -> None:
    engine = await start_engine(embedding=True)

    reply = await engine.client.post_json("/v1/embeddings", {"input": ["a cat", "a dog"]})

    vectors = [item["embedding"] for item in reply["data"]]
    assert len(vectors) == 2
    assert len(vectors[0]) == len(vectors[1]) > 100


@pytest.mark.parametrize(("context_size", "limit"), [(None, 4096), (512, 512)])
async def test_a_prompt_beyond_the_context_is_an_invalid_argument(
    start_engine: Callable[..., Any], context_size: int | None, limit: int
) -> None:
    """The context is the one asked for, else the model's (8192 for SmolLM2) up to 4096."""
    engine = await start_engine(context_size=context_size)
    too_long = {"messages": [{"role": "user", "content": "hello " * 5000}], "max_tokens": 8}

    with pytest.raises(InvalidArgument) as failure:
        await engine.client.post_json("/v1/chat/completions", too_long)

    assert failure.value.code is Code.INVALID_ARGUMENT
    assert failure.value.reason == "CONTEXT_LENGTH_EXCEEDED"
    assert f"maximum context length is {limit} tokens" in failure.value.message


async def test_an_engine_that_is_not_there_is_unavailable(tmp_path: Path) -> None:
    client = EngineClient(tmp_path / "nobody.sock")
    try:
        with pytest.raises(Unavailable) as failure:
            await client.post_json("/v1/completions", {"prompt": "hello"})
        with pytest.raises(Unavailable):
            async for _ in client.stream_sse("/v1/completions", {"prompt": "hello"}):
                pass
    finally:
        await client.aclose()

    assert failure.value.reason == "ENGINE_FAILED"


def test_vllm_is_not_started_from_an_environment_without_it(tmp_path: Path) -> None:
    # berth's own environment has no vLLM (it lives in its own).
    host = EngineHost(vllm_python=Path(sys.executable))
    with pytest.raises(FailedPrecondition) as failure:
        engine_command(engine_spec(tmp_path, backend="vllm"), host)

    assert failure.value.reason == "BACKEND_NOT_INSTALLED"
    assert sys.executable in failure.value.message and "--vllm-python" in failure.value.message
