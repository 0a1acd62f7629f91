"""berth.mcp.v1.ToolService over the gateway's own session: what `berth mcp tools ...` and
other gRPC callers see is what a connected MCP client sees."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import grpc.aio
from google.protobuf.json_format import MessageToDict

from berth.api.mcp.v1 import resources_pb2 as res
from berth.api.mcp.v1 import tool_service_pb2 as pb
from berth.api.mcp.v1 import tool_service_pb2_grpc as pb_grpc
from berth.common.errors import (
    BerthError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from berth.mcp.domain.tools import Exposed, ToolSwitches, check_names, find
from berth.mcp.gateway import messages as rpc
from berth.mcp.gateway.hub import Hub
from berth.mcp.gateway.messages import RpcError

HINTS = {
    "readOnlyHint": "read_only_hint",
    "destructiveHint": "destructive_hint",
    "idempotentHint": "idempotent_hint",
    "openWorldHint": "open_world_hint",
}


class ToolServicer(pb_grpc.ToolServiceServicer):
    def __init__(self, hub: Hub, switches: ToolSwitches) -> None:
        self.hub = hub
        self.switches = switches

    async def ListTools(
        self, request: pb.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListToolsResponse:
        table = await self.hub.service.table("tools")
        wanted = set(request.servers)
        tools = [
            tool_to_proto(tool, request.verbose)
            for tool in table.items
            if (request.include_disabled or tool.enabled) and (not wanted or tool.server in wanted)
        ]
        tools.sort(key=lambda tool: tool.exposed_name)
        return pb.ListToolsResponse(tools=tools, errors=server_errors(table.errors, wanted))

    async def CountTools(
        self, request: pb.CountToolsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountToolsResponse:
        table = await self.hub.service.table("tools")
        wanted = set(request.servers)
        counts: dict[str, int] = {}
        for tool in table.items:
            if tool.enabled and (not wanted or tool.server in wanted):
                counts[tool.server] = counts.get(tool.server, 0) + 1
        return pb.CountToolsResponse(
            count=sum(counts.values()),
            server_counts=counts,
            errors=server_errors(table.errors, wanted),
        )

    async def InspectTool(
        self, request: pb.InspectToolRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectToolResponse:
        _need_name(request.name)
        table = await self.hub.service.table("tools")
        try:
            tool = find(table.items, request.name, request.server)
        except NotFound as error:
            raise await self._explained(error, request.server, table.errors) from None
        return pb.InspectToolResponse(tool=tool_to_proto(tool, verbose=True))

    async def CallTool(
        self, request: pb.CallToolRequest, context: grpc.aio.ServicerContext
    ) -> pb.CallToolResponse:
        _need_name(request.name)
        session = self.hub.service
        try:
            tool = await session.find_tool(request.name, request.server)
        except NotFound as error:
            errors = (await session.table("tools")).errors
            raise await self._explained(error, request.server, errors) from None
        arguments = MessageToDict(request.arguments)
        timeout = (
            request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else None
        )
        try:
            result = await session.call_tool(tool, arguments, timeout)
        except RpcError as error:
            raise berth_error(error, tool) from None
        return call_response(result, tool)

    async def EnableTools(
        self, request: pb.EnableToolsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnableToolsResponse:
        targets = await self._targets(request.server, list(request.names))
        return pb.EnableToolsResponse(tools=refs(self.switches.switch(targets, enabled=True)))

    async def DisableTools(
        self, request: pb.DisableToolsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableToolsResponse:
        targets = await self._targets(request.server, list(request.names))
        return pb.DisableToolsResponse(tools=refs(self.switches.switch(targets, enabled=False)))

    async def _explained(
        self, error: NotFound, server: str, errors: Mapping[str, str]
    ) -> BerthError:
        """Why a tool was not found when some servers could not list theirs: the named
        server's own failure (UNAVAILABLE, or FAILED_PRECONDITION for missing config),
        else the not-found error naming the servers that are down."""
        if server and server in errors:
            return await self._failure_of(server) or error
        down = {name: why for name, why in errors.items() if not server or name == server}
        if not down:
            return error
        listed = "; ".join(
            f"{name}: {_without_name(name, why)}" for name, why in sorted(down.items())
        )
        return NotFound(
            f"{error.message}; servers that could not list their tools: {listed}",
            reason=error.reason,
            metadata={**error.metadata, "unavailable_servers": ",".join(sorted(down))},
        )

    async def _failure_of(self, server: str) -> BerthError | None:
        """The error a server that could not list its tools gives when started again (as
        a call would), or None when it now runs."""
        try:
            await self.hub.service.upstream(server)
        except RpcError as failure:
            return Unavailable(
                failure.message, reason="SERVER_UNAVAILABLE", metadata={"server": server}
            )
        except BerthError as failure:
            return failure
        return None

    async def _targets(self, server: str, names: list[str]) -> list[Exposed]:
        """All the named tools, or an error naming the first unknown one (nothing changes)."""
        check_names(names)
        table = await self.hub.service.table("tools")
        try:
            return [find(table.items, name, server) for name in dict.fromkeys(names)]
        except NotFound as error:
            raise await self._explained(error, server, table.errors) from None


def _need_name(name: str) -> None:
    if not name:
        raise InvalidArgument([FieldViolation("name", "give a tool name")])


def server_errors(errors: Mapping[str, str], wanted: set[str]) -> list[res.ServerError]:
    return [
        res.ServerError(server=server, message=_without_name(server, message))
        for server, message in sorted(errors.items())
        if not wanted or server in wanted
    ]


def _without_name(server: str, message: str) -> str:
    """A server's failure without the leading "server NAME " that its `server` field (or
    the sentence around it) already says: "could not start: ...", "needs config ..."."""
    prefix = f"server {server} "
    return message[len(prefix) :] if message.startswith(prefix) else message


def refs(tools: list[Exposed]) -> list[res.ToolRef]:
    return [res.ToolRef(server=tool.server, name=tool.name) for tool in tools]


def tool_to_proto(tool: Exposed, verbose: bool) -> res.Tool:
    definition = tool.definition
    annotations = definition.get("annotations") or {}
    message = res.Tool(
        name=tool.name,
        server=tool.server,
        exposed_name=tool.exposed,
        title=str(definition.get("title") or annotations.get("title") or ""),
        description=str(definition.get("description") or ""),
        enabled=tool.enabled,
        annotations=res.ToolAnnotations(
            title=str(annotations.get("title") or ""),
            **{field: bool(annotations[key]) for key, field in HINTS.items() if key in annotations},
        ),
    )
    if verbose:
        message.input_schema = json.dumps(definition.get("inputSchema") or {})
        if definition.get("outputSchema"):
            message.output_schema = json.dumps(definition["outputSchema"])
    return message


def berth_error(error: RpcError, tool: Exposed) -> BerthError:
    """A JSON-RPC failure of tools/call as the gRPC status it means."""
    where = {"server": tool.server, "tool": tool.name}
    if error.code == rpc.REQUEST_TIMEOUT:
        return DeadlineExceeded(error.message, reason="TOOL_CALL_TIMEOUT", metadata=where)
    if error.code == rpc.SERVER_UNAVAILABLE:
        return Unavailable(error.message, reason="SERVER_UNAVAILABLE", metadata=where)
    if error.code == rpc.INVALID_PARAMS:
        violation = FieldViolation("arguments", f"server {tool.server}: {error.message}")
        return InvalidArgument([violation], reason="INVALID_TOOL_ARGUMENTS", metadata=where)
    return FailedPrecondition(
        f"server {tool.server} refused the call: {error.message}",
        reason="SERVER_ERROR",
        metadata=where,
    )


# -- results --------------------------------------------------------------------------


def call_response(result: Mapping[str, Any], tool: Exposed) -> pb.CallToolResponse:
    response = pb.CallToolResponse(
        content=[
            content_to_proto(item) for item in result.get("content") or [] if isinstance(item, dict)
        ],
        is_error=bool(result.get("isError")),
        server=tool.server,
        tool=tool.name,
    )
    structured = result.get("structuredContent")
    if isinstance(structured, dict):
        response.structured_content.update(structured)
    return response


def content_to_proto(item: Mapping[str, Any]) -> pb.Content:
    content = pb.Content()
    kind = item.get("type")
    if kind == "text":
        content.text.text = str(item.get("text", ""))
    elif kind in ("image", "audio"):
        media = content.image if kind == "image" else content.audio
        media.data = _decoded(item.get("data"))
        media.mime_type = str(item.get("mimeType", ""))
    elif kind == "resource":
        content.resource.CopyFrom(_embedded(item.get("resource") or {}))
    elif kind == "resource_link":
        content.resource_link.CopyFrom(_link(item))
    _annotate(content, item.get("annotations"))
    if isinstance(item.get("_meta"), dict):
        content.meta.update(item["_meta"])
    return content


def _embedded(resource: Mapping[str, Any]) -> pb.EmbeddedResource:
    embedded = pb.EmbeddedResource(
        uri=str(resource.get("uri", "")), mime_type=str(resource.get("mimeType", ""))
    )
    if "blob" in resource:
        embedded.blob = _decoded(resource["blob"])
    else:
        embedded.text = str(resource.get("text", ""))
    return embedded


def _link(item: Mapping[str, Any]) -> pb.ResourceLink:
    link = pb.ResourceLink(
        uri=str(item.get("uri", "")),
        name=str(item.get("name", "")),
        title=str(item.get("title", "")),
        description=str(item.get("description", "")),
        mime_type=str(item.get("mimeType", "")),
    )
    if isinstance(item.get("size"), int):
        link.size = item["size"]
    return link


def _annotate(content: pb.Content, annotations: Any) -> None:
    if not isinstance(annotations, dict):
        return
    content.annotations.audience.extend(str(a) for a in annotations.get("audience") or [])
    if isinstance(annotations.get("priority"), int | float):
        content.annotations.priority = float(annotations["priority"])
    modified = annotations.get("lastModified")
    if isinstance(modified, str):
        with contextlib.suppress(ValueError):
            content.annotations.last_modified_time.FromDatetime(datetime.fromisoformat(modified))


def _decoded(data: Any) -> bytes:
    try:
        return base64.b64decode(str(data or ""), validate=True)
    except (binascii.Error, ValueError):
        return str(data or "").encode()
