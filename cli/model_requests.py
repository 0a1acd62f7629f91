"""Flags and requests of `berth model`: typer option types and pure request builders.

The flag parsers turn a bad value into a usage error that names the flag; the builders
turn the flags into the berth.models.v1 request messages, so both are testable without a
server.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from google.protobuf.duration_pb2 import Duration

from berth.api.models.v1 import inference_service_pb2 as inf
from berth.api.models.v1 import model_service_pb2 as store
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1 import runner_service_pb2 as runner_pb
from berth.cli.errors import CliError
from berth.cli.model_auth import registry_auth_for
from berth.cli.model_parse import (
    BACKENDS,
    COLOR_MODES,
    GPU_MODES,
    parse_choice,
    parse_duration,
)

DEFAULT_BENCH_MODEL = "ai/smollm2"
DEFAULT_BENCH_PROMPT = (
    "Write a comprehensive 100 word summary on whales and their impact on society."
)


# --- flag value parsers (typer `parser=`): a bad value is a usage error naming the flag ---


def duration_flag(value: str | Duration) -> Duration:
    if isinstance(value, Duration):
        return value
    try:
        duration = parse_duration(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if duration.seconds <= 0 and duration.nanos <= 0:
        raise typer.BadParameter(f'"{value}" must be longer than zero')
    return duration


def _backend(value: str) -> str:
    try:
        return parse_choice(value, BACKENDS, "backend")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _gpu(value: str) -> str:
    try:
        return parse_choice(value, GPU_MODES, "GPU mode")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def color_flag(value: str) -> str:
    try:
        return parse_choice(value, COLOR_MODES, "color mode")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


Backend = Annotated[
    str | None,
    typer.Option(
        "--backend", parser=_backend, metavar="llama.cpp|vllm", help="Backend (default: llama.cpp)"
    ),
]
Gpu = Annotated[
    str | None,
    typer.Option(
        "--gpu",
        parser=_gpu,
        metavar="none|auto|cuda|rocm|musa|cann",
        help="GPU support (default: auto)",
    ),
]
Host = Annotated[
    str | None, typer.Option("--host", help="Address the OpenAI API binds (default: 127.0.0.1)")
]
Port = Annotated[
    int | None,
    typer.Option(
        "--port", min=0, max=65535, help="Port of the OpenAI API (default: 12434; 0: any free port)"
    ),
]
Debug = Annotated[bool, typer.Option("--debug", help="Enable debug logging")]
DoNotTrack = Annotated[
    bool, typer.Option("--do-not-track", help="Do not track models usage in the model runner")
]


# --- request builders (pure) ---


def package_request(
    model: str,
    *,
    gguf: str | None = None,
    safetensors_dir: str | None = None,
    from_model: str | None = None,
    licenses: list[str] | None = None,
    context_size: int | None = None,
    chat_template: str | None = None,
    dir_tars: list[str] | None = None,
    push: bool = False,
) -> store.PackageModelRequest:
    """PackageModel's request. Local paths are made absolute (berth-modeld reads them)."""
    sources = [s for s in (gguf, safetensors_dir, from_model) if s]
    if len(sources) != 1:
        raise CliError("give exactly one of --gguf, --safetensors-dir or --from")
    request = store.PackageModelRequest(
        model=model,
        license_paths=[os.path.abspath(path) for path in licenses or []],
        dir_tar_paths=list(dir_tars or []),
        push=push,
    )
    if gguf:
        request.gguf_path = os.path.abspath(gguf)
    elif safetensors_dir:
        request.safetensors_dir = os.path.abspath(safetensors_dir)
    else:
        request.from_model = from_model or ""
    if context_size is not None:
        request.context_size = context_size
    if chat_template:
        request.chat_template_path = os.path.abspath(chat_template)
    if push:
        add_auth(request, model)
    return request


def add_auth(request: object, reference: str) -> None:
    auth = registry_auth_for(reference)
    if auth is not None:
        request.registry_auth.CopyFrom(auth)  # type: ignore[attr-defined]


def install_request(
    message: type,
    backend: str | None,
    gpu: str | None,
    host: str | None,
    port: int | None,
    debug: bool,
    do_not_track: bool,
) -> runner_pb.InstallRunnerRequest | runner_pb.ReinstallRunnerRequest:
    """InstallRunner's or ReinstallRunner's request (unset values take berth's defaults)."""
    request = message(
        backend=BACKENDS[backend] if backend else res.BACKEND_UNSPECIFIED,
        gpu=GPU_MODES[gpu] if gpu else res.GPU_MODE_UNSPECIFIED,
        host=host or "",
        debug=debug,
        do_not_track=do_not_track,
    )
    if port is not None:
        request.port = port
    return request


def start_request(
    backend: str | None, gpu: str | None, port: int | None, debug: bool, do_not_track: bool
) -> runner_pb.StartRunnerRequest:
    """StartRunner's request: flags not given keep the installed values."""
    request = runner_pb.StartRunnerRequest(
        backend=BACKENDS[backend] if backend else res.BACKEND_UNSPECIFIED,
        gpu=GPU_MODES[gpu] if gpu else res.GPU_MODE_UNSPECIFIED,
    )
    _set_optional(request, port=port, debug=debug or None, do_not_track=do_not_track or None)
    return request


def restart_request(
    gpu: str | None, host: str | None, port: int | None, debug: bool, do_not_track: bool
) -> runner_pb.RestartRunnerRequest:
    """RestartRunner's request: flags not given keep the installed values."""
    request = runner_pb.RestartRunnerRequest(
        gpu=GPU_MODES[gpu] if gpu else res.GPU_MODE_UNSPECIFIED
    )
    _set_optional(
        request, host=host, port=port, debug=debug or None, do_not_track=do_not_track or None
    )
    return request


def _set_optional(request: object, **values: object) -> None:
    for name, value in values.items():
        if value is not None:
            setattr(request, name, value)


def bench_request(
    model: str | None,
    concurrency: list[int],
    duration: Duration,
    prompt: str,
    timeout: Duration,
) -> inf.BenchModelRequest:
    request = inf.BenchModelRequest(
        model=model or DEFAULT_BENCH_MODEL, concurrency=concurrency, prompt=prompt
    )
    request.duration.CopyFrom(duration)
    request.timeout.CopyFrom(timeout)
    return request
