"""How the CLI reaches berth: the gateway at -H/--host or BERTH_HOST, like DOCKER_HOST.

unix:///run/berth/berth.sock (the default) needs no token: the socket's file mode is
the boundary. tcp://HOST:PORT uses TLS (BERTH_TLS_CA to trust a private CA, BERTH_TLS_CERT
and BERTH_TLS_KEY for a gateway that wants a client certificate) and a bearer token
(BERTH_TOKEN). --on NAME (BERTH_ON) sends network calls to host NAME's agent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from berth.cli.errors import CliError
from berth.common.tls import TlsConfigError, flag_credentials

DEFAULT_HOST = "unix:///run/berth/berth.sock"
HOST_KEY = "x-berth-host"
StubT = TypeVar("StubT")


@dataclass
class Target:
    """Where and how to connect; built from the global options."""

    host: str = DEFAULT_HOST
    token: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    on: str | None = None
    timeout: float | None = None

    def grpc_target(self) -> tuple[str, bool]:
        """(target for grpc, whether it is TCP)."""
        host = self.host
        if host.startswith("unix:"):
            path = host.removeprefix("unix:")
            path = "/" + path.lstrip("/") if path.startswith("//") else path
            return f"unix://{path}", False
        if host.startswith("/"):
            return f"unix://{host}", False
        return host.removeprefix("tcp://"), True


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the token and the --on host to every call."""

    def __init__(self, extra: list[tuple[str, str]]) -> None:
        self.extra = extra

    def _with(self, details: Any) -> Any:
        metadata = list(details.metadata or []) + self.extra
        return _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._with(details), request)

    def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._with(details), request)

    def intercept_stream_unary(self, continuation: Callable, details: Any, requests: Any) -> Any:
        return continuation(self._with(details), requests)

    def intercept_stream_stream(self, continuation: Callable, details: Any, requests: Any) -> Any:
        return continuation(self._with(details), requests)


@dataclass(frozen=True)
class _Details(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


@dataclass
class Connection:
    """A lazily opened channel to the gateway; `stub(FooStub)` gives a ready stub."""

    target: Target
    _channel: grpc.Channel | None = field(default=None, init=False)

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = self._open()
        return self._channel

    def _open(self) -> grpc.Channel:
        address, tcp = self.target.grpc_target()
        if tcp and not self.target.insecure:
            channel = grpc.secure_channel(address, self._credentials())
        else:
            channel = grpc.insecure_channel(address)
        extra = []
        if self.target.token:
            extra.append(("authorization", f"Bearer {self.target.token}"))
        if self.target.on:
            extra.append((HOST_KEY, self.target.on))
        return grpc.intercept_channel(channel, _Metadata(extra)) if extra else channel

    def _credentials(self) -> grpc.ChannelCredentials:
        target = self.target
        try:
            return flag_credentials(target.tls_ca, target.tls_cert, target.tls_key)
        except TlsConfigError as error:
            raise CliError(str(error)) from error

    def stub(self, stub_class: Callable[[grpc.Channel], StubT]) -> StubT:
        return stub_class(self.channel)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
