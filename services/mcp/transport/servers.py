"""berth.mcp.v1.ServerService over the Servers domain: enabled servers and their config."""

from __future__ import annotations

from collections.abc import Callable

import grpc.aio

from berth.api.mcp.v1 import resources_pb2 as res
from berth.api.mcp.v1 import server_service_pb2 as pb
from berth.api.mcp.v1 import server_service_pb2_grpc as pb_grpc
from berth.common.errors import FieldViolation, InvalidArgument
from berth.mcp.domain.servers import (
    ConfigFormat,
    Requirement,
    Servers,
    ServerStatus,
    dump_config,
)
from berth.mcp.gateway.session import Slot
from berth.mcp.transport.catalogs import spec_from_entry

REQUIREMENTS = {
    Requirement.NONE: res.REQUIREMENT_STATUS_NONE,
    Requirement.DONE: res.REQUIREMENT_STATUS_DONE,
    Requirement.PARTIAL: res.REQUIREMENT_STATUS_PARTIAL,
    Requirement.REQUIRED: res.REQUIREMENT_STATUS_REQUIRED,
}
FORMATS = {
    pb.CONFIG_FORMAT_UNSPECIFIED: ConfigFormat.YAML,
    pb.CONFIG_FORMAT_YAML: ConfigFormat.YAML,
    pb.CONFIG_FORMAT_JSON: ConfigFormat.JSON,
}
ORPHAN = "no catalog has this server any more: disable it or add its entry back"


# A server's connection in the gateway's own session, when it has one.
Runtime = Callable[[str], Slot | None]
# The tools a server offered when it last ran, when it did.
LiveTools = Callable[[str], list[res.Tool] | None]


class ServerServicer(pb_grpc.ServerServiceServicer):
    def __init__(
        self,
        servers: Servers,
        runtime: Runtime = lambda _: None,
        live_tools: LiveTools = lambda _: None,
    ) -> None:
        self.servers = servers
        self.runtime = runtime
        self.live_tools = live_tools

    async def EnableServers(
        self, request: pb.EnableServersRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnableServersResponse:
        enabled = self.servers.enable(list(request.names))
        return pb.EnableServersResponse(
            servers=[server_to_proto(s, self.runtime(s.name)) for s in enabled]
        )

    async def DisableServers(
        self, request: pb.DisableServersRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableServersResponse:
        return pb.DisableServersResponse(names=self.servers.disable(list(request.names)))

    async def ListServers(
        self, request: pb.ListServersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListServersResponse:
        return pb.ListServersResponse(
            servers=[server_to_proto(s, self.runtime(s.name)) for s in self.servers.list()]
        )

    async def InspectServer(
        self, request: pb.InspectServerRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectServerResponse:
        server = self.servers.inspect(request.name)
        return inspection(server, self.runtime(server.name), self.live_tools(server.name))

    async def ResetServers(
        self, request: pb.ResetServersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetServersResponse:
        return pb.ResetServersResponse(names=self.servers.reset())

    async def ReadServerConfig(
        self, request: pb.ReadServerConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReadServerConfigResponse:
        content = self.servers.read_config(request.server, config_format(request.format))
        return pb.ReadServerConfigResponse(content=content)

    async def WriteServerConfig(
        self, request: pb.WriteServerConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.WriteServerConfigResponse:
        content = self.servers.write_config(request.server, request.content)
        return pb.WriteServerConfigResponse(content=content)

    async def ResetServerConfig(
        self, request: pb.ResetServerConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetServerConfigResponse:
        self.servers.reset_config(request.server)
        return pb.ResetServerConfigResponse()


def config_format(value: int) -> ConfigFormat:
    if value not in FORMATS:
        reason = f"unknown config format {value}; use YAML or JSON"
        raise InvalidArgument([FieldViolation("format", reason)])
    return FORMATS[value]


def server_to_proto(server: ServerStatus, slot: Slot | None = None) -> res.Server:
    """A row of `server ls`; `slot` is its connection in the gateway's own session."""
    entry = server.entry
    message = res.Server(
        name=server.name,
        title=entry.get("title", ""),
        description=entry.get("description", "") if server.catalog else ORPHAN,
        catalog=server.catalog,
        enabled=server.enabled,
        oauth_status=REQUIREMENTS[server.oauth],
        secrets_status=REQUIREMENTS[server.secrets],
        config_status=REQUIREMENTS[server.config_status],
        policy_status=REQUIREMENTS[server.policy],
        state=res.SERVER_STATE_STOPPED,
    )
    if slot is not None:
        _add_runtime(message, slot)
    return message


def _add_runtime(message: res.Server, slot: Slot) -> None:
    upstream = slot.upstream
    message.restart_count = slot.restarts
    message.last_error = slot.failure
    if upstream is None:
        message.state = res.SERVER_STATE_FAILED if slot.failure else res.SERVER_STATE_STOPPED
        return
    message.state = res.SERVER_STATE_RUNNING if upstream.alive else res.SERVER_STATE_FAILED
    message.last_error = slot.failure or upstream.failure
    if upstream.alive:
        message.pid = upstream.pid
    message.start_time.FromDatetime(upstream.start_time)
    message.implementation_name = str(upstream.server_info.get("name", ""))
    message.implementation_version = str(upstream.server_info.get("version", ""))
    message.protocol_version = upstream.protocol_version
    tools = upstream.cached("tools")
    message.tool_count = len(tools) if tools is not None else 0


def inspection(
    server: ServerStatus, slot: Slot | None = None, live: list[res.Tool] | None = None
) -> pb.InspectServerResponse:
    spec = spec_from_entry(server.name, server.entry)
    # Live tools when it ran; else those its entry declares, without exposed names (they
    # depend on the other servers' tools).
    tools = live if live is not None else [declared_tool(server.name, t) for t in spec.tools]
    # No secret store or policy yet (later issues): no secret is set or allowed.
    secrets = [
        pb.ServerSecretStatus(name=s.name, injection=s.injection, set=False, allowed=False)
        for s in spec.secrets
    ]
    return pb.InspectServerResponse(
        server=server_to_proto(server, slot),
        spec=spec,
        config=_config_text(server),
        tools=tools,
        secrets=secrets,
    )


def declared_tool(server: str, declared: res.Tool) -> res.Tool:
    tool = res.Tool(server=server, enabled=True)
    tool.MergeFrom(declared)
    return tool


def _config_text(server: ServerStatus) -> str:
    return dump_config(server.config) if server.config else ""
