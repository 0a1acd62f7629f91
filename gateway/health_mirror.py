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
    """Watch the daemon's overall health and copy it onto its services, until cancelled.

    The watch follows the backend's channel: when new TLS credentials give it a new one, the
    watch moves over as soon as the old channel is closed, without reporting NOT_SERVING.
    """
    backoff = 0.1
    while True:
        channel = backend.channel
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), wait_for_ready=True)
            async for reply in watch:
                backoff = 0.1
                for name in service_names:
                    await servicer.set(name, reply.status)
        except grpc.aio.AioRpcError as error:
            log.debug("health watch ended", domain=backend.domain, code=error.code().name)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling() or backend.channel is channel:
                raise
        if backend.channel is not channel:
            continue  # retired under the watch: watch the new channel at once
        for name in service_names:
            await servicer.set(name, NOT_SERVING)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)
