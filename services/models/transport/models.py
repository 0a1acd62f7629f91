"""berth.models.v1.ModelService over the model store: validation, then the store's use
cases; long work streams its operation's events until it ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc.aio

from berth.api.models.v1 import model_service_pb2 as pb
from berth.api.models.v1 import model_service_pb2_grpc as pb_grpc
from berth.api.models.v1 import resources_pb2 as res
from berth.common.credentials import RegistryCredentials
from berth.common.errors import FieldViolation, InvalidArgument
from berth.models.domain.reference import Reference, parse_reference
from berth.models.store.package import PackageSpec
from berth.models.store.service import ModelStoreService
from berth.models.transport import convert

# The daemon's own credentials for a registry host, when the request brings none.
CredentialLookup = Callable[[str], RegistryCredentials]


class ModelServicer(pb_grpc.ModelServiceServicer):
    def __init__(self, service: ModelStoreService, own_credentials: CredentialLookup) -> None:
        self.service = service
        self.own_credentials = own_credentials

    def _credentials(self, auth: res.RegistryAuth, ref: Reference) -> RegistryCredentials:
        given = convert.credentials(auth)
        return given if not given.anonymous else self.own_credentials(ref.registry)

    async def PackageModel(
        self, request: pb.PackageModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PackageModelResponse]:
        spec = self._package_spec(request)
        async for event in convert.operation_events(self.service.package(spec)):
            yield pb.PackageModelResponse(event=event)

    async def PullModel(
        self, request: pb.PullModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PullModelResponse]:
        ref = parse_reference(request.model)
        creds = self._credentials(request.registry_auth, ref)
        operation = self.service.pull(ref, creds, request.ignore_runtime_memory_check)
        async for event in convert.operation_events(operation):
            yield pb.PullModelResponse(event=event)

    async def PushModel(
        self, request: pb.PushModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PushModelResponse]:
        ref = parse_reference(request.model)
        creds = self._credentials(request.registry_auth, ref)
        async for event in convert.operation_events(self.service.push(request.model, creds)):
            yield pb.PushModelResponse(event=event)

    async def TagModel(
        self, request: pb.TagModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.TagModelResponse:
        _require(source=request.source, target=request.target)
        view = await self.service.tag(request.source, request.target)
        return pb.TagModelResponse(model=convert.model_message(view))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        views = self.service.list_models()
        return pb.ListModelsResponse(models=[convert.model_message(v) for v in views])

    async def InspectModel(
        self, request: pb.InspectModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectModelResponse:
        _require(model=request.model)
        if request.remote:
            ref = parse_reference(request.model)
            creds = self._credentials(request.registry_auth, ref)
            view = await self.service.inspect_remote(ref, creds)
        else:
            view = self.service.inspect(request.model)
        return pb.InspectModelResponse(model=convert.model_message(view))

    async def RemoveModel(
        self, request: pb.RemoveModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveModelResponse:
        removal = await self.service.remove(list(request.models), request.force)
        return pb.RemoveModelResponse(untagged=removal.untagged, deleted=removal.deleted)

    async def PurgeModels(
        self, request: pb.PurgeModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PurgeModelsResponse:
        purge = await self.service.purge(request.force)
        return pb.PurgeModelsResponse(
            untagged=purge.removal.untagged,
            deleted=purge.removal.deleted,
            reclaimed_bytes=purge.reclaimed_bytes,
        )

    def _package_spec(self, request: pb.PackageModelRequest) -> PackageSpec:
        ref = parse_reference(request.model)
        source = request.WhichOneof("source")
        violations = _package_violations(request, source)
        if request.push and ref.is_huggingface:
            violations.append(FieldViolation("push", "pushing to Hugging Face is not supported"))
        if violations:
            raise InvalidArgument(violations)
        return PackageSpec(
            target=ref,
            gguf=Path(request.gguf_path) if source == "gguf_path" else None,
            safetensors_dir=(
                Path(request.safetensors_dir) if source == "safetensors_dir" else None
            ),
            from_model=request.from_model if source == "from_model" else None,
            licenses=[Path(p) for p in request.license_paths],
            context_size=request.context_size if request.HasField("context_size") else None,
            chat_template=Path(request.chat_template_path) if request.chat_template_path else None,
            dir_tars=list(request.dir_tar_paths),
            push=request.push,
            creds=self._credentials(request.registry_auth, ref)
            if request.push
            else RegistryCredentials(),
        )


def _package_violations(
    request: pb.PackageModelRequest, source: str | None
) -> list[FieldViolation]:
    violations = []
    if source is None:
        violations.append(
            FieldViolation("source", "one of --gguf, --safetensors-dir or --from is required")
        )
    elif source == "from_model" and not request.from_model:
        violations.append(FieldViolation("from_model", "a model reference is required"))
    files = [("gguf_path", request.gguf_path)] if source == "gguf_path" else []
    files += [(f"license_paths[{i}]", p) for i, p in enumerate(request.license_paths)]
    if request.chat_template_path:
        files.append(("chat_template_path", request.chat_template_path))
    for field_name, text in files:
        violations += _path_violations(field_name, text, Path.is_file, "a file")
    if source == "safetensors_dir":
        violations += _path_violations(
            "safetensors_dir", request.safetensors_dir, Path.is_dir, "a directory"
        )
    if request.HasField("context_size") and request.context_size <= 0:
        violations.append(FieldViolation("context_size", "must be a positive number of tokens"))
    return violations


def _path_violations(
    field_name: str, text: str, check: Callable[[Path], bool], kind: str
) -> list[FieldViolation]:
    path = Path(text)
    if not path.is_absolute():
        return [FieldViolation(field_name, f"{text!r} is not an absolute path")]
    if not check(path):
        return [FieldViolation(field_name, f"{text} is not {kind} on the model runner's host")]
    return []


def _require(**fields: str) -> None:
    missing = [FieldViolation(name, "is required") for name, value in fields.items() if not value]
    if missing:
        raise InvalidArgument(missing)
