"""Errors the domain layer raises. Plain Python: no grpc here.

The transport edge (berth.common.status) maps each class to a canonical gRPC code
with a google.rpc.Status carrying ErrorInfo and, for invalid input, BadRequest.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class Code(enum.Enum):
    """The canonical error kinds berth uses (a subset of google.rpc.Code)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    DATA_LOSS = "DATA_LOSS"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: its path in the request (e.g. `ipam.config[0].subnet`) and why."""

    field: str
    description: str


class BerthError(Exception):
    """Base of every error meant for the caller.

    `reason` is an UPPER_SNAKE identifier clients can switch on; `metadata` names the
    offending values. The message must never contain a secret.
    """

    code: Code = Code.INTERNAL
    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(BerthError):
    code = Code.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        *,
        message: str | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid request: {summary}", reason=reason, metadata=metadata)


class NotFound(BerthError):
    code = Code.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(BerthError):
    code = Code.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(BerthError):
    code = Code.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class PermissionDenied(BerthError):
    code = Code.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(BerthError):
    code = Code.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(BerthError):
    code = Code.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(BerthError):
    code = Code.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(BerthError):
    code = Code.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class NotYetAvailable(BerthError):
    """A method whose capability berth has not built yet."""

    code = Code.UNIMPLEMENTED
    default_reason = "NOT_YET_AVAILABLE"

    def __init__(self, method: str, capability: str) -> None:
        super().__init__(
            f"{method} is not available yet: it comes with {capability}",
            metadata={"method": method, "capability": capability},
        )
        self.capability = capability
