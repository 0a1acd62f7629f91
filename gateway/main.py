"""berth-gateway: the front door. Serves reflection and health for everything it fronts."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import grpc.aio

from berth.api.gateway.v1 import gateway_service_pb2_grpc
from berth.common import logging
from berth.common.server import Daemon, Lifecycle, ServiceRegistration, run_daemon
from berth.common.tls import ClientTls
from berth.gateway.auth import TokenFile
from berth.gateway.backends import Backend, HostRegistry
from berth.gateway.forwarder import Forwarder
from berth.gateway.health_mirror import mirror_health
from berth.gateway.host_directory import RedisHostDirectory
from berth.gateway.routes import build_routes
from berth.gateway.settings import GatewaySettings
from berth.gateway.status_service import GatewayServicer
from berth.gateway.tcp_auth import TokenInterceptor

GATEWAY_SERVICE = "berth.gateway.v1.GatewayService"


def build_gateway(settings: GatewaySettings) -> Daemon:
    """Assemble the gateway; call inside the event loop (it opens channels)."""
    routes = build_routes()
    upstream = settings.upstream_tls
    tls = ClientTls(upstream, settings.upstream_tls_server_name) if upstream else None
    local_agent = Backend("network", settings.host_name, settings.network_address, tls)
    hosts = build_hosts(settings, local_agent, tls)
    domains = {
        "network": local_agent,
        "models": Backend("models", settings.host_name, settings.models_address, tls),
        "mcp": Backend("mcp", settings.host_name, settings.mcp_address, tls),
    }
    tokens = TokenFile(settings.tokens_path)
    forwarder = Forwarder(routes, hosts, domains, tokens)
    lifecycle = Lifecycle()
    services = [
        ServiceRegistration(name, _registrar(name, handlers), serving_at_start=False)
        for name, handlers in forwarder.handlers().items()
    ]
    status = GatewayServicer(list(domains.values()), hosts, lifecycle.start_time)
    services.append(
        ServiceRegistration(
            GATEWAY_SERVICE,
            functools.partial(
                gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server, status
            ),
        )
    )
    daemon = Daemon(
        "berth-gateway",
        settings,
        services,
        lifecycle=lifecycle,
        interceptors=[TokenInterceptor(tokens, set(routes))],
    )
    for domain, backend in domains.items():
        names = sorted({r.service for r in routes.values() if r.domain == domain})
        daemon.background.append(functools.partial(mirror_health, backend, names, daemon.health))
    if hosts.directory is not None:
        daemon.on_start.append(hosts.load)
        daemon.background.append(hosts.watch)
    if tls is not None:
        daemon.background.append(functools.partial(hosts.follow_tls, list(domains.values())))
    daemon.on_stop.extend(backend.close for backend in domains.values())
    daemon.on_stop.append(hosts.close)
    return daemon


def build_hosts(
    settings: GatewaySettings, local_agent: Backend, tls: ClientTls | None = None
) -> HostRegistry:
    """This host's agent, the static --hosts entries and, with --redis-url, the cluster's."""
    static = {
        name: Backend("network", name, address, tls)
        for name, address in settings.remote_hosts().items()
    }
    directory = RedisHostDirectory(settings.redis_url) if settings.redis_url else None
    return HostRegistry(settings.host_name, local_agent, static, directory, tls=tls)


def _registrar(
    service: str, handlers: dict[str, grpc.RpcMethodHandler]
) -> Callable[[grpc.aio.Server], None]:
    def register(server: grpc.aio.Server) -> None:
        server.add_registered_method_handlers(service, handlers)

    return register


def main(argv: Sequence[str] | None = None) -> None:
    settings = GatewaySettings.from_args(argv)
    logging.configure(level=settings.log_level, fmt=settings.log_format)
    run_daemon(lambda: build_gateway(settings))


if __name__ == "__main__":
    main()
