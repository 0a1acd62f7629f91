"""The status code an RPC is logged and counted with, however its handler ended."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from berth.common.interceptors import final_code


class Context:
    def __init__(self, code: Any = None, remaining: float | None = None) -> None:
        self._code = code
        self._remaining = remaining

    def code(self) -> Any:
        return self._code

    def time_remaining(self) -> float | None:
        return self._remaining


def test_a_client_going_away_is_cancelled_whether_cancelled_or_closed_at_a_yield() -> None:
    context: Any = Context()
    assert final_code(context, asyncio.CancelledError()) == grpc.StatusCode.CANCELLED
    assert final_code(context, GeneratorExit()) == grpc.StatusCode.CANCELLED


def test_a_passed_deadline_and_other_endings() -> None:
    expired: Any = Context(remaining=0.0)
    refused: Any = Context(code=grpc.StatusCode.NOT_FOUND)
    plain: Any = Context()
    assert final_code(expired, asyncio.CancelledError()) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert final_code(refused, None) == grpc.StatusCode.NOT_FOUND
    assert final_code(plain, RuntimeError()) == grpc.StatusCode.UNKNOWN
    assert final_code(plain, None) == grpc.StatusCode.OK
