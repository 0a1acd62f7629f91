"""Prometheus metrics every daemon exports: RPC counts, latency and calls in flight."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


def serve_metrics(address: str) -> tuple[str, int]:
    """Serve /metrics over HTTP on host:port (port 0 picks one); returns the bound address."""
    host, _, port = parse_address(address).target.rpartition(":")
    host = host.strip("[]") or "::"
    server, _thread = start_http_server(int(port), addr=host)
    bound = server.server_address
    return str(bound[0]), int(bound[1])
