"""`berth model bench` on the runner: at each concurrency level, keep that many streamed chat
requests with the prompt in flight for the level's duration, timing each from its start.

A run is an operation of its own (kind BENCH_MODEL): it goes on when the client disconnects,
can be watched again and is stopped by cancelling it, which closes the requests in flight
(and so stops generation in the engine). Requests take the same path as gRPC Chat: a lease on
the model's engine, then the engine's streamed chat completion. The model is loaded once
before the first level and answers one token (which also pages its weights in), so no level
measures the load. A request that fails or runs past the timeout is counted as failed and the
level goes on; one the engine refuses as such (a prompt longer than the context) ends the run,
since every other request would be refused the same, and so does the runner being stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import aclosing

import structlog

from berth.common.errors import BerthError, FailedPrecondition, InvalidArgument, NotFound
from berth.models.domain.bench import BenchPlan, BenchResult, LevelResult, Sample, level_result
from berth.models.domain.operations import Kind, Operation, Phase
from berth.models.runner import openai
from berth.models.runner.engines import EngineManager, Lease
from berth.models.store.operations import Operations

log = structlog.get_logger("berth.models.bench")

Clock = Callable[[], float]
CHAT_PATH = "/v1/chat/completions"
# Errors of the request itself, the same for every request: they end the run.
FATAL = (InvalidArgument, NotFound, FailedPrecondition)
# After a failed request, before the next: an engine that refuses at once is not hammered.
FAILURE_PAUSE_S = 0.05


class Bench:
    def __init__(
        self,
        engines: EngineManager,
        operations: Operations,
        require_running: Callable[[], None],
        clock: Clock = time.monotonic,
    ) -> None:
        self.engines = engines
        self.operations = operations
        self.require_running = require_running
        self.clock = clock

    def start(self, plan: BenchPlan) -> Operation:
        """Start a run. A model that is not in the store fails here (NOT_FOUND,
        MODEL_NOT_FOUND), before any operation starts."""
        view = self.engines.store.inspect(plan.model)
        name = view.name or view.id

        async def work(operation: Operation) -> BenchResult:
            return await _Run(self, plan, operation).run(name)

        return self.operations.start(Kind.BENCH_MODEL, name, work)


class _Run:
    """One bench operation, level after level."""

    def __init__(self, bench: Bench, plan: BenchPlan, operation: Operation) -> None:
        self.engines = bench.engines
        self.require_running = bench.require_running
        self.clock = bench.clock
        self.plan = plan
        self.operation = operation

    async def run(self, name: str) -> BenchResult:
        self.operation.set_phase(Phase.LOADING, f"Loading {name}")
        async with (
            asyncio.timeout(self.plan.timeout_s),
            self.engines.acquire(self.plan.model, backend=self.plan.backend) as lease,
        ):
            await self._answer(lease, self.clock(), max_tokens=1)
            model_id, backend = lease.model_id, lease.backend
        levels = []
        for concurrency in self.plan.levels:
            level = await self._level(concurrency)
            self.operation.add_bench_level(level)
            levels.append(level)
        return BenchResult(
            model=name,
            model_id=model_id,
            backend=backend,
            prompt=self.plan.prompt,
            levels=tuple(levels),
        )

    async def _level(self, concurrency: int) -> LevelResult:
        samples: list[Sample] = []
        self._progress(concurrency, samples)
        started = self.clock()
        deadline = started + self.plan.duration_s

        async def keep_one_in_flight() -> None:
            # Requests in flight at the deadline finish: the level drains.
            while self.clock() < deadline:
                sample = await self._request()
                samples.append(sample)
                self._progress(concurrency, samples)
                if not sample.ok:
                    await asyncio.sleep(FAILURE_PAUSE_S)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(keep_one_in_flight())
        except* FATAL as refused:
            raise refused.exceptions[0] from None
        return level_result(concurrency, self.clock() - started, samples)

    def _progress(self, concurrency: int, samples: list[Sample]) -> None:
        message = f"Benchmarking at concurrency {concurrency} for {self.plan.duration_s:g}s"
        if samples:
            failed = sum(1 for sample in samples if not sample.ok)
            done = f"{len(samples) - failed} requests done, {failed} failed"
            message = f"Benchmarking at concurrency {concurrency}: {done}"
        self.operation.set_phase(Phase.BENCHMARKING, message)

    async def _request(self) -> Sample:
        """One request: its sample, or a failed one (an engine failure, the timeout)."""
        # Not a request to an engine the runner has unloaded when it stopped.
        self.require_running()
        started = self.clock()
        try:
            async with (
                asyncio.timeout(self.plan.timeout_s),
                self.engines.acquire(self.plan.model, backend=self.plan.backend) as lease,
            ):
                return await self._answer(lease, started)
        except FATAL:
            raise
        except TimeoutError:
            log.warning("bench_request_timed_out", model=self.operation.model)
        except BerthError as error:
            log.warning("bench_request_failed", model=self.operation.model, reason=error.reason)
        return Sample.failed(self.clock() - started)

    async def _answer(self, lease: Lease, started: float, max_tokens: int | None = None) -> Sample:
        """The streamed chat answer to the prompt, timed from `started`."""
        sampling = openai.Sampling(max_tokens=max_tokens or self.plan.max_tokens)
        body = openai.chat_body(lease.model, [("user", self.plan.prompt)], sampling, lease.backend)
        first: float | None = None
        usage: tuple[int, int] | None = None
        pieces = 0
        async with aclosing(lease.client.stream_sse(CHAT_PATH, body)) as chunks:
            async for chunk in chunks:
                delta = openai.read_chunk(chunk, chat=True)
                if delta.text:
                    pieces += 1
                    first = self.clock() - started if first is None else first
                usage = delta.usage or usage
        # An engine that does not report usage: the deltas are about one token each.
        prompt, completion = usage or (0, pieces)
        return Sample(
            ok=True,
            latency_s=self.clock() - started,
            ttft_s=first,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
