"""berth-modeld: the model runner."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from berth.api.models.v1 import (
    inference_service_pb2_grpc,
    model_service_pb2_grpc,
    operation_service_pb2_grpc,
    runner_service_pb2_grpc,
    system_service_pb2_grpc,
)
from berth.common import logging
from berth.common.server import Daemon, Lifecycle, registration, run_daemon
from berth.common.system import system_servicer
from berth.common.tls import https_context
from berth.models.adapters.content_store import ContentStore
from berth.models.adapters.hub import HubClient
from berth.models.adapters.registry import RegistryClient
from berth.models.adapters.registry_credentials import own_credentials
from berth.models.adapters.system_memory import total_memory
from berth.models.domain.runner_log import LogLine, RunnerLog
from berth.models.engines.backends import EngineHost
from berth.models.runner.bench import Bench
from berth.models.runner.engines import EngineManager
from berth.models.runner.runner import Runner, RunnerConfig
from berth.models.settings import ModeldSettings
from berth.models.store.local import ModelStore
from berth.models.store.operations import Operations
from berth.models.store.service import ModelStoreService
from berth.models.transport.inference import InferenceServicer
from berth.models.transport.models import ModelServicer
from berth.models.transport.openai_http import openai_app
from berth.models.transport.operations import OperationServicer
from berth.models.transport.runner import RunnerServicer


def build_runner(settings: ModeldSettings, log: RunnerLog) -> Daemon:
    log.bind_loop()
    lifecycle = Lifecycle()
    operations = Operations(retention_s=settings.operation_retention)
    registry = RegistryClient(timeout_s=settings.registry_timeout)
    hub = HubClient(settings.huggingface_endpoint, timeout_s=settings.registry_timeout)
    store = ModelStore(ContentStore(settings.state_dir / "store"))
    limit = settings.memory_limit
    service = ModelStoreService(store, registry, hub, operations, lambda: limit or total_memory())
    host = EngineHost(
        vllm_python=settings.vllm_python or Path(sys.executable),
        vllm_args=tuple(shlex.split(settings.vllm_args)),
        max_engines=settings.max_loaded_models,
    )
    engines = EngineManager(
        store,
        settings.state_dir,
        lambda source, line: log.publish(LogLine(line, source)),
        host,
        default_keep_alive=(
            timedelta(seconds=settings.keep_alive) if settings.keep_alive >= 0 else None
        ),
        max_loaded=settings.max_loaded_models,
        load_timeout_s=settings.engine_load_timeout,
    )
    store.in_use = engines.is_loaded
    defaults = RunnerConfig(host=settings.openai_host, port=settings.openai_port)
    runner = Runner(
        settings.state_dir,
        engines,
        openai_app(engines),
        defaults,
        tls=https_context(settings.tls_files),
    )

    async def start() -> None:
        engines.start()
        await runner.boot()

    async def close() -> None:
        await runner.stop(persist=False)
        await engines.close()
        await operations.close()
        await registry.aclose()

    system = system_servicer(system_service_pb2_grpc, "berth-modeld", lifecycle)
    bench = Bench(engines, operations, runner.require_running)
    inference = InferenceServicer(engines, runner.require_running, bench)
    services = [
        registration(system_service_pb2_grpc, "SystemService", system),
        registration(
            runner_service_pb2_grpc, "RunnerService", RunnerServicer(log, lifecycle, runner)
        ),
        registration(
            model_service_pb2_grpc, "ModelService", ModelServicer(service, own_credentials)
        ),
        registration(operation_service_pb2_grpc, "OperationService", OperationServicer(operations)),
        registration(inference_service_pb2_grpc, "InferenceService", inference),
    ]
    return Daemon(
        "berth-modeld", settings, services, lifecycle=lifecycle, on_start=[start], on_stop=[close]
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = ModeldSettings.from_args(argv)
    log = RunnerLog()
    logging.configure(level=settings.log_level, fmt=settings.log_format, sinks=[log.runner_sink])
    run_daemon(lambda: build_runner(settings, log))


if __name__ == "__main__":
    main()
