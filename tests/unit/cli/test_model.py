"""`berth model`: flag parsing, request building, rendering, and the commands end to end
against an in-process fake berth-modeld (real gRPC over a unix socket, no real runner)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import typer
from google.protobuf import any_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from typer.testing import CliRunner

from berth.api.common.v1.version_pb2 import VersionInfo
from berth.api.models.v1 import inference_service_pb2 as inf
from berth.api.models.v1 import inference_service_pb2_grpc as inf_grpc
from berth.api.models.v1 import model_service_pb2 as store
from berth.api.models.v1 import model_service_pb2_grpc as store_grpc
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1 import runner_service_pb2 as runner_pb
from berth.api.models.v1 import runner_service_pb2_grpc as runner_grpc
from berth.api.models.v1 import system_service_pb2 as system_pb
from berth.api.models.v1 import system_service_pb2_grpc as system_grpc
from berth.cli import model_chat, model_progress, model_render
from berth.cli.connection import Target
from berth.cli.context import connect
from berth.cli.errors import EXIT_INTERRUPTED, CliError
from berth.cli.model import app
from berth.cli.model_auth import DOCKER_HUB, registry_auth_for, registry_host
from berth.cli.model_parse import (
    display_name,
    go_duration,
    human_since,
    parse_concurrency,
    parse_duration,
    short_duration,
)
from berth.cli.model_requests import (
    install_request,
    package_request,
    restart_request,
    start_request,
)

runner = CliRunner()


def _flat(text: str) -> str:
    """Output with rich's box drawing and line wrapping removed."""
    return " ".join(text.replace("│", " ").split())


DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


# --- durations and other flag values ---


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("30s", 30 * 10**9),
        ("5m", 300 * 10**9),
        ("1h30m", 5400 * 10**9),
        ("1.5h", 5400 * 10**9),
        ("250ms", 250 * 10**6),
        ("5m0s", 300 * 10**9),
        ("0", 0),
        ("-2s", -2 * 10**9),
    ],
)
def test_parse_duration_accepts_go_durations(text: str, nanos: int) -> None:
    assert parse_duration(text).ToNanoseconds() == nanos


