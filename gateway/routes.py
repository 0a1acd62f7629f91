"""The methods the gateway fronts, read from the contracts' descriptors.

Each fronted method becomes a Route: which domain's daemon serves it, its streaming
shape, and the access it needs (the `berth.common.v1.access` method option).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from berth.api.common.v1 import annotations_pb2

FRONTED_DOMAINS = ("network", "models", "mcp")
ACCESS_NAMES = {
    annotations_pb2.ACCESS_READ: "read",
    annotations_pb2.ACCESS_WRITE: "write",
    annotations_pb2.ACCESS_ADMIN: "admin",
}


@dataclass(frozen=True)
class Route:
    path: str  # "/berth.network.v1.NetworkService/CreateNetwork"
    service: str
    domain: str
    access: str  # "read" | "write" | "admin"
    request_streaming: bool
    response_streaming: bool


def domain_services(domain: str) -> list[ServiceDescriptor]:
    """Every service of berth.<domain>.v1, from the generated stubs."""
    package = importlib.import_module(f"berth.api.{domain}.v1")
    services: dict[str, ServiceDescriptor] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            services.update((s.full_name, s) for s in module.DESCRIPTOR.services_by_name.values())
    return [services[name] for name in sorted(services)]


def method_access(method: MethodDescriptor) -> str:
    access = method.GetOptions().Extensions[annotations_pb2.access]
    if access not in ACCESS_NAMES:
        raise ValueError(f"{method.full_name} has no berth.common.v1.access option")
    return ACCESS_NAMES[access]


def build_routes(domains: tuple[str, ...] = FRONTED_DOMAINS) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for domain in domains:
        for service in domain_services(domain):
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                routes[path] = Route(
                    path=path,
                    service=service.full_name,
                    domain=domain,
                    access=method_access(method),
                    request_streaming=method.client_streaming,
                    response_streaming=method.server_streaming,
                )
    return routes
