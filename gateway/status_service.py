"""berth.gateway.v1.GatewayService: what the gateway fronts and how those are doing."""

from __future__ import annotations

import asyncio
import importlib

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from berth.api.gateway.v1 import gateway_service_pb2 as pb
from berth.api.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from berth.common.version import version_info
from berth.gateway.backends import Backend, HostRegistry

PROBE_TIMEOUT_S = 2.0
SERVING = {
    health_pb2.HealthCheckResponse.SERVING: pb.SERVING_STATUS_SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING: pb.SERVING_STATUS_NOT_SERVING,
}


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    def __init__(self, domains: list[Backend], hosts: HostRegistry, start_time: object) -> None:
        self.domains = domains
        self.hosts = hosts
        self.start_time = start_time

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
        backends = [*self.domains, *self.hosts.remote.values()]
        statuses = await asyncio.gather(*(probe(b) for b in backends))
        return pb.GetStatusResponse(
            version=version_info("berth-gateway", self.start_time),  # type: ignore[arg-type]
            backends=statuses,
        )

    async def ListHosts(
        self, request: pb.ListHostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListHostsResponse:
        hosts = [pb.Host(name=self.hosts.local_name, address=self.hosts.local.address, local=True)]
        hosts += [pb.Host(name=n, address=b.address) for n, b in self.hosts.remote.items()]
        return pb.ListHostsResponse(hosts=hosts)


async def probe(backend: Backend) -> pb.BackendStatus:
    """Ask one daemon for its health and version."""
    status = pb.BackendStatus(domain=backend.domain, host=backend.host, address=backend.address)
    try:
        checked = await health_pb2_grpc.HealthStub(backend.channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT_S
        )
        status.status = SERVING.get(checked.status, pb.SERVING_STATUS_UNSPECIFIED)
        system = importlib.import_module(f"berth.api.{backend.domain}.v1.system_service_pb2")
        system_grpc = importlib.import_module(
            f"berth.api.{backend.domain}.v1.system_service_pb2_grpc"
        )
        reply = await system_grpc.SystemServiceStub(backend.channel).GetVersion(
            system.GetVersionRequest(), timeout=PROBE_TIMEOUT_S
        )
        status.version.CopyFrom(reply.version)
    except grpc.aio.AioRpcError as error:
        if not status.status:
            status.status = pb.SERVING_STATUS_UNREACHABLE
        status.message = f"{error.code().name}: {error.details()}"
    return status
