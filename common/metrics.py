"""Prometheus metrics every daemon exports: RPC counts, latency and calls in flight."""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog
from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from berth.common.addresses import parse_address

RPC_TOTAL = Counter(
    "berth_rpc_total", "RPCs handled, by method and status code", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "berth_rpc_duration_seconds",
    "RPC duration from handler start to end",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RPC_IN_FLIGHT = Gauge("berth_rpc_in_flight", "RPCs being handled now", ["method"])


class MethodMetrics:
    """One method's metric children, looked up once rather than on every call."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.in_flight = RPC_IN_FLIGHT.labels(method)
        self.seconds = RPC_SECONDS.labels(method)
        self._totals: dict[str, Counter] = {}

    def started(self) -> None:
        self.in_flight.inc()

    def finished(self, code: str, seconds: float) -> None:
        self.in_flight.dec()
        self.seconds.observe(seconds)
        total = self._totals.get(code)
        if total is None:
            total = self._totals[code] = RPC_TOTAL.labels(self.method, code)
        total.inc()


log = structlog.get_logger("berth.metrics")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _MetricsServer(ThreadingWSGIServer):
    """Serves /metrics, over TLS when given a context: the handshake happens in the
    request's thread, so a client that never finishes one holds up no other scrape."""

    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, peer = self.socket.accept()
        if self.tls is not None:
            connection = self.tls.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, peer

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request failed", peer=str(client_address))


def serve_metrics(address: str, tls: ssl.SSLContext | None = None) -> tuple[str, int]:
    """Serve /metrics on host:port (port 0 picks one), over HTTPS with `tls`; returns the
    bound address. The server runs in daemon threads for the life of the process."""
    host, _, port = parse_address(address).target.rpartition(":")
    host = host.strip("[]") or "::"

    class Server(_MetricsServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    Server.tls = tls
    server = make_server(host, int(port), make_wsgi_app(), Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    bound = server.server_address
    return str(bound[0]), int(bound[1])
