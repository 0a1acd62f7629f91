"""Which GGUF file(s) of a Hugging Face repository `hf.co/<org>/<repo>[:<quantization>]` names.

Docker's rule: with no tag (or `latest`), the Q4_K_M quantization, else the first GGUF of the
repository's Files view (sorted by path); with a tag, the GGUF whose name carries that
quantization (`-Q4_K_M.gguf`, `.q4_k_m.gguf`, a `Q4_K_M/` folder), compared case-insensitively.
A model split with gguf-split (`-00001-of-00003.gguf`) comes as all its shards, in order.
Multimodal projectors (`mmproj*`) are never the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from berth.common.errors import FieldViolation, InvalidArgument, NotFound
from berth.models.domain.reference import HUGGING_FACE, Reference

DEFAULT_QUANTIZATION = "Q4_K_M"
# Tags that ask for no particular quantization.
_NO_QUANTIZATION = {"", "latest", "main"}

_SHARD = re.compile(r"(?P<prefix>.*)-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf", re.IGNORECASE)
# llama.cpp's quantization names as they appear in file names: Q4_K_M, IQ2_XXS, Q8_0, TQ1_0,
# UD-Q4_K_XL, BF16, F16, MXFP4...; preceded by a separator, followed by one or by the end.
_QUANTIZATION = re.compile(
    r"(?:^|[-._])(?P<q>(?:UD-)?(?:I?Q\d+(?:_[A-Z0-9]+)*|TQ\d_\d|MXFP4(?:_MOE)?|BF16|FP?16|FP?32))"
    r"(?=$|[-.])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class HubFile:
    """A file of a Hub repository, as its listing gives it."""

    path: str  # in the repository, e.g. "Q4_K_M/model-00001-of-00002.gguf"
    size: int
    sha256: str | None  # the LFS sha256 (hex) the Hub reports; None for files not in LFS


def hub_repo_id(reference: Reference) -> str:
    """The Hub repository id ("org/repo") a `hf.co/...` reference names.

    The reference is lower-cased (an OCI name) while the Hub's ids are not: the Hub resolves
    a differently-cased id by redirecting to the canonical one, so the lower-cased id works.
    """
    if not reference.is_huggingface:
        raise InvalidArgument(
            [FieldViolation("model", f"{reference.name} is not a {HUGGING_FACE} reference")],
            reason="INVALID_REFERENCE",
            metadata={"reference": reference.name},
        )
    return reference.repository


def requested_quantization(tag: str | None) -> str | None:
    """The quantization a tag asks for; None for no tag, `latest` or `main`."""
    if tag is None or tag.lower() in _NO_QUANTIZATION:
        return None
    return tag


def is_gguf(path: str) -> bool:
    return path.lower().endswith(".gguf")


def is_mmproj(path: str) -> bool:
    return "mmproj" in PurePosixPath(path).name.lower()


def quantization_of(path: str) -> str | None:
    """The quantization a GGUF's path names ("Q4_K_M"), upper-cased; None when it names none."""
    name = PurePosixPath(path).name
    shard = _SHARD.fullmatch(name)
    stem = shard["prefix"] if shard else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    found = [match["q"] for match in _QUANTIZATION.finditer(stem)]
    if not found:
        found = [d for d in PurePosixPath(path).parent.parts if _QUANTIZATION.fullmatch(d)]
    return found[-1].upper() if found else None


def has_quantization(path: str, quantization: str) -> bool:
    """Whether `path` carries `quantization`: in its file name after a separator, or as a folder.

    The name must not go on with `_` (asking for Q4_K is not asking for Q4_K_M).
    """
    wanted = quantization.lower()
    parts = PurePosixPath(path.lower()).parts
    if wanted in parts[:-1]:
        return True
    stem = re.sub(r"\.gguf$", "", parts[-1])
    return re.search(rf"[-._]{re.escape(wanted)}(?=$|[-.])", stem) is not None


def choose_gguf(
    files: Sequence[HubFile], quantization: str | None, *, repository: str = ""
) -> list[HubFile]:
    """The file(s) of the model to pull: one GGUF, or every shard of a split one, in order.

    `quantization` is the reference's tag (None, `latest` and `main` ask for the default).
    NotFound (MODEL_NOT_FOUND) when the repository has no such GGUF; its message lists the
    quantizations it has.
    """
    models = sorted((f for f in files if is_gguf(f.path) and not is_mmproj(f.path)), key=_by_path)
    asked = requested_quantization(quantization)
    where = f"{HUGGING_FACE}/{repository}" if repository else "the repository"
    if not models:
        raise NotFound(
            f"{where} has no GGUF file: berth pulls GGUF models from {HUGGING_FACE}",
            reason="MODEL_NOT_FOUND",
            metadata=_metadata(repository, asked, models),
        )
    if asked is None:
        default = [f for f in models if has_quantization(f.path, DEFAULT_QUANTIZATION)]
        return _first_model(default or models, where)
    matching = [f for f in models if has_quantization(f.path, asked)]
    if not matching:
        raise NotFound(
            f"{where} has no GGUF with quantization {asked}; it has: {_available(models)}",
            reason="MODEL_NOT_FOUND",
            metadata=_metadata(repository, asked, models),
        )
    return _first_model(matching, where)


def _by_path(file: HubFile) -> str:
    return file.path


def _first_model(candidates: list[HubFile], where: str) -> list[HubFile]:
    """The first file in path order, with its sibling shards when it is one of a split model."""
    first = candidates[0]
    shard = _SHARD.fullmatch(first.path)
    if shard is None:
        return [first]
    total = int(shard["total"])
    shards: dict[int, HubFile] = {}
    for file in candidates:
        other = _SHARD.fullmatch(file.path)
        if other and other["prefix"] == shard["prefix"] and int(other["total"]) == total:
            shards.setdefault(int(other["index"]), file)
    if sorted(shards) != list(range(1, total + 1)):
        raise NotFound(
            f"{where} has {len(shards)} of the {total} parts of {shard['prefix']}.gguf",
            reason="MODEL_NOT_FOUND",
            metadata={"file": first.path},
        )
    return [shards[index] for index in sorted(shards)]


def _available(models: list[HubFile]) -> str:
    names = [quantization_of(f.path) or PurePosixPath(f.path).name for f in models]
    return ", ".join(dict.fromkeys(names))


def _metadata(repository: str, asked: str | None, models: list[HubFile]) -> dict[str, str]:
    metadata = {"registry": HUGGING_FACE, "available": _available(models)}
    if repository:
        metadata["repository"] = repository
    if asked:
        metadata["quantization"] = asked
    return metadata
