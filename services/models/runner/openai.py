"""gRPC inference requests as OpenAI request bodies, and OpenAI answers back: what
InferenceService sends to an engine's OpenAI-compatible server. Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from berth.models.domain.engines import VLLM

ROLES = {1: "system", 2: "user", 3: "assistant"}


@dataclass(frozen=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: Sequence[str] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None


def sampling_fields(sampling: Sampling, backend: str) -> dict[str, Any]:
    """The OpenAI body fields for `sampling`; only what was set (absent: the model's default)."""
    body: dict[str, Any] = {
        name: value
        for name in (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "seed",
            "max_tokens",
            "presence_penalty",
            "frequency_penalty",
        )
        if (value := getattr(sampling, name)) is not None
    }
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.repetition_penalty is not None:
        name = "repetition_penalty" if backend == VLLM else "repeat_penalty"
        body[name] = sampling.repetition_penalty
    return body


def chat_body(
    model: str, messages: Sequence[tuple[str, str]], sampling: Sampling, backend: str
) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": role, "content": content} for role, content in messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_fields(sampling, backend),
    }


def completion_body(model: str, prompt: str, sampling: Sampling, backend: str) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": prompt,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_fields(sampling, backend),
    }


@dataclass
class Delta:
    """What one streamed chunk adds: text, and at the end why it stopped and the usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: tuple[int, int] | None = None  # (prompt tokens, completion tokens)


def read_chunk(chunk: dict[str, Any], chat: bool) -> Delta:
    delta = Delta()
    choices = chunk.get("choices") or []
    if choices:
        choice = choices[0]
        if chat:
            # a stream's chunk has "delta", a whole answer "message"
            part = choice.get("delta") or choice.get("message") or {}
            delta.text = part.get("content") or ""
        else:
            delta.text = choice.get("text") or ""
        delta.finish_reason = choice.get("finish_reason")
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        delta.usage = (
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
        )
    return delta
