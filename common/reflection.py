"""Server reflection that also resolves method names (`Service.Method`).

protobuf's upb descriptor pool finds services, messages and enums by name but not
methods, so `grpcurl describe pkg.Service.Method` failed with "Symbol not found".
A method lives in its service's file, so we fall back to the service.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc.aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

SERVICE_NAME = reflection.SERVICE_NAME


class MethodAwareReflectionServicer(ReflectionServicer):
    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            self._pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            service, _, method = fully_qualified_name.rpartition(".")
            if service and self._is_method(service, method):
                fully_qualified_name = service
        return super()._file_containing_symbol(request, fully_qualified_name)

    def _is_method(self, service: str, method: str) -> bool:
        try:
            return method in self._pool.FindServiceByName(service).methods_by_name
        except KeyError:
            return False


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    names = [*service_names, SERVICE_NAME]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        MethodAwareReflectionServicer(names), server
    )
