"""How `berth model` prints what berth-modeld answers: pure functions from messages to text.

They return rows or lines (or plain data for JSON) rather than printing, so tests can check
exactly what a user would read; the commands print them with berth.cli.output.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from berth.api.common.v1.version_pb2 import VersionInfo
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1 import runner_service_pb2 as runner_pb
from berth.cli.model_parse import (
    backend_name,
    display_name,
    enum_word,
    gpu_name,
    human_duration,
    human_since,
    human_size,
    short_duration,
    short_id,
)

MODEL_HEADERS = (
    "MODEL NAME",
    "PARAMETERS",
    "QUANTIZATION",
    "ARCHITECTURE",
    "MODEL ID",
    "CREATED",
    "CONTEXT",
    "SIZE",
)
ENGINE_HEADERS = ("MODEL NAME", "BACKEND", "MODE", "STATE", "PID", "MEMORY", "UNTIL")
BENCH_HEADERS = (
    "CONCURRENCY",
    "REQUESTS",
    "FAILED",
    "TOKENS/S",
    "TTFT P50",
    "TTFT P99",
    "LATENCY P50",
    "LATENCY P99",
)
_FORMATS = {res.MODEL_FORMAT_GGUF: "gguf", res.MODEL_FORMAT_SAFETENSORS: "safetensors"}


def context_size(config: res.ModelConfig) -> str:
    """The packaged context size, else the GGUF's own context length, else empty."""
    if config.HasField("context_size"):
        return str(config.context_size)
    for key in (f"{config.architecture}.context_length", "llama.context_length"):
        if config.gguf.get(key, "").isdigit():
            return config.gguf[key]
    return ""


def model_rows(models: Sequence[res.Model], now: datetime | None = None) -> list[list[str]]:
    """`ls` rows: one per tag (an untagged model shows as <none>)."""
    rows = []
    for model in models:
        config = model.config
        size = config.size or human_size(model.size_bytes)
        cells = [
            config.parameters,
            config.quantization,
            config.architecture,
            short_id(model.id),
            human_since(model.created_time, now),
            context_size(config),
            size,
        ]
        for tag in model.tags or ["<none>"]:
            rows.append([display_name(tag), *cells])
    return rows


def openai_model(model: res.Model) -> dict[str, Any]:
    """A model in OpenAI's /v1/models shape."""
    return {
        "id": model.tags[0] if model.tags else model.name or model.id,
        "object": "model",
        "created": model.created_time.seconds,
        "owned_by": "docker",
    }


def openai_list(models: Sequence[res.Model]) -> dict[str, Any]:
    return {"object": "list", "data": [openai_model(model) for model in models]}


def quiet_ids(models: Sequence[res.Model]) -> list[str]:
    """`ls -q`: each model's short ID once."""
    return list(dict.fromkeys(short_id(model.id) for model in models))


def removal_lines(untagged: Sequence[str], deleted: Sequence[str]) -> list[str]:
    """As `docker rmi` prints: Untagged lines, then Deleted lines."""
    return [f"Untagged: {ref}" for ref in untagged] + [f"Deleted: {mid}" for mid in deleted]


def model_result_lines(event: res.OperationEvent, pushed: bool = False) -> list[str]:
    """The closing lines of a pull, push or package."""
    result = event.result.model
    verb = {
        res.OPERATION_KIND_PULL_MODEL: "pulled",
        res.OPERATION_KIND_PUSH_MODEL: "pushed",
        res.OPERATION_KIND_PACKAGE_MODEL: "packaged and pushed" if pushed else "packaged",
    }.get(event.kind, "ready")
    lines = [f"Model {verb} successfully: {result.model or event.model}"]
    if result.id:
        size = f" ({human_size(result.size_bytes)})" if result.size_bytes else ""
        lines.append(f"Digest: {result.id}{size}")
    return lines


def runner_summary(status: res.RunnerStatus) -> str:
    """One line: where the runner answers and how it is configured."""
    config = status.config
    state = "running" if status.running else "stopped"
    where = f" at {status.endpoint}" if status.endpoint else ""
    backend = backend_name(config.default_backend)
    return f"Model runner {state}{where} (default backend {backend}, gpu {gpu_name(config.gpu)})"


def backend_line(backend: res.BackendInfo) -> str:
    state = enum_word(res.BackendState.Name(backend.state), "BACKEND_STATE_")
    details = [part for part in (backend.version, backend.device) if part]
    formats = [_FORMATS[f] for f in backend.formats if f in _FORMATS]
    if formats:
        details.append("/".join(formats))
    if backend.message:
        details.append(backend.message)
    suffix = f" ({', '.join(details)})" if details else ""
    return f"{backend_name(backend.backend)}: {state}{suffix}"


def status_lines(status: res.RunnerStatus) -> list[str]:
    """`status`: whether the runner runs, its configuration, its backends and GPUs."""
    if not status.running:
        hint = "berth model start-runner" if status.installed else "berth model install-runner"
        return ["Model runner is not running", f"Start it with `{hint}`."]
    config = status.config
    lines = ["Model runner is running"]
    if status.endpoint:
        lines.append(f"Endpoint: {status.endpoint}")
    lines.append(f"Default backend: {backend_name(config.default_backend)}")
    lines.append(f"GPU: {gpu_name(config.gpu)}")
    if status.memory_total_bytes:
        available, total = (
            human_size(status.memory_available_bytes),
            human_size(status.memory_total_bytes),
        )
        lines.append(f"Memory: {available} available of {total}")
    for gpu in status.gpus:
        used, total = human_size(gpu.memory_used_bytes), human_size(gpu.memory_total_bytes)
        lines.append(f"GPU {gpu.index}: {gpu.name} ({used} of {total} used)")
    lines += ["", "Status:"] + [backend_line(backend) for backend in status.backends]
    return lines


