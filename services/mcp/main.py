"""berth-mcpd: the MCP gateway service."""

from __future__ import annotations

import functools
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from berth.api.mcp.v1.resources_pb2 import Tool
from berth.common import logging
from berth.common.http_server import HttpServer
from berth.common.jsonfile import read_json, write_json, write_text
from berth.common.server import Daemon, Lifecycle, registration, run_daemon
from berth.common.system import system_servicer
from berth.common.tls import https_context
from berth.mcp.adapters.catalog_store import FileCatalogStore
from berth.mcp.adapters.client_files import ClientFiles
from berth.mcp.adapters.oauth_state import DiscoveredApps
from berth.mcp.adapters.policy_store import FilePolicyStore
from berth.mcp.adapters.secret_store import open_vault
from berth.mcp.adapters.server_store import FileServerStore
from berth.mcp.adapters.tool_store import FileToolSwitchStore
from berth.mcp.domain.catalogs import Catalogs, ServerEntry, load_builtin
from berth.mcp.domain.clients import McpClients
from berth.mcp.domain.clients import Transport as ClientTransport
from berth.mcp.domain.features import FeatureFlags
from berth.mcp.domain.oauth import CALLBACK_PATH as OAUTH_CALLBACK_PATH
from berth.mcp.domain.policy import Policies
from berth.mcp.domain.secrets import Secrets
from berth.mcp.domain.servers import Requirement, Servers
from berth.mcp.domain.tools import ToolSwitches
from berth.mcp.gateway.http import McpEndpoint
from berth.mcp.gateway.hub import Endpoint, Hub
from berth.mcp.gateway.injection import Injector
from berth.mcp.gateway.oauth import OAuthBroker
from berth.mcp.settings import McpdSettings
from berth.mcp.transport.catalogs import CatalogServicer
from berth.mcp.transport.clients import ClientServicer
from berth.mcp.transport.features import FeatureServicer
from berth.mcp.transport.gateway import GatewayServicer
from berth.mcp.transport.oauth import OAuthServicer
from berth.mcp.transport.policy import PolicyServicer
from berth.mcp.transport.secrets import SecretServicer
from berth.mcp.transport.servers import ServerServicer
from berth.mcp.transport.tools import ToolServicer, tool_to_proto

TOKEN_FILE = "gateway-token"


def gateway_token(settings: McpdSettings) -> tuple[str, bool]:
    """The endpoint's bearer token, and whether it was just made: the setting, else the one
    kept in the state directory, else a new one kept there."""
    if settings.gateway_token:
        return settings.gateway_token, False
    path = settings.state_dir / TOKEN_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), False
    token = secrets.token_urlsafe(32)
    write_text(path, token + "\n")
    return token, True


def live_tools(hub: Hub, server: str) -> list[Tool] | None:
    """A server's tools as the gRPC services' session last listed them."""
    known = hub.service.known_tools(server)
    return [tool_to_proto(tool, verbose=True) for tool in known] if known is not None else None


def announce(url: str, token_path: Path, token: str, new: bool) -> None:
    """Shown once at start on stderr, not in the logs (the token is a secret)."""
    print(f"berth-mcpd: MCP endpoint {url} (also /sse)", file=sys.stderr)
    if new:
        print(f"berth-mcpd: new bearer token {token} (kept in {token_path})", file=sys.stderr)


