"""berth.gateway.routes (the fronted methods) and berth.gateway.backends.HostRegistry."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

import berth.api.mcp.v1
import berth.api.models.v1
import berth.api.network.v1  # noqa: F401  (registers the descriptors)
from berth.common.errors import Code, NotFound
from berth.gateway.backends import Backend, HostRegistry
from berth.gateway.routes import FRONTED_DOMAINS, Route, build_routes

PROTOS = Path(__file__).resolve().parents[2] / "protos" / "berth"
SERVICE = re.compile(r"^service\s+(\w+)\s*\{(.*?)^\}", re.M | re.S)
RPC = re.compile(
    r"rpc\s+(\w+)\s*\(\s*(stream\s+)?[\w.]+\s*\)\s*returns\s*\(\s*(stream\s+)?[\w.]+\s*\)\s*\{"
    r"[^}]*?option\s*\(berth\.common\.v1\.access\)\s*=\s*ACCESS_(\w+)\s*;",
    re.S,
)


def routes_from_protos(domain: str) -> dict[str, Route]:
    """What the .proto sources say, read without the generated code."""
    routes: dict[str, Route] = {}
    for proto in sorted((PROTOS / domain / "v1").glob("*.proto")):
        text = re.sub(r"//[^\n]*", "", proto.read_text())
        package = re.search(r"^package\s+([\w.]+)\s*;", text, re.M)
        assert package is not None, proto
        for service, body in SERVICE.findall(text):
            declared = len(re.findall(r"\brpc\s+\w+", body))
            found = RPC.findall(body)
            assert len(found) == declared, f"{proto}: an rpc without access option?"
            for name, req_stream, resp_stream, access in found:
                full = f"{package.group(1)}.{service}"
                path = f"/{full}/{name}"
                routes[path] = Route(
                    path=path,
                    service=full,
                    domain=domain,
                    access=access.lower(),
                    request_streaming=bool(req_stream),
                    response_streaming=bool(resp_stream),
                )
    return routes


@pytest.fixture(scope="module")
def routes() -> dict[str, Route]:
    return build_routes()


def test_fronted_domains() -> None:
    assert FRONTED_DOMAINS == ("network", "models", "mcp")


def test_every_method_of_every_fronted_service_has_its_route(routes: dict[str, Route]) -> None:
    expected: dict[str, Route] = {}
    for domain in ("network", "models", "mcp"):
        expected.update(routes_from_protos(domain))

    assert len(expected) > 50  # the protos were really read
    assert set(routes) == set(expected)
    assert routes == expected


def test_every_route_agrees_with_its_method_descriptor(routes: dict[str, Route]) -> None:
    pool = descriptor_pool.Default()
    for path, route in routes.items():
        service, method_name = path.removeprefix("/").split("/")
        assert route.path == path
        assert route.service == service
        assert route.access in {"read", "write", "admin"}
        assert service.startswith(f"berth.{route.domain}.v1.")
        method = pool.FindMethodByName(f"{service}.{method_name}")
        assert route.request_streaming == method.client_streaming, path
        assert route.response_streaming == method.server_streaming, path


@pytest.mark.parametrize(
    ("path", "domain", "request_streaming", "response_streaming"),
    [
        ("/berth.network.v1.EventService/StreamEvents", "network", False, True),
        ("/berth.network.v1.NetworkService/CreateNetwork", "network", False, False),
        ("/berth.network.v1.SandboxService/ExecSandbox", "network", False, True),
        ("/berth.models.v1.ModelService/PullModel", "models", False, True),
        ("/berth.models.v1.RunnerService/StreamLogs", "models", False, True),
        ("/berth.mcp.v1.FeatureService/EnableFeature", "mcp", False, False),
        ("/berth.mcp.v1.GatewayService/RunGateway", "mcp", True, True),
    ],
)
def test_known_routes(
    routes: dict[str, Route],
    path: str,
    domain: str,
    request_streaming: bool,
    response_streaming: bool,
) -> None:
    route = routes[path]

    assert route.domain == domain
    assert route.request_streaming is request_streaming
    assert route.response_streaming is response_streaming


@pytest.mark.parametrize(
    ("path", "access"),
    [
        ("/berth.network.v1.EventService/StreamEvents", "read"),
        ("/berth.network.v1.NetworkService/ListNetworks", "read"),
        ("/berth.network.v1.NetworkService/CreateNetwork", "write"),
        ("/berth.models.v1.ModelService/PullModel", "write"),
        ("/berth.mcp.v1.FeatureService/ListFeatures", "read"),
    ],
)
def test_known_access(routes: dict[str, Route], path: str, access: str) -> None:
    assert routes[path].access == access


def test_all_three_access_levels_occur(routes: dict[str, Route]) -> None:
    assert {r.access for r in routes.values()} == {"read", "write", "admin"}


def test_gateway_and_common_services_are_not_fronted(routes: dict[str, Route]) -> None:
    assert not [p for p in routes if p.startswith(("/berth.gateway.", "/berth.common."))]
    assert {r.domain for r in routes.values()} == {"network", "models", "mcp"}


def test_build_routes_for_one_domain(routes: dict[str, Route]) -> None:
    network = build_routes(("network",))

    assert network
    assert network == {p: r for p, r in routes.items() if r.domain == "network"}


# ---- HostRegistry ----------------------------------------------------------------------


@pytest.fixture
async def registry() -> AsyncIterator[HostRegistry]:
    local = Backend("network", "node1", "unix:///run/berth/networkd.sock")
    remote = {
        "node2": Backend("network", "node2", "10.0.0.2:7443"),
        "node3": Backend("network", "node3", "unix:///run/berth/node3.sock"),
    }
    registry = HostRegistry("node1", local, remote)
    yield registry
    for backend in registry.all():
        await backend.close()


@pytest.mark.parametrize("host", ["", "local", "localhost", "node1"])
async def test_local_aliases_go_to_the_local_agent(registry: HostRegistry, host: str) -> None:
    assert registry.agent(host) is registry.local


async def test_remote_host_goes_to_its_agent(registry: HostRegistry) -> None:
    assert registry.agent("node2") is registry.remote["node2"]
    assert registry.agent("node3").address == "unix:///run/berth/node3.sock"


async def test_unknown_host_is_not_found_listing_known_hosts(registry: HostRegistry) -> None:
    with pytest.raises(NotFound) as caught:
        registry.agent("node9")

    error = caught.value
    assert error.code is Code.NOT_FOUND
    assert error.reason == "HOST_NOT_FOUND"
    assert error.metadata == {"host": "node9"}
    assert "'node9'" in error.message
    assert "node1, node2, node3" in error.message


async def test_all_lists_local_first(registry: HostRegistry) -> None:
    assert [b.host for b in registry.all()] == ["node1", "node2", "node3"]


async def test_backend_callables_are_made_once_per_path(registry: HostRegistry) -> None:
    backend = registry.local
    path = "/berth.network.v1.NetworkService/ListNetworks"

    first = backend.callable(path, False, False)

    assert backend.callable(path, False, False) is first
    assert backend.callable("/berth.network.v1.EventService/StreamEvents", False, True) is not first


async def test_backend_refuses_a_bad_address() -> None:
    with pytest.raises(ValueError, match="not an address"):
        Backend("network", "bad", "nowhere")
