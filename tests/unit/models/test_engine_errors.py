"""An engine's HTTP error as berth's error: the engine's words, and its code as the reason."""

from __future__ import annotations

import json

from berth.common.errors import Code
from berth.models.engines.client import engine_error


def openai_error(message: str, code: object = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    ).encode()


def test_a_refused_request_keeps_the_engines_code_and_message() -> None:
    error = engine_error(
        400, openai_error("Requested tokens exceed context", "context_length_exceeded")
    )

    assert error.code == Code.INVALID_ARGUMENT
    assert error.reason == "CONTEXT_LENGTH_EXCEEDED"
    assert error.message == "Requested tokens exceed context"


def test_a_refusal_without_a_usable_code_is_request_refused() -> None:
    assert engine_error(400, openai_error("bad", None)).reason == "REQUEST_REFUSED"
    assert engine_error(422, b'{"detail": "field required"}').reason == "REQUEST_REFUSED"
    assert engine_error(400, openai_error("bad", "Not A Code!")).reason == "REQUEST_REFUSED"


def test_an_engine_failure_is_unavailable() -> None:
    error = engine_error(500, b"Internal Server Error")

    assert error.code == Code.UNAVAILABLE and error.reason == "ENGINE_FAILED"
    assert error.message == "Internal Server Error"
