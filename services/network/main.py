"""berth-networkd: the network agent of one host."""

from __future__ import annotations

from collections.abc import Sequence

from berth.api.network.v1 import (
    event_service_pb2_grpc,
    network_service_pb2_grpc,
    sandbox_service_pb2_grpc,
    system_service_pb2_grpc,
)
from berth.common import logging
from berth.common.server import Daemon, Lifecycle, registration, run_daemon
from berth.common.system import system_servicer
from berth.network.domain.events import EventLog
from berth.network.settings import NetworkdSettings
from berth.network.transport.events import EventServicer

BRIDGE_NETWORKS = "user-defined bridge networks, IPAM and sandboxes"


def build_agent(settings: NetworkdSettings) -> Daemon:
    lifecycle = Lifecycle()
    events = EventLog()
    events.bind_loop()
    system = system_servicer(system_service_pb2_grpc, "berth-networkd", lifecycle)
    services = [
        registration(system_service_pb2_grpc, "SystemService", system, planned=BRIDGE_NETWORKS),
        registration(event_service_pb2_grpc, "EventService", EventServicer(events, lifecycle)),
        registration(network_service_pb2_grpc, "NetworkService", planned=BRIDGE_NETWORKS),
        registration(sandbox_service_pb2_grpc, "SandboxService", planned=BRIDGE_NETWORKS),
    ]
    return Daemon("berth-networkd", settings, services, lifecycle=lifecycle)


def main(argv: Sequence[str] | None = None) -> None:
    settings = NetworkdSettings.from_args(argv)
    logging.configure(level=settings.log_level, fmt=settings.log_format)
    run_daemon(lambda: build_agent(settings))


if __name__ == "__main__":
    main()
