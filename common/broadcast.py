"""History plus live subscribers: the engine behind event and log streams.

Publishers call publish() (from any thread); each subscriber gets the items published
after it subscribed, in order. A subscriber that falls `queue_size` items behind is cut
off with ResourceExhausted rather than silently losing items. close() ends every
subscription, which is how follow streams finish when the daemon stops.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from berth.common.errors import ResourceExhausted

T = TypeVar("T")

_CLOSED = object()
_OVERFLOW = object()


class Subscription(Generic[T]):
    def __init__(self, queue_size: int) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size + 1)
        self._queue_size = queue_size

    def _offer(self, item: object) -> bool:
        """Queue an item; False once the subscriber is too far behind (it is then cut off)."""
        if self._queue.qsize() >= self._queue_size:
            self._queue.put_nowait(_OVERFLOW)
            return False
        self._queue.put_nowait(item)
        return True

    def _close(self) -> None:
        if not self._queue.full():
            self._queue.put_nowait(_CLOSED)

    async def next(self) -> T | None:
        """The next item, or None once the broadcast is closed."""
        item = await self._queue.get()
        if item is _OVERFLOW:
            raise ResourceExhausted(
                "the stream fell too far behind and was cut off", reason="SUBSCRIBER_TOO_SLOW"
            )
        return None if item is _CLOSED else item  # type: ignore[return-value]

    async def follow(
        self, stopping: asyncio.Event, deadline: float | None = None
    ) -> AsyncIterator[T]:
        """Items as they come, until the broadcast closes, `stopping` is set or the loop
        time reaches `deadline` (None: no deadline). A client leaving cancels it."""
        loop = asyncio.get_running_loop()
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while not stopping.is_set():
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return
                following = asyncio.ensure_future(self.next())
                done, _ = await asyncio.wait(
                    {following, stop}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if following not in done:
                    following.cancel()
                    return
                item = following.result()
                if item is None:
                    return
                yield item
        finally:
            stop.cancel()


class Broadcast(Generic[T]):
    def __init__(self, keep: int = 1000, queue_size: int = 10_000) -> None:
        self._history: deque[T] = deque(maxlen=keep)
        self._subscribers: set[Subscription[T]] = set()
        self._queue_size = queue_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = False

    def bind_loop(self) -> None:
        """Called on the event loop's thread: publishing from other threads goes through it."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def publish(self, item: T) -> None:
        if self._loop is None or self._loop_thread == threading.get_ident():
            self._deliver(item)
        else:
            self._loop.call_soon_threadsafe(self._deliver, item)

    def _deliver(self, item: T) -> None:
        self._history.append(item)
        for sub in list(self._subscribers):
            if not sub._offer(item):
                self._subscribers.discard(sub)

    def recent(self) -> list[T]:
        return list(self._history)

    def subscribe(self) -> Subscription[T]:
        sub: Subscription[T] = Subscription(self._queue_size)
        if self._closed:
            sub._close()
        else:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription[T]) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        self._closed = True
        for sub in self._subscribers:
            sub._close()
        self._subscribers.clear()
