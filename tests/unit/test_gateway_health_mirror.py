"""berth.gateway.health_mirror against a real grpc.aio daemon with a health service: the
mirrored health follows the daemon, also across a renewed channel (rotated TLS files)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from berth.gateway.backends import Backend
from berth.gateway.health_mirror import mirror_health

SERVICE = "berth.mcp.v1.SystemService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Mirrored:
    daemon: health.aio.HealthServicer
    gateway: health.aio.HealthServicer
    backend: Backend


@pytest.fixture
async def mirrored(tmp_path: Path) -> AsyncIterator[Mirrored]:
    daemon_health = health.aio.HealthServicer()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(daemon_health, server)
    server.add_insecure_port(f"unix://{tmp_path}/mcpd.sock")
    await server.start()
    await daemon_health.set("", SERVING)
    backend = Backend("mcp", "node1", f"unix://{tmp_path}/mcpd.sock")
    gateway_health = health.aio.HealthServicer()
    task = asyncio.create_task(mirror_health(backend, [SERVICE], gateway_health))
    try:
        yield Mirrored(daemon_health, gateway_health, backend)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await backend.close()
        await server.stop(None)


class Unknown(Exception):
    """The servicer does not know the service yet."""


class CheckContext:
    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Unknown(details)


async def status_becomes(servicer: health.aio.HealthServicer, wanted: int) -> None:
    request = health_pb2.HealthCheckRequest(service=SERVICE)
    for _ in range(500):
        try:
            reply = await servicer.Check(request, CheckContext())  # type: ignore[arg-type]
        except Unknown:
            reply = None
        if reply is not None and reply.status == wanted:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"mirrored health never became {wanted}")


async def test_the_mirror_follows_the_daemons_health(mirrored: Mirrored) -> None:
    await status_becomes(mirrored.gateway, SERVING)

    await mirrored.daemon.set("", NOT_SERVING)

    await status_becomes(mirrored.gateway, NOT_SERVING)


async def test_the_mirror_moves_to_a_renewed_channel_when_the_old_one_closes(
    mirrored: Mirrored,
) -> None:
    await status_becomes(mirrored.gateway, SERVING)
    old = mirrored.backend.renew()

    await old.close()
    await asyncio.sleep(0.2)

    await status_becomes(mirrored.gateway, SERVING)
    await mirrored.daemon.set("", NOT_SERVING)  # seen through the new channel
    await status_becomes(mirrored.gateway, NOT_SERVING)
