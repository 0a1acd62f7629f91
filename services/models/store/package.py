"""`package`: a model artifact from a GGUF file, a safetensors directory or a stored model.

Files are hashed as they are copied into the store (or, with `--push`, hashed in place and
uploaded from where they are: nothing is stored locally). The manifest is committed, or
pushed, only once every layer is in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from berth.common.credentials import RegistryCredentials
from berth.models.adapters import gguf_file, safetensors_files, tar_layers
from berth.models.domain import media_types
from berth.models.domain.artifact import Descriptor, assemble, file_layer
from berth.models.domain.model_config import ModelConfig
from berth.models.domain.operations import LayerProgress, LayerStatus, ModelResult, Operation, Phase
from berth.models.domain.reference import Reference
from berth.models.store.local import ModelStore, Pins
from berth.models.store.push import Pusher
from berth.models.store.transfers import threadsafe_progress

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PackageSpec:
    target: Reference
    gguf: Path | None = None
    safetensors_dir: Path | None = None
    from_model: str | None = None
    licenses: list[Path] = field(default_factory=list)
    context_size: int | None = None
    chat_template: Path | None = None
    dir_tars: list[str] = field(default_factory=list)
    push: bool = False
    creds: RegistryCredentials = field(default_factory=RegistryCredentials)


@dataclass
class _File:
    """One file to become a layer."""

    media_type: str
    path: Path
    name: str
    temporary: bool = False


class Packager:
    def __init__(self, store: ModelStore, pusher: Pusher) -> None:
        self.store = store
        self.pusher = pusher

    async def package(self, operation: Operation, spec: PackageSpec) -> ModelResult:
        operation.set_phase(Phase.PREPARING, "Reading the model's files")
        config, reused, files = await asyncio.to_thread(self._plan, spec)
        try:
            with self.store.pinned([layer.digest for layer in reused]) as pins:
                return await self._package(operation, spec, config, reused, files, pins)
        finally:
            _remove_temporary(files)

    async def _package(
        self,
        operation: Operation,
        spec: PackageSpec,
        config: ModelConfig,
        reused: list[Descriptor],
        files: list[_File],
        pins: Pins,
    ) -> ModelResult:
        layers = reused + await self._hash_files(operation, files, spec.push, pins)
        body, manifest = assemble(config, layers, datetime.now(UTC))
        manifest_body = manifest.to_bytes()
        if spec.push:
            sources: dict[str, Path | bytes] = {manifest.config.digest: body}
            sources.update(self._stored_sources(reused))
            new_layers = layers[len(reused) :]
            sources.update({d.digest: f.path for d, f in zip(new_layers, files, strict=True)})
            return await self.pusher.push(
                operation, spec.target, manifest, manifest_body, sources, spec.creds
            )
        operation.set_phase(Phase.COMMITTING, f"Storing {spec.target.name}")
        pins.add(self.store.content.write_blob(body))
        view = await self.store.commit(spec.target.name, manifest_body)
        return ModelResult(spec.target.name, view.id, view.size_bytes)

    # --- what goes in ---

    def _plan(self, spec: PackageSpec) -> tuple[ModelConfig, list[Descriptor], list[_File]]:
        files: list[_File] = []
        try:
            return self._read_sources(spec, files)
        except BaseException:
            _remove_temporary(files)
            raise

    def _read_sources(
        self, spec: PackageSpec, files: list[_File]
    ) -> tuple[ModelConfig, list[Descriptor], list[_File]]:
        """The config, the stored layers kept (`--from`) and the files to add (into `files`,
        so the caller can remove temporary ones whatever happens)."""
        reused: list[Descriptor] = []
        if spec.gguf:
            shards = gguf_file.gguf_shards(spec.gguf)
            config = gguf_file.read_gguf(shards)
            files += [_File(media_types.GGUF, p, p.name) for p in shards]
            base_dir = spec.gguf.parent
        elif spec.safetensors_dir:
            model = safetensors_files.read_safetensors_dir(spec.safetensors_dir)
            config = model.config
            files += [_File(media_types.SAFETENSORS, p, p.name) for p in model.weights]
            if model.config_files:
                archive = self._temporary_tar(
                    lambda out: tar_layers.write_files_tar(
                        [(p.name, p) for p in model.config_files], out
                    )
                )
                files.append(_File(media_types.VLLM_CONFIG_TAR, archive, "config.tar", True))
            base_dir = spec.safetensors_dir
        else:
            view = self.store.inspect(spec.from_model or "", "from_model")
            config = view.config
            replaced = media_types.CHAT_TEMPLATE if spec.chat_template else None
            reused = [layer for layer in view.manifest.layers if layer.media_type != replaced]
            base_dir = None
        self._add_extras(spec, base_dir, files)
        return config.with_context_size(spec.context_size or config.context_size), reused, files

    def _add_extras(self, spec: PackageSpec, base_dir: Path | None, files: list[_File]) -> None:
        files += [_File(media_types.LICENSE, p, p.name) for p in spec.licenses]
        if spec.chat_template:
            files.append(_File(media_types.CHAT_TEMPLATE, spec.chat_template, "template.jinja"))
        for index, relative in enumerate(spec.dir_tars):
            assert base_dir is not None  # ModelStoreService.package checked
            archive = self._temporary_tar(
                lambda out, r=relative, i=index: tar_layers.write_dir_tar(base_dir, r, out, i)
            )
            files.append(_File(media_types.DIR_TAR, archive, f"{relative}.tar", True))

    def _temporary_tar(self, write: Callable[[BinaryIO], None]) -> Path:
        with tempfile.NamedTemporaryFile(
            dir=self.store.content.root / "tmp", suffix=".tar", delete=False
        ) as handle:
            path = Path(handle.name)
            try:
                write(handle)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        return path

    def _stored_sources(self, layers: list[Descriptor]) -> dict[str, Path | bytes]:
        return {layer.digest: self.store.content.blob_path(layer.digest) for layer in layers}

    # --- hashing (and storing) the files ---

    async def _hash_files(
        self, operation: Operation, files: list[_File], in_place: bool, pins: Pins
    ) -> list[Descriptor]:
        for index, item in enumerate(files):
            operation.add_layer(
                LayerProgress(
                    key=f"file-{index}",
                    media_type=item.media_type,
                    name=item.name,
                    total_bytes=item.path.stat().st_size,
                )
            )
        layers = []
        for index, item in enumerate(files):
            key = f"file-{index}"
            report = threadsafe_progress(operation, key)
            if in_place:
                digest, size = await asyncio.to_thread(_hash_file, item.path, report)
            else:
                digest, size = await asyncio.to_thread(
                    self.store.content.import_file, item.path, report
                )
                pins.add(digest)
            operation.update_layer(
                key, digest=digest, status=LayerStatus.DONE, completed_bytes=size
            )
            layers.append(file_layer(item.media_type, digest, size, item.name))
        return layers


def _remove_temporary(files: list[_File]) -> None:
    for item in files:
        if item.temporary:
            item.path.unlink(missing_ok=True)


def _hash_file(path: Path, on_progress: Callable[[int], None]) -> tuple[str, int]:
    hasher = hashlib.sha256()
    done = 0
    with path.open("rb") as reader:
        while chunk := reader.read(_CHUNK):
            hasher.update(chunk)
            done += len(chunk)
            on_progress(done)
    return "sha256:" + hasher.hexdigest(), done
