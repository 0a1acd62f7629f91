"""Domain objects of the model store as berth.models.v1 messages, and back."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from berth.api.models.v1 import operation_service_pb2 as ops_pb
from berth.api.models.v1 import resources_pb2 as res
from berth.common.credentials import RegistryCredentials
from berth.models.domain.artifact import Descriptor, Manifest
from berth.models.domain.model_config import ModelConfig
from berth.models.domain.operations import Event, Kind, LayerProgress, Operation
from berth.models.store.local import ModelView

_FORMATS = {"gguf": res.MODEL_FORMAT_GGUF, "safetensors": res.MODEL_FORMAT_SAFETENSORS}


def timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def credentials(auth: res.RegistryAuth) -> RegistryCredentials:
    return RegistryCredentials(
        username=auth.username,
        password=auth.password,
        identity_token=auth.identity_token,
        registry_token=auth.registry_token,
    )


def model_message(view: ModelView) -> res.Model:
    return res.Model(
        id=view.id,
        name=view.name,
        tags=view.tags,
        created_time=timestamp(view.created),
        config=config_message(view.config),
        manifest=manifest_message(view.manifest, view.id, view.manifest_size),
        size_bytes=view.size_bytes,
    )


def config_message(config: ModelConfig) -> res.ModelConfig:
    message = res.ModelConfig(
        format=_FORMATS.get(config.format, res.MODEL_FORMAT_UNSPECIFIED),
        quantization=config.quantization,
        parameters=config.parameters,
        architecture=config.architecture,
        size=config.size,
        gguf=dict(config.gguf),
        safetensors=dict(config.safetensors),
    )
    if config.context_size is not None:
        message.context_size = config.context_size
    return message


def manifest_message(manifest: Manifest, digest: str, size: int) -> res.Manifest:
    return res.Manifest(
        media_type=manifest.media_type,
        digest=digest,
        size=size,
        config=descriptor_message(manifest.config),
        layers=[descriptor_message(layer) for layer in manifest.layers],
        annotations=dict(manifest.annotations),
    )


def descriptor_message(descriptor: Descriptor) -> res.Descriptor:
    return res.Descriptor(
        media_type=descriptor.media_type,
        digest=descriptor.digest,
        size=descriptor.size,
        annotations=dict(descriptor.annotations),
    )


def event_message(event: Event) -> res.OperationEvent:
    message = res.OperationEvent(
        operation_id=event.operation_id,
        kind=_enum(res.OperationKind, "OPERATION_KIND", event.kind),
        state=_enum(res.OperationState, "OPERATION_STATE", event.state),
        phase=_enum(res.OperationPhase, "OPERATION_PHASE", event.phase),
        model=event.model,
        message=event.message,
        time=timestamp(event.time),
        layers=[layer_message(layer) for layer in event.layers],
        total_bytes=event.total_bytes,
        completed_bytes=event.completed_bytes,
    )
    if event.result is not None:
        message.result.model.CopyFrom(
            res.ModelResult(
                model=event.result.model, id=event.result.id, size_bytes=event.result.size_bytes
            )
        )
    return message


def layer_message(layer: LayerProgress) -> res.LayerProgress:
    return res.LayerProgress(
        digest=layer.digest,
        media_type=layer.media_type,
        name=layer.name,
        status=_enum(res.LayerStatus, "LAYER_STATUS", layer.status),
        total_bytes=layer.total_bytes,
        completed_bytes=layer.completed_bytes,
    )


def operation_message(operation: Operation) -> ops_pb.Operation:
    return ops_pb.Operation(
        id=operation.id,
        kind=_enum(res.OperationKind, "OPERATION_KIND", operation.kind),
        state=_enum(res.OperationState, "OPERATION_STATE", operation.state),
        phase=_enum(res.OperationPhase, "OPERATION_PHASE", operation.phase),
        model=operation.model,
        message=operation.message,
        start_time=timestamp(operation.start_time),
        end_time=timestamp(operation.end_time),
        total_bytes=operation.total_bytes,
        completed_bytes=operation.completed_bytes,
    )


def _enum(proto_enum: Any, prefix: str, value: enum.Enum) -> int:
    """The protobuf value of a domain enum member of the same name."""
    return int(proto_enum.Value(f"{prefix}_{value.value}"))


def kind_of(value: int) -> Kind | None:
    """The domain kind of an OperationKind filter; None for unspecified (or kinds the store
    does not run)."""
    name = res.OperationKind.Name(value).removeprefix("OPERATION_KIND_")
    return Kind.__members__.get(name)


async def operation_events(operation: Operation) -> AsyncIterator[res.OperationEvent]:
    """The operation's events until it ends; its error ends the stream instead."""
    async for event in operation.watch():
        if event.error is not None:
            raise event.error
        yield event_message(event)
