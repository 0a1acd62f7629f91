"""GGUF files read into Docker Model Runner's model config, with the `gguf` package.

What Docker records, and so what this reads:
- `architecture`: `general.architecture` ("llama"; `controlvector.model_hint` for control
  vectors; "llama" when absent, "diffusion" for diffusion models);
- `quantization`: the name of `general.file_type` ("Q4_1", "Q4_K_M", "F16", "BF16"), or,
  without it, the type most of the weight tensors have;
- `parameters`: the elements of every tensor of every shard ("134.52M");
- `size`: what follows the header in every shard, i.e. the tensor data ("92.10MiB");
- `gguf`: every metadata value as a string (integers in decimal, floats with 6 decimals,
  true/false, arrays joined with ", ", arrays of more than 50 items left out), from all
  shards in order but `split.no`.
`context_size` stays unset: it is the packager's `--context-size`; the model's native
length stays visible in the `gguf` map (`<arch>.context_length`).

Reading is CPU work (the SmolLM2 file takes a second or two): plain sync functions, for a
thread.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, LlamaFileType, ReaderField

from berth.common.errors import FieldViolation, InvalidArgument
from berth.models.domain.model_config import (
    FORMAT_GGUF,
    ModelConfig,
    format_parameters,
    format_size,
)

FIELD = "gguf_path"
MAX_ARRAY_ITEMS = 50
_SHARD = re.compile(r"^(?P<prefix>.*)-(?P<shard>\d{5})-of-(?P<total>\d{5})\.gguf$")
_DIFFUSION_ARCHITECTURES = {"flux", "sd", "sd2.5", "sd3", "stable-diffusion"}
_DIFFUSION_TENSORS = re.compile(
    r"^(model\.diffusion_model|double_blocks|joint_blocks|decoder|encoder|text_model)\."
)
# File types llama.cpp dropped, so the gguf package no longer names them.
_RETIRED_FILE_TYPES = {
    4: "Q4_1_SOME_F16",
    5: "Q4_2",
    6: "Q4_3",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
}
_GUESSED_FLAG = LlamaFileType.GUESSED.value


def gguf_shards(path: Path) -> list[Path]:
    """Every shard of the model `path` belongs to, in order; `[path]` if it is not a shard."""
    match = _SHARD.match(path.name)
    if not match or int(match["shard"]) == 0 or int(match["total"]) == 0:
        return [path]
    total = int(match["total"])
    shards = [
        path.with_name(f"{match['prefix']}-{index:05d}-of-{total:05d}.gguf")
        for index in range(1, total + 1)
    ]
    for shard in shards:
        if not shard.is_file():
            raise InvalidArgument(
                [FieldViolation(FIELD, f"shard {shard.name} of {path.name} is missing ({shard})")]
            )
    return shards


def read_gguf(paths: Sequence[Path]) -> ModelConfig:
    """The model config of a GGUF model made of `paths` (its shards, in order)."""
    if not paths:
        raise InvalidArgument([FieldViolation(FIELD, "no GGUF file was given")])
    readers = [_open(path) for path in paths]
    first = readers[0]
    metadata: dict[str, str] = {}
    for reader, path in zip(readers, paths, strict=True):
        metadata.update(_metadata(reader, path))
    architecture = _architecture(first)
    tensors = [tensor for reader in readers for tensor in reader.tensors]
    parameters = sum(int(tensor.n_elements) for tensor in tensors)
    size = sum(_model_bytes(reader, path) for reader, path in zip(readers, paths, strict=True))
    return ModelConfig(
        format=FORMAT_GGUF,
        quantization=_quantization(first, tensors, architecture),
        parameters=format_parameters(parameters),
        architecture=architecture,
        size=format_size(size),
        gguf=metadata,
    )


def gguf_chat_template(path: Path) -> str | None:
    """The chat template embedded in a GGUF file (`tokenizer.chat_template`), if any."""
    field = _open(path).fields.get("tokenizer.chat_template")
    if field is None or field.types != [GGUFValueType.STRING]:
        return None
    try:
        return str(field.contents())
    except UnicodeDecodeError as error:
        raise _not_gguf(path, error) from None


def _open(path: Path) -> GGUFReader:
    if not path.is_file():
        raise InvalidArgument([FieldViolation(FIELD, f"{path} does not exist or is not a file")])
    try:
        return GGUFReader(path)
    # The reader fails on bad input with whatever numpy or struct raise: any is "not GGUF".
    except Exception as error:
        raise _not_gguf(path, error) from None


def _not_gguf(path: Path, error: Exception) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation(FIELD, f"{path} is not a GGUF file: {error}")],
        reason="UNSUPPORTED_FORMAT",
    )


def _metadata(reader: GGUFReader, path: Path) -> dict[str, str]:
    metadata = {}
    for key, field in reader.fields.items():
        # The reader's own header pseudo-fields, and the one key gguf-parser-go drops.
        if key.startswith("GGUF.") or key == "split.no":
            continue
        try:
            value = _value_text(field)
        except UnicodeDecodeError as error:  # GGUF strings are UTF-8
            raise _not_gguf(path, error) from None
        if value is not None:
            metadata[key] = value
    return metadata


def _value_text(field: ReaderField) -> str | None:
    """The value as Docker writes it; None for an array too long to keep."""
    if field.types[0] != GGUFValueType.ARRAY:
        return _scalar_text(field.types[0], field.contents())
    if len(field.data) > MAX_ARRAY_ITEMS:
        return None
    if len(field.types) < 2 or field.types[1] == GGUFValueType.ARRAY:
        return ""  # nested arrays: their items are left out
    return ", ".join(_scalar_text(field.types[1], item) for item in field.contents())


def _scalar_text(kind: GGUFValueType, value: Any) -> str:
    if kind == GGUFValueType.BOOL:
        return "true" if value else "false"
    if kind in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return f"{float(value):.6f}"
    if kind == GGUFValueType.STRING:
        return str(value)
    return str(int(value))


def _string_field(reader: GGUFReader, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None or field.types != [GGUFValueType.STRING]:
        return None
    return str(field.contents()).strip()


def _architecture(reader: GGUFReader) -> str:
    hint = _string_field(reader, "controlvector.model_hint")
    if hint is not None:
        return hint
    declared = _string_field(reader, "general.architecture")
    if declared is not None and declared not in _DIFFUSION_ARCHITECTURES:
        return declared
    if any(_DIFFUSION_TENSORS.match(tensor.name) for tensor in reader.tensors):
        return "diffusion"
    return "llama"


def _quantization(
    reader: GGUFReader, tensors: Sequence[gguf.ReaderTensor], architecture: str
) -> str:
    field = reader.fields.get("general.file_type")
    if field is not None and field.types[0] != GGUFValueType.ARRAY:
        number = int(field.contents()) & ~_GUESSED_FLAG
        if number in _RETIRED_FILE_TYPES:
            return _RETIRED_FILE_TYPES[number]
        try:
            name = LlamaFileType(number).name
        except ValueError:
            pass  # a type newer than the gguf package: guessed from the tensors below
        else:
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return _dominant_type(tensors, architecture)


def _dominant_type(tensors: Sequence[gguf.ReaderTensor], architecture: str) -> str:
    """The file type the weight tensors suggest: their most common type, F32 only when
    nothing else is there (norms are F32 in every quantization)."""
    counts = Counter(
        tensor.tensor_type
        for tensor in tensors
        if tensor.name.endswith(".weight")
        or (
            architecture != "diffusion"
            and (tensor.name.startswith(("token_embd", "blk.")) or "_norm" in tensor.name)
        )
    )
    if not counts:
        return ""
    ranked = [kind for kind, _ in counts.most_common()]
    if ranked[0] == GGMLQuantizationType.F32 and len(ranked) > 1:
        ranked.pop(0)
    top = ranked[0]
    q = GGMLQuantizationType
    if top == q.Q4_K:
        return "Q4_K_M" if counts[q.Q6_K] > 1 else "Q4_K_S"
    if top == q.Q5_K:
        return "Q5_K_M" if counts[q.Q6_K] > 1 else "Q5_K_S"
    if top == q.Q3_K:
        if counts[q.Q8_0] or (counts[q.Q5_K] > 1 and not counts[q.Q4_K]):
            return "Q3_K_L"
        return "Q3_K_M" if counts[q.Q4_K] > 1 else "Q3_K_S"
    return top.name


def _model_bytes(reader: GGUFReader, path: Path) -> int:
    """What follows the header, counted as gguf-parser-go (and so Docker) counts it.

    It pads the end of the header up to the alignment, and by one whole alignment when the
    header already ends on it; the gguf reader does not, so the end is recomputed here.
    """
    fields = [tensor.field for tensor in reader.tensors] or list(reader.fields.values())
    last = fields[-1]
    header_end = last.offset + sum(int(part.nbytes) for part in last.parts)
    alignment = int(reader.alignment)
    data_start = header_end + alignment - header_end % alignment
    return max(path.stat().st_size - data_start, 0)
