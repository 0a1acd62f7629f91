"""berth.models.domain.runner_log: what `berth model logs` shows first."""

from __future__ import annotations

import pytest

from berth.common.errors import InvalidArgument
from berth.models.domain.runner_log import KEEP_LINES, RUNNER_SOURCE, LogLine, RunnerLog


def texts(lines: list[LogLine]) -> list[str]:
    return [line.line for line in lines]


@pytest.fixture
def log() -> RunnerLog:
    log = RunnerLog()
    log.runner_sink("r1")
    log.publish(LogLine("e1", source="engine:llama"))
    log.runner_sink("r2")
    log.publish(LogLine("e2", source="engine:vllm"))
    log.runner_sink("r3")
    return log


def test_runner_sink_lines_come_from_the_runner() -> None:
    log = RunnerLog()
    log.runner_sink("hello")

    [line] = log.backlog(None, no_engines=False)
    assert line.line == "hello"
    assert line.source == RUNNER_SOURCE == "runner"


def test_tail_none_is_everything(log: RunnerLog) -> None:
    assert texts(log.backlog(None, no_engines=False)) == ["r1", "e1", "r2", "e2", "r3"]


def test_tail_zero_is_nothing(log: RunnerLog) -> None:
    assert log.backlog(0, no_engines=False) == []


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (1, ["r3"]),
        (2, ["e2", "r3"]),
        (4, ["e1", "r2", "e2", "r3"]),
        (5, ["r1", "e1", "r2", "e2", "r3"]),
    ],
)
def test_tail_n_is_the_last_n(log: RunnerLog, tail: int, expected: list[str]) -> None:
    assert texts(log.backlog(tail, no_engines=False)) == expected


@pytest.mark.parametrize(
    ("tail", "no_engines", "expected"),
    [
        (6, False, ["r1", "e1", "r2", "e2", "r3"]),
        (8, False, ["r1", "e1", "r2", "e2", "r3"]),
        (100, False, ["r1", "e1", "r2", "e2", "r3"]),
        (4, True, ["r1", "r2", "r3"]),
    ],
)
def test_tail_larger_than_the_log_is_everything(
    log: RunnerLog, tail: int, no_engines: bool, expected: list[str]
) -> None:
    # `berth model logs --tail 100` on a short log shows the whole log.
    assert texts(log.backlog(tail, no_engines=no_engines)) == expected


@pytest.mark.parametrize("tail", [-1, -5])
def test_negative_tail_is_refused(log: RunnerLog, tail: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        log.backlog(tail, no_engines=False)

    [violation] = caught.value.violations
    assert violation.field == "tail"


def test_no_engines_keeps_only_runner_lines(log: RunnerLog) -> None:
    lines = log.backlog(None, no_engines=True)

    assert texts(lines) == ["r1", "r2", "r3"]
    assert {line.source for line in lines} == {"runner"}


def test_tail_counts_only_the_selected_lines(log: RunnerLog) -> None:
    assert texts(log.backlog(2, no_engines=True)) == ["r2", "r3"]
    assert texts(log.backlog(3, no_engines=True)) == ["r1", "r2", "r3"]


def test_empty_log() -> None:
    log = RunnerLog()
    assert log.backlog(None, no_engines=False) == []
    assert log.backlog(10, no_engines=False) == []


def test_log_keeps_the_last_keep_lines() -> None:
    log = RunnerLog()
    for i in range(KEEP_LINES + 10):
        log.runner_sink(f"line {i}")

    lines = log.backlog(None, no_engines=False)
    assert len(lines) == KEEP_LINES
    assert lines[0].line == "line 10"
    assert lines[-1].line == f"line {KEEP_LINES + 9}"
