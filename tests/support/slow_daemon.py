"""A daemon on berth's common runtime whose GetVersion takes BERTH_TEST_DELAY_S seconds.

It serves berth.network.v1.SystemService, so the gateway can front it as a network
agent; the drain tests need a call that is still running when SIGTERM arrives.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import structlog

from berth.api.network.v1 import system_service_pb2, system_service_pb2_grpc
from berth.common import logging
from berth.common.server import Daemon, registration, run_daemon
from berth.common.version import version_info
from berth.network.settings import NetworkdSettings

log = structlog.get_logger("slow")


class SlowSystem(system_service_pb2_grpc.SystemServiceServicer):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def GetVersion(self, request: Any, context: Any) -> Any:
        log.info("slow call started")
        await asyncio.sleep(self.delay)
        return system_service_pb2.GetVersionResponse(version=version_info("slow-daemon"))


def main() -> None:
    settings = NetworkdSettings.from_args(sys.argv[1:])
    logging.configure(level=settings.log_level, fmt=settings.log_format)
    delay = float(os.environ.get("BERTH_TEST_DELAY_S", "1.5"))
    service = registration(system_service_pb2_grpc, "SystemService", SlowSystem(delay))
    run_daemon(lambda: Daemon("slow-daemon", settings, [service]))


if __name__ == "__main__":
    main()
