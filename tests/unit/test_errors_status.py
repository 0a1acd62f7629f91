"""berth.common.errors and berth.common.status: domain errors as rich gRPC statuses."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from berth.common import errors
from berth.common.errors import (
    BerthError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    NotYetAvailable,
)
from berth.common.status import abort, bad_request, to_status

DETAILS_KEY = "grpc-status-details-bin"


def decode(status: grpc.Status) -> status_pb2.Status:
    """The google.rpc.Status a client would read from the trailing metadata."""
    trailers = dict(status.trailing_metadata)
    assert list(trailers) == [DETAILS_KEY]
    return status_pb2.Status.FromString(trailers[DETAILS_KEY])


def unpack_all(rich: status_pb2.Status) -> list[object]:
    out: list[object] = []
    for detail in rich.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                out.append(message)
                break
        else:
            pytest.fail(f"unexpected detail type {detail.type_url}")
    return out


class FakeCall:
    """What grpc_status.rpc_status.from_call reads on a client."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._status.trailing_metadata


def make(cls: type[BerthError]) -> BerthError:
    if cls is InvalidArgument:
        return InvalidArgument([FieldViolation("name", "must not be empty")])
    if cls is NotYetAvailable:
        return NotYetAvailable("berth.x.v1.S/M", "the x capability")
    return cls("something went wrong")


@pytest.mark.parametrize(
    ("cls", "grpc_code"),
    [
        (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
        (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
        (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
        (errors.NotYetAvailable, grpc.StatusCode.UNIMPLEMENTED),
        (errors.BerthError, grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_maps_to_its_grpc_code(cls: type[BerthError], grpc_code) -> None:
    error = make(cls)
    status = to_status(error, "network")

    assert status.code is grpc_code
    rich = decode(status)
    assert rich.code == grpc_code.value[0]
    assert rich.message == error.message == status.details


def test_every_code_enum_member_is_a_google_rpc_code() -> None:
    for code in errors.Code:
        assert code_pb2.Code.Value(code.value) > 0


def test_error_info_carries_reason_domain_and_metadata() -> None:
    error = NotFound(
        "no network named 'web'", reason="NETWORK_NOT_FOUND", metadata={"network": "web"}
    )

    rich = decode(to_status(error, "network"))

    assert rich.code == code_pb2.NOT_FOUND
    assert rich.message == "no network named 'web'"
    [info] = unpack_all(rich)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "NETWORK_NOT_FOUND"
    assert info.domain == "network.berth"
    assert dict(info.metadata) == {"network": "web"}


@pytest.mark.parametrize("domain", ["network", "models", "mcp", "gateway"])
def test_domain_is_suffixed_with_berth(domain: str) -> None:
    [info] = unpack_all(decode(to_status(NotFound("gone"), domain)))
    assert info.domain == f"{domain}.berth"


def test_default_reason_is_the_code_name_when_none_given() -> None:
    [info] = unpack_all(decode(to_status(NotFound("gone"), "models")))
    assert info.reason == "NOT_FOUND"
    assert dict(info.metadata) == {}


def test_invalid_argument_adds_bad_request_with_every_violation_in_order() -> None:
    error = InvalidArgument(
        [
            FieldViolation("ipam.config[0].subnet", "not a CIDR"),
            FieldViolation("name", "must not be empty"),
        ],
        reason="BAD_NETWORK",
        metadata={"name": ""},
    )

    rich = decode(to_status(error, "network"))

    assert rich.code == code_pb2.INVALID_ARGUMENT
    info, request = unpack_all(rich)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "BAD_NETWORK"
    assert dict(info.metadata) == {"name": ""}
    assert isinstance(request, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in request.field_violations] == [
        ("ipam.config[0].subnet", "not a CIDR"),
        ("name", "must not be empty"),
    ]


def test_invalid_argument_message_summarises_violations_unless_given() -> None:
    summary = InvalidArgument([FieldViolation("a", "bad"), FieldViolation("b", "worse")])
    assert summary.message == "invalid request: a: bad; b: worse"
    assert summary.reason == "INVALID_ARGUMENT"

    custom = InvalidArgument([FieldViolation("a", "bad")], message="nope")
    assert custom.message == "nope"
    assert to_status(custom, "mcp").details == "nope"


def test_other_errors_carry_no_bad_request() -> None:
    rich = decode(to_status(errors.FailedPrecondition("busy"), "models"))
    assert [type(d) for d in unpack_all(rich)] == [error_details_pb2.ErrorInfo]


def test_not_yet_available_names_method_and_capability() -> None:
    error = NotYetAvailable("berth.network.v1.NetworkService/CreateNetwork", "bridge networks")

    assert "berth.network.v1.NetworkService/CreateNetwork" in error.message
    assert "bridge networks" in error.message
    [info] = unpack_all(decode(to_status(error, "network")))
    assert info.reason == "NOT_YET_AVAILABLE"
    assert dict(info.metadata) == {
        "method": "berth.network.v1.NetworkService/CreateNetwork",
        "capability": "bridge networks",
    }


def test_metadata_is_copied_from_the_callers_mapping() -> None:
    given = {"k": "v"}
    error = NotFound("x", metadata=given)
    given["k"] = "changed"
    assert error.metadata == {"k": "v"}


def test_client_side_from_call_reads_the_same_status() -> None:
    status = to_status(InvalidArgument([FieldViolation("tail", "must be zero or more")]), "models")

    rich = rpc_status.from_call(FakeCall(status))

    assert rich is not None
    assert rich.code == code_pb2.INVALID_ARGUMENT
    _, request = unpack_all(rich)
    assert request.field_violations[0].field == "tail"


def test_bad_request_helper_keeps_fields_and_descriptions() -> None:
    request = bad_request([FieldViolation("x", "y")])
    assert [(v.field, v.description) for v in request.field_violations] == [("x", "y")]


async def test_abort_passes_the_rich_status_to_the_context() -> None:
    seen: list[grpc.Status] = []

    class Context:
        async def abort_with_status(self, status: grpc.Status) -> None:
            seen.append(status)

    await abort(Context(), errors.Unavailable("daemon down", reason="BACKEND_DOWN"), "gateway")  # type: ignore[arg-type]

    [status] = seen
    assert status.code is grpc.StatusCode.UNAVAILABLE
    [info] = unpack_all(decode(status))
    assert (info.reason, info.domain) == ("BACKEND_DOWN", "gateway.berth")
