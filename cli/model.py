"""`berth model`: Docker's `docker model` verbs against berth-modeld, through the gateway.

Each command builds its request from the flags (berth.cli.model_requests), calls one RPC of
berth.models.v1 (ModelService, RunnerService, InferenceService, SystemService) and prints
the answer with berth.cli.model_render. Long work streams OperationEvents, drawn by
berth.cli.model_progress; `run` lives in berth.cli.model_chat.
"""

from __future__ import annotations

import sys
from typing import Annotated

import grpc
import typer
from google.protobuf.duration_pb2 import Duration

from berth.api.models.v1 import model_service_pb2 as store
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1 import runner_service_pb2 as runner_pb
from berth.api.models.v1 import system_service_pb2 as system_pb
from berth.api.models.v1.inference_service_pb2_grpc import InferenceServiceStub
from berth.api.models.v1.model_service_pb2_grpc import ModelServiceStub
from berth.api.models.v1.runner_service_pb2_grpc import RunnerServiceStub
from berth.api.models.v1.system_service_pb2_grpc import SystemServiceStub
from berth.cli import model_chat, model_render
from berth.cli.context import connection
from berth.cli.errors import CliError
from berth.cli.model_parse import BACKENDS, go_duration, human_size, parse_concurrency
from berth.cli.model_progress import follow
from berth.cli.model_requests import (
    DEFAULT_BENCH_MODEL,
    DEFAULT_BENCH_PROMPT,
    Backend,
    Debug,
    DoNotTrack,
    Gpu,
    Host,
    Port,
    add_auth,
    bench_request,
    color_flag,
    duration_flag,
    install_request,
    package_request,
    restart_request,
    start_request,
)
from berth.cli.output import message_dict, print_json, print_lines, print_table
from berth.common.version import berth_version

app = typer.Typer(help="Manage models", no_args_is_help=True)


def _models() -> ModelServiceStub:
    return connection().stub(ModelServiceStub)


def _runner() -> RunnerServiceStub:
    return connection().stub(RunnerServiceStub)


# --- the model store ---


@app.command()
def package(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Reference of the model to create")],
    gguf: Annotated[str | None, typer.Option("--gguf", help="Path to a GGUF file")] = None,
    safetensors_dir: Annotated[
        str | None,
        typer.Option("--safetensors-dir", help="Directory of safetensors files and config"),
    ] = None,
    from_model: Annotated[
        str | None, typer.Option("--from", help="An existing model to repackage")
    ] = None,
    license_paths: Annotated[
        list[str] | None,
        typer.Option("-l", "--license", help="Path to a license file (repeatable)"),
    ] = None,
    context_size: Annotated[
        int | None, typer.Option("--context-size", min=1, help="Context size in tokens")
    ] = None,
    chat_template: Annotated[
        str | None, typer.Option("--chat-template", help="Path to a Jinja chat template")
    ] = None,
    dir_tar: Annotated[
        list[str] | None,
        typer.Option("--dir-tar", help="Relative directory to package as a tar (repeatable)"),
    ] = None,
    push: Annotated[
        bool, typer.Option("--push", help="Push to the registry instead of storing locally")
    ] = False,
) -> None:
    """Package a GGUF file, Safetensors directory, or existing model into an OCI artifact."""
    request = package_request(
        model,
        gguf=gguf,
        safetensors_dir=safetensors_dir,
        from_model=from_model,
        licenses=license_paths,
        context_size=context_size,
        chat_template=chat_template,
        dir_tars=dir_tar,
        push=push,
    )
    final = follow(_models().PackageModel(request))
    print_lines(model_render.model_result_lines(final, pushed=push))


@app.command()
def pull(
    model: Annotated[
        str,
        typer.Argument(metavar="MODEL", help="Model to pull, e.g. ai/smollm2 or hf.co/org/repo"),
    ],
    ignore_runtime_memory_check: Annotated[
        bool,
        typer.Option(
            "--ignore-runtime-memory-check",
            help="Do not block pull if estimated runtime memory exceeds system resources",
        ),
    ] = False,
) -> None:
    """Pull a model from a registry or Hugging Face to the model store."""
    final = model_chat.pull(model, ignore_runtime_memory_check, sys.stdout)
    print_lines(model_render.model_result_lines(final))


