"""`pull hf.co/<org>/<repo>[:<quantization>]`: a GGUF from Hugging Face, stored as a model.

The file is chosen by quantization (the tag; Q4_K_M by default, else the repository's first
GGUF), downloaded (resumably), checked against the sha256 the Hub reports, then packaged
as `package --gguf` would: so the model looks the same as any other in the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from berth.common.credentials import RegistryCredentials
from berth.models.adapters import gguf_file
from berth.models.adapters.content_store import file_digest
from berth.models.adapters.hub import HubClient
from berth.models.domain import media_types
from berth.models.domain.artifact import assemble, file_layer
from berth.models.domain.huggingface import HubFile, choose_gguf, requested_quantization
from berth.models.domain.memory import check_runtime_memory, estimate_runtime_memory
from berth.models.domain.model_config import ModelConfig
from berth.models.domain.operations import LayerProgress, LayerStatus, ModelResult, Operation, Phase
from berth.models.domain.reference import Reference
from berth.models.store.local import ModelStore
from berth.models.store.transfers import BlobLocks, counted, resuming, threadsafe_progress


class HubPuller:
    def __init__(
        self,
        store: ModelStore,
        hub: HubClient,
        locks: BlobLocks,
        memory_available: Callable[[], int],
    ) -> None:
        self.store = store
        self.hub = hub
        self.locks = locks
        self.memory_available = memory_available

    async def pull(
        self, operation: Operation, ref: Reference, creds: RegistryCredentials, ignore_memory: bool
    ) -> ModelResult:
        token = creds.registry_token or creds.password or None
        operation.set_phase(Phase.RESOLVING, f"Listing the files of {ref.repository_name}")
        commit, files = await self.hub.list_files(ref.repository, token)
        quantization = requested_quantization(ref.tag)
        chosen = choose_gguf(files, quantization, repository=ref.repository_name)
        weights = sum(f.size for f in chosen)
        if not ignore_memory:
            estimate = estimate_runtime_memory(ModelConfig(format="gguf"), weights)
            check_runtime_memory(estimate, self.memory_available(), ref.name)
        for item in chosen:
            operation.add_layer(
                LayerProgress(
                    key=item.path,
                    media_type=media_types.GGUF,
                    name=Path(item.path).name,
                    total_bytes=item.size,
                )
            )
        operation.set_phase(Phase.DOWNLOADING, f"Downloading {counted(len(chosen), 'file')}")
        with self.store.pinned() as pins:
            digests = []
            for item in chosen:
                digests.append(await self._fetch(operation, ref, commit, item, token))
                pins.add(digests[-1])  # no await since it was stored: no GC in between
            operation.set_phase(Phase.PREPARING, "Reading the GGUF metadata")
            paths = [self.store.content.blob_path(d) for d in digests]
            config = await asyncio.to_thread(gguf_file.read_gguf, paths)
            layers = [
                file_layer(media_types.GGUF, d, f.size, Path(f.path).name)
                for d, f in zip(digests, chosen, strict=True)
            ]
            body, manifest = assemble(config, layers, datetime.now(UTC))
            operation.set_phase(Phase.COMMITTING, f"Storing {ref.name}")
            pins.add(self.store.content.write_blob(body))
            view = await self.store.commit(ref.name, manifest.to_bytes())
        return ModelResult(ref.name, view.id, view.size_bytes)

    async def _fetch(
        self, operation: Operation, ref: Reference, commit: str, item: HubFile, token: str | None
    ) -> str:
        """Download one file into the store; its digest."""
        content = self.store.content
        known = f"sha256:{item.sha256}" if item.sha256 else None
        key = item.sha256 or hashlib.sha256(f"{ref.repository}/{item.path}".encode()).hexdigest()
        async with self.locks.hold(known or key):
            if known and content.has_blob(known):
                operation.update_layer(
                    item.path, digest=known, status=LayerStatus.EXISTS, completed_bytes=item.size
                )
                return known
            work_dir = content.ingest_work_dir(key)
            report = threadsafe_progress(operation, item.path)
            path = await resuming(
                lambda: self.hub.download(ref.repository, item, commit, token, work_dir, report)
            )
            operation.update_layer(item.path, status=LayerStatus.VERIFYING)
            digest = known or await asyncio.to_thread(file_digest, path)
            await asyncio.to_thread(content.commit_ingest, digest, path)  # checks `known`
            shutil.rmtree(work_dir, ignore_errors=True)
        operation.update_layer(
            item.path, digest=digest, status=LayerStatus.DONE, completed_bytes=item.size
        )
        return digest
