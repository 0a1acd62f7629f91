"""A directory of safetensors weights and their configuration, read as Docker reads it.

Each `.safetensors` file starts with an 8-byte little-endian length and that many bytes of
JSON: `{"__metadata__": {str: str}, "<tensor>": {"dtype", "shape", "data_offsets"}, ...}`.
Only that header is read (no safetensors library is needed for it).

What goes in the model config, as Docker Model Runner records it:
- `quantization`: the tensors' dtype when they all share one ("BF16"), "mixed" when they do
  not, "unknown" when no tensor has one;
- `parameters`: the elements of every tensor ("134.52M", Docker's own formatting);
- `size`: the bytes of the weight files, in powers of 1000 ("269.06MB");
- `architecture`: `__metadata__["architecture"]` when a file has one, else config.json's
  `model_type` (e.g. "llama"), else its `architectures[0]`;
- `safetensors`: the first file's `__metadata__` and `tensor_count` (of all files).
The files beside the weights that Docker packs in its vLLM config archive are those it
classifies as configuration: *.json, *.txt, *.md, *.vocab, tokenizer.model, *.jinja and
names containing "chat_template"; license files (license, licence, copying, notice) are not.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from berth.common.errors import FieldViolation, InvalidArgument
from berth.models.domain.model_config import (
    FORMAT_SAFETENSORS,
    ModelConfig,
    format_safetensors_parameters,
    format_safetensors_size,
)

FIELD = "safetensors_dir"
MAX_HEADER_BYTES = 100 * 2**20
# The config.json keys that may hold the native context length, in Docker's order.
CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_ctx",
    "n_positions",
    "max_length",
    "max_sequence_length",
    "model_max_length",
)
_CONFIG_SUFFIXES = (".json", ".txt", ".md", ".vocab")
_LICENSE_WORDS = ("license", "licence", "copying", "notice")
_WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".dduf")


@dataclass(frozen=True)
class SafetensorsModel:
    weights: list[Path]
    config_files: list[Path]
    config: ModelConfig
    # From config.json; Docker puts it in `context_size`, berth leaves that to --context-size.
    native_context_length: int | None = None


@dataclass(frozen=True)
class SafetensorsHeader:
    """What one file's header says: its metadata, each tensor's dtype, its element count."""

    metadata: dict[str, str]
    dtypes: list[str]
    parameters: int


def read_safetensors_dir(directory: Path) -> SafetensorsModel:
    """The weights, configuration files and model config of a safetensors directory."""
    if not directory.is_dir():
        raise _invalid(f"{directory} is not a directory")
    files = sorted(
        (p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    weights = [p for p in files if p.name.lower().endswith(".safetensors")]
    if not weights:
        raise _invalid(f"{directory} holds no .safetensors files")
    headers = [read_header(path) for path in weights]
    hf_config = _hf_config(directory / "config.json")
    config = ModelConfig(
        format=FORMAT_SAFETENSORS,
        quantization=_quantization([d for h in headers for d in h.dtypes]),
        parameters=format_safetensors_parameters(sum(h.parameters for h in headers)),
        architecture=_architecture(headers, hf_config),
        size=format_safetensors_size(sum(p.stat().st_size for p in weights)),
        safetensors={
            **headers[0].metadata,
            "tensor_count": str(sum(len(h.dtypes) for h in headers)),
        },
    )
    return SafetensorsModel(
        weights=weights,
        config_files=[p for p in files if is_config_file(p.name)],
        config=config,
        native_context_length=_context_length(hf_config),
    )


def is_config_file(name: str) -> bool:
    """Whether Docker counts the file as configuration for the engine (see the module)."""
    lower = name.lower()
    if lower.endswith(_WEIGHT_SUFFIXES):
        return False
    if lower.endswith(".jinja") or "chat_template" in lower:
        return True
    if any(word in lower for word in _LICENSE_WORDS):
        return False
    return lower.endswith(_CONFIG_SUFFIXES) or lower == "tokenizer.model"


def read_header(path: Path) -> SafetensorsHeader:
    """The header of one safetensors file; InvalidArgument UNSUPPORTED_FORMAT if it has none."""
    try:
        with path.open("rb") as reader:
            prefix = reader.read(8)
            if len(prefix) < 8:
                raise ValueError("shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"header of {length} bytes, more than {MAX_HEADER_BYTES}")
            body = reader.read(length)
            if len(body) < length:
                raise ValueError("truncated header")
        return _parse_header(json.loads(body))
    except (OSError, ValueError) as error:
        raise InvalidArgument(
            [FieldViolation(FIELD, f"{path.name} is not a safetensors file: {error}")],
            reason="UNSUPPORTED_FORMAT",
        ) from None


def _parse_header(data: object) -> SafetensorsHeader:
    if not isinstance(data, dict):
        raise ValueError("the header is not a JSON object")
    raw_metadata = data.get("__metadata__")
    metadata = (
        {str(k): _text(v) for k, v in raw_metadata.items()}
        if isinstance(raw_metadata, dict)
        else {}
    )
    dtypes: list[str] = []
    parameters = 0
    for name, tensor in data.items():
        if name == "__metadata__" or not isinstance(tensor, dict):
            continue
        dtypes.append(tensor.get("dtype") if isinstance(tensor.get("dtype"), str) else "")
        parameters += _elements(name, tensor.get("shape", []))
    return SafetensorsHeader(metadata, dtypes, parameters)


def _elements(name: str, shape: object) -> int:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ValueError(f"tensor {name!r} has an invalid shape")
    count = 1
    for dim in shape:
        count *= dim
    return count


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _quantization(dtypes: Sequence[str]) -> str:
    kinds = Counter(d for d in dtypes if d)
    if not kinds:
        return "unknown"
    return next(iter(kinds)) if len(kinds) == 1 else "mixed"


def _hf_config(path: Path) -> Mapping[str, Any]:
    """config.json, or {} when it is missing or unreadable (as Docker, nothing is refused)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _architecture(headers: Sequence[SafetensorsHeader], hf_config: Mapping[str, Any]) -> str:
    for header in headers:
        if header.metadata.get("architecture"):
            return header.metadata["architecture"]
    if isinstance(hf_config.get("model_type"), str):
        return hf_config["model_type"]
    architectures = hf_config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return ""


def _context_length(hf_config: Mapping[str, Any]) -> int | None:
    for key in CONTEXT_KEYS:
        value = hf_config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
            return value
    return None


def _invalid(description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(FIELD, description)])