@app.command()
def push(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Local model to push")],
) -> None:
    """Push a model to the registry its reference names."""
    request = store.PushModelRequest(model=model)
    add_auth(request, model)
    final = follow(_models().PushModel(request))
    print_lines(model_render.model_result_lines(final))


@app.command()
def tag(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Local model (reference or ID)")],
    target: Annotated[str, typer.Argument(metavar="TARGET", help="New reference")],
) -> None:
    """Tag a model."""
    _models().TagModel(store.TagModelRequest(source=source, target=target))
    print(f'Model "{source}" tagged successfully with "{target}"')


Json = Annotated[bool, typer.Option("--json", help="Output in JSON format")]
OpenAI = Annotated[bool, typer.Option("--openai", help="Output in OpenAI's format")]


def list_models(
    json_output: Json = False,
    openai: OpenAI = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only show model IDs")] = False,
) -> None:
    """List the models in the store (alias: ls)."""
    if quiet and (openai or json_output):
        raise CliError("--quiet cannot be used with --json or --openai")
    models = _models().ListModels(store.ListModelsRequest()).models
    if openai:
        print_json(model_render.openai_list(models))
    elif json_output:
        print_json([message_dict(m) for m in models])
    elif quiet:
        print_lines(model_render.quiet_ids(models))
    else:
        print_table(model_render.MODEL_HEADERS, model_render.model_rows(models))


app.command("list")(list_models)
app.command("ls", hidden=True)(list_models)


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model reference or ID")],
    openai: OpenAI = False,
    remote: Annotated[
        bool, typer.Option("-r", "--remote", help="Read the model from its registry")
    ] = False,
) -> None:
    """Display detailed information on one model."""
    request = store.InspectModelRequest(model=model, remote=remote)
    if remote:
        add_auth(request, model)
    found = _models().InspectModel(request).model
    print_json(model_render.openai_model(found) if openai else found)


@app.command("rm")
def remove(
    models: Annotated[
        list[str], typer.Argument(metavar="MODEL", help="Models to remove", show_default=False)
    ],
    force: Annotated[bool, typer.Option("-f", "--force", help="Forcefully remove")] = False,
) -> None:
    """Remove local models."""
    response = _models().RemoveModel(store.RemoveModelRequest(models=models, force=force))
    print_lines(model_render.removal_lines(response.untagged, response.deleted))


@app.command()
def purge(
    force: Annotated[bool, typer.Option("-f", "--force", help="Forcefully remove all")] = False,
) -> None:
    """Remove all models."""
    if not force and not _confirm("WARNING! This will remove all models."):
        print("Purge cancelled.")
        return
    response = _models().PurgeModels(store.PurgeModelsRequest(force=force))
    print_lines(model_render.removal_lines(response.untagged, response.deleted))
    print(f"Total reclaimed space: {human_size(response.reclaimed_bytes)}")


