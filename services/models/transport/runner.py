"""berth.models.v1.RunnerService: the runner's life, its status, its logs, and loading and
unloading engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc.aio
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1 import runner_service_pb2 as pb
from berth.api.models.v1 import runner_service_pb2_grpc as pb_grpc
from berth.common.errors import FieldViolation, InvalidArgument, NotYetAvailable
from berth.common.server import Lifecycle
from berth.models.domain.engines import FORMATS, EngineKey, EngineState
from berth.models.domain.runner_log import LogLine, RunnerLog, wanted
from berth.models.runner.engines import Engine
from berth.models.runner.runner import BackendStatus, Runner, RunnerConfig
from berth.models.transport.convert import BACKEND_NAMES, BACKEND_VALUES
from berth.models.transport.inference import lease_for

GPU_NAMES = {res.GPU_MODE_AUTO: "auto", res.GPU_MODE_NONE: "none", res.GPU_MODE_CUDA: "cuda"}
GPU_VALUES = {name: value for value, name in GPU_NAMES.items()}
FORMAT_VALUES = {"gguf": res.MODEL_FORMAT_GGUF, "safetensors": res.MODEL_FORMAT_SAFETENSORS}
ENGINE_STATES = {
    EngineState.LOADING: res.ENGINE_STATE_LOADING,
    EngineState.READY: res.ENGINE_STATE_READY,
    EngineState.UNLOADING: res.ENGINE_STATE_UNLOADING,
    EngineState.FAILED: res.ENGINE_STATE_FAILED,
}


class RunnerServicer(pb_grpc.RunnerServiceServicer):
    def __init__(self, log: RunnerLog, lifecycle: Lifecycle, runner: Runner) -> None:
        self.log = log
        self.lifecycle = lifecycle
        self.runner = runner

    # --- the runner's life ---

    async def InstallRunner(
        self, request: pb.InstallRunnerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.InstallRunnerResponse]:
        async for event in self._install(request):
            yield pb.InstallRunnerResponse(event=event)

    async def ReinstallRunner(
        self, request: pb.ReinstallRunnerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReinstallRunnerResponse]:
        async for event in self._install(request):  # install stops a running runner first
            yield pb.ReinstallRunnerResponse(event=event)

    async def _install(
        self, request: pb.InstallRunnerRequest | pb.ReinstallRunnerRequest
    ) -> AsyncIterator[res.OperationEvent]:
        config = self._install_config(request)
        yield self._event(res.OPERATION_PHASE_INSTALLING)
        await self.runner.install(config)
        yield self._event(res.OPERATION_PHASE_DONE)

    async def StartRunner(
        self, request: pb.StartRunnerRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartRunnerResponse:
        changes: dict[str, object] = {}
        if request.backend:
            changes["default_backend"] = BACKEND_NAMES[request.backend]
        if request.gpu:
            changes["gpu"] = _gpu(request.gpu)
        for name in ("port", "debug", "do_not_track"):
            if request.HasField(name):
                changes[name] = getattr(request, name)
        await self.runner.start(changes)
        return pb.StartRunnerResponse(status=self.status())

    async def StopRunner(
        self, request: pb.StopRunnerRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopRunnerResponse:
        await self.runner.stop()
        deleted = await self.runner.remove_models() if request.models else []
        return pb.StopRunnerResponse(status=self.status(), deleted_models=deleted)

    async def RestartRunner(
        self, request: pb.RestartRunnerRequest, context: grpc.aio.ServicerContext
    ) -> pb.RestartRunnerResponse:
        changes: dict[str, object] = {}
        if request.gpu:
            changes["gpu"] = _gpu(request.gpu)
        for name in ("host", "port", "debug", "do_not_track"):
            if request.HasField(name):
                changes[name] = getattr(request, name)
        await self.runner.stop()
        await self.runner.start(changes)
        return pb.RestartRunnerResponse(status=self.status())

    async def UninstallRunner(
        self, request: pb.UninstallRunnerRequest, context: grpc.aio.ServicerContext
    ) -> pb.UninstallRunnerResponse:
        await self.runner.uninstall()
        deleted = await self.runner.remove_models() if request.models else []
        # `--images` removes the backends berth installed; it installs none (they come with
        # the host's Python environments), so there is nothing it may remove.
        return pb.UninstallRunnerResponse(status=self.status(), deleted_models=deleted)

    # --- status and logs ---

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
        return pb.GetStatusResponse(status=self.status())

    async def StreamLogs(
        self, request: pb.StreamLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamLogsResponse]:
        tail = request.tail if request.HasField("tail") else None
        subscription = self.log.subscribe() if request.follow else None
        try:
            for line in self.log.backlog(tail, request.no_engines):
                yield _log_line(line)
            if subscription is None:
                return
            async for line in subscription.follow(self.lifecycle.stopping):
                if wanted(line, request.no_engines):
                    yield _log_line(line)
        finally:
            if subscription is not None:
                self.log.unsubscribe(subscription)

    # --- engines ---

    async def RunModel(
        self, request: pb.RunModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunModelResponse:
        self.runner.require_running()
        if not request.model:
            raise InvalidArgument([FieldViolation("model", "is required")])
        embedding = request.mode == res.ENGINE_MODE_EMBEDDING
        async with lease_for(self.runner.engines, request, embedding) as lease:
            key = EngineKey(lease.model_id, lease.backend, embedding)
            engine = next(e for e in self.runner.engines.engines() if e.use.key == key)
        return pb.RunModelResponse(engine=engine_message(engine))

    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnloadModelResponse:
        if not request.models and not request.all:
            raise InvalidArgument([FieldViolation("models", "give models, or all")])
        ids = None
        if not request.all:
            ids = {
                self.runner.engines.store.inspect(text, f"models[{i}]").id
                for i, text in enumerate(request.models)
            }
        unloaded = await self.runner.engines.unload(ids, BACKEND_NAMES.get(request.backend))
        return pb.UnloadModelResponse(unloaded=[engine_message(e) for e in unloaded])

    # --- messages ---

    def status(self) -> res.RunnerStatus:
        runner = self.runner
        config = runner.config
        total, available = runner.memory()
        message = res.RunnerStatus(
            installed=config.installed,
            running=runner.http is not None,
            config=res.RunnerConfig(
                default_backend=BACKEND_VALUES.get(config.default_backend, 0),
                gpu=GPU_VALUES.get(config.gpu, res.GPU_MODE_AUTO),
                host=config.host,
                port=runner.bound_port or config.port,
                debug=config.debug,
                do_not_track=config.do_not_track,
                default_keep_alive=_duration(_seconds(runner.engines.default_keep_alive)),
                max_loaded_models=runner.engines.max_loaded,
            ),
            endpoint=runner.endpoint,
            backends=[_backend_message(b) for b in runner.backends()],
            engines=[engine_message(e) for e in runner.engines.engines()],
            memory_total_bytes=total,
            memory_available_bytes=available,
        )
        if runner.start_time is not None:
            message.start_time.FromDatetime(runner.start_time)
        return message

    def _event(self, phase: int) -> res.OperationEvent:
        done = phase == res.OPERATION_PHASE_DONE
        event = res.OperationEvent(
            kind=res.OPERATION_KIND_INSTALL_RUNNER,
            state=res.OPERATION_STATE_SUCCEEDED if done else res.OPERATION_STATE_RUNNING,
            phase=phase,
            message="Runner installed" if done else "Installing the runner",
        )
        event.time.FromDatetime(datetime.now(UTC))
        if done:
            event.result.runner.CopyFrom(self.status())
        return event

    def _install_config(
        self, request: pb.InstallRunnerRequest | pb.ReinstallRunnerRequest
    ) -> RunnerConfig:
        defaults = self.runner.defaults
        return RunnerConfig(
            default_backend=BACKEND_NAMES.get(request.backend, defaults.default_backend),
            gpu=_gpu(request.gpu) if request.gpu else defaults.gpu,
            host=request.host or defaults.host,
            port=request.port if request.HasField("port") else defaults.port,
            debug=request.debug,
            do_not_track=request.do_not_track,
        )


def engine_message(engine: Engine) -> res.Engine:
    use = engine.use
    message = res.Engine(
        model=engine.model,
        model_id=use.key.model_id,
        backend=BACKEND_VALUES.get(use.key.backend, 0),
        mode=res.ENGINE_MODE_EMBEDDING if use.key.embedding else res.ENGINE_MODE_COMPLETION,
        state=ENGINE_STATES[use.state],
        pid=engine.process.pid if engine.process else 0,
        loaded_time=_timestamp(use.loaded_time),
        last_used_time=_timestamp(use.last_used),
        keep_alive=_duration(_seconds(use.keep_alive)),
        memory_bytes=engine.process.rss_bytes() if engine.process and engine.process.alive else 0,
        active_requests=use.active_requests,
        context_size=engine.context_size or 0,
    )
    expires = use.expires_at()
    if expires is not None:
        message.expire_time.CopyFrom(_timestamp(expires))
    return message


def _backend_message(backend: BackendStatus) -> res.BackendInfo:
    if backend.running:
        state = res.BACKEND_STATE_RUNNING
    elif backend.installed:
        state = res.BACKEND_STATE_INSTALLED
    else:
        state = res.BACKEND_STATE_NOT_INSTALLED
    return res.BackendInfo(
        backend=BACKEND_VALUES[backend.name],
        state=state,
        version=backend.version,
        formats=[FORMAT_VALUES[f] for f in FORMATS[backend.name]],
        device=backend.device,
    )


def _gpu(value: int) -> str:
    name = GPU_NAMES.get(value)
    if name is None:
        raise NotYetAvailable(f"--gpu {res.GpuMode.Name(value)}", "a later version of the runner")
    return name


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _seconds(keep_alive: timedelta | None) -> float:
    """A keep-alive as the API gives it: -1 for never."""
    return -1 if keep_alive is None else keep_alive.total_seconds()


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


def _log_line(line: LogLine) -> pb.StreamLogsResponse:
    message = pb.StreamLogsResponse(source=line.source, line=line.line)
    message.time.FromDatetime(line.time)
    return message