def build_mcp(settings: McpdSettings) -> Daemon:
    lifecycle = Lifecycle()
    features_file = settings.state_dir / "features.json"

    def save_features(overrides: dict[str, Any]) -> None:
        write_json(features_file, overrides)
        hub.changed()

    flags = FeatureFlags(load=functools.partial(read_json, features_file, {}), save=save_features)
    catalogs = Catalogs(load_builtin(), FileCatalogStore(settings.state_dir / "catalogs"))
    servers = Servers(catalogs, FileServerStore(settings.state_dir))
    switches = ToolSwitches(FileToolSwitchStore(settings.state_dir))
    vault = open_vault(settings.state_dir, settings.secret_key_file, os.environ)
    policies = Policies(FilePolicyStore(settings.state_dir))
    secret_service = Secrets(vault, servers, policies)
    oauth = OAuthBroker(servers, vault, flags, DiscoveredApps(settings.state_dir))
    oauth_http = HttpServer(oauth.callback_app(), "127.0.0.1", settings.oauth_callback_port)
    injector = Injector(settings.runtime_dir / "secrets", secret_service, oauth)

    def standing(name: str, entry: ServerEntry) -> tuple[Requirement, Requirement, Requirement]:
        secrets_column, policy_column = secret_service.standing(name, entry)
        return secrets_column, policy_column, oauth.requirement(name, entry)

    servers.standing = standing
    hub = Hub(servers, switches, flags, settings.state_dir, settings.call_timeout, injector)
    # Every change reaches the hub, which tells connected clients their lists changed.
    catalogs.on_change = servers.on_change = switches.on_change = hub.changed
    # An app just authorized (or revoked) changes which remote servers can list tools.
    oauth.on_change = hub.changed
    token, new_token = gateway_token(settings)
    endpoint = McpEndpoint(hub, token, {settings.gateway_host})

    def served(transport: ClientTransport) -> tuple[str, str] | None:
        urls = {e.transport: e.url for e in hub.endpoints}
        url = urls.get(transport.value)
        return (url, token) if url else None

    clients = McpClients(settings.client_home, served, ClientFiles())
    # The OAuth redirect listener above stays http: a browser's loopback redirect (RFC 8252).
    http = HttpServer(
        endpoint,
        settings.gateway_host,
        max(settings.gateway_port, 0),
        tls=https_context(settings.tls_files),
    )

    async def start() -> None:
        injector.clear_leftovers()
        _, oauth_port = await oauth_http.start()
        oauth.callback_url = f"http://127.0.0.1:{oauth_port}{OAUTH_CALLBACK_PATH}"
        if settings.gateway_port < 0:
            return
        host, port = await http.start()
        base = f"{http.scheme}://{'[' + host + ']' if ':' in host else host}:{port}"
        hub.endpoints = [Endpoint("streaming", f"{base}/mcp"), Endpoint("sse", f"{base}/sse")]
        announce(hub.endpoints[0].url, settings.state_dir / TOKEN_FILE, token, new_token)

    async def stop() -> None:
        await oauth_http.stop()
        await endpoint.close()
        await http.stop()
        await hub.close()

    system = system_servicer(system_service_pb2_grpc, "berth-mcpd", lifecycle)
    services = [
        registration(system_service_pb2_grpc, "SystemService", system),
        registration(feature_service_pb2_grpc, "FeatureService", FeatureServicer(flags)),
        registration(catalog_service_pb2_grpc, "CatalogService", CatalogServicer(catalogs)),
        registration(
            server_service_pb2_grpc,
            "ServerService",
            ServerServicer(servers, hub.server_slot, functools.partial(live_tools, hub)),
        ),
        registration(tool_service_pb2_grpc, "ToolService", ToolServicer(hub, switches)),
        registration(client_service_pb2_grpc, "ClientService", ClientServicer(clients)),
        registration(
            gateway_service_pb2_grpc, "GatewayService", GatewayServicer(hub, servers, lambda: token)
        ),
        registration(secret_service_pb2_grpc, "SecretService", SecretServicer(secret_service)),
        registration(policy_service_pb2_grpc, "PolicyService", PolicyServicer(policies)),
        registration(oauth_service_pb2_grpc, "OAuthService", OAuthServicer(oauth)),
    ]
    return Daemon(
        "berth-mcpd",
        settings,
        services,
        lifecycle=lifecycle,
        background=[lambda: hub.keep_tidy(settings.server_idle_timeout)],
        on_start=[start],
        on_stop=[stop],
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = McpdSettings.from_args(argv)
    logging.configure(level=settings.log_level, fmt=settings.log_format)
    run_daemon(lambda: build_mcp(settings))


if __name__ == "__main__":
    main()
