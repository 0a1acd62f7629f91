"""The operations under way and recently finished: start, join, watch, cancel.

Work runs as a task of its own, not in the RPC that asked for it, so it goes on when the
client disconnects. A pull of a reference that is already being pulled joins that
operation instead of downloading again. Finished operations are kept for `retention_s`
(and at most `keep` of them) so a client that comes back late still learns the outcome.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog

from berth.common.errors import BerthError, Code, NotFound
from berth.models.domain.operations import Kind, Operation, Result

log = structlog.get_logger("berth.models.operations")

Work = Callable[[Operation], Awaitable[Result]]


class OperationCancelled(BerthError):
    code = Code.CANCELLED
    default_reason = "CANCELLED"

    def __init__(self, operation: Operation) -> None:
        stored = "" if operation.kind is Kind.BENCH_MODEL else "; nothing was stored"
        super().__init__(f"operation {operation.id} was cancelled{stored}")


class Operations:
    def __init__(self, retention_s: float = 3600.0, keep: int = 100) -> None:
        self._operations: dict[str, Operation] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._joinable: dict[str, str] = {}
        self._retention = timedelta(seconds=retention_s)
        self._keep = keep

    def start(self, kind: Kind, model: str, work: Work, join_key: str | None = None) -> Operation:
        """Run `work` as a new operation, or return the running one with the same key."""
        self._forget_old()
        existing = self._operations.get(self._joinable.get(join_key or "", ""))
        if existing is not None and not existing.finished:
            return existing
        operation = Operation(id=uuid.uuid4().hex, kind=kind, model=model)
        self._operations[operation.id] = operation
        if join_key:
            self._joinable[join_key] = operation.id
        task = asyncio.create_task(self._run(operation, work))
        task.add_done_callback(lambda _: self._settle(operation, join_key))
        self._tasks[operation.id] = task
        return operation

    async def _run(self, operation: Operation, work: Work) -> None:
        try:
            result = await work(operation)
            operation.succeed(result, f"{kind_verb(operation.kind)} {result.model}")
        except BerthError as error:
            operation.fail(error)
        except Exception as error:
            log.exception("operation_failed", operation=operation.id, kind=operation.kind.value)
            operation.fail(BerthError(f"internal error: {type(error).__name__}"))

    def _settle(self, operation: Operation, join_key: str | None) -> None:
        """After the task, however it ended (cancelled before it even started, too)."""
        if not operation.finished:
            operation.fail(OperationCancelled(operation), cancelled=True)
        self._tasks.pop(operation.id, None)
        if join_key and self._joinable.get(join_key) == operation.id:
            del self._joinable[join_key]
        log.info(
            "operation_done",
            operation=operation.id,
            kind=operation.kind.value,
            model=operation.model,
            state=operation.state.value,
            reason=operation.error.reason if operation.error else None,
        )

    def get(self, operation_id: str) -> Operation:
        operation = self._operations.get(operation_id)
        if operation is None:
            raise NotFound(
                f"operation {operation_id!r} not found (finished operations are forgotten"
                " after a while)",
                reason="OPERATION_NOT_FOUND",
                metadata={"operation_id": operation_id},
            )
        return operation

    def list(self, include_finished: bool, kind: Kind | None) -> list[Operation]:
        self._forget_old()
        found = [
            op
            for op in self._operations.values()
            if (include_finished or not op.finished) and (kind is None or op.kind is kind)
        ]
        return sorted(found, key=lambda op: op.start_time, reverse=True)

    async def cancel(self, operation_id: str) -> Operation:
        operation = self.get(operation_id)
        task = self._tasks.get(operation_id)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        return operation

    async def close(self) -> None:
        """Cancel everything under way (the daemon is stopping)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _forget_old(self) -> None:
        now = datetime.now(UTC)
        finished = sorted(
            (op for op in self._operations.values() if op.end_time is not None),
            key=lambda op: op.end_time or now,
        )
        excess = len(finished) - self._keep
        for index, op in enumerate(finished):
            if index < excess or now - (op.end_time or now) > self._retention:
                del self._operations[op.id]


def kind_verb(kind: Kind) -> str:
    return {
        Kind.PULL_MODEL: "Pulled",
        Kind.PUSH_MODEL: "Pushed",
        Kind.PACKAGE_MODEL: "Packaged",
        Kind.BENCH_MODEL: "Benchmarked",
    }[kind]