def _confirm(warning: str) -> bool:
    print(warning)
    print("Are you sure you want to continue? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        print()
    return answer.strip().lower() in ("y", "yes")


# --- running models ---


@app.command()
def run(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model to run")],
    prompt: Annotated[
        str | None, typer.Argument(metavar="PROMPT", help="Prompt; without it, an interactive chat")
    ] = None,
    debug: Debug = False,
    color: Annotated[
        str,
        typer.Option("--color", parser=color_flag, metavar="auto|yes|no", help="Colored output"),
    ] = "no",
    detach: Annotated[
        bool, typer.Option("-d", "--detach", help="Load the model without interaction")
    ] = False,
    ignore_runtime_memory_check: Annotated[
        bool,
        typer.Option(
            "--ignore-runtime-memory-check",
            help="Do not block pull if estimated runtime memory exceeds system resources",
        ),
    ] = False,
    system: Annotated[
        str | None, typer.Option("--system", help="A system message before the conversation")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option("--temperature", min=0.0, help="Sampling temperature (0: always the same)"),
    ] = None,
) -> None:
    """Run a model and interact with it using a submitted prompt or chat mode."""
    if detach:
        model_chat.run_detached(
            model, debug=debug, ignore_memory_check=ignore_runtime_memory_check, err=sys.stderr
        )
        return
    if debug:
        about = f" with prompt {prompt}" if prompt else ""
        print(f"Running model {model}{about}", file=sys.stderr)
    session = model_chat.ChatSession(
        model,
        color=model_chat.use_color(color, sys.stdout),
        debug=debug,
        ignore_memory_check=ignore_runtime_memory_check,
        system=system,
        temperature=temperature,
    )
    if prompt:
        session.ask(prompt)
        return
    interactive = sys.stdin.isatty()
    reader = model_chat.terminal_reader if interactive else model_chat.stream_reader(sys.stdin)
    model_chat.chat_loop(session, reader, interactive)


@app.command()
def bench(
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL", help=f"Model to benchmark (default: {DEFAULT_BENCH_MODEL})"
        ),
    ] = None,
    concurrency: Annotated[
        list[str] | None,
        typer.Option(
            "--concurrency",
            metavar="1,2,4,8",
            help="Concurrency levels to test",
            show_default="1,2,4,8",
        ),
    ] = None,
    duration: Annotated[
        Duration,
        typer.Option(
            "--duration",
            parser=duration_flag,
            metavar="DURATION",
            help="Duration to run each concurrency test",
        ),
    ] = "30s",
    prompt: Annotated[
        str, typer.Option("--prompt", help="Prompt to use for benchmarking")
    ] = DEFAULT_BENCH_PROMPT,
    timeout: Annotated[
        Duration,
        typer.Option(
            "--timeout",
            parser=duration_flag,
            metavar="DURATION",
            help="Timeout for each individual request",
        ),
    ] = "5m",
    json_output: Json = False,
) -> None:
    """Benchmark a model's performance at different concurrency levels."""
    try:
        levels = parse_concurrency(concurrency)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--concurrency'") from None
    request = bench_request(model, levels, duration, prompt, timeout)
    out = sys.stderr if json_output else sys.stdout
    if not json_output:
        header = model_render.bench_header(request.model, prompt, go_duration(duration), levels)
        print_lines(header)

    def note(event: res.OperationEvent) -> str | None:
        return (
            model_render.bench_level_line(event.bench_level)
            if event.HasField("bench_level")
            else None
        )

    inference = connection().stub(InferenceServiceStub)
    final = model_chat.when_ready(
        lambda: follow(inference.BenchModel(request), out=out, note=note),
        request.model,
        out=sys.stderr,
        pull_missing=False,
    )
    result = final.result.bench
    if json_output:
        print_json(result)
        return
    print()
    print_table(model_render.BENCH_HEADERS, model_render.bench_rows(result))
    print_lines(["", *model_render.bench_summary(result)])


@app.command()
def unload(
    models: Annotated[
        list[str] | None,
        typer.Argument(metavar="MODEL", help="Models to unload", show_default=False),
    ] = None,
    unload_all: Annotated[bool, typer.Option("--all", help="Unload every model")] = False,
    backend: Backend = None,
) -> None:
    """Unload models from memory."""
    if not models and not unload_all:
        raise CliError("give at least one MODEL, or --all")
    request = runner_pb.UnloadModelRequest(
        models=models or [],
        all=unload_all,
        backend=BACKENDS[backend] if backend else res.BACKEND_UNSPECIFIED,
    )
    print_lines(model_render.unload_lines(_runner().UnloadModel(request)))


# --- the runner ---


@app.command()
def status(json_output: Json = False) -> None:
    """Check whether the model runner is running, its backends and loaded models."""
    runner_status = _runner().GetStatus(runner_pb.GetStatusRequest()).status
    if json_output:
        print_json(runner_status)
        return
    print_lines(model_render.status_lines(runner_status))
    if runner_status.engines:
        print()
        print_table(model_render.ENGINE_HEADERS, model_render.engine_rows(runner_status.engines))
    if not runner_status.running:
        raise typer.Exit(1)


