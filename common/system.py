"""berth.<domain>.v1.SystemService/GetVersion, the same for every daemon."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import grpc.aio

from berth.common.server import Lifecycle
from berth.common.version import version_info


def system_servicer(stubs: ModuleType, component: str, lifecycle: Lifecycle) -> Any:
    """The domain's SystemService (its system_service_pb2_grpc) with GetVersion answered."""
    messages = importlib.import_module(stubs.__name__.removesuffix("_grpc"))

    class SystemServicer(stubs.SystemServiceServicer):  # type: ignore[misc, name-defined]
        async def GetVersion(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
            return messages.GetVersionResponse(
                version=version_info(component, lifecycle.start_time)
            )

    return SystemServicer()
