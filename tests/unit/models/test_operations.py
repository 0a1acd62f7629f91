"""Long operations: what a watcher sees, and starting, joining, cancelling and forgetting them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from berth.common.errors import BerthError, Code, NotFound, Unavailable
from berth.models.domain.operations import (
    Event,
    Kind,
    LayerProgress,
    LayerStatus,
    ModelResult,
    Operation,
    Phase,
    State,
)
from berth.models.store.operations import Operations

MODEL = "ai/smollm2:latest"
RESULT = ModelResult(MODEL, "sha256:" + "a" * 64, 300)


def _operation() -> Operation:
    operation = Operation(id="op1", kind=Kind.PULL_MODEL, model=MODEL)
    operation.set_phase(Phase.DOWNLOADING, "downloading")
    operation.add_layer(LayerProgress("a", name="model.gguf", total_bytes=200))
    operation.add_layer(LayerProgress("b", name="LICENSE", total_bytes=100))
    return operation


async def _drain(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


# --- what a watcher sees ---


async def test_the_first_event_is_a_full_snapshot() -> None:
    operation = _operation()
    operation.update_layer("a", status=LayerStatus.TRANSFERRING, completed_bytes=50)
    event = await anext(operation.watch())
    assert event.operation_id == "op1"
    assert (event.kind, event.state, event.phase) == (
        Kind.PULL_MODEL,
        State.RUNNING,
        Phase.DOWNLOADING,
    )
    assert event.model == MODEL
    assert event.message == "downloading"
    assert [(layer.key, layer.completed_bytes) for layer in event.layers] == [("a", 50), ("b", 0)]
    assert (event.total_bytes, event.completed_bytes) == (300, 50)
    assert event.result is None and event.error is None


async def test_a_snapshot_of_a_new_operation_has_no_layers() -> None:
    operation = Operation(id="op1", kind=Kind.PUSH_MODEL, model=MODEL)
    event = await anext(operation.watch())
    assert (event.state, event.phase, event.layers) == (State.RUNNING, Phase.QUEUED, [])


async def test_later_events_carry_only_the_layers_changed_since() -> None:
    operation = _operation()
    watcher = operation.watch()
    await anext(watcher)
    operation.update_layer("b", status=LayerStatus.EXISTS, completed_bytes=100)
    event = await anext(watcher)
    assert [(layer.key, layer.status) for layer in event.layers] == [("b", LayerStatus.EXISTS)]
    assert event.completed_bytes == 100

    operation.add_layer(LayerProgress("c", name="template.jinja", total_bytes=10))
    operation.update_layer("a", completed_bytes=20)
    event = await anext(watcher)
    assert sorted(layer.key for layer in event.layers) == ["a", "c"]
    assert (event.total_bytes, event.completed_bytes) == (310, 120)

    operation.set_phase(Phase.VERIFYING, "verifying")
    event = await anext(watcher)
    assert (event.phase, event.message, event.layers) == (Phase.VERIFYING, "verifying", [])


async def test_a_slow_watcher_gets_one_event_for_many_changes() -> None:
    operation = _operation()
    watcher = operation.watch()
    await anext(watcher)
    for done in range(10, 210, 10):
        operation.update_layer("a", status=LayerStatus.TRANSFERRING, completed_bytes=done)
    operation.update_layer("b", completed_bytes=100)
    event = await anext(watcher)
    assert [(layer.key, layer.completed_bytes) for layer in event.layers] == [
        ("a", 200),
        ("b", 100),
    ]
    assert event.completed_bytes == 300
    operation.succeed(RESULT, "Pulled")
    # Nothing else queued up behind the coalesced event: the next one is the last.
    assert [e.state for e in await _drain(watcher)] == [State.SUCCEEDED]


async def test_watchers_each_get_their_own_changes() -> None:
    operation = _operation()
    fast, slow = operation.watch(), operation.watch()
    await anext(fast)
    await anext(slow)
    operation.update_layer("a", completed_bytes=1)
    assert [layer.key for layer in (await anext(fast)).layers] == ["a"]
    operation.update_layer("b", completed_bytes=2)
    assert [layer.key for layer in (await anext(fast)).layers] == ["b"]
    assert [layer.key for layer in (await anext(slow)).layers] == ["a", "b"]


async def test_the_last_event_is_the_success_even_when_it_happens_during_the_yield() -> None:
    # The operation ends while the watcher is suspended at its `yield` (the client is
    # still sending the previous event): the watcher must still report the end.
    operation = _operation()
    watcher = operation.watch()
    first = await anext(watcher)
    assert first.state is State.RUNNING
    operation.update_layer("a", status=LayerStatus.DONE, completed_bytes=200)
    operation.succeed(RESULT, "Pulled ai/smollm2:latest")
    rest = await _drain(watcher)
    assert len(rest) == 1
    [last] = rest
    assert last.state is State.SUCCEEDED
    assert last.phase is Phase.DONE
    assert last.result == RESULT
    assert last.message == "Pulled ai/smollm2:latest"
    assert [layer.key for layer in last.layers] == ["a"]


async def test_the_last_event_is_the_success_when_the_watcher_was_waiting() -> None:
    operation = _operation()
    watcher = operation.watch()
    await anext(watcher)
    waiting = asyncio.ensure_future(_drain(watcher))
    await asyncio.sleep(0)  # let the watcher reach its wait for a change
    assert not waiting.done()
    operation.succeed(RESULT, "Pulled")
    events = await waiting
    assert [e.state for e in events] == [State.SUCCEEDED]
    assert events[-1].result == RESULT


async def test_a_failed_operation_ends_with_its_error() -> None:
    operation = _operation()
    watcher = operation.watch()
    await anext(watcher)
    error = Unavailable("registry unreachable", reason="REGISTRY_UNAVAILABLE")
    operation.fail(error)
    events = await _drain(watcher)
    assert [e.state for e in events] == [State.FAILED]
    assert events[-1].error is error
    assert events[-1].message == "registry unreachable"
    assert events[-1].result is None


async def test_a_cancelled_operation_ends_cancelled() -> None:
    operation = _operation()
    operation.fail(BerthError("stopped"), cancelled=True)
    [event] = await _drain(operation.watch())
    assert event.state is State.CANCELLED
    assert event.error is not None


async def test_a_watcher_that_starts_after_the_end_gets_one_final_event() -> None:
    operation = _operation()
    operation.update_layer("a", completed_bytes=200)
    operation.succeed(RESULT, "Pulled")
    events = await _drain(operation.watch())
    assert len(events) == 1
    assert events[0].state is State.SUCCEEDED
    assert events[0].result == RESULT
    assert [layer.key for layer in events[0].layers] == ["a", "b"]
    assert operation.end_time is not None


# --- the operations under way ---


class _Work:
    """Work the test finishes (or fails) when it wants, counting how often it ran."""

    def __init__(self, result: ModelResult = RESULT) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.runs = 0
        self.result = result
        self.error: Exception | None = None

    async def __call__(self, operation: Operation) -> ModelResult:
        self.runs += 1
        self.started.set()
        operation.set_phase(Phase.DOWNLOADING, "downloading")
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def _finished(operation: Operation) -> Event:
    events = await _drain(operation.watch())
    return events[-1]


async def test_a_started_operation_runs_and_succeeds() -> None:
    operations = Operations()
    work = _Work()
    operation = operations.start(Kind.PULL_MODEL, MODEL, work)
    assert operation.state is State.RUNNING
    await work.started.wait()
    work.release.set()
    last = await _finished(operation)
    assert last.state is State.SUCCEEDED
    assert last.result == RESULT
    assert last.message == f"Pulled {MODEL}"
    assert operations.get(operation.id) is operation


async def test_the_same_join_key_joins_the_running_operation() -> None:
    operations = Operations()
    work = _Work()
    first = operations.start(Kind.PULL_MODEL, MODEL, work, join_key="pull ai/smollm2:latest")
    second = operations.start(Kind.PULL_MODEL, MODEL, work, join_key="pull ai/smollm2:latest")
    other = operations.start(Kind.PULL_MODEL, MODEL, work, join_key="pull ai/other:latest")
    assert second is first
    assert other is not first
    work.release.set()
    await _finished(first)
    await _finished(other)
    assert work.runs == 2


async def test_without_a_join_key_every_start_is_new() -> None:
    operations = Operations()
    work = _Work()
    first = operations.start(Kind.PUSH_MODEL, MODEL, work)
    second = operations.start(Kind.PUSH_MODEL, MODEL, work)
    assert second is not first
    work.release.set()
    await _finished(first)
    await _finished(second)


async def test_after_the_end_the_same_key_starts_a_new_operation() -> None:
    operations = Operations()
    work = _Work()
    first = operations.start(Kind.PULL_MODEL, MODEL, work, join_key="k")
    work.release.set()
    await _finished(first)
    second = operations.start(Kind.PULL_MODEL, MODEL, work, join_key="k")
    assert second is not first
    assert (await _finished(second)).state is State.SUCCEEDED
    assert work.runs == 2


async def test_a_failed_operation_frees_its_join_key() -> None:
    operations = Operations()
    work = _Work()
    work.error = Unavailable("registry unreachable")
    first = operations.start(Kind.PULL_MODEL, MODEL, work, join_key="k")
    work.release.set()
    last = await _finished(first)
    assert last.state is State.FAILED
    assert last.error is work.error
    assert operations.start(Kind.PULL_MODEL, MODEL, _Work(), join_key="k") is not first


async def test_an_unexpected_exception_fails_without_showing_its_text() -> None:
    operations = Operations()
    work = _Work()
    work.error = RuntimeError("token=s3cr3t")
    operation = operations.start(Kind.PULL_MODEL, MODEL, work)
    work.release.set()
    last = await _finished(operation)
    assert last.state is State.FAILED
    assert last.error is not None
    assert last.error.code is Code.INTERNAL
    assert "s3cr3t" not in last.error.message
    assert "s3cr3t" not in last.message


async def test_cancel_ends_the_operation_cancelled() -> None:
    operations = Operations()
    work = _Work()
    operation = operations.start(Kind.PULL_MODEL, MODEL, work, join_key="k")
    await work.started.wait()
    returned = await operations.cancel(operation.id)
    assert returned is operation
    assert operation.state is State.CANCELLED
    assert operation.phase is Phase.DONE
    assert operation.error is not None
    assert operation.error.code is Code.CANCELLED
    assert operation.error.reason == "CANCELLED"
    last = await _finished(operation)
    assert last.state is State.CANCELLED
    assert last.error is operation.error
    # The key is free again: a new pull starts instead of joining the cancelled one.
    assert operations.start(Kind.PULL_MODEL, MODEL, _Work(), join_key="k") is not operation


async def test_cancel_right_after_start_ends_the_operation_cancelled() -> None:
    # The work has not had its first turn yet when the cancel comes.
    operations = Operations()
    operation = operations.start(Kind.PULL_MODEL, MODEL, _Work(), join_key="k")
    await operations.cancel(operation.id)
    assert operation.state is State.CANCELLED
    assert operation.error is not None
    assert operation.error.code is Code.CANCELLED
    assert operations.start(Kind.PULL_MODEL, MODEL, _Work(), join_key="k") is not operation


async def test_cancel_of_a_finished_operation_changes_nothing() -> None:
    operations = Operations()
    work = _Work()
    operation = operations.start(Kind.PULL_MODEL, MODEL, work)
    work.release.set()
    await _finished(operation)
    await operations.cancel(operation.id)
    assert operation.state is State.SUCCEEDED
    assert operation.error is None


async def test_close_cancels_everything_under_way() -> None:
    operations = Operations()
    work = _Work()
    first = operations.start(Kind.PULL_MODEL, MODEL, work)
    second = operations.start(Kind.PUSH_MODEL, MODEL, work)
    await work.started.wait()
    await operations.close()
    assert (first.state, second.state) == (State.CANCELLED, State.CANCELLED)


async def test_an_unknown_operation_is_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        Operations().get("nope")
    assert caught.value.reason == "OPERATION_NOT_FOUND"
    assert caught.value.metadata == {"operation_id": "nope"}
    with pytest.raises(NotFound):
        await Operations().cancel("nope")


async def test_list_shows_the_newest_first_and_filters() -> None:
    operations = Operations()
    done_work, running_work = _Work(), _Work()
    done = operations.start(Kind.PULL_MODEL, MODEL, done_work)
    done_work.release.set()
    await _finished(done)
    pull = operations.start(Kind.PULL_MODEL, MODEL, running_work)
    await running_work.started.wait()
    push = operations.start(Kind.PUSH_MODEL, MODEL, running_work)
    package = operations.start(Kind.PACKAGE_MODEL, MODEL, running_work)
    try:
        assert operations.list(include_finished=True, kind=None) == [package, push, pull, done]
        assert operations.list(include_finished=False, kind=None) == [package, push, pull]
        assert operations.list(include_finished=True, kind=Kind.PULL_MODEL) == [pull, done]
        assert operations.list(include_finished=False, kind=Kind.PULL_MODEL) == [pull]
        assert operations.list(include_finished=False, kind=Kind.PUSH_MODEL) == [push]
    finally:
        await operations.close()


async def test_only_the_newest_finished_operations_are_kept() -> None:
    operations = Operations(retention_s=3600, keep=1)
    work = _Work()
    work.release.set()
    older = operations.start(Kind.PULL_MODEL, MODEL, work)
    await _finished(older)
    newer = operations.start(Kind.PULL_MODEL, MODEL, work)
    await _finished(newer)
    running_work = _Work()
    running = operations.start(Kind.PUSH_MODEL, MODEL, running_work)
    try:
        assert operations.list(include_finished=True, kind=None) == [running, newer]
        with pytest.raises(NotFound):
            operations.get(older.id)
    finally:
        await operations.close()


async def test_finished_operations_are_forgotten_after_the_retention() -> None:
    operations = Operations(retention_s=0.001, keep=1)
    work = _Work()
    work.release.set()
    finished = operations.start(Kind.PULL_MODEL, MODEL, work)
    await _finished(finished)
    running_work = _Work()
    running = operations.start(Kind.PUSH_MODEL, MODEL, running_work)
    # Time passes: both began long ago, one of them ended long ago.
    assert finished.end_time is not None
    finished.end_time -= timedelta(seconds=5)
    finished.start_time -= timedelta(seconds=6)
    running.start_time -= timedelta(seconds=6)
    try:
        assert operations.list(include_finished=True, kind=None) == [running]
        with pytest.raises(NotFound):
            operations.get(finished.id)
        assert operations.get(running.id) is running
    finally:
        await operations.close()
