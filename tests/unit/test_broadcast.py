"""berth.common.broadcast: history plus live subscribers."""

from __future__ import annotations

import asyncio

import pytest

from berth.common.broadcast import Broadcast, Subscription
from berth.common.errors import ResourceExhausted

TIMEOUT = 2.0  # generous upper bound; every wait below normally ends at once


async def drain(sub: Subscription[int], count: int) -> list[int | None]:
    return [await asyncio.wait_for(sub.next(), TIMEOUT) for _ in range(count)]


async def collect(
    sub: Subscription[int], stopping: asyncio.Event, deadline: float | None = None
) -> list[int]:
    return [item async for item in sub.follow(stopping, deadline)]


async def test_subscriber_gets_items_published_after_subscribing_in_order() -> None:
    broadcast: Broadcast[int] = Broadcast()
    broadcast.publish(-1)
    sub = broadcast.subscribe()
    for i in range(5):
        broadcast.publish(i)

    assert await drain(sub, 5) == [0, 1, 2, 3, 4]


async def test_every_subscriber_gets_every_item() -> None:
    broadcast: Broadcast[int] = Broadcast()
    first = broadcast.subscribe()
    broadcast.publish(1)
    second = broadcast.subscribe()
    broadcast.publish(2)
    broadcast.close()

    assert await drain(first, 3) == [1, 2, None]
    assert await drain(second, 2) == [2, None]


async def test_unsubscribed_gets_nothing_more() -> None:
    broadcast: Broadcast[int] = Broadcast()
    sub = broadcast.subscribe()
    broadcast.publish(1)
    broadcast.unsubscribe(sub)
    broadcast.publish(2)

    assert await drain(sub, 1) == [1]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.next(), 0.05)


def test_recent_keeps_the_last_keep_items() -> None:
    broadcast: Broadcast[int] = Broadcast(keep=3)
    assert broadcast.recent() == []
    for i in range(7):
        broadcast.publish(i)

    assert broadcast.recent() == [4, 5, 6]


async def test_slow_subscriber_is_cut_off_with_resource_exhausted() -> None:
    broadcast: Broadcast[int] = Broadcast(queue_size=3)
    slow = broadcast.subscribe()
    for i in range(5):
        broadcast.publish(i)

    # What was queued before falling behind is still delivered, then the cut-off.
    assert await drain(slow, 3) == [0, 1, 2]
    with pytest.raises(ResourceExhausted) as caught:
        await asyncio.wait_for(slow.next(), TIMEOUT)
    assert caught.value.reason == "SUBSCRIBER_TOO_SLOW"


async def test_cut_off_subscriber_does_not_hurt_others() -> None:
    broadcast: Broadcast[int] = Broadcast(queue_size=2)
    slow = broadcast.subscribe()
    broadcast.publish(0)
    broadcast.publish(1)
    fast = broadcast.subscribe()
    broadcast.publish(2)  # slow is now too far behind
    assert await drain(fast, 1) == [2]
    broadcast.publish(3)
    broadcast.publish(4)

    assert await drain(fast, 2) == [3, 4]
    assert await drain(slow, 2) == [0, 1]
    with pytest.raises(ResourceExhausted):
        await asyncio.wait_for(slow.next(), TIMEOUT)


async def test_subscriber_exactly_queue_size_behind_is_not_cut_off() -> None:
    broadcast: Broadcast[int] = Broadcast(queue_size=3)
    sub = broadcast.subscribe()
    for i in range(3):
        broadcast.publish(i)
    broadcast.close()

    assert await drain(sub, 4) == [0, 1, 2, None]


async def test_close_ends_follow() -> None:
    broadcast: Broadcast[int] = Broadcast()
    sub = broadcast.subscribe()
    follower = asyncio.create_task(collect(sub, asyncio.Event()))
    broadcast.publish(1)
    broadcast.publish(2)
    broadcast.close()

    assert await asyncio.wait_for(follower, TIMEOUT) == [1, 2]


