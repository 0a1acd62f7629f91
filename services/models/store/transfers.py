"""What pull, push and package share: per-blob locks, retries and progress reporting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from berth.common.errors import Unavailable
from berth.models.domain.artifact import Descriptor
from berth.models.domain.operations import LayerProgress, LayerStatus, Operation

T = TypeVar("T")

# Blobs transferred at once by one operation (Docker pulls three layers at a time).
PARALLEL_BLOBS = 3
# Tries of a download whose connection is cut; each one resumes where the last stopped.
ATTEMPTS = 4
RETRY_DELAY_S = 0.5


class BlobLocks:
    """One lock per digest, so two operations never fetch or write the same blob at once."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, digest: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(digest, asyncio.Lock())
        self._users[digest] = self._users.get(digest, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[digest] -= 1
            if not self._users[digest]:
                del self._users[digest], self._locks[digest]


async def resuming(download: Callable[[], Awaitable[T]]) -> T:
    """Run `download`, again (it resumes) while the network cuts it, a few times at most."""
    for attempt in range(1, ATTEMPTS):
        try:
            return await download()
        except Unavailable:
            await asyncio.sleep(RETRY_DELAY_S * attempt)
    return await download()


def counted(count: int, noun: str) -> str:
    """ "1 layer", "3 layers"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def track(operation: Operation, blob: Descriptor, present: bool) -> None:
    """Show a blob in the operation's progress: already there, or waiting."""
    operation.add_layer(
        LayerProgress(
            key=blob.digest,
            digest=blob.digest,
            media_type=blob.media_type,
            name=blob.title,
            status=LayerStatus.EXISTS if present else LayerStatus.WAITING,
            total_bytes=blob.size,
            completed_bytes=blob.size if present else 0,
        )
    )


def progress(operation: Operation, key: str) -> Callable[[int], None]:
    """A callback for byte counts of one layer, from the event loop's thread."""

    def report(done: int) -> None:
        operation.update_layer(key, status=LayerStatus.TRANSFERRING, completed_bytes=done)

    return report


def threadsafe_progress(operation: Operation, key: str) -> Callable[[int], None]:
    """The same, for callbacks that arrive from a worker thread."""
    loop = asyncio.get_running_loop()
    report = progress(operation, key)
    return lambda done: loop.call_soon_threadsafe(report, done)


async def in_parallel(jobs: list[Callable[[], object]], limit: int = PARALLEL_BLOBS) -> None:
    """Run coroutine factories, at most `limit` at a time; the first failure cancels the rest."""
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Callable[[], object]) -> None:
        async with semaphore:
            await job()  # type: ignore[misc]

    try:
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(run(job))
    except ExceptionGroup as failures:  # report the first failure as itself
        raise _first(failures) from None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
