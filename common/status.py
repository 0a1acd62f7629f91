"""The one place where domain errors become gRPC statuses with rich details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from berth.common.errors import BerthError, FieldViolation, InvalidArgument


def to_status(error: BerthError, domain: str) -> grpc.Status:
    """A grpc.Status whose trailer carries google.rpc.Status{ErrorInfo[, BadRequest]}."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=f"{domain}.berth", metadata=error.metadata
    )
    details = [_pack(info)]
    if isinstance(error, InvalidArgument):
        details.append(_pack(bad_request(error.violations)))
    status = status_pb2.Status(
        code=code_pb2.Code.Value(error.code.value), message=error.message, details=details
    )
    return rpc_status.to_status(status)


def bad_request(violations: list[FieldViolation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )


async def abort(context: grpc.aio.ServicerContext, error: BerthError, domain: str) -> None:
    await context.abort_with_status(to_status(error, domain))


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
