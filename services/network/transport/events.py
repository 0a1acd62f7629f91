"""berth.network.v1.EventService."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc.aio

from berth.api.network.v1 import event_service_pb2 as pb
from berth.api.network.v1 import event_service_pb2_grpc as pb_grpc
from berth.common.server import Lifecycle
from berth.network.domain.events import Event, EventFilter, EventLog, check_window


class EventServicer(pb_grpc.EventServiceServicer):
    def __init__(self, events: EventLog, lifecycle: Lifecycle) -> None:
        self.events = events
        self.lifecycle = lifecycle

    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        since = request.since.ToDatetime(UTC) if request.HasField("since") else None
        until = request.until.ToDatetime(UTC) if request.HasField("until") else None
        check_window(since, until)
        wanted = EventFilter.parse((f.key, f.value) for f in request.filters)
        subscription = self.events.subscribe()
        try:
            if since is not None:
                for event in self.events.recent():
                    in_window = since <= event.time and (until is None or event.time <= until)
                    if in_window and wanted.matches(event):
                        yield _to_proto(event)
            async for event in subscription.follow(self.lifecycle.stopping, _loop_time(until)):
                if wanted.matches(event):
                    yield _to_proto(event)
        finally:
            self.events.unsubscribe(subscription)


def _loop_time(moment: datetime | None) -> float | None:
    """A wall-clock moment as event-loop time, for deadlines."""
    if moment is None:
        return None
    return asyncio.get_running_loop().time() + (moment - datetime.now(UTC)).total_seconds()


def _to_proto(event: Event) -> pb.StreamEventsResponse:
    message = pb.Event(
        type=event.type,
        action=event.action,
        actor_id=event.actor_id,
        attributes=dict(event.attributes),
        scope=event.scope,
    )
    message.time.FromDatetime(event.time)
    return pb.StreamEventsResponse(event=message)
