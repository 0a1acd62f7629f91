"""Turning a failed call into a readable message and a non-zero exit."""

from __future__ import annotations

import sys
from typing import NoReturn

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user-facing failure detected by the CLI itself (bad flag value, missing file)."""


def describe_rpc_error(error: grpc.RpcError, host: str) -> str:
    """The lines to print for a failed call: the message, then any field violations."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    # An UNAVAILABLE with a reason came from a daemon that was reached (a backend or an MCP
    # server of berth's is down), not from the transport.
    if code == grpc.StatusCode.UNAVAILABLE and not _reasons(error):
        return f"cannot reach berth at {host}: {details}\nIs it running? Start it with `berth up`."
    lines = [details]
    for field, description in field_violations(error):
        if description not in details:  # the server's message may already say it
            lines.append(f"  {field}: {description}")
    return "\n".join(lines)


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    status = _status(error)
    found: list[tuple[str, str]] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.extend((v.field, v.description) for v in bad.field_violations)
    return found


def _reasons(error: grpc.RpcError) -> set[str]:
    status = _status(error)
    reasons = set()
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.add(info.reason)
    return reasons


def _status(error: grpc.RpcError):
    try:
        return rpc_status.from_call(error)  # type: ignore[arg-type]
    except (AttributeError, ValueError):
        return None


def fail(message: str) -> NoReturn:
    print(f"berth: {message}", file=sys.stderr)
    raise SystemExit(EXIT_FAILURE)
