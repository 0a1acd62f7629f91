"""`pull` from an OCI registry: resolve the manifest, check memory, fetch what is missing,
verify every digest, then commit the model in one step.

Layers already in the store are not fetched again ("Already exists"). A download that is
cut resumes from its partial file, here (a few attempts) or in a later pull; a blob whose
bytes do not match its digest is deleted and the pull fails without storing anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from berth.common.credentials import RegistryCredentials
from berth.models.adapters.registry import RegistryClient
from berth.models.adapters.running_digest import RunningDigest
from berth.models.domain.artifact import Descriptor, parse_manifest
from berth.models.domain.memory import check_runtime_memory, estimate_runtime_memory
from berth.models.domain.model_config import parse_config_blob
from berth.models.domain.operations import LayerStatus, ModelResult, Operation, Phase
from berth.models.domain.reference import Reference
from berth.models.store.local import ModelStore
from berth.models.store.transfers import BlobLocks, counted, in_parallel, progress, resuming, track


class RegistryPuller:
    def __init__(
        self,
        store: ModelStore,
        registry: RegistryClient,
        locks: BlobLocks,
        memory_available: Callable[[], int],
    ) -> None:
        self.store = store
        self.registry = registry
        self.locks = locks
        self.memory_available = memory_available

    async def pull(
        self, operation: Operation, ref: Reference, creds: RegistryCredentials, ignore_memory: bool
    ) -> ModelResult:
        operation.set_phase(Phase.RESOLVING, f"Resolving {ref.name}")
        fetched = await self.registry.fetch_manifest(ref, creds)
        manifest = parse_manifest(fetched.body, ref.name)
        config_body = await self._config(ref, manifest.config, creds)
        config, _ = parse_config_blob(config_body)
        if not ignore_memory:
            estimate = estimate_runtime_memory(config, manifest.layers_size)
            check_runtime_memory(estimate, self.memory_available(), ref.name)
        content = self.store.content
        with self.store.pinned([b.digest for b in manifest.blobs]):
            missing = [layer for layer in manifest.layers if not content.has_blob(layer.digest)]
            for layer in manifest.layers:
                track(operation, layer, present=layer not in missing)
            operation.set_phase(Phase.DOWNLOADING, f"Downloading {counted(len(missing), 'layer')}")
            await in_parallel([lambda b=b: self._fetch(operation, ref, b, creds) for b in missing])
            operation.set_phase(Phase.COMMITTING, f"Storing {ref.name}")
            content.write_blob(config_body, expected=manifest.config.digest)
            view = await self.store.commit(ref.name, fetched.body)
        return ModelResult(ref.name, view.id, view.size_bytes)

    async def _config(
        self, ref: Reference, config: Descriptor, creds: RegistryCredentials
    ) -> bytes:
        if self.store.content.has_blob(config.digest):
            return self.store.content.read_blob(config.digest)
        return await self.registry.fetch_blob(ref, config.digest, creds)

    async def _fetch(
        self, operation: Operation, ref: Reference, blob: Descriptor, creds: RegistryCredentials
    ) -> None:
        content = self.store.content
        async with self.locks.hold(blob.digest):
            if content.has_blob(blob.digest):  # another operation fetched it meanwhile
                operation.update_layer(
                    blob.digest, status=LayerStatus.EXISTS, completed_bytes=blob.size
                )
                return
            partial = content.ingest_path(blob.digest)
            if partial.exists() and partial.stat().st_size > blob.size:
                partial.unlink()  # longer than the blob: cannot be a prefix of it
            running = RunningDigest(partial)
            try:
                await resuming(
                    lambda: self.registry.download_blob(
                        ref,
                        blob.digest,
                        partial,
                        creds,
                        progress(operation, blob.digest),
                        running.feed,
                    )
                )
            finally:
                computed = await asyncio.to_thread(running.result)
            operation.update_layer(blob.digest, status=LayerStatus.VERIFYING)
            await asyncio.to_thread(content.commit_ingest, blob.digest, None, computed)
            operation.update_layer(blob.digest, status=LayerStatus.DONE, completed_bytes=blob.size)
