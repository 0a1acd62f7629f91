"""berth.gateway.forwarder with real grpc.aio servers in-process: the gateway in front of
one upstream daemon whose channel the gateway closes mid-call (its host left)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from berth.gateway.auth import TokenFile
from berth.gateway.backends import Backend, HostRegistry
from berth.gateway.forwarder import Forwarder
from berth.gateway.routes import Route

ROUTES = {
    "/test.Slow/Call": Route("/test.Slow/Call", "test.Slow", "models", "read", False, False),
    "/test.Slow/Watch": Route("/test.Slow/Watch", "test.Slow", "models", "read", False, True),
}


@dataclass
class Gateway:
    upstream: Backend
    channel: grpc.aio.Channel
    reached: asyncio.Event


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    reached = asyncio.Event()

    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        reached.set()
        await asyncio.sleep(30)
        return request

    async def watch(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield b"first"
        reached.set()
        await asyncio.sleep(30)

    daemon = grpc.aio.server()
    daemon.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Slow",
                {
                    "Call": grpc.unary_unary_rpc_method_handler(call),
                    "Watch": grpc.unary_stream_rpc_method_handler(watch),
                },
            ),
        )
    )
    daemon.add_insecure_port(f"unix://{tmp_path}/daemon.sock")
    await daemon.start()

    upstream = Backend("models", "node1", f"unix://{tmp_path}/daemon.sock")
    local = Backend("network", "node1", f"unix://{tmp_path}/absent.sock")
    hosts = HostRegistry("node1", local, {})
    forwarder = Forwarder(ROUTES, hosts, {"models": upstream}, TokenFile(tmp_path / "tokens"))
    front = grpc.aio.server()
    for service, handlers in forwarder.handlers().items():
        front.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    front.add_insecure_port(f"unix://{tmp_path}/berth.sock")
    await front.start()
    channel = grpc.aio.insecure_channel(f"unix://{tmp_path}/berth.sock")
    try:
        yield Gateway(upstream, channel, reached)
    finally:
        await channel.close()
        await front.stop(None)
        await daemon.stop(None)
        await upstream.close()
        await local.close()


async def test_a_unary_call_whose_upstream_channel_closes_is_unavailable(
    gateway: Gateway,
) -> None:
    call = gateway.channel.unary_unary("/test.Slow/Call")(b"ping", timeout=10)
    await gateway.reached.wait()

    await gateway.upstream.close()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "left the cluster" in (raised.value.details() or "")


async def test_a_stream_whose_upstream_channel_closes_ends_unavailable(gateway: Gateway) -> None:
    call = gateway.channel.unary_stream("/test.Slow/Watch")(b"", timeout=10)
    assert await call.read() == b"first"
    await gateway.reached.wait()

    await gateway.upstream.close()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