async def test_close_ends_a_follow_that_is_waiting() -> None:
    broadcast: Broadcast[int] = Broadcast()
    sub = broadcast.subscribe()
    got_first = asyncio.Event()
    seen: list[int] = []

    async def follow() -> None:
        async for item in sub.follow(asyncio.Event()):
            seen.append(item)
            got_first.set()

    follower = asyncio.create_task(follow())
    broadcast.publish(1)
    await asyncio.wait_for(got_first.wait(), TIMEOUT)  # now waiting for the next item
    broadcast.close()

    await asyncio.wait_for(follower, TIMEOUT)
    assert seen == [1]


async def test_subscribing_after_close_ends_at_once() -> None:
    broadcast: Broadcast[int] = Broadcast()
    broadcast.publish(1)
    broadcast.close()
    sub = broadcast.subscribe()

    assert await asyncio.wait_for(sub.next(), TIMEOUT) is None
    assert await asyncio.wait_for(collect(broadcast.subscribe(), asyncio.Event()), TIMEOUT) == []


async def test_follow_stops_at_its_deadline() -> None:
    broadcast: Broadcast[int] = Broadcast()
    sub = broadcast.subscribe()
    loop = asyncio.get_running_loop()
    start = loop.time()

    items = await asyncio.wait_for(collect(sub, asyncio.Event(), start + 0.05), TIMEOUT)

    assert items == []
    assert loop.time() - start >= 0.04


async def test_follow_with_past_deadline_yields_nothing() -> None:
    broadcast: Broadcast[int] = Broadcast()
    sub = broadcast.subscribe()
    broadcast.publish(1)
    deadline = asyncio.get_running_loop().time() - 1

    assert await asyncio.wait_for(collect(sub, asyncio.Event(), deadline), TIMEOUT) == []


async def test_follow_delivers_items_before_the_deadline() -> None:
    broadcast: Broadcast[int] = Broadcast()
    sub = broadcast.subscribe()
    broadcast.publish(1)
    broadcast.publish(2)
    deadline = asyncio.get_running_loop().time() + 0.05

    assert await asyncio.wait_for(collect(sub, asyncio.Event(), deadline), TIMEOUT) == [1, 2]


async def test_follow_stops_when_stopping_is_set() -> None:
    broadcast: Broadcast[int] = Broadcast()
    sub = broadcast.subscribe()
    stopping = asyncio.Event()
    got_first = asyncio.Event()
    seen: list[int] = []

    async def follow() -> None:
        async for item in sub.follow(stopping):
            seen.append(item)
            got_first.set()

    follower = asyncio.create_task(follow())
    broadcast.publish(1)
    await asyncio.wait_for(got_first.wait(), TIMEOUT)
    stopping.set()

    await asyncio.wait_for(follower, TIMEOUT)
    assert seen == [1]


async def test_follow_with_stopping_already_set_yields_nothing() -> None:
    broadcast: Broadcast[int] = Broadcast()
    sub = broadcast.subscribe()
    broadcast.publish(1)
    stopping = asyncio.Event()
    stopping.set()

    assert await asyncio.wait_for(collect(sub, stopping), TIMEOUT) == []


async def test_publish_from_another_thread_after_bind_loop_is_delivered() -> None:
    broadcast: Broadcast[int] = Broadcast()
    broadcast.bind_loop()
    sub = broadcast.subscribe()

    def publisher() -> None:
        for i in range(100):
            broadcast.publish(i)

    await asyncio.to_thread(publisher)

    assert await drain(sub, 100) == list(range(100))
    assert broadcast.recent()[-1] == 99


async def test_publish_on_the_loop_thread_after_bind_loop_is_immediate() -> None:
    broadcast: Broadcast[int] = Broadcast()
    broadcast.bind_loop()
    sub = broadcast.subscribe()
    broadcast.publish(7)

    assert broadcast.recent() == [7]
    assert await drain(sub, 1) == [7]
