"""`berth model bench`: the plan a request makes, a level's figures from its requests, and a
run level after level on a stand-in engine (in flight, timeouts, failures, cancellation)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from berth.common.errors import InvalidArgument, Unavailable
from berth.models.domain.bench import (
    DEFAULT_LEVELS,
    DEFAULT_PROMPT,
    BenchPlan,
    BenchResult,
    Sample,
    bench_plan,
    level_result,
    percentile,
)
from berth.models.domain.catalog import ModelNotFound
from berth.models.domain.operations import Kind, Operation, State
from berth.models.runner.bench import Bench
from berth.models.runner.engines import Lease
from berth.models.runner.runner import RunnerNotRunning
from berth.models.store.operations import Operations

MODEL = "ai/smollm2:latest"
MODEL_ID = "sha256:" + "a" * 64


def _violations(error: InvalidArgument) -> dict[str, str]:
    return {v.field: v.description for v in error.violations}


# --- the plan ---


def test_absent_values_take_dockers_defaults() -> None:
    plan = bench_plan("ai/smollm2")
    assert plan == BenchPlan(
        model="ai/smollm2",
        levels=DEFAULT_LEVELS,
        duration_s=30.0,
        prompt=DEFAULT_PROMPT,
        timeout_s=300.0,
    )
    assert DEFAULT_LEVELS == (1, 2, 4, 8)


def test_given_values_are_kept_in_order() -> None:
    plan = bench_plan("m", [4, 1], 2.5, "hi", 10.0, max_tokens=16, backend="llama.cpp")
    assert (plan.levels, plan.duration_s, plan.prompt, plan.timeout_s) == ((4, 1), 2.5, "hi", 10)
    assert (plan.max_tokens, plan.backend) == (16, "llama.cpp")


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(InvalidArgument) as raised:
        bench_plan("", [1, 0, -2, 257], duration_s=0, timeout_s=-1, max_tokens=0)
    assert _violations(raised.value) == {
        "model": "is required",
        "concurrency[1]": "must be greater than 0",
        "concurrency[2]": "must be greater than 0",
        "concurrency[3]": "must be at most 256",
        "duration": "must be longer than 0s",
        "timeout": "must be longer than 0s",
        "max_tokens": "must be greater than 0",
    }


# --- percentiles (nearest rank) ---


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([3.0, 1.0, 2.0, 4.0], 50, 2.0),
        ([float(v) for v in range(1, 11)], 50, 5.0),
        ([float(v) for v in range(1, 11)], 99, 10.0),
        ([float(v) for v in range(1, 201)], 99, 198.0),
        ([7.0], 50, 7.0),
        ([7.0], 99, 7.0),
        ([], 50, 0.0),
    ],
)
def test_percentiles_are_nearest_rank(values: Sequence[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


# --- a level's figures ---


def test_a_levels_figures_count_failures_and_time_only_successes() -> None:
    samples = [
        Sample(ok=True, latency_s=2.0, ttft_s=0.5, prompt_tokens=10, completion_tokens=40),
        Sample(ok=True, latency_s=1.0, ttft_s=0.25, prompt_tokens=10, completion_tokens=10),
        Sample.failed(9.0),
    ]
    level = level_result(2, 5.0, samples)
    assert (level.concurrency, level.duration_s) == (2, 5.0)
    assert (level.requests, level.failed_requests) == (2, 1)
    assert (level.prompt_tokens, level.completion_tokens) == (20, 50)
    assert level.tokens_per_second == 10.0  # 50 tokens over the level's 5 s
    assert level.request_tokens_per_second == 15.0  # mean of 20/s and 10/s
    assert level.requests_per_second == 0.4
    assert (level.ttft_p50_s, level.ttft_p99_s) == (0.25, 0.5)
    assert (level.latency_p50_s, level.latency_p99_s) == (1.0, 2.0)  # not the failure's 9 s


def test_an_answer_without_text_had_its_first_token_when_it_ended() -> None:
    level = level_result(1, 1.0, [Sample(ok=True, latency_s=0.3)])
    assert level.ttft_p50_s == 0.3


def test_a_level_where_everything_failed_has_zero_figures() -> None:
    level = level_result(4, 0.0, [Sample.failed(1.0), Sample.failed(2.0)])
    assert (level.requests, level.failed_requests) == (0, 2)
    assert level.tokens_per_second == level.requests_per_second == 0.0
    assert level.request_tokens_per_second == level.latency_p99_s == level.ttft_p50_s == 0.0


# --- a run, on a stand-in engine ---


@dataclass
class FakeView:
    id: str
    name: str


class FakeStore:
    def inspect(self, text: str) -> FakeView:
        if text not in ("ai/smollm2", MODEL):
            raise ModelNotFound(f"model {text!r} not found")
        return FakeView(MODEL_ID, MODEL)


class FakeClient:
    """Streams `words` text chunks then the usage, as an engine asked for usage does. From the
    second request on (the first is the run's warm-up), `hang` makes a stream wait forever
    after its first word and `refuse` fails a request at once."""

    def __init__(self, words: int = 3, hang: bool = False, refuse: Exception | None = None):
        self.words, self.hang, self.refuse = words, hang, refuse
        self.in_flight = self.most_in_flight = self.closed_early = 0
        self.bodies: list[dict[str, Any]] = []

    async def stream_sse(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.bodies.append(body)
        warm_up = len(self.bodies) == 1
        if self.refuse is not None and not warm_up:
            raise self.refuse
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        finished = False
        try:
            yield {"choices": [{"delta": {"role": "assistant"}}]}
            for _ in range(self.words):
                await asyncio.sleep(0.001)  # generating
                yield {"choices": [{"delta": {"content": "word "}}]}
                if self.hang and not warm_up:
                    await asyncio.Event().wait()
            yield {"choices": [{"delta": {}, "finish_reason": "stop"}]}
            yield {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": self.words}}
            finished = True
        finally:
            self.in_flight -= 1
            self.closed_early += not finished


class FakeEngines:
    def __init__(self, client: FakeClient) -> None:
        self.store = FakeStore()
        self.client = client
        self.leases = 0

    @asynccontextmanager
    async def acquire(self, model: str, *, backend: str | None = None) -> AsyncIterator[Lease]:
        self.store.inspect(model)
        self.leases += 1
        yield Lease(self.client, MODEL, MODEL_ID, backend or "llama.cpp")  # type: ignore[arg-type]


class FakeRunner:
    running = True

    def require_running(self) -> None:
        if not self.running:
            raise RunnerNotRunning("the model runner is not running")


def _bench(client: FakeClient, runner: FakeRunner | None = None) -> tuple[Bench, Operations]:
    operations = Operations()
    engines = FakeEngines(client)
    check = (runner or FakeRunner()).require_running
    return Bench(engines, operations, check), operations  # type: ignore[arg-type]


async def _until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.001)


async def _outcome(operation: Operation) -> tuple[Operation, list[int]]:
    """The operation once ended, and the concurrency of each level its watcher was told of."""
    told = [level.concurrency async for e in operation.watch() for level in e.bench_levels]
    return operation, told


async def test_a_run_measures_each_level_in_order() -> None:
    client = FakeClient(words=3)
    bench, _ = _bench(client)
    operation = bench.start(bench_plan("ai/smollm2", [1, 3], duration_s=0.05, prompt="hi"))
    assert (operation.kind, operation.model) == (Kind.BENCH_MODEL, MODEL)
    ended, told = await _outcome(operation)
    assert ended.state is State.SUCCEEDED, ended.error
    assert told == [1, 3]
    _, told_late = await _outcome(operation)
    assert told_late == [1, 3], "a watcher that comes back is told every level"
    result = ended.result
    assert isinstance(result, BenchResult)
    assert (result.model, result.model_id, result.backend, result.prompt) == (
        MODEL,
        MODEL_ID,
        "llama.cpp",
        "hi",
    )
    assert [level.concurrency for level in result.levels] == [1, 3]
    for level in result.levels:
        assert level.requests > 0 and level.failed_requests == 0
        assert level.completion_tokens == 3 * level.requests
        assert level.prompt_tokens == 7 * level.requests
        assert level.ttft_p50_s <= level.latency_p50_s
    assert client.most_in_flight == 3
    for body in client.bodies:
        assert body["messages"] == [{"role": "user", "content": "hi"}] and body["stream"]
    warm_up, *measured = client.bodies
    assert warm_up["max_tokens"] == 1, "the load's warm-up asks for one token"
    assert sum(level.requests for level in result.levels) == len(measured)
    assert all("max_tokens" not in body for body in measured)


async def test_requests_past_the_timeout_are_counted_as_failed() -> None:
    client = FakeClient(hang=True)
    bench, _ = _bench(client)
    plan = bench_plan("ai/smollm2", [2], duration_s=0.05, timeout_s=0.02)
    ended, _ = await _outcome(bench.start(plan))
    assert ended.state is State.SUCCEEDED
    assert isinstance(ended.result, BenchResult)
    [level] = ended.result.levels
    assert level.requests == 0 and level.failed_requests >= 2
    assert client.in_flight == 0 and client.closed_early == level.failed_requests


async def test_an_engine_failing_requests_does_not_end_the_run() -> None:
    bench, _ = _bench(FakeClient(refuse=Unavailable("the engine went away")))
    ended, _ = await _outcome(bench.start(bench_plan("ai/smollm2", [1], duration_s=0.05)))
    assert ended.state is State.SUCCEEDED
    assert isinstance(ended.result, BenchResult)
    assert ended.result.levels[0].failed_requests > 0


async def test_a_request_the_engine_refuses_as_such_ends_the_run() -> None:
    refusal = InvalidArgument([], message="This model's maximum context length is 4096 tokens")
    bench, _ = _bench(FakeClient(refuse=refusal))
    ended, told = await _outcome(bench.start(bench_plan("ai/smollm2", [2, 4], duration_s=5)))
    assert ended.state is State.FAILED
    assert ended.error is refusal
    assert told == []


async def test_stopping_the_runner_ends_the_run() -> None:
    client, runner = FakeClient(hang=True), FakeRunner()
    bench, _ = _bench(client, runner)
    operation = bench.start(bench_plan("ai/smollm2", [1], duration_s=60, timeout_s=0.01))
    await _until(lambda: client.in_flight == 1, "a request in flight")
    runner.running = False
    ended, _ = await _outcome(operation)
    assert ended.state is State.FAILED
    assert isinstance(ended.error, RunnerNotRunning)


async def test_a_missing_model_fails_before_anything_starts() -> None:
    bench, operations = _bench(FakeClient())
    with pytest.raises(ModelNotFound):
        bench.start(bench_plan("ai/never-pulled"))
    assert operations.list(include_finished=True, kind=None) == []


async def test_cancelling_stops_the_requests_in_flight() -> None:
    client = FakeClient(hang=True)
    bench, operations = _bench(client)
    operation = bench.start(bench_plan("ai/smollm2", [2], duration_s=60))
    await _until(lambda: client.in_flight == 2, "two requests in flight")
    await operations.cancel(operation.id)
    assert operation.state is State.CANCELLED
    assert client.in_flight == 0 and client.closed_early == 2
