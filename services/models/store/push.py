"""`push` to an OCI registry: every blob the registry lacks, then the manifest.

The blobs come from the local store (`push MODEL`) or straight from the packaged files
(`package --push`, which stores nothing locally).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from berth.common.credentials import RegistryCredentials
from berth.models.adapters.registry import RegistryClient
from berth.models.domain.artifact import Descriptor, Manifest
from berth.models.domain.operations import LayerStatus, ModelResult, Operation, Phase
from berth.models.domain.reference import Reference
from berth.models.store.transfers import counted, in_parallel, progress, track

# Where each blob's bytes are: a file, or the bytes themselves (configs).
BlobSources = Mapping[str, Path | bytes]


class Pusher:
    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry

    async def push(
        self,
        operation: Operation,
        ref: Reference,
        manifest: Manifest,
        manifest_body: bytes,
        sources: BlobSources,
        creds: RegistryCredentials,
    ) -> ModelResult:
        operation.set_phase(Phase.RESOLVING, f"Checking what {ref.repository_name} has")
        blobs = manifest.blobs
        present = {b.digest for b in blobs if await self.registry.blob_exists(ref, b.digest, creds)}
        for blob in blobs:
            track(operation, blob, present=blob.digest in present)
        missing = [b for b in blobs if b.digest not in present]
        operation.set_phase(Phase.UPLOADING, f"Uploading {counted(len(missing), 'blob')}")
        await in_parallel(
            [lambda b=b: self._upload(operation, ref, b, sources, creds) for b in missing]
        )
        operation.set_phase(Phase.COMMITTING, f"Pushing the manifest of {ref.name}")
        digest = await self.registry.push_manifest(ref, manifest_body, manifest.media_type, creds)
        return ModelResult(ref.name, digest, manifest.layers_size)

    async def _upload(
        self,
        operation: Operation,
        ref: Reference,
        blob: Descriptor,
        sources: BlobSources,
        creds: RegistryCredentials,
    ) -> None:
        report = progress(operation, blob.digest)
        await self.registry.upload_blob(
            ref, blob.digest, blob.size, sources[blob.digest], creds, report
        )
        operation.update_layer(blob.digest, status=LayerStatus.DONE, completed_bytes=blob.size)