@pytest.mark.parametrize("text", ["", "30", "abc", "5 m", "1h30", "3x", "s"])
def test_parse_duration_rejects_bad_values_readably(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .*e\.g\. 30s, 5m or 1h30m"):
        parse_duration(text)


def test_go_duration_writes_durations_as_docker_shows_them() -> None:
    assert go_duration(parse_duration("5m")) == "5m0s"
    assert go_duration(parse_duration("30s")) == "30s"
    assert go_duration(parse_duration("1h30m")) == "1h30m0s"
    assert go_duration(parse_duration("1500ms")) == "1.5s"
    assert go_duration(parse_duration("250ms")) == "250ms"


def test_short_duration_rounds_for_tables() -> None:
    assert short_duration(Duration(seconds=1, nanos=234_000_000)) == "1.23s"
    assert short_duration(Duration(nanos=45_600_000)) == "46ms"
    assert short_duration(Duration(nanos=2_500_000)) == "2.5ms"


def test_concurrency_accepts_commas_and_repeats() -> None:
    assert parse_concurrency(None) == [1, 2, 4, 8]
    assert parse_concurrency(["1,4", "16"]) == [1, 4, 16]
    with pytest.raises(ValueError, match="at least 1"):
        parse_concurrency(["0"])
    with pytest.raises(ValueError, match='"two"'):
        parse_concurrency(["1,two"])


def test_bad_duration_flag_is_a_usage_error_naming_the_flag() -> None:
    result = runner.invoke(app, ["bench", "--duration", "10 minutes"])
    assert result.exit_code == 2
    assert "--duration" in _flat(result.output)
    assert "invalid duration" in _flat(result.output)


def test_zero_timeout_is_refused() -> None:
    result = runner.invoke(app, ["bench", "--timeout", "0s"])
    assert result.exit_code == 2
    assert "longer than zero" in _flat(result.output)


def test_bad_gpu_lists_the_accepted_values() -> None:
    result = runner.invoke(app, ["install-runner", "--gpu", "metal"])
    assert result.exit_code == 2
    assert "auto, none, cuda" in _flat(result.output)


def test_bad_color_mode_is_refused() -> None:
    result = runner.invoke(app, ["run", "ai/smollm2", "hi", "--color", "always"])
    assert result.exit_code == 2
    assert "auto, yes, no" in _flat(result.output)


# --- request builders ---


def test_package_needs_exactly_one_source() -> None:
    with pytest.raises(CliError, match="exactly one"):
        package_request("me/m")
    with pytest.raises(CliError, match="exactly one"):
        package_request("me/m", gguf="/a.gguf", from_model="ai/smollm2")
    result = runner.invoke(app, ["package", "me/m"])
    assert isinstance(result.exception, CliError)


def test_package_request_makes_paths_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/tmp")
    request = package_request(
        "me/m",
        gguf="model.gguf",
        licenses=["LICENSE", "/abs/NOTICE"],
        context_size=4096,
        chat_template="t.jinja",
        dir_tars=["tokenizer"],
    )
    assert request.gguf_path == "/tmp/model.gguf"
    assert list(request.license_paths) == ["/tmp/LICENSE", "/abs/NOTICE"]
    assert request.chat_template_path == "/tmp/t.jinja"
    assert list(request.dir_tar_paths) == ["tokenizer"]
    assert request.context_size == 4096
    assert request.WhichOneof("source") == "gguf_path"


def test_package_from_leaves_context_size_absent() -> None:
    request = package_request("me/m2", from_model="me/m")
    assert request.from_model == "me/m"
    assert not request.HasField("context_size")


def test_install_request_maps_flags_and_leaves_unset_port_absent() -> None:
    request = install_request(
        runner_pb.InstallRunnerRequest, "vllm", "cuda", "0.0.0.0", None, True, False
    )
    assert request.backend == res.BACKEND_VLLM
    assert request.gpu == res.GPU_MODE_CUDA
    assert request.host == "0.0.0.0"
    assert not request.HasField("port")
    assert request.debug
    zero_port = install_request(runner_pb.ReinstallRunnerRequest, None, None, None, 0, False, False)
    assert zero_port.HasField("port") and zero_port.port == 0
    assert zero_port.backend == res.BACKEND_UNSPECIFIED


def test_start_and_restart_keep_installed_values_for_flags_not_given() -> None:
    start = start_request(None, None, None, False, False)
    assert not start.HasField("debug") and not start.HasField("port")
    assert start.gpu == res.GPU_MODE_UNSPECIFIED
    restart = restart_request("none", None, 8080, True, False)
    assert restart.gpu == res.GPU_MODE_NONE
    assert restart.port == 8080 and restart.debug
    assert not restart.HasField("host") and not restart.HasField("do_not_track")


# --- registry credentials ---


def test_registry_host_follows_docker_rules() -> None:
    assert registry_host("ai/smollm2") == DOCKER_HUB
    assert registry_host("smollm2") == DOCKER_HUB
    assert registry_host("localhost:5000/ns/m:tag") == "localhost:5000"
    assert registry_host("hf.co/org/repo:Q4_K_M") == "hf.co"


def test_credentials_come_from_docker_config(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"alice:s3cret").decode()
    config = {"auths": {"localhost:5000": {"auth": encoded}, DOCKER_HUB: {"auth": encoded}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    auth = registry_auth_for("localhost:5000/me/m", tmp_path)
    assert auth is not None
    assert (auth.username, auth.password, auth.server_address) == (
        "alice",
        "s3cret",
        "localhost:5000",
    )
    assert registry_auth_for("ai/smollm2", tmp_path) is not None
    assert registry_auth_for("other.io/me/m", tmp_path) is None


def test_hugging_face_token_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    auth = registry_auth_for("hf.co/org/repo", tmp_path)
    assert auth is not None and auth.registry_token == "hf_abc"
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert registry_auth_for("hf.co/org/repo", tmp_path) is None


# --- progress rendering ---


def _event(**fields: object) -> res.OperationEvent:
    fields.setdefault("kind", res.OPERATION_KIND_PULL_MODEL)
    return res.OperationEvent(operation_id="op-1", **fields)


def _layer(status: int, done: int = 0, digest: str = DIGEST_A, name: str = "m.gguf") -> object:
    return res.LayerProgress(
        digest=digest, name=name, status=status, total_bytes=1000, completed_bytes=done
    )


class FakeCall:
    """A streaming call that yields responses, then maybe raises."""

    def __init__(self, events: list[res.OperationEvent], then: BaseException | None = None):
        self.events, self.then, self.cancelled = events, then, False

    def __iter__(self) -> Iterator[store.PullModelResponse]:
        for event in self.events:
            yield store.PullModelResponse(event=event)
        if self.then is not None:
            raise self.then

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def _pull_events() -> list[res.OperationEvent]:
    running = res.OPERATION_STATE_RUNNING
    downloading = res.OPERATION_PHASE_DOWNLOADING
    return [
        _event(
            state=running,
            phase=res.OPERATION_PHASE_RESOLVING,
            message="Resolving ai/smollm2",
            layers=[
                _layer(res.LAYER_STATUS_WAITING),
                _layer(res.LAYER_STATUS_EXISTS, digest=DIGEST_B, name="LICENSE"),
            ],
        ),
        _event(state=running, phase=downloading, layers=[_layer(res.LAYER_STATUS_TRANSFERRING)]),
        _event(state=running, phase=downloading, layers=[_layer(3, done=500)]),
        _event(state=running, phase=downloading, layers=[_layer(res.LAYER_STATUS_DONE, 1000)]),
        _event(
            state=res.OPERATION_STATE_SUCCEEDED,
            phase=res.OPERATION_PHASE_DONE,
            result=res.OperationResult(
                model=res.ModelResult(model="ai/smollm2:latest", id=DIGEST_A, size_bytes=1000)
            ),
        ),
    ]


def test_plain_progress_prints_one_line_per_layer_start_and_completion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    final = model_progress.follow(FakeCall(_pull_events()))
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "Resolving ai/smollm2",
        "bbbbbbbbbbbb: Already exists",
        "aaaaaaaaaaaa: Downloading m.gguf (1000 B)",
        "aaaaaaaaaaaa: Pull complete",
    ]
    assert final.result.model.id == DIGEST_A
    assert model_render.model_result_lines(final) == [
        "Model pulled successfully: ai/smollm2:latest",
        f"Digest: {DIGEST_A} (1000 B)",
    ]


def test_layer_whose_digest_arrives_later_keeps_one_line_and_label() -> None:
    out = io.StringIO()
    view = model_progress.PlainView(out)
    package = res.OPERATION_KIND_PACKAGE_MODEL
    hashing = _layer(res.LAYER_STATUS_TRANSFERRING, digest="", name="m.gguf")
    view.show(_event(kind=package, layers=[hashing]))
    view.show(_event(kind=package, layers=[_layer(res.LAYER_STATUS_DONE, 1000)]))
    assert len(view.book.layers) == 1
    assert view.book.layers[0].digest == DIGEST_A
    assert out.getvalue().splitlines() == ["m.gguf: Adding (1000 B)", "m.gguf: Added"]


def test_failed_operation_propagates_the_error() -> None:
    error = RuntimeError("registry said no")
    with pytest.raises(RuntimeError, match="registry said no"):
        model_progress.follow(FakeCall(_pull_events()[:2], then=error))


def test_stream_that_ends_without_result_is_an_error() -> None:
    with pytest.raises(CliError, match="operation id op-1"):
        model_progress.follow(FakeCall(_pull_events()[:2]))


def test_ctrl_c_cancels_the_call_and_names_the_operation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    call = FakeCall(_pull_events()[:2], then=KeyboardInterrupt())
    with pytest.raises(typer.Exit) as stopped:
        model_progress.follow(call)
    assert stopped.value.exit_code == EXIT_INTERRUPTED
    assert call.cancelled
    assert "goes on in berth (operation id op-1)" in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_progress_bars_with_each_layer() -> None:
    out = Terminal()
    assert isinstance(model_progress.make_view(out), model_progress.RichView)
    final = model_progress.follow(FakeCall(_pull_events()), out=out)
    assert final.state == res.OPERATION_STATE_SUCCEEDED
    screen = out.getvalue()
    assert "aaaaaaaaaaaa m.gguf" in screen and "Pull complete" in screen
    assert "bbbbbbbbbbbb LICENSE" in screen and "Already exists" in screen


class InterruptedChat:
    """A Chat call that yields one piece, then the user presses Ctrl-C."""

    def __init__(self) -> None:
        self.cancelled = False

    def __iter__(self) -> Iterator[inf.ChatResponse]:
        return self

    def __next__(self) -> inf.ChatResponse:
        if not hasattr(self, "sent"):
            self.sent = True
            return inf.ChatResponse(content="Par")
        raise KeyboardInterrupt

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def test_ctrl_c_during_an_answer_cancels_it_and_forgets_the_question(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    call = InterruptedChat()

    class Stub:
        def Chat(self, request: inf.ChatRequest) -> InterruptedChat:
            return call

    class Connection:
        def stub(self, _stub_class: object) -> Stub:
            return Stub()

    monkeypatch.setattr(model_chat, "connection", Connection)
    out = io.StringIO()
    session = model_chat.ChatSession("ai/smollm2", out=out, err=io.StringIO())
    with pytest.raises(KeyboardInterrupt):
        session.ask("What is the capital of France?")
    assert call.cancelled
    assert session.history == []
    assert out.getvalue() == "Par\n"


# --- renderers ---


def _model(tags: list[str], **config: object) -> res.Model:
    created = Timestamp()
    created.FromDatetime(datetime.now(UTC) - timedelta(days=3, hours=1))
    return res.Model(
        id=DIGEST_A,
        tags=tags,
        created_time=created,
        size_bytes=103_000_000,
        config=res.ModelConfig(
            format=res.MODEL_FORMAT_GGUF,
            quantization="Q4_1",
            parameters="134.52 M",
            architecture="llama",
            size="98.87 MiB",
            gguf={"llama.context_length": "8192"},
            **config,
        ),
    )


def test_ls_rows_one_per_tag_without_docker_defaults() -> None:
    rows = model_render.model_rows([_model(["ai/smollm2:latest", "me/small:v1"]), _model([])])
    assert [row[0] for row in rows] == ["smollm2", "me/small:v1", "<none>"]
    assert rows[0][1:] == [
        "134.52 M",
        "Q4_1",
        "llama",
        "aaaaaaaaaaaa",
        "3 days ago",
        "8192",
        "98.87 MiB",
    ]


def test_packaged_context_size_wins_over_the_gguf_one() -> None:
    assert model_render.model_rows([_model(["x"], context_size=2048)])[0][6] == "2048"


def test_openai_rendering_and_quiet_ids() -> None:
    models = [_model(["ai/smollm2:latest"]), _model(["ai/smollm2:q8"])]
    listed = model_render.openai_list(models)
    assert listed["object"] == "list"
    assert listed["data"][0]["id"] == "ai/smollm2:latest"
    assert listed["data"][0]["owned_by"] == "docker"
    assert isinstance(listed["data"][0]["created"], int)
    assert model_render.quiet_ids(models) == ["aaaaaaaaaaaa"]


def test_human_since_and_display_name() -> None:
    now = datetime(2025, 1, 10, tzinfo=UTC)
    then = Timestamp()
    then.FromDatetime(now - timedelta(minutes=59, seconds=50))
    assert human_since(then, now) == "59 minutes ago"
    then.FromDatetime(now - timedelta(minutes=70))
    assert human_since(then, now) == "About an hour ago"
    then.FromDatetime(now - timedelta(days=20))
    assert human_since(then, now) == "2 weeks ago"
    assert display_name("ai/smollm2:latest") == "smollm2"
    assert display_name("localhost:5000/ai/x:latest") == "localhost:5000/ai/x"


def test_status_lines_running_and_not() -> None:
    status = res.RunnerStatus(
        installed=True,
        running=True,
        endpoint="http://127.0.0.1:12434",
        config=res.RunnerConfig(default_backend=res.BACKEND_LLAMA_CPP, gpu=res.GPU_MODE_AUTO),
        backends=[
            res.BackendInfo(
                backend=res.BACKEND_LLAMA_CPP,
                state=res.BACKEND_STATE_RUNNING,
                version="0.3.16",
                device="cpu",
                formats=[res.MODEL_FORMAT_GGUF],
            ),
            res.BackendInfo(backend=res.BACKEND_VLLM, state=res.BACKEND_STATE_NOT_INSTALLED),
        ],
    )
    lines = model_render.status_lines(status)
    assert lines[0] == "Model runner is running"
    assert "Endpoint: http://127.0.0.1:12434" in lines
    assert "llama.cpp: running (0.3.16, cpu, gguf)" in lines
    assert "vllm: not installed" in lines
    stopped = model_render.status_lines(res.RunnerStatus(installed=True))
    assert stopped == ["Model runner is not running", "Start it with `berth model start-runner`."]


def test_bench_level_line_has_every_figure() -> None:
    level = res.BenchLevelResult(
        concurrency=4,
        requests=40,
        failed_requests=1,
        tokens_per_second=512.345,
        ttft_p50=Duration(nanos=20_000_000),
        ttft_p99=Duration(nanos=90_000_000),
        latency_p50=Duration(seconds=1, nanos=500_000_000),
        latency_p99=Duration(seconds=3),
    )
    assert model_render.bench_level_line(level) == (
        "Concurrency 4: 40 requests, 1 failed, 512.35 tokens/s, "
        "time to first token p50 20ms p99 90ms, latency p50 1.50s p99 3.00s"
    )


def test_version_lines_like_docker_model_version() -> None:
    info = VersionInfo(component="berth-modeld", version="0.1.0", api_version="v1", os="linux")
    lines = model_render.version_lines(info, "0.1.0")
    assert lines[0] == "Client:" and "Server:" in lines
    assert " Component:   berth-modeld" in lines
    assert model_render.version_lines(None, "0.1.0")[-1] == " Version:     (not reachable)"


def test_multiline_message_between_triple_quotes() -> None:
    lines = iter(['"""first', "second", 'third"""'])
    assert model_chat.read_message(lambda _prompt: next(lines)) == "first\nsecond\nthird"
    assert model_chat.read_message(lambda _prompt: '"""one line"""') == "one line"
    assert model_chat.read_message(lambda _prompt: None) is None


# --- the commands against a fake berth-modeld ---


def _abort(context: grpc.ServicerContext, code: int, message: str, reason: str) -> None:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="models.berth"))
    status = status_pb2.Status(code=code, message=message, details=[info])
    context.abort_with_status(rpc_status.to_status(status))


class FakeModels(store_grpc.ModelServiceServicer):
    def __init__(self) -> None:
        self.present: set[str] = set()
        self.pulls: list[str] = []
        self.removed: list[store.RemoveModelRequest] = []

    def PullModel(self, request, context):
        self.pulls.append(request.model)
        if request.model == "me/broken":
            _abort(context, code_pb2.NOT_FOUND, "manifest unknown: me/broken", "MODEL_NOT_FOUND")
        for event in _pull_events():
            yield store.PullModelResponse(event=event)
        self.present.add(request.model)

    def ListModels(self, request, context):
        return store.ListModelsResponse(models=[_model(["ai/smollm2:latest"])])

    def RemoveModel(self, request, context):
        self.removed.append(request)
        return store.RemoveModelResponse(untagged=list(request.models), deleted=[DIGEST_A])

    def PurgeModels(self, request, context):
        return store.PurgeModelsResponse(deleted=[DIGEST_A], reclaimed_bytes=2048)


class FakeInference(inf_grpc.InferenceServiceServicer):
    def __init__(self, models: FakeModels) -> None:
        self.models = models
        self.requests: list[inf.ChatRequest] = []

    def Chat(self, request, context):
        if request.model not in self.models.present:
            _abort(
                context, code_pb2.NOT_FOUND, f"model {request.model} not found", "MODEL_NOT_FOUND"
            )
        self.requests.append(request)
        turn = sum(m.role == inf.CHAT_ROLE_USER for m in request.messages)
        for piece in ("Paris", " is", f" answer {turn}."):
            yield inf.ChatResponse(id="chatcmpl-1", content=piece)
        usage = inf.Usage(prompt_tokens=9, completion_tokens=3, total_tokens=12)
        yield inf.ChatResponse(finish_reason=inf.FINISH_REASON_STOP, usage=usage)

    def BenchModel(self, request, context):
        levels = [
            res.BenchLevelResult(concurrency=c, requests=10 * c, tokens_per_second=100.0 * c)
            for c in request.concurrency
        ]
        event = res.OperationEvent(operation_id="op-b", kind=res.OPERATION_KIND_BENCH_MODEL)
        for level in levels:
            event.bench_level.CopyFrom(level)
            yield inf.BenchModelResponse(event=event)
        final = res.OperationEvent(
            operation_id="op-b",
            kind=res.OPERATION_KIND_BENCH_MODEL,
            state=res.OPERATION_STATE_SUCCEEDED,
            result=res.OperationResult(
                bench=res.BenchResult(model=request.model, prompt=request.prompt, levels=levels)
            ),
        )
        yield inf.BenchModelResponse(event=final)


class FakeRunner(runner_grpc.RunnerServiceServicer):
    def __init__(self) -> None:
        self.run_requests: list[runner_pb.RunModelRequest] = []

    def RunModel(self, request, context):
        self.run_requests.append(request)
        if len(self.run_requests) == 1:
            _abort(context, code_pb2.FAILED_PRECONDITION, "runner stopped", "RUNNER_NOT_RUNNING")
        return runner_pb.RunModelResponse(engine=res.Engine(model=request.model, pid=42))

    def GetStatus(self, request, context):
        return runner_pb.GetStatusResponse(status=res.RunnerStatus(installed=True))

    def StartRunner(self, request, context):
        return runner_pb.StartRunnerResponse(status=res.RunnerStatus(installed=True, running=True))

    def StreamLogs(self, request, context):
        yield runner_pb.StreamLogsResponse(source="runner", line="runner started")
        if not request.no_engines:
            yield runner_pb.StreamLogsResponse(source="llama.cpp", line="model loaded")


class FakeSystem(system_grpc.SystemServiceServicer):
    def GetVersion(self, request, context):
        return system_pb.GetVersionResponse(
            version=VersionInfo(component="berth-modeld", version="9.9.9", api_version="v1")
        )


class Fake:
    def __init__(self) -> None:
        self.models = FakeModels()
        self.inference = FakeInference(self.models)
        self.runner = FakeRunner()


@pytest.fixture
def fake() -> Iterator[Fake]:
    directory = tempfile.mkdtemp(prefix="bm", dir="/tmp")
    socket = f"{directory}/s.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    state = Fake()
    store_grpc.add_ModelServiceServicer_to_server(state.models, server)
    inf_grpc.add_InferenceServiceServicer_to_server(state.inference, server)
    runner_grpc.add_RunnerServiceServicer_to_server(state.runner, server)
    system_grpc.add_SystemServiceServicer_to_server(FakeSystem(), server)
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    connect(Target(host=f"unix://{socket}"))
    try:
        yield state
    finally:
        connect(Target())
        server.stop(None)
        shutil.rmtree(directory, ignore_errors=True)


def test_pull_command_prints_layers_and_result(fake: Fake) -> None:
    result = runner.invoke(app, ["pull", "ai/smollm2"])
    assert result.exit_code == 0, result.output
    assert "aaaaaaaaaaaa: Pull complete" in result.output
    assert "Model pulled successfully: ai/smollm2:latest" in result.output
    assert fake.models.pulls == ["ai/smollm2"]


def test_pull_failure_is_the_servers_error(fake: Fake) -> None:
    result = runner.invoke(app, ["pull", "me/broken"])
    assert isinstance(result.exception, grpc.RpcError)
    assert result.exception.code() == grpc.StatusCode.NOT_FOUND


def test_run_pulls_a_missing_model_then_streams_the_answer(fake: Fake) -> None:
    result = runner.invoke(app, ["run", "ai/smollm2", "What is the capital of France?"])
    assert result.exit_code == 0, result.output
    assert fake.models.pulls == ["ai/smollm2"]
    assert "Unable to find model 'ai/smollm2' locally" in result.output
    assert result.output.endswith("Paris is answer 1.\n")
    assert fake.inference.requests[0].stream


def test_interactive_chat_keeps_the_conversation_until_bye(fake: Fake) -> None:
    fake.models.present.add("ai/smollm2")
    result = runner.invoke(app, ["run", "ai/smollm2"], input="Hi\n\nAnd again?\n/bye\nignored\n")
    assert result.exit_code == 0, result.output
    assert "Paris is answer 1.\nParis is answer 2.\n" in result.output
    second = fake.inference.requests[1].messages
    assert [(m.role, m.content) for m in second] == [
        (inf.CHAT_ROLE_USER, "Hi"),
        (inf.CHAT_ROLE_ASSISTANT, "Paris is answer 1."),
        (inf.CHAT_ROLE_USER, "And again?"),
    ]
    assert len(fake.inference.requests) == 2


def test_interactive_chat_ends_on_eof(fake: Fake) -> None:
    fake.models.present.add("ai/smollm2")
    result = runner.invoke(app, ["run", "ai/smollm2"], input="Hi\n")
    assert result.exit_code == 0
    assert len(fake.inference.requests) == 1


def test_detach_starts_a_stopped_runner_then_preloads(fake: Fake) -> None:
    result = runner.invoke(app, ["run", "--detach", "--debug", "ai/smollm2"])
    assert result.exit_code == 0, result.output
    assert "Starting the model runner" in result.output
    assert len(fake.runner.run_requests) == 2
    assert "loaded successfully" in result.output


def test_bench_prints_each_level_and_a_table(fake: Fake) -> None:
    result = runner.invoke(app, ["bench", "--concurrency", "1,2", "--duration", "1s"])
    assert result.exit_code == 0, result.output
    assert "Model: ai/smollm2" in result.output
    assert "Duration: 1s per concurrency level" in result.output
    assert "Concurrency 2: 20 requests, 0 failed, 200.00 tokens/s" in result.output
    assert "LATENCY P99" in result.output
    assert "Max tokens/s: 200.00 (concurrency 2)" in result.output


def test_bench_json_prints_only_json_on_stdout(fake: Fake) -> None:
    result = runner.invoke(app, ["bench", "me/m", "--concurrency", "4", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "me/m"
    assert data["levels"][0]["concurrency"] == 4


def test_ls_variants(fake: Fake) -> None:
    table = runner.invoke(app, ["ls"])
    assert table.output.splitlines()[0].split()[:2] == ["MODEL", "NAME"]
    assert "smollm2" in table.output and "aaaaaaaaaaaa" in table.output
    assert runner.invoke(app, ["list", "-q"]).output == "aaaaaaaaaaaa\n"
    assert json.loads(runner.invoke(app, ["ls", "--json"]).output)[0]["id"] == DIGEST_A
    assert json.loads(runner.invoke(app, ["ls", "--openai"]).output)["object"] == "list"


def test_rm_and_purge(fake: Fake) -> None:
    result = runner.invoke(app, ["rm", "-f", "ai/smollm2", "me/m"])
    assert result.output == f"Untagged: ai/smollm2\nUntagged: me/m\nDeleted: {DIGEST_A}\n"
    assert fake.models.removed[0].force
    refused = runner.invoke(app, ["purge"], input="n\n")
    assert "Purge cancelled." in refused.output and "Deleted" not in refused.output
    purged = runner.invoke(app, ["purge"], input="y\n")
    assert f"Deleted: {DIGEST_A}" in purged.output
    assert "Total reclaimed space: 2.00 KiB" in purged.output


def test_logs_prefix_engine_lines(fake: Fake) -> None:
    assert runner.invoke(app, ["logs"]).output == "runner started\n[llama.cpp] model loaded\n"
    assert runner.invoke(app, ["logs", "--no-engines"]).output == "runner started\n"


def test_status_of_a_stopped_runner_exits_1(fake: Fake) -> None:
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "Model runner is not running" in result.output
    assert json.loads(runner.invoke(app, ["status", "--json"]).output)["installed"] is True


def test_version_shows_the_server(fake: Fake) -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert " Version:     9.9.9" in result.output
