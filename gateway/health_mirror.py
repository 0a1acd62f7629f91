"""The gateway's health for each fronted service mirrors the daemon that serves it."""

from __future__ import annotations

import asyncio

import grpc.aio
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from berth.gateway.backends import Backend

log = structlog.get_logger("berth.gateway.health")
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def mirror_health(
    backend: Backend, service_names: list[str], servicer: health.aio.HealthServicer
) -> None:
    """Watch the daemon's overall health and copy it onto its services, until cancelled."""
    stub = health_pb2_grpc.HealthStub(backend.channel)
    backoff = 0.1
    while True:
        try:
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), wait_for_ready=True)
            async for reply in watch:
                backoff = 0.1
                for name in service_names:
                    await servicer.set(name, reply.status)
        except grpc.aio.AioRpcError as error:
            log.debug("health watch ended", domain=backend.domain, code=error.code().name)
        for name in service_names:
            await servicer.set(name, NOT_SERVING)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)
