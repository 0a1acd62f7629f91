"""berth-mcpd: the MCP gateway service."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from berth.api.mcp.v1 import (
    catalog_service_pb2_grpc,
    client_service_pb2_grpc,
    feature_service_pb2_grpc,
    gateway_service_pb2_grpc,
    oauth_service_pb2_grpc,
    policy_service_pb2_grpc,
    secret_service_pb2_grpc,
    server_service_pb2_grpc,
    system_service_pb2_grpc,
    tool_service_pb2_grpc,
)
from berth.common import logging
from berth.common.jsonfile import read_json, write_json
from berth.common.server import Daemon, Lifecycle, registration, run_daemon
from berth.common.system import system_servicer
from berth.mcp.adapters.catalog_store import FileCatalogStore
from berth.mcp.adapters.server_store import FileServerStore
from berth.mcp.domain.catalogs import Catalogs, load_builtin
from berth.mcp.domain.features import FeatureFlags
from berth.mcp.domain.servers import Servers
from berth.mcp.settings import McpdSettings
from berth.mcp.transport.catalogs import CatalogServicer
from berth.mcp.transport.features import FeatureServicer
from berth.mcp.transport.servers import ServerServicer

TOOLKIT = "MCP servers, tools and the aggregated endpoint"
SECRETS = "the MCP secret store, policies and OAuth"


def build_mcp(settings: McpdSettings) -> Daemon:
    lifecycle = Lifecycle()
    features_file = settings.state_dir / "features.json"
    flags = FeatureFlags(
        load=functools.partial(read_json, features_file, {}),
        save=functools.partial(write_json, features_file),
    )
    catalogs = Catalogs(load_builtin(), FileCatalogStore(settings.state_dir / "catalogs"))
    servers = Servers(catalogs, FileServerStore(settings.state_dir))
    system = system_servicer(system_service_pb2_grpc, "berth-mcpd", lifecycle)
    services = [
        registration(system_service_pb2_grpc, "SystemService", system),
        registration(feature_service_pb2_grpc, "FeatureService", FeatureServicer(flags)),
        registration(catalog_service_pb2_grpc, "CatalogService", CatalogServicer(catalogs)),
        registration(server_service_pb2_grpc, "ServerService", ServerServicer(servers)),
        registration(tool_service_pb2_grpc, "ToolService", planned=TOOLKIT),
        registration(client_service_pb2_grpc, "ClientService", planned=TOOLKIT),
        registration(gateway_service_pb2_grpc, "GatewayService", planned=TOOLKIT),
        registration(secret_service_pb2_grpc, "SecretService", planned=SECRETS),
        registration(policy_service_pb2_grpc, "PolicyService", planned=SECRETS),
        registration(oauth_service_pb2_grpc, "OAuthService", planned=SECRETS),
    ]
    return Daemon("berth-mcpd", settings, services, lifecycle=lifecycle)


def main(argv: Sequence[str] | None = None) -> None:
    settings = McpdSettings.from_args(argv)
    logging.configure(level=settings.log_level, fmt=settings.log_format)
    run_daemon(lambda: build_mcp(settings))


if __name__ == "__main__":
    main()
