"""A loaded model's files under the names engines expect.

Blobs are named by digest; llama.cpp finds the shards of a split GGUF by their names
(`name-00002-of-00003.gguf`) and a chat template is a file. A bundle is a directory per model
of hard links to the blobs (no copy), named after each layer's title.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from berth.models.adapters.content_store import ContentStore
from berth.models.domain import media_types
from berth.models.domain.artifact import Manifest
from berth.models.domain.digests import hex_of


@dataclass(frozen=True)
class Bundle:
    weights: list[Path]  # GGUF shards, first first (safetensors: the directory's files)
    chat_template: Path | None


def make_bundle(content: ContentStore, root: Path, model_id: str, manifest: Manifest) -> Bundle:
    folder = root / hex_of(model_id)
    folder.mkdir(parents=True, exist_ok=True)
    weights: list[Path] = []
    template = None
    for index, layer in enumerate(manifest.layers):
        name = Path(layer.title or f"layer-{index}").name
        if layer.media_type == media_types.CHAT_TEMPLATE:
            name = "template.jinja"
        target = folder / name
        if not target.exists():
            _link(content.blob_path(layer.digest), target)
        if layer.media_type == media_types.GGUF:
            weights.append(target)
        elif layer.media_type == media_types.CHAT_TEMPLATE:
            template = target
    return Bundle(weights, template)


def remove_bundle(root: Path, model_id: str) -> None:
    shutil.rmtree(root / hex_of(model_id), ignore_errors=True)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem: a copy
        shutil.copyfile(source, target)
