"""Domain objects of the model store (and of bench) as berth.models.v1 messages, and back."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from berth.api.models.v1 import operation_service_pb2 as ops_pb
from berth.api.models.v1 import resources_pb2 as res
from berth.common.credentials import RegistryCredentials
from berth.models.domain.artifact import Descriptor, Manifest
from berth.models.domain.bench import BenchResult, LevelResult
from berth.models.domain.engines import LLAMA_CPP, VLLM
from berth.models.domain.model_config import ModelConfig
from berth.models.domain.operations import Event, Kind, LayerProgress, Operation
from berth.models.store.local import ModelView

_FORMATS = {"gguf": res.MODEL_FORMAT_GGUF, "safetensors": res.MODEL_FORMAT_SAFETENSORS}
BACKEND_NAMES = {res.BACKEND_LLAMA_CPP: LLAMA_CPP, res.BACKEND_VLLM: VLLM}
BACKEND_VALUES = {name: value for value, name in BACKEND_NAMES.items()}


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
    if isinstance(event.result, BenchResult):
        message.result.bench.CopyFrom(bench_result_message(event.result))
    elif event.result is not None:
        message.result.model.CopyFrom(
            res.ModelResult(
                model=event.result.model, id=event.result.id, size_bytes=event.result.size_bytes
            )
        )
    return message


def event_messages(event: Event) -> list[res.OperationEvent]:
    """The event as messages: one, or one per bench level it finished (a message holds one)."""
    message = event_message(event)
    if not event.bench_levels:
        return [message]
    found = []
    for level in event.bench_levels:
        each = res.OperationEvent()
        each.CopyFrom(message)
        each.bench_level.CopyFrom(bench_level_message(level))
        found.append(each)
    return found


def bench_level_message(level: LevelResult) -> res.BenchLevelResult:
    return res.BenchLevelResult(
        concurrency=level.concurrency,
        duration=duration(level.duration_s),
        requests=level.requests,
        failed_requests=level.failed_requests,
        prompt_tokens=level.prompt_tokens,
        completion_tokens=level.completion_tokens,
        tokens_per_second=level.tokens_per_second,
        request_tokens_per_second=level.request_tokens_per_second,
        requests_per_second=level.requests_per_second,
        ttft_p50=duration(level.ttft_p50_s),
        ttft_p99=duration(level.ttft_p99_s),
        latency_p50=duration(level.latency_p50_s),
        latency_p99=duration(level.latency_p99_s),
    )


def bench_result_message(result: BenchResult) -> res.BenchResult:
    return res.BenchResult(
        model=result.model,
        model_id=result.model_id,
        backend=BACKEND_VALUES.get(result.backend, res.BACKEND_UNSPECIFIED),
        prompt=result.prompt,
        levels=[bench_level_message(level) for level in result.levels],
    )


def duration(seconds: float) -> Duration:
    message = Duration()
    message.FromNanoseconds(round(seconds * 1e9))
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
        for message in event_messages(event):
            yield message
