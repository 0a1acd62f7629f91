"""grpc.aio server bootstrap shared by every daemon.

A daemon hands Daemon a list of ServiceRegistrations; Daemon adds health, reflection,
the interceptors and the listeners, serves until SIGTERM or SIGINT, then drains:
health goes NOT_SERVING, long-lived streams are told to end (Lifecycle.stopping), new
calls are refused and in-flight calls get the grace period to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import importlib
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from berth.common.addresses import Address
from berth.common.interceptors import (
    ErrorInterceptor,
    HandlerInterceptor,
    TelemetryInterceptor,
    WrappingServer,
)
from berth.common.metrics import serve_metrics
from berth.common.reflection import enable_reflection
from berth.common.settings import DaemonSettings
from berth.common.tls import TlsConfigError, https_context, server_credentials

log = structlog.get_logger("berth.server")

SERVER_OPTIONS = [
    # Two daemons on one TCP port must fail loudly, not share it silently.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass
class ServiceRegistration:
    """One gRPC service: its full name and how to add its servicer to a server.

    serving_at_start=False leaves its health NOT_SERVING until someone says otherwise
    (the gateway mirrors its daemons' health into it).
    """

    name: str
    register: Callable[[grpc.aio.Server], None]
    serving_at_start: bool = True


def registration(stubs: ModuleType, service: str, servicer: object) -> ServiceRegistration:
    """Register `servicer` as `service` of a generated *_pb2_grpc module."""
    messages = importlib.import_module(stubs.__name__.removesuffix("_grpc"))
    descriptor = messages.DESCRIPTOR.services_by_name[service]
    add_to_server = getattr(stubs, f"add_{service}Servicer_to_server")
    return ServiceRegistration(descriptor.full_name, functools.partial(add_to_server, servicer))


@dataclass
class Lifecycle:
    """What servicers need to know about the daemon's life."""

    start_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


class Daemon:
    def __init__(
        self,
        component: str,
        settings: DaemonSettings,
        services: Sequence[ServiceRegistration],
        *,
        lifecycle: Lifecycle | None = None,
        background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
        on_start: Sequence[Callable[[], Awaitable[None]]] = (),
        on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
        interceptors: Sequence[HandlerInterceptor] = (),
    ) -> None:
        self.component = component
        self.settings = settings
        self.services = list(services)
        self.lifecycle = lifecycle or Lifecycle()
        self.background = list(background)
        self.on_start = list(on_start)
        self.on_stop = list(on_stop)
        self.interceptors = list(interceptors)
        self._tasks: list[asyncio.Task[None]] = []
        self.health = health.aio.HealthServicer()
        self._stop_requested = asyncio.Event()
        self._bound_sockets: list[Path] = []
        self._tls_credentials: grpc.ServerCredentials | None = None

    def build(self) -> grpc.aio.Server:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        interceptors = [TelemetryInterceptor(), *self.interceptors, ErrorInterceptor()]
        registrar: Any = WrappingServer(server, interceptors)
        for service in self.services:
            service.register(registrar)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        names = [s.name for s in self.services]
        enable_reflection([*names, health.SERVICE_NAME], registrar)
        for address in self.settings.addresses:
            self._bind(server, address)
        return server

    async def run(self) -> None:
        files = self.settings.tls_files
        if files is not None:  # bad TLS files stop the start before anything else is done
            self._tls_credentials = server_credentials(files)
        for hook in self.on_start:  # before serving: SERVING means ready
            await hook()
        server = self.build()
        await server.start()
        self._restrict_sockets()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for service in self.services:
            status = "SERVING" if service.serving_at_start else "NOT_SERVING"
            await self.health.set(
                service.name, health_pb2.HealthCheckResponse.ServingStatus.Value(status)
            )
        self._tasks = [asyncio.create_task(job()) for job in self.background]
        if self.settings.metrics_address:
            files = self.settings.tls_files
            host, port = serve_metrics(self.settings.metrics_address, https_context(files))
            log.info("metrics", address=f"{host}:{port}", tls=files is not None)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop_requested.set)
        log.info("serving", component=self.component, listen=self._listeners())
        await self._stop_requested.wait()
        await self.drain(server)

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def drain(self, server: grpc.aio.Server) -> None:
        grace = self.settings.grace_period
        log.info("stopping", component=self.component, grace_period_s=grace)
        await self.health.enter_graceful_shutdown()
        self.lifecycle.stopping.set()
        await server.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for hook in self.on_stop:
            await hook()
        for path in self._bound_sockets:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        log.info("stopped", component=self.component)

    def _bind(self, server: grpc.aio.Server, address: Address) -> None:
        if address.socket_path is not None:
            _prepare_socket_path(address.socket_path)
            server.add_insecure_port(address.target)
            self._bound_sockets.append(address.socket_path)
            return
        files = self.settings.tls_files
        if files is not None:
            if self._tls_credentials is None:
                self._tls_credentials = server_credentials(files)
            server.add_secure_port(address.target, self._tls_credentials)
        else:
            log.warning("plaintext TCP listener", address=str(address))
            server.add_insecure_port(address.target)

    def _listeners(self) -> list[str]:
        """Each listener and how it is protected: unix, plaintext, tls or mtls."""
        files = self.settings.tls_files
        tcp = "plaintext" if files is None else "mtls" if files.client_ca else "tls"
        return [f"{a} ({'unix' if a.is_unix else tcp})" for a in self.settings.addresses]

    def _restrict_sockets(self) -> None:
        group = _group_id(self.settings.socket_group)
        for path in self._bound_sockets:
            path.chmod(self.settings.socket_mode)
            if group is not None:
                os.chown(path, -1, group)


def _group_id(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _prepare_socket_path(path: Path) -> None:
    """Make the socket's folder; remove a stale socket left by a crash (only a socket)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    path.unlink()


def run_daemon(daemon_factory: Callable[[], Daemon]) -> None:
    """Entry-point helper: build the daemon inside the event loop and serve until stopped."""

    async def main() -> None:
        await daemon_factory().run()

    try:
        asyncio.run(main())
    except TlsConfigError as error:  # a user's file, not a bug: one line, no traceback
        print(f"{Path(sys.argv[0]).name}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
