"""Engines as the runner reasons about them: which backend serves a model, how long an idle
engine stays loaded, and which engine makes room for another. Plain rules, no processes."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from berth.common.errors import FailedPrecondition

LLAMA_CPP = "llama.cpp"
VLLM = "vllm"
BACKENDS = (LLAMA_CPP, VLLM)
# The model formats each backend serves.
FORMATS = {LLAMA_CPP: ("gguf",), VLLM: ("safetensors",)}
DEFAULT_KEEP_ALIVE = timedelta(minutes=5)


class UnsupportedFormat(FailedPrecondition):
    default_reason = "UNSUPPORTED_FORMAT"


def choose_backend(model: str, model_format: str, asked: str | None) -> str:
    """The backend for a model: the one asked for when it serves the model's format, else the
    one serving that format."""
    if asked:
        if model_format not in FORMATS[asked]:
            raise UnsupportedFormat(
                f"{asked} cannot serve {model}: it is a {model_format or 'unknown'} model"
                f" ({asked} serves {', '.join(FORMATS[asked])})",
                metadata={"model": model, "backend": asked, "format": model_format},
            )
        return asked
    for backend, formats in FORMATS.items():
        if model_format in formats:
            return backend
    raise UnsupportedFormat(
        f"no backend serves {model}: its format is {model_format or 'unknown'}",
        metadata={"model": model, "format": model_format},
    )


def keep_alive_for(
    asked: timedelta | None, current: timedelta | None, default: timedelta | None
) -> timedelta | None:
    """The keep-alive after a request: what it asked (negative: None, never unload), else the
    engine's current one, else the default."""
    if asked is None:
        return current if current is not None else default
    return None if asked < timedelta(0) else asked


class EngineState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    FAILED = "FAILED"


@dataclass(frozen=True)
class EngineKey:
    model_id: str
    backend: str
    embedding: bool = False


@dataclass
class EngineUse:
    """How an engine is being used: the facts keep-alive and eviction decide on."""

    key: EngineKey
    loaded_time: datetime
    last_used: datetime
    # None: never unloaded for idleness.
    keep_alive: timedelta | None = DEFAULT_KEEP_ALIVE
    active_requests: int = 0
    state: EngineState = EngineState.LOADING

    def expires_at(self) -> datetime | None:
        """When it unloads if it stays idle; None while busy or when it never does."""
        if self.active_requests or self.keep_alive is None or self.state is not EngineState.READY:
            return None
        return self.last_used + self.keep_alive

    def expired(self, now: datetime) -> bool:
        moment = self.expires_at()
        return moment is not None and moment <= now


def eviction_candidate(engines: Iterable[EngineUse]) -> EngineUse | None:
    """The least recently used idle, ready engine (None when every engine is busy)."""
    idle = [e for e in engines if e.state is EngineState.READY and not e.active_requests]
    return min(idle, key=lambda e: e.last_used, default=None)
