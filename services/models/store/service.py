"""The model store's use cases, as the transport calls them: long work becomes an
Operation, the rest answers at once. No grpc here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from berth.common.credentials import RegistryCredentials
from berth.common.errors import FieldViolation, InvalidArgument
from berth.models.adapters.hub import HubClient
from berth.models.adapters.registry import RegistryClient
from berth.models.adapters.tar_layers import check_dir_tar_path
from berth.models.domain.artifact import Descriptor, Manifest, file_layer, parse_manifest
from berth.models.domain.catalog import ModelNotFound, Removal
from berth.models.domain.huggingface import choose_gguf, quantization_of, requested_quantization
from berth.models.domain.media_types import GGUF
from berth.models.domain.model_config import ModelConfig, format_size, parse_config_blob
from berth.models.domain.operations import Kind, ModelResult, Operation
from berth.models.domain.reference import Reference, parse_reference
from berth.models.store.hf_pull import HubPuller
from berth.models.store.local import ModelStore, ModelView, Purge
from berth.models.store.operations import Operations
from berth.models.store.package import Packager, PackageSpec
from berth.models.store.pull import RegistryPuller
from berth.models.store.push import Pusher
from berth.models.store.transfers import BlobLocks


class ModelStoreService:
    def __init__(
        self,
        store: ModelStore,
        registry: RegistryClient,
        hub: HubClient,
        operations: Operations,
        memory_available: Callable[[], int],
    ) -> None:
        self.store = store
        self.registry = registry
        self.hub = hub
        self.operations = operations
        locks = BlobLocks()
        pusher = Pusher(registry)
        self._pusher = pusher
        self._registry_puller = RegistryPuller(store, registry, locks, memory_available)
        self._hub_puller = HubPuller(store, hub, locks, memory_available)
        self._packager = Packager(store, pusher)

    # --- long work ---

    def pull(self, ref: Reference, creds: RegistryCredentials, ignore_memory: bool) -> Operation:
        puller = self._hub_puller if ref.is_huggingface else self._registry_puller

        async def work(operation: Operation) -> ModelResult:
            return await puller.pull(operation, ref, creds, ignore_memory)

        return self.operations.start(Kind.PULL_MODEL, ref.name, work, join_key=f"pull {ref.name}")

    def push(self, text: str, creds: RegistryCredentials) -> Operation:
        ref = parse_reference(text)
        if ref.is_huggingface:
            raise InvalidArgument(
                [FieldViolation("model", "pushing to Hugging Face is not supported")],
                reason="INVALID_REFERENCE",
            )
        model_id = self.store.id_of_tag(ref.name)
        if model_id is None:
            raise ModelNotFound(text)
        content = self.store.content
        body = content.read_blob(model_id)
        manifest = parse_manifest(body, ref.name)
        sources = {b.digest: content.blob_path(b.digest) for b in manifest.blobs}

        async def work(operation: Operation) -> ModelResult:
            with self.store.pinned([model_id, *sources]):
                return await self._pusher.push(operation, ref, manifest, body, sources, creds)

        return self.operations.start(Kind.PUSH_MODEL, ref.name, work)

    def package(self, spec: PackageSpec) -> Operation:
        """Checks what can be checked at once (the error then comes before any progress)."""
        if spec.from_model:
            self.store.inspect(spec.from_model, "from_model")
        base_dir = spec.gguf.parent if spec.gguf else spec.safetensors_dir
        for index, relative in enumerate(spec.dir_tars):
            if base_dir is None:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            f"dir_tar_paths[{index}]",
                            "--dir-tar needs --gguf or"
                            " --safetensors-dir: the directory it is relative to",
                        )
                    ]
                )
            check_dir_tar_path(base_dir, relative, index)

        async def work(operation: Operation) -> ModelResult:
            return await self._packager.package(operation, spec)

        return self.operations.start(Kind.PACKAGE_MODEL, spec.target.name, work)

    # --- answered at once ---

    def list_models(self) -> list[ModelView]:
        return self.store.list_models()

    def inspect(self, text: str) -> ModelView:
        return self.store.inspect(text)

    async def inspect_remote(self, ref: Reference, creds: RegistryCredentials) -> ModelView:
        if ref.is_huggingface:
            return await self._inspect_hub(ref, creds)
        fetched = await self.registry.fetch_manifest(ref, creds)
        manifest = parse_manifest(fetched.body, ref.name)
        config_body = await self.registry.fetch_blob(ref, manifest.config.digest, creds)
        config, created = parse_config_blob(config_body)
        return ModelView(fetched.digest, ref.name, [], created, config, manifest, len(fetched.body))

    async def _inspect_hub(self, ref: Reference, creds: RegistryCredentials) -> ModelView:
        token = creds.registry_token or creds.password or None
        _, files = await self.hub.list_files(ref.repository, token)
        quantization = requested_quantization(ref.tag)
        chosen = choose_gguf(files, quantization, repository=ref.repository_name)
        layers = [
            file_layer(GGUF, f"sha256:{f.sha256}" if f.sha256 else "", f.size, Path(f.path).name)
            for f in chosen
        ]
        size = sum(f.size for f in chosen)
        quantization = quantization_of(chosen[0].path) or ""
        config = ModelConfig(format="gguf", quantization=quantization, size=format_size(size))
        manifest = Manifest(config=Descriptor("", "", 0), layers=layers)
        return ModelView("", ref.name, [], None, config, manifest, 0)

    async def tag(self, source: str, target: str) -> ModelView:
        return await self.store.tag(source, target)

    async def remove(self, targets: Sequence[str], force: bool) -> Removal:
        if not targets:
            raise InvalidArgument([FieldViolation("models", "give at least one model")])
        return await self.store.remove(targets, force)

    async def purge(self, force: bool) -> Purge:
        return await self.store.purge(force)
