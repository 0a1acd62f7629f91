"""berth.mcp.v1.CatalogService over the Catalogs domain: catalog entries ↔ ServerSpec."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grpc.aio
from google.protobuf.duration_pb2 import Duration

from berth.api.mcp.v1 import catalog_service_pb2 as pb
from berth.api.mcp.v1 import catalog_service_pb2_grpc as pb_grpc
from berth.api.mcp.v1 import resources_pb2 as res
from berth.common.errors import FieldViolation, InvalidArgument
from berth.mcp.domain.catalogs import (
    Catalog,
    Catalogs,
    ServerEntry,
    entry_from_document,
    entry_from_mapping,
    format_duration,
    injection_of,
    parse_duration,
)

TRANSPORTS = {
    "streamable-http": res.REMOTE_TRANSPORT_STREAMABLE_HTTP,
    "sse": res.REMOTE_TRANSPORT_SSE,
}
INJECTIONS = {
    "env": res.SECRET_INJECTION_ENV,
    "file": res.SECRET_INJECTION_FILE,
    "header": res.SECRET_INJECTION_HEADER,
}
OAUTH_KEYS = {
    "provider": "provider",
    "env": "env",
    "authorizationServer": "authorization_server",
    "clientId": "client_id",
}
SECRET_KEYS = ("name", "env", "path", "header", "description")
PLAIN_KEYS = ("title", "description", "icon", "homepage")


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(self, catalogs: Catalogs) -> None:
        self.catalogs = catalogs

    async def ListCatalogs(
        self, request: pb.ListCatalogsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCatalogsResponse:
        return pb.ListCatalogsResponse(catalogs=[catalog_to_proto(c) for c in self.catalogs.list()])

    async def ShowCatalog(
        self, request: pb.ShowCatalogRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShowCatalogResponse:
        catalog = self.catalogs.get(request.name)
        return pb.ShowCatalogResponse(catalog=catalog_to_proto(catalog), servers=specs(catalog))

    async def CreateCatalog(
        self, request: pb.CreateCatalogRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCatalogResponse:
        catalog = self.catalogs.create(request.name, request.display_name, request.description)
        return pb.CreateCatalogResponse(catalog=catalog_to_proto(catalog))

    async def ImportCatalog(
        self, request: pb.ImportCatalogRequest, context: grpc.aio.ServicerContext
    ) -> pb.ImportCatalogResponse:
        catalog = self.catalogs.import_(
            request.name, request.content, request.source, request.dry_run
        )
        return pb.ImportCatalogResponse(catalog=catalog_to_proto(catalog), servers=specs(catalog))

    async def ExportCatalog(
        self, request: pb.ExportCatalogRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportCatalogResponse:
        return pb.ExportCatalogResponse(content=self.catalogs.export(request.name))

    async def AddCatalogServer(
        self, request: pb.AddCatalogServerRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddCatalogServerResponse:
        entry = requested_entry(request)
        self.catalogs.add_server(request.catalog, request.server, entry, request.force)
        return pb.AddCatalogServerResponse(server=spec_from_entry(request.server, entry))

    async def RemoveCatalogServer(
        self, request: pb.RemoveCatalogServerRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveCatalogServerResponse:
        self.catalogs.remove_server(request.catalog, request.server)
        return pb.RemoveCatalogServerResponse()

    async def RemoveCatalog(
        self, request: pb.RemoveCatalogRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveCatalogResponse:
        self.catalogs.remove(request.name)
        return pb.RemoveCatalogResponse()

    async def ResetCatalog(
        self, request: pb.ResetCatalogRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetCatalogResponse:
        return pb.ResetCatalogResponse(names=self.catalogs.reset())


def requested_entry(request: pb.AddCatalogServerRequest) -> ServerEntry:
    source = request.WhichOneof("source")
    if source == "content":
        return entry_from_document(request.content, request.server, "content")
    if source == "spec":
        if request.spec.name != request.server:
            reason = f"the entry's name {request.spec.name!r} must equal {request.server!r}"
            raise InvalidArgument([FieldViolation("spec.name", reason)])
        return entry_from_mapping(entry_from_spec(request.spec), "spec")
    raise InvalidArgument([FieldViolation("source", "give the entry as content or spec")])


# -- domain → proto ---------------------------------------------------------------------


def catalog_to_proto(catalog: Catalog) -> pb.Catalog:
    message = pb.Catalog(
        name=catalog.name,
        display_name=catalog.display_name,
        description=catalog.description,
        source=catalog.source,
        builtin=catalog.builtin,
        server_count=len(catalog.servers),
    )
    if catalog.update_time is not None:
        message.update_time.FromDatetime(catalog.update_time)
    return message


def specs(catalog: Catalog) -> list[res.ServerSpec]:
    return [spec_from_entry(name, catalog.servers[name]) for name in sorted(catalog.servers)]


def spec_from_entry(name: str, entry: Mapping[str, Any]) -> res.ServerSpec:
    spec = res.ServerSpec(name=name, env=entry.get("env", {}), tags=entry.get("tags", []))
    for key in PLAIN_KEYS:
        setattr(spec, key, entry.get(key, ""))
    if "command" in entry:
        spec.stdio.CopyFrom(
            res.StdioRun(
                command=entry["command"],
                args=entry.get("args", []),
                working_dir=entry.get("workingDir", ""),
            )
        )
    if "remote" in entry:
        spec.remote.CopyFrom(_remote_to_proto(entry["remote"]))
    spec.secrets.extend(_secret_to_proto(s) for s in entry.get("secrets", []))
    if "config" in entry:
        spec.config_schema = json.dumps(entry["config"])
    spec.tools.extend(res.Tool(**tool) for tool in entry.get("tools", []))
    if "oauth" in entry:
        spec.oauth.CopyFrom(_oauth_to_proto(entry["oauth"]))
    spec.long_lived = entry.get("longLived", False)
    if "callTimeout" in entry:
        spec.call_timeout.FromTimedelta(parse_duration(entry["callTimeout"]))
    return spec


def _remote_to_proto(remote: Mapping[str, Any]) -> res.RemoteRun:
    return res.RemoteRun(
        url=remote["url"],
        transport=TRANSPORTS[remote.get("transport", "streamable-http")],
        headers=remote.get("headers", {}),
    )


def _secret_to_proto(secret: Mapping[str, Any]) -> res.SecretRequirement:
    fields = {key: secret[key] for key in SECRET_KEYS if key in secret}
    return res.SecretRequirement(injection=INJECTIONS[injection_of(secret)], **fields)


def _oauth_to_proto(oauth: Mapping[str, Any]) -> res.OAuthRequirement:
    fields = {attr: oauth[key] for key, attr in OAUTH_KEYS.items() if key in oauth}
    return res.OAuthRequirement(scopes=oauth.get("scopes", []), **fields)


# -- proto → domain ---------------------------------------------------------------------


def entry_from_spec(spec: res.ServerSpec) -> dict[str, Any]:
    """The YAML mapping of a ServerSpec (validated afterwards by the domain)."""
    entry: dict[str, Any] = {k: getattr(spec, k) for k in PLAIN_KEYS if getattr(spec, k)}
    run = spec.WhichOneof("run")
    if run == "stdio":
        entry |= _stdio_entry(spec.stdio)
    elif run == "remote":
        entry["remote"] = _remote_entry(spec.remote)
    if spec.env:
        entry["env"] = dict(spec.env)
    if spec.secrets:
        entry["secrets"] = [_secret_entry(s) for s in spec.secrets]
    if spec.config_schema:
        entry["config"] = _config_entry(spec.config_schema)
    if spec.tools:
        entry["tools"] = [_tool_entry(t) for t in spec.tools]
    if spec.HasField("oauth"):
        entry["oauth"] = _oauth_entry(spec.oauth)
    if spec.long_lived:
        entry["longLived"] = True
    if spec.HasField("call_timeout"):
        entry["callTimeout"] = format_duration(Duration.ToTimedelta(spec.call_timeout))
    if spec.tags:
        entry["tags"] = list(spec.tags)
    return entry


def _stdio_entry(stdio: res.StdioRun) -> dict[str, Any]:
    entry: dict[str, Any] = {"command": stdio.command}
    if stdio.args:
        entry["args"] = list(stdio.args)
    if stdio.working_dir:
        entry["workingDir"] = stdio.working_dir
    return entry


def _remote_entry(remote: res.RemoteRun) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": remote.url}
    names = {value: name for name, value in TRANSPORTS.items()}
    if remote.transport in names:
        entry["transport"] = names[remote.transport]
    if remote.headers:
        entry["headers"] = dict(remote.headers)
    return entry


def _secret_entry(secret: res.SecretRequirement) -> dict[str, Any]:
    entry: dict[str, Any] = {k: getattr(secret, k) for k in SECRET_KEYS if getattr(secret, k)}
    names = {value: name for name, value in INJECTIONS.items()}
    # Written only when it differs from what the YAML format infers without it.
    if secret.injection in names and names[secret.injection] != injection_of(entry):
        entry["injection"] = names[secret.injection]
    return entry


def _config_entry(schema: str) -> Any:
    try:
        return json.loads(schema)
    except ValueError as error:
        reason = f"not JSON: {error}"
        raise InvalidArgument([FieldViolation("spec.config_schema", reason)]) from None


def _tool_entry(tool: res.Tool) -> dict[str, Any]:
    return {k: getattr(tool, k) for k in ("name", "title", "description") if getattr(tool, k)}


def _oauth_entry(oauth: res.OAuthRequirement) -> dict[str, Any]:
    entry: dict[str, Any] = {
        k: getattr(oauth, a) for k, a in OAUTH_KEYS.items() if getattr(oauth, a)
    }
    if oauth.scopes:
        entry["scopes"] = list(oauth.scopes)
    return entry
