"""Docker Model Runner's model config: what a model is, as the OCI config blob records it.

The config blob (`application/vnd.docker.ai.model.config.v0.1+json`) is

    {"config": {"format", "quantization", "parameters", "architecture", "size",
                "gguf": {str: str}, "safetensors": {str: str}, "context_size"},
     "descriptor": {"created": RFC 3339},
     "rootfs": {"type": "rootfs", "diff_ids": [layer digests]}}

with empty fields left out. `config_blob` writes the bytes Docker's Go encoder writes for
the same values: its struct field order, map keys sorted, no spaces, `<`, `>` and `&`
escaped as \\u003c, \\u003e and \\u0026, times in RFC 3339 with nanoseconds.

The display strings follow Docker's: for GGUF files those of gguf-parser-go with the space
removed ("134.52M", "92.10MiB"); for safetensors those of Docker's own formatter ("134.52M",
"269.06MB").
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from berth.common.errors import FailedPrecondition

FORMAT_GGUF = "gguf"
FORMAT_SAFETENSORS = "safetensors"

# Units of gguf-parser-go: each is tried from the largest down, binary before decimal, so a
# size between 10^6 and 2^20 bytes reads "MB" and one above 2^20 reads "MiB".
_BYTE_UNITS = (
    (2**50, "PiB"),
    (10**15, "PB"),
    (2**40, "TiB"),
    (10**12, "TB"),
    (2**30, "GiB"),
    (10**9, "GB"),
    (2**20, "MiB"),
    (10**6, "MB"),
    (2**10, "KiB"),
    (10**3, "KB"),
)
_COUNT_UNITS = ((10**15, "Q"), (10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K"))
_DECIMAL_COUNT_UNITS = ("", "K", "M", "B", "T")
_DECIMAL_BYTE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


class UnsupportedConfig(FailedPrecondition):
    default_reason = "UNSUPPORTED_FORMAT"


@dataclass(frozen=True)
class ModelConfig:
    format: str
    quantization: str = ""
    parameters: str = ""
    architecture: str = ""
    size: str = ""
    context_size: int | None = None
    gguf: Mapping[str, str] = field(default_factory=dict, hash=False)
    safetensors: Mapping[str, str] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        """Docker's `config` object: its field order, empty fields left out, maps sorted."""
        data: dict[str, Any] = {}
        for name in ("format", "quantization", "parameters", "architecture", "size"):
            if value := getattr(self, name):
                data[name] = value
        if self.gguf:
            data["gguf"] = dict(sorted(self.gguf.items()))
        if self.safetensors:
            data["safetensors"] = dict(sorted(self.safetensors.items()))
        if self.context_size is not None:
            data["context_size"] = self.context_size
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Read a `config` object; unknown keys are ignored, wrong types are refused."""
        if not isinstance(data, Mapping):
            raise UnsupportedConfig("the model config is not a JSON object")
        strings = {
            name: _string(data, name)
            for name in ("format", "quantization", "parameters", "architecture", "size")
        }
        return cls(
            **strings,
            context_size=_context_size(data.get("context_size")),
            gguf=_string_map(data, "gguf"),
            safetensors=_string_map(data, "safetensors"),
        )

    def with_context_size(self, tokens: int | None) -> ModelConfig:
        return dataclasses.replace(self, context_size=tokens)

    @property
    def native_context_length(self) -> int | None:
        """The context the model was trained for (`<arch>.context_length` of a GGUF)."""
        arch = self.gguf.get("general.architecture") or self.architecture
        value = self.gguf.get(f"{arch}.context_length", "")
        return int(value) if value.isdigit() and int(value) > 0 else None


def _string(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UnsupportedConfig(f"the model config's {name!r} is not a string")
    return value


def _string_map(data: Mapping[str, Any], name: str) -> dict[str, str]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UnsupportedConfig(f"the model config's {name!r} is not a map of strings")
    return dict(value)


def _context_size(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnsupportedConfig("the model config's 'context_size' is not an integer")
    return value


def format_parameters(count: int) -> str:
    """A GGUF model's parameter count as Docker shows it: 134515008 -> "134.52M", 183 -> "183"."""
    base, unit = next(((b, u) for b, u in _COUNT_UNITS if count >= b), (1, ""))
    return _trim(count / base) + unit


def format_size(num_bytes: int) -> str:
    """A GGUF model's size as Docker shows it: 96576736 -> "92.10MiB", 0 -> "0B"."""
    base, unit = next(((b, u) for b, u in _BYTE_UNITS if num_bytes >= b), (1, "B"))
    return _trim(num_bytes / base) + unit


def format_safetensors_parameters(count: int) -> str:
    """A safetensors model's parameter count as Docker shows it: "134.52M", "183.00"."""
    return _repeated_division(count, _DECIMAL_COUNT_UNITS)


def format_safetensors_size(num_bytes: int) -> str:
    """A safetensors model's size as Docker shows it (powers of 1000): "269.06MB"."""
    if num_bytes <= 0:
        return "n/a"
    return _repeated_division(num_bytes, _DECIMAL_BYTE_UNITS)


def _trim(value: float) -> str:
    text = f"{value:.2f}"
    return text.removesuffix(".00")


def _repeated_division(value: float, units: Sequence[str]) -> str:
    index = 0
    while value >= 1000 and index < len(units) - 1:
        value /= 1000
        index += 1
    return f"{value:.2f}{units[index]}"


def format_created(created: datetime) -> str:
    """RFC 3339 with nanoseconds, as Go writes a time: trailing zeros of the fraction dropped,
    "Z" for a zero offset. A naive time is taken as UTC."""
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    text = created.strftime("%Y-%m-%dT%H:%M:%S")
    if created.microsecond:
        text += f".{created.microsecond:06d}".rstrip("0")
    offset = created.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def config_blob(config: ModelConfig, created: datetime, diff_ids: Sequence[str]) -> bytes:
    """The config blob's bytes; the same values always give the same bytes."""
    data = {
        "config": config.to_json(),
        "descriptor": {"created": format_created(created)},
        "rootfs": {"type": "rootfs", "diff_ids": list(diff_ids)},
    }
    return _go_json(data)


def _go_json(data: object) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # Go's encoder escapes these; they only ever occur inside strings.
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode("utf-8")


def parse_config_blob(body: bytes) -> tuple[ModelConfig, datetime | None]:
    """The model config and creation time of a config blob (Docker's or berth's)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise UnsupportedConfig("the model config blob is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise UnsupportedConfig("the model config blob has no 'config' object")
    config = ModelConfig.from_json(data["config"])
    descriptor = data.get("descriptor")
    created = descriptor.get("created") if isinstance(descriptor, dict) else None
    return config, _parse_created(created)


def _parse_created(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        created = datetime.fromisoformat(value)
    except ValueError:
        return None
    return created if created.tzinfo else created.replace(tzinfo=UTC)
