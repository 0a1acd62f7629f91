"""berth.models.v1.OperationService: list, re-attach to and cancel long work."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio

from berth.api.models.v1 import operation_service_pb2 as pb
from berth.api.models.v1 import operation_service_pb2_grpc as pb_grpc
from berth.models.store.operations import Operations
from berth.models.transport import convert


class OperationServicer(pb_grpc.OperationServiceServicer):
    def __init__(self, operations: Operations) -> None:
        self.operations = operations

    async def ListOperations(
        self, request: pb.ListOperationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOperationsResponse:
        kind = convert.kind_of(request.kind)
        if request.kind and kind is None:  # a kind this daemon's store does not run
            return pb.ListOperationsResponse()
        found = self.operations.list(request.all, kind)
        return pb.ListOperationsResponse(operations=[convert.operation_message(o) for o in found])

    async def WatchOperation(
        self, request: pb.WatchOperationRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchOperationResponse]:
        operation = self.operations.get(request.operation_id)
        async for event in convert.operation_events(operation):
            yield pb.WatchOperationResponse(event=event)

    async def CancelOperation(
        self, request: pb.CancelOperationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelOperationResponse:
        operation = await self.operations.cancel(request.operation_id)
        return pb.CancelOperationResponse(operation=convert.operation_message(operation))
