"""berth.mcp.v1.ClientService over the McpClients domain: berth's entry in MCP clients' files."""

from __future__ import annotations

import grpc.aio

from berth.api.mcp.v1 import client_service_pb2 as pb
from berth.api.mcp.v1 import client_service_pb2_grpc as pb_grpc
from berth.api.mcp.v1 import resources_pb2 as res
from berth.common.errors import FieldViolation, InvalidArgument
from berth.mcp.domain.clients import ClientStatus, McpClients, Scope, Transport

SCOPES = {
    pb.CLIENT_SCOPE_UNSPECIFIED: Scope.UNSPECIFIED,
    pb.CLIENT_SCOPE_GLOBAL: Scope.GLOBAL,
    pb.CLIENT_SCOPE_PROJECT: Scope.PROJECT,
}
SCOPE_PROTOS = {scope: value for value, scope in SCOPES.items()}
TRANSPORTS = {
    res.GATEWAY_TRANSPORT_UNSPECIFIED: Transport.STDIO,
    res.GATEWAY_TRANSPORT_STDIO: Transport.STDIO,
    res.GATEWAY_TRANSPORT_STREAMING: Transport.STREAMING,
    res.GATEWAY_TRANSPORT_SSE: Transport.SSE,
}
TRANSPORT_PROTOS = {
    Transport.STDIO: res.GATEWAY_TRANSPORT_STDIO,
    Transport.STREAMING: res.GATEWAY_TRANSPORT_STREAMING,
    Transport.SSE: res.GATEWAY_TRANSPORT_SSE,
}


class ClientServicer(pb_grpc.ClientServiceServicer):
    def __init__(self, clients: McpClients) -> None:
        self.clients = clients

    async def ConnectClient(
        self, request: pb.ConnectClientRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectClientResponse:
        status, backup = self.clients.connect(
            request.client,
            scope=scope(request.scope),
            project_dir=request.project_dir,
            transport=transport(request.transport),
            config_path=request.config_path,
        )
        return pb.ConnectClientResponse(client=client_to_proto(status), backup_path=backup)

    async def DisconnectClient(
        self, request: pb.DisconnectClientRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisconnectClientResponse:
        status, backup = self.clients.disconnect(
            request.client,
            scope=scope(request.scope),
            project_dir=request.project_dir,
            config_path=request.config_path,
        )
        return pb.DisconnectClientResponse(client=client_to_proto(status), backup_path=backup)

    async def ListClients(
        self, request: pb.ListClientsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListClientsResponse:
        statuses = self.clients.list(scope(request.scope), request.project_dir)
        return pb.ListClientsResponse(clients=[client_to_proto(s) for s in statuses])


def scope(value: int) -> Scope:
    if value not in SCOPES:
        raise InvalidArgument([FieldViolation("scope", f"unknown client scope {value}")])
    return SCOPES[value]


def transport(value: int) -> Transport:
    if value not in TRANSPORTS:
        reason = f"clients reach berth over stdio, streaming or sse, not transport {value}"
        raise InvalidArgument([FieldViolation("transport", reason)])
    return TRANSPORTS[value]


def transport_to_proto(value: Transport | None) -> int:
    return TRANSPORT_PROTOS[value] if value else res.GATEWAY_TRANSPORT_UNSPECIFIED


def client_to_proto(status: ClientStatus) -> pb.ClientInfo:
    client = status.client
    return pb.ClientInfo(
        name=client.name,
        display_name=client.display_name,
        scope=SCOPE_PROTOS[status.scope],
        config_path=str(status.config_path),
        installed=status.installed,
        connected=status.connected,
        transport=transport_to_proto(status.transport),
        servers=status.servers,
        supports_project=client.supports_project,
    )