@app.command()
def ps() -> None:
    """List the models loaded in an engine."""
    runner_status = _runner().GetStatus(runner_pb.GetStatusRequest()).status
    print_table(model_render.ENGINE_HEADERS, model_render.engine_rows(runner_status.engines))


@app.command()
def logs(
    follow_logs: Annotated[
        bool, typer.Option("-f", "--follow", help="View logs with real-time streaming")
    ] = False,
    no_engines: Annotated[
        bool, typer.Option("--no-engines", help="Exclude inference engine logs")
    ] = False,
) -> None:
    """Fetch the model runner's logs."""
    request = runner_pb.StreamLogsRequest(follow=follow_logs, no_engines=no_engines)
    call = _runner().StreamLogs(request)
    try:
        for entry in call:
            sys.stdout.write(model_render.log_line(entry) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        call.cancel()
        raise


@app.command("install-runner")
def install_runner(
    backend: Backend = None,
    gpu: Gpu = None,
    host: Host = None,
    port: Port = None,
    debug: Debug = False,
    do_not_track: DoNotTrack = False,
) -> None:
    """Install the model runner: make a backend available, configure and start it."""
    request = install_request(
        runner_pb.InstallRunnerRequest, backend, gpu, host, port, debug, do_not_track
    )
    final = follow(_runner().InstallRunner(request))
    print(model_render.runner_summary(final.result.runner))


@app.command("reinstall-runner")
def reinstall_runner(
    backend: Backend = None,
    gpu: Gpu = None,
    host: Host = None,
    port: Port = None,
    debug: Debug = False,
    do_not_track: DoNotTrack = False,
) -> None:
    """Reinstall the model runner with the given configuration; models are kept."""
    request = install_request(
        runner_pb.ReinstallRunnerRequest, backend, gpu, host, port, debug, do_not_track
    )
    final = follow(_runner().ReinstallRunner(request))
    print(model_render.runner_summary(final.result.runner))


@app.command("start-runner")
def start_runner(
    backend: Backend = None,
    gpu: Gpu = None,
    port: Port = None,
    debug: Debug = False,
    do_not_track: DoNotTrack = False,
) -> None:
    """Start the model runner with what is installed."""
    request = start_request(backend, gpu, port, debug, do_not_track)
    print(model_render.runner_summary(_runner().StartRunner(request).status))


@app.command("stop-runner")
def stop_runner(
    models: Annotated[bool, typer.Option("--models", help="Remove the model store")] = False,
) -> None:
    """Stop the model runner; backends (and, without --models, models) are kept."""
    response = _runner().StopRunner(runner_pb.StopRunnerRequest(models=models))
    print_lines(model_render.stop_lines(response))


@app.command("restart-runner")
def restart_runner(
    gpu: Gpu = None,
    host: Host = None,
    port: Port = None,
    debug: Debug = False,
    do_not_track: DoNotTrack = False,
) -> None:
    """Restart the model runner with what is installed."""
    request = restart_request(gpu, host, port, debug, do_not_track)
    print(model_render.runner_summary(_runner().RestartRunner(request).status))


@app.command("uninstall-runner")
def uninstall_runner(
    models: Annotated[bool, typer.Option("--models", help="Remove the model store")] = False,
    images: Annotated[
        bool, typer.Option("--images", help="Remove the backends berth installed")
    ] = False,
) -> None:
    """Uninstall the model runner."""
    request = runner_pb.UninstallRunnerRequest(models=models, images=images)
    print_lines(model_render.uninstall_lines(_runner().UninstallRunner(request), images))


@app.command()
def version() -> None:
    """Show the model runner's version."""
    system = connection().stub(SystemServiceStub)
    try:
        server = system.GetVersion(system_pb.GetVersionRequest()).version
    except grpc.RpcError as error:
        print(f"berth: {error.details() if hasattr(error, 'details') else error}", file=sys.stderr)
        server = None
    print_lines(model_render.version_lines(server, berth_version()))
