"""The reference point: a plain grpc.aio byte-forwarding proxy, the obvious way.

One generic stream-stream handler for every method, a new multicallable per call, no
logging, no auth, no metrics. The gateway benchmark runs it beside berth's gateway.
Usage: python -m bench.plain_proxy LISTEN_TARGET UPSTREAM_TARGET
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio


class PlainProxy(grpc.GenericRpcHandler):
    def __init__(self, upstream: grpc.aio.Channel) -> None:
        self.upstream = upstream

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        async def forward(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = self.upstream.stream_stream(method)(
                requests, metadata=context.invocation_metadata(), timeout=context.time_remaining()
            )
            async for reply in call:
                yield reply

        return grpc.stream_stream_rpc_method_handler(forward)


async def main(listen: str, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)
    server = grpc.aio.server(handlers=[PlainProxy(channel)])
    server.add_insecure_port(listen)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