def engine_rows(engines: Sequence[res.Engine], now: datetime | None = None) -> list[list[str]]:
    """Loaded engines, as `docker model ps` lists them."""
    rows = []
    for engine in engines:
        memory = engine.memory_bytes + engine.gpu_memory_bytes
        rows.append(
            [
                display_name(engine.model),
                backend_name(engine.backend),
                "embedding" if engine.mode == res.ENGINE_MODE_EMBEDDING else "completion",
                enum_word(res.EngineState.Name(engine.state), "ENGINE_STATE_"),
                str(engine.pid) if engine.pid else "",
                human_size(memory) if memory else "",
                until(engine, now),
            ]
        )
    return rows


def until(engine: res.Engine, now: datetime | None = None) -> str:
    if engine.keep_alive.seconds < 0 or engine.keep_alive.nanos < 0:
        return "never"
    if not engine.HasField("expire_time"):
        return "in use" if engine.active_requests else ""
    current = now or datetime.now(UTC)
    left = (engine.expire_time.ToDatetime(tzinfo=UTC) - current).total_seconds()
    return f"in {human_duration(left).lower()}" if left > 0 else "now"


def stop_lines(response: runner_pb.StopRunnerResponse) -> list[str]:
    return ["Model runner stopped"] + [f"Deleted: {mid}" for mid in response.deleted_models]


def uninstall_lines(response: runner_pb.UninstallRunnerResponse, images: bool = False) -> list[str]:
    lines = ["Model runner uninstalled"]
    lines += [f"Removed backend: {backend_name(b)}" for b in response.removed_backends]
    if images and not response.removed_backends:
        lines.append("No backend was installed by berth (they come with the host): none removed")
    return lines + [f"Deleted: {mid}" for mid in response.deleted_models]


def unload_lines(response: runner_pb.UnloadModelResponse) -> list[str]:
    if not response.unloaded:
        return ["No model was loaded"]
    return [
        f"Unloaded: {engine.model} ({backend_name(engine.backend)})" for engine in response.unloaded
    ]


def bench_header(model: str, prompt: str, duration: str, levels: Sequence[int]) -> list[str]:
    return [
        f"Model: {model}",
        f"Prompt: {prompt}",
        f"Duration: {duration} per concurrency level",
        f"Concurrency levels: {', '.join(str(level) for level in levels)}",
        "",
    ]


def bench_level_line(level: res.BenchLevelResult) -> str:
    """One finished concurrency level, printed as soon as it ends."""
    return (
        f"Concurrency {level.concurrency}: {level.requests} requests, "
        f"{level.failed_requests} failed, {level.tokens_per_second:.2f} tokens/s, "
        f"time to first token p50 {short_duration(level.ttft_p50)} "
        f"p99 {short_duration(level.ttft_p99)}, "
        f"latency p50 {short_duration(level.latency_p50)} p99 {short_duration(level.latency_p99)}"
    )


def bench_rows(result: res.BenchResult) -> list[list[str]]:
    return [
        [
            str(level.concurrency),
            str(level.requests),
            str(level.failed_requests),
            f"{level.tokens_per_second:.2f}",
            short_duration(level.ttft_p50),
            short_duration(level.ttft_p99),
            short_duration(level.latency_p50),
            short_duration(level.latency_p99),
        ]
        for level in result.levels
    ]


def bench_summary(result: res.BenchResult) -> list[str]:
    """The best level, as Docker's summary names it."""
    if not result.levels:
        return []
    best = max(result.levels, key=lambda level: level.tokens_per_second)
    base = result.levels[0].tokens_per_second
    lines = [
        f"Max tokens/s: {best.tokens_per_second:.2f} (concurrency {best.concurrency})",
    ]
    if base > 0 and best is not result.levels[0]:
        gain = (best.tokens_per_second - base) / base * 100
        lines.append(f"Improvement from concurrency {result.levels[0].concurrency}: {gain:.1f}%")
    return lines


def version_lines(server: VersionInfo | None, client_version: str) -> list[str]:
    """`version`: Client and Server sections, as `docker model version` prints them."""
    lines = [
        "Client:",
        f" Version:     {client_version}",
        f" OS/Arch:     {platform.system().lower()}/{platform.machine()}",
        "",
        "Server:",
    ]
    if server is None:
        return [*lines, " Version:     (not reachable)"]
    lines += [
        f" Version:     {server.version}",
        f" API version: {server.api_version}",
        f" Component:   {server.component}",
        f" Python:      {server.python_version}",
        f" OS/Arch:     {server.os}/{server.arch}",
    ]
    if server.hostname:
        lines.append(f" Hostname:    {server.hostname}")
    if server.HasField("start_time"):
        lines.append(f" Started:     {_iso(server.start_time)}")
    return lines


def _iso(stamp: Timestamp) -> str:
    return stamp.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def log_line(entry: runner_pb.StreamLogsResponse) -> str:
    """The runner's own lines as they are; engine lines prefixed with the engine's name."""
    if entry.source and entry.source != "runner":
        return f"[{entry.source}] {entry.line}"
    return entry.line
