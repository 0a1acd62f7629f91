"""berth-modeld: the model runner."""

from __future__ import annotations

from collections.abc import Sequence

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
from berth.models.domain.runner_log import RunnerLog
from berth.models.settings import ModeldSettings
from berth.models.transport.runner import RunnerServicer

MODEL_STORE = "the OCI model store"
INFERENCE = "inference with vLLM and llama.cpp"


def build_runner(settings: ModeldSettings, log: RunnerLog) -> Daemon:
    log.bind_loop()
    lifecycle = Lifecycle()
    system = system_servicer(system_service_pb2_grpc, "berth-modeld", lifecycle)
    runner = RunnerServicer(log, lifecycle)
    services = [
        registration(system_service_pb2_grpc, "SystemService", system),
        registration(runner_service_pb2_grpc, "RunnerService", runner, planned=INFERENCE),
        registration(model_service_pb2_grpc, "ModelService", planned=MODEL_STORE),
        registration(operation_service_pb2_grpc, "OperationService", planned=MODEL_STORE),
        registration(inference_service_pb2_grpc, "InferenceService", planned=INFERENCE),
    ]
    return Daemon("berth-modeld", settings, services, lifecycle=lifecycle)


def main(argv: Sequence[str] | None = None) -> None:
    settings = ModeldSettings.from_args(argv)
    log = RunnerLog()
    logging.configure(level=settings.log_level, fmt=settings.log_format, sinks=[log.runner_sink])
    run_daemon(lambda: build_runner(settings, log))


if __name__ == "__main__":
    main()
