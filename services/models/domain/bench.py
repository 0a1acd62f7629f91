"""`berth model bench` as plain data: the validated plan of a run, and each concurrency level's
figures from the requests it timed. No I/O.

Percentiles use the nearest-rank method: the p-th percentile of n sorted values is the value
at rank ceil(p/100 * n), so it is always one of the measured values (p99 of fewer than 100
requests is the slowest one). Time to first token and latency percentiles are over the
requests that succeeded; failed ones are only counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from berth.common.errors import FieldViolation, InvalidArgument

DEFAULT_LEVELS = (1, 2, 4, 8)
DEFAULT_DURATION_S = 30.0
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_PROMPT = "Write a comprehensive 100 word summary on whales and their impact on society."
# More requests in flight than this would measure the runner's queue, not the model.
MAX_CONCURRENCY = 256


@dataclass(frozen=True)
class BenchPlan:
    """A validated request: what to run, level by level."""

    model: str
    levels: tuple[int, ...]
    duration_s: float
    prompt: str
    timeout_s: float
    max_tokens: int | None = None
    backend: str | None = None


def bench_plan(
    model: str,
    levels: Sequence[int] = (),
    duration_s: float | None = None,
    prompt: str = "",
    timeout_s: float | None = None,
    max_tokens: int | None = None,
    backend: str | None = None,
) -> BenchPlan:
    """The plan of a bench request; absent values take Docker's defaults. Raises
    InvalidArgument naming every bad field."""
    violations = []
    if not model:
        violations.append(FieldViolation("model", "is required"))
    for index, level in enumerate(levels):
        if level <= 0:
            violations.append(FieldViolation(f"concurrency[{index}]", "must be greater than 0"))
        elif level > MAX_CONCURRENCY:
            violations.append(
                FieldViolation(f"concurrency[{index}]", f"must be at most {MAX_CONCURRENCY}")
            )
    for name, seconds in (("duration", duration_s), ("timeout", timeout_s)):
        if seconds is not None and seconds <= 0:
            violations.append(FieldViolation(name, "must be longer than 0s"))
    if max_tokens is not None and max_tokens <= 0:
        violations.append(FieldViolation("max_tokens", "must be greater than 0"))
    if violations:
        raise InvalidArgument(violations)
    return BenchPlan(
        model=model,
        levels=tuple(levels) or DEFAULT_LEVELS,
        duration_s=DEFAULT_DURATION_S if duration_s is None else duration_s,
        prompt=prompt or DEFAULT_PROMPT,
        timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
        max_tokens=max_tokens,
        backend=backend,
    )


@dataclass(frozen=True)
class Sample:
    """One request of a level, its times measured from its start."""

    ok: bool
    latency_s: float
    # When the first generated text came; None if none came (an empty answer, a failure).
    ttft_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def failed(cls, latency_s: float) -> Sample:
        return cls(ok=False, latency_s=latency_s)


@dataclass(frozen=True)
class LevelResult:
    """What one concurrency level measured (BenchLevelResult)."""

    concurrency: int
    duration_s: float
    requests: int
    failed_requests: int
    prompt_tokens: int
    completion_tokens: int
    tokens_per_second: float
    request_tokens_per_second: float
    requests_per_second: float
    ttft_p50_s: float
    ttft_p99_s: float
    latency_p50_s: float
    latency_p99_s: float


@dataclass(frozen=True)
class BenchResult:
    """A whole run: the model as the engine served it, and every level in the order run."""

    model: str
    model_id: str
    backend: str
    prompt: str
    levels: tuple[LevelResult, ...]


def level_result(concurrency: int, duration_s: float, samples: Sequence[Sample]) -> LevelResult:
    """The figures of a level that ran `duration_s` seconds (wall time, draining included)."""
    done = [sample for sample in samples if sample.ok]
    completion = sum(sample.completion_tokens for sample in done)
    latencies = [sample.latency_s for sample in done]
    # An answer with no text at all had its "first token" when it ended.
    ttfts = [sample.latency_s if sample.ttft_s is None else sample.ttft_s for sample in done]
    speeds = [s.completion_tokens / s.latency_s for s in done if s.latency_s > 0]
    return LevelResult(
        concurrency=concurrency,
        duration_s=duration_s,
        requests=len(done),
        failed_requests=len(samples) - len(done),
        prompt_tokens=sum(sample.prompt_tokens for sample in done),
        completion_tokens=completion,
        tokens_per_second=_rate(completion, duration_s),
        request_tokens_per_second=sum(speeds) / len(speeds) if speeds else 0.0,
        requests_per_second=_rate(len(done), duration_s),
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p99_s=percentile(ttfts, 99),
        latency_p50_s=percentile(latencies, 50),
        latency_p99_s=percentile(latencies, 99),
    )


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank p-th percentile (0 < p <= 100) of `values`; 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0
