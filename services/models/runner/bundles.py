"""A loaded model's files under the names engines expect.

Blobs are named by digest; llama.cpp finds the shards of a split GGUF by their names
(`name-00002-of-00003.gguf`), vLLM reads a directory of weights beside their `config.json` and
tokenizer, and a chat template is a file. A bundle is a directory per model of hard links to
the blobs (no copy), named after each layer's title, with the configuration archive and any
`--dir-tar` directories unpacked into it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from berth.common.errors import FailedPrecondition
from berth.models.adapters.content_store import ContentStore
from berth.models.domain import media_types
from berth.models.domain.artifact import Manifest
from berth.models.domain.digests import hex_of

_UNPACKED = (media_types.VLLM_CONFIG_TAR, media_types.DIR_TAR)


@dataclass(frozen=True)
class Bundle:
    directory: Path
    weights: list[Path]  # GGUF shards, first first; or the safetensors files
    chat_template: Path | None


def make_bundle(content: ContentStore, root: Path, model_id: str, manifest: Manifest) -> Bundle:
    folder = root / hex_of(model_id)
    folder.mkdir(parents=True, exist_ok=True)
    weights: list[Path] = []
    template = None
    for index, layer in enumerate(manifest.layers):
        blob = content.blob_path(layer.digest)
        if layer.media_type in _UNPACKED:
            _unpack(blob, folder, folder / f".unpacked-{hex_of(layer.digest)}")
            continue
        name = Path(layer.title or f"layer-{index}").name
        if layer.media_type == media_types.CHAT_TEMPLATE:
            name = "template.jinja"
        target = folder / name
        if not target.exists():
            _link(blob, target)
        if layer.media_type in (media_types.GGUF, media_types.SAFETENSORS):
            weights.append(target)
        elif layer.media_type == media_types.CHAT_TEMPLATE:
            template = target
    return Bundle(folder, weights, template)


def remove_bundle(root: Path, model_id: str) -> None:
    shutil.rmtree(root / hex_of(model_id), ignore_errors=True)


def _unpack(archive: Path, folder: Path, done: Path) -> None:
    """Once per bundle: an engine of the model may be reading the files already."""
    if done.exists():
        return
    # The "data" filter refuses members that would land outside the folder, links out of it,
    # devices and the like: an archive from a registry is not trusted.
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    except tarfile.TarError as error:
        raise FailedPrecondition(
            f"the model's archive {archive.name} cannot be unpacked: {error}",
            reason="UNSAFE_ARCHIVE",
            metadata={"digest": f"sha256:{archive.name}"},
        ) from error
    done.touch()


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem: a copy
        shutil.copyfile(source, target)
