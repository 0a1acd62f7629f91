"""berth.mcp.v1.GatewayService: the endpoint's status, its token, and MCP sessions over a
gRPC stream (what `berth mcp gateway run --transport stdio` relays a client's stdio to)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import grpc.aio

from berth.api.mcp.v1 import gateway_service_pb2 as pb
from berth.api.mcp.v1 import gateway_service_pb2_grpc as pb_grpc
from berth.api.mcp.v1 import resources_pb2 as res
from berth.mcp.domain.servers import Servers
from berth.mcp.gateway import messages as rpc
from berth.mcp.gateway.hub import Hub
from berth.mcp.gateway.messages import Message, RequestId, RpcError
from berth.mcp.gateway.session import GatewaySession, SessionInfo
from berth.mcp.transport.servers import server_to_proto

TRANSPORTS = {
    "stdio": res.GATEWAY_TRANSPORT_STDIO,
    "sse": res.GATEWAY_TRANSPORT_SSE,
    "streaming": res.GATEWAY_TRANSPORT_STREAMING,
    "grpc": res.GATEWAY_TRANSPORT_GRPC,
}
_END = object()


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    def __init__(self, hub: Hub, servers: Servers, token: Callable[[], str]) -> None:
        self.hub = hub
        self.servers = servers
        self.token = token

    async def GetGatewayStatus(
        self, request: pb.GetGatewayStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetGatewayStatusResponse:
        response = pb.GetGatewayStatusResponse(
            endpoints=[
                pb.GatewayEndpoint(transport=TRANSPORTS[e.transport], url=e.url)
                for e in self.hub.endpoints
            ],
            servers=[
                server_to_proto(status, self.hub.server_slot(status.name))
                for status in self.servers.list()
            ],
            sessions=[session_to_proto(s.info) for s in self.hub.sessions.values()],
            tool_count=self.hub.service.known_tool_count(),
        )
        response.start_time.FromDatetime(self.hub.start_time)
        return response

    async def GetGatewayToken(
        self, request: pb.GetGatewayTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetGatewayTokenResponse:
        return pb.GetGatewayTokenResponse(token=self.token())

    async def RunGateway(
        self,
        request_iterator: AsyncIterator[pb.RunGatewayRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.RunGatewayResponse]:
        outbox: asyncio.Queue[Message | object] = asyncio.Queue()

        async def send(message: Message, _related: RequestId | None) -> None:
            outbox.put_nowait(message)

        requests = aiter(request_iterator)
        first = await anext(requests, None)
        options = first.options if first is not None and first.HasField("options") else None
        session = self.hub.open_session(
            send,
            "grpc",
            context.peer(),
            servers=list(options.servers) if options else None,
            tools=list(options.tools) if options else None,
        )
        pending = [first] if first is not None and first.HasField("message") else []
        reader = asyncio.create_task(_relay_in(pending, requests, session, outbox))
        try:
            yield pb.RunGatewayResponse(session=session_to_proto(session.info))
            while (message := await outbox.get()) is not _END:
                yield pb.RunGatewayResponse(message=json.dumps(message, ensure_ascii=False))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
            await self.hub.close_session(session)


async def _relay_in(
    pending: list[pb.RunGatewayRequest],
    requests: AsyncIterator[pb.RunGatewayRequest],
    session: GatewaySession,
    outbox: asyncio.Queue[Message | object],
) -> None:
    """The client's messages to the session; the end of the stream ends the session."""
    try:
        for request in pending:
            await _deliver(request, session, outbox)
        async for request in requests:
            await _deliver(request, session, outbox)
    finally:
        outbox.put_nowait(_END)


async def _deliver(
    request: pb.RunGatewayRequest, session: GatewaySession, outbox: asyncio.Queue[Message | object]
) -> None:
    if not request.HasField("message"):
        return
    try:
        message = json.loads(request.message)
    except json.JSONDecodeError as error:
        failure = RpcError(rpc.PARSE_ERROR, f"parse error: {error}")
        outbox.put_nowait(rpc.error(None, failure))
        return
    if isinstance(message, list):  # a JSON-RPC batch (MCP 2025-03-26)
        for item in message:
            if isinstance(item, dict):
                await session.receive(item)
    elif isinstance(message, dict):
        await session.receive(message)


def session_to_proto(info: SessionInfo) -> pb.GatewaySession:
    message = pb.GatewaySession(
        id=info.id,
        transport=TRANSPORTS.get(info.transport, res.GATEWAY_TRANSPORT_UNSPECIFIED),
        client_name=info.client_name,
        client_version=info.client_version,
        protocol_version=info.protocol_version,
        peer=info.peer,
        servers=info.servers,
    )
    message.start_time.FromDatetime(info.start_time)
    return message
