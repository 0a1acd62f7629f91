"""berth.models.v1.RunnerService (logs now; the engine lifecycle comes with inference)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio

from berth.api.models.v1 import runner_service_pb2 as pb
from berth.api.models.v1 import runner_service_pb2_grpc as pb_grpc
from berth.common.server import Lifecycle
from berth.models.domain.runner_log import LogLine, RunnerLog, wanted


class RunnerServicer(pb_grpc.RunnerServiceServicer):
    def __init__(self, log: RunnerLog, lifecycle: Lifecycle) -> None:
        self.log = log
        self.lifecycle = lifecycle

    async def StreamLogs(
        self, request: pb.StreamLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamLogsResponse]:
        tail = request.tail if request.HasField("tail") else None
        subscription = self.log.subscribe() if request.follow else None
        try:
            for line in self.log.backlog(tail, request.no_engines):
                yield _to_proto(line)
            if subscription is None:
                return
            async for line in subscription.follow(self.lifecycle.stopping):
                if wanted(line, request.no_engines):
                    yield _to_proto(line)
        finally:
            if subscription is not None:
                self.log.unsubscribe(subscription)


def _to_proto(line: LogLine) -> pb.StreamLogsResponse:
    message = pb.StreamLogsResponse(source=line.source, line=line.line)
    message.time.FromDatetime(line.time)
    return message
