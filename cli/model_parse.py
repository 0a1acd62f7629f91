"""Parsing and formatting helpers of `berth model`: durations, sizes, enum flag values.

Pure functions only (no gRPC, no printing), so the command modules stay short and the
parsing is testable on its own.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from fractions import Fraction

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from berth.api.models.v1 import resources_pb2 as res

_NANOS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9}
_NANOS |= {"m": 60 * 10**9, "h": 3600 * 10**9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
DURATION_HINT = "use a number and a unit (ns, us, ms, s, m, h), e.g. 30s, 5m or 1h30m"

BACKENDS = {"llama.cpp": res.BACKEND_LLAMA_CPP, "vllm": res.BACKEND_VLLM}
GPU_MODES = {
    "auto": res.GPU_MODE_AUTO,
    "none": res.GPU_MODE_NONE,
    "cuda": res.GPU_MODE_CUDA,
    "rocm": res.GPU_MODE_ROCM,
    "musa": res.GPU_MODE_MUSA,
    "cann": res.GPU_MODE_CANN,
}
COLOR_MODES = ("auto", "yes", "no")
DEFAULT_CONCURRENCY = (1, 2, 4, 8)


def parse_duration(text: str) -> Duration:
    """A Go-style duration ("30s", "5m", "1h30m", "1.5h", "250ms", "0") as a Duration.

    Raises ValueError with a readable message for anything else.
    """
    value = text.strip()
    sign = -1 if value.startswith("-") else 1
    body = value[1:] if value.startswith(("+", "-")) else value
    if body == "0":
        return Duration()
    if not body:
        raise ValueError(f'invalid duration "{text}": {DURATION_HINT}')
    nanos = Fraction(0)
    position = 0
    while position < len(body):
        part = _PART.match(body, position)
        if part is None:
            raise ValueError(f'invalid duration "{text}": {DURATION_HINT}')
        nanos += Fraction(part.group(1)) * _NANOS[part.group(2)]
        position = part.end()
    duration = Duration()
    duration.FromNanoseconds(sign * round(nanos))
    return duration


def duration_nanos(duration: Duration) -> int:
    return duration.seconds * 10**9 + duration.nanos


def go_duration(duration: Duration) -> str:
    """A duration written as Go writes it: "30s", "5m0s", "1h30m0s", "1.5s", "250ms"."""
    nanos = duration_nanos(duration)
    sign, nanos = ("-", -nanos) if nanos < 0 else ("", nanos)
    if nanos == 0:
        return "0s"
    if nanos < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if nanos >= size:
                return sign + _trim(Fraction(nanos, size)) + unit
    hours, rest = divmod(nanos, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = _trim(Fraction(rest, 10**9)) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _trim(value: Fraction) -> str:
    text = f"{float(value):.9f}".rstrip("0").rstrip(".")
    return text or "0"


def short_duration(duration: Duration) -> str:
    """A measured duration rounded for a table: "1.23s", "350ms", "12.5ms", "800µs"."""
    nanos = duration_nanos(duration)
    if nanos >= 10**9:
        return f"{nanos / 10**9:.2f}s"
    if nanos >= 10 * 10**6:
        return f"{nanos / 10**6:.0f}ms"
    if nanos >= 10**6:
        return f"{nanos / 10**6:.1f}ms"
    return f"{nanos / 10**3:.0f}µs"


def parse_concurrency(values: list[str] | None) -> list[int]:
    """`--concurrency 1,2,4,8` (also repeated) as a list of positive ints."""
    if not values:
        return list(DEFAULT_CONCURRENCY)
    levels: list[int] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                level = int(item)
            except ValueError:
                raise ValueError(
                    f'invalid concurrency "{item}": expected whole numbers like 1,2,4,8'
                ) from None
            if level <= 0:
                raise ValueError(f"invalid concurrency {level}: each level must be at least 1")
            levels.append(level)
    if not levels:
        raise ValueError("invalid concurrency: give at least one level, e.g. 1,2,4,8")
    return levels


def parse_choice(value: str, choices: dict[str, int] | tuple[str, ...], what: str) -> str:
    """`value` lower-cased if it is one of `choices`, else ValueError listing them."""
    lowered = value.strip().lower()
    if lowered not in choices:
        raise ValueError(f'invalid {what} "{value}": use one of {", ".join(choices)}')
    return lowered


def backend_name(backend: int) -> str:
    for name, value in BACKENDS.items():
        if value == backend:
            return name
    return "default"


def gpu_name(gpu: int) -> str:
    for name, value in GPU_MODES.items():
        if value == gpu:
            return name
    return "auto"


def enum_word(enum_name: str, prefix: str) -> str:
    """`BACKEND_STATE_NOT_INSTALLED` -> "not installed"."""
    return enum_name.removeprefix(prefix).replace("_", " ").lower()


def human_size(size: int) -> str:
    """Bytes in binary units, as the model config writes sizes: "98.87 MiB"."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.2f} {unit}"
    raise AssertionError("unreachable")


def human_since(then: Timestamp, now: datetime | None = None) -> str:
    """How long ago, as Docker's tables say it: "3 days ago", "About an hour ago"."""
    if then.seconds == 0 and then.nanos == 0:
        return ""
    current = now or datetime.now(UTC)
    seconds = (current - then.ToDatetime(tzinfo=UTC)).total_seconds()
    return f"{human_duration(seconds)} ago"


def human_duration(seconds: float) -> str:
    """A duration in words, with the thresholds of Docker's tables."""
    whole_seconds, minutes, hours = int(seconds), int(seconds // 60), round(seconds / 3600)
    if whole_seconds < 1:
        return "Less than a second"
    if whole_seconds < 60:
        return "1 second" if whole_seconds == 1 else f"{whole_seconds} seconds"
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 14:
        return f"{hours // 24} days"
    if hours < 24 * 60:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 730:
        return f"{hours // (24 * 30)} months"
    return f"{int(seconds // (3600 * 24 * 365))} years"


def short_id(model_id: str) -> str:
    """The 12 hex digits `docker model ls` shows for "sha256:<hex>"."""
    return model_id.split(":", 1)[-1][:12]


def display_name(reference: str) -> str:
    """A reference without Docker's defaults (`ai/` and `:latest`), as `ls` shows it."""
    return reference.removeprefix("ai/").removesuffix(":latest")
