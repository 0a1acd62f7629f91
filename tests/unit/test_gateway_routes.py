"""berth.gateway.routes (the fronted methods), the host registry behind `x-berth-host`
(berth.gateway.backends.HostRegistry, with a fake host directory) and its settings."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import structlog.testing
from google.protobuf import descriptor_pool

import berth.api.mcp.v1
import berth.api.models.v1
import berth.api.network.v1  # noqa: F401  (registers the descriptors)
from berth.api.gateway.v1 import gateway_service_pb2
from berth.common.addresses import describe_url
from berth.common.errors import Code, NotFound
from berth.gateway.backends import (
    MAX_BACKOFF_S,
    Backend,
    HostDirectoryUnavailable,
    HostRegistry,
    next_delay,
)
from berth.gateway.host_directory import agent_address
from berth.gateway.routes import FRONTED_DOMAINS, Route, build_routes
from berth.gateway.settings import GatewaySettings
from berth.gateway.status_service import GatewayServicer

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


class FakeDirectory:
    """The host directory as the registry sees it: live hosts, or unreachable."""

    def __init__(self, hosts: dict[str, str] | None = None) -> None:
        self.hosts = dict(hosts or {})
        self.down: str | None = None
        self.reads = 0
        self.started: asyncio.Queue[None] = asyncio.Queue()
        self.closed = False

    async def read(self) -> dict[str, str]:
        self.reads += 1
        self.started.put_nowait(None)
        await asyncio.sleep(0)  # a real read waits for Redis: concurrent callers overlap
        if self.down is not None:
            raise HostDirectoryUnavailable(self.down)
        return dict(self.hosts)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def registry() -> AsyncIterator[HostRegistry]:
    local = Backend("network", "node1", "unix:///run/berth/networkd.sock")
    remote = {
        "node2": Backend("network", "node2", "10.0.0.2:7443"),
        "node3": Backend("network", "node3", "unix:///run/berth/node3.sock"),
    }
    registry = HostRegistry("node1", local, remote)
    yield registry
    await registry.close()
    await local.close()


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory({"node4": "10.0.0.4:7443", "node5": "10.0.0.5:7443"})


@pytest.fixture
async def clustered(directory: FakeDirectory) -> AsyncIterator[HostRegistry]:
    """node1 (local) with static node2, and the directory's hosts."""
    local = Backend("network", "node1", "unix:///run/berth/networkd.sock")
    static = {"node2": Backend("network", "node2", "10.0.0.2:7443")}
    registry = HostRegistry("node1", local, static, directory)
    yield registry
    await registry.close()
    await local.close()


def closed(backend: Backend) -> bool:
    return backend.channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN


@pytest.mark.parametrize("host", ["", "local", "localhost", "node1"])
async def test_local_aliases_go_to_the_local_agent(registry: HostRegistry, host: str) -> None:
    assert await registry.agent(host) is registry.local


async def test_remote_host_goes_to_its_agent(registry: HostRegistry) -> None:
    assert await registry.agent("node2") is registry.remote["node2"]
    assert (await registry.agent("node3")).address == "unix:///run/berth/node3.sock"


async def test_unknown_host_is_not_found_listing_known_hosts(registry: HostRegistry) -> None:
    with pytest.raises(NotFound) as caught:
        await registry.agent("node9")

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


async def test_directory_hosts_are_routable_after_a_refresh(clustered: HostRegistry) -> None:
    assert await clustered.refresh() is True

    node4 = await clustered.agent("node4")
    assert (node4.host, node4.address, node4.domain) == ("node4", "10.0.0.4:7443", "network")
    assert [b.host for b in clustered.all()] == ["node1", "node2", "node4", "node5"]


async def test_an_unknown_host_is_looked_up_once_before_not_found(
    clustered: HostRegistry, directory: FakeDirectory
) -> None:
    found = await clustered.agent("node4")  # never refreshed: the call itself reads
    assert found.address == "10.0.0.4:7443"
    assert directory.reads == 1

    with pytest.raises(NotFound, match="'node9'"):
        await clustered.agent("node9")
    assert directory.reads == 2
    assert await clustered.agent("node5") is clustered.live["node5"]
    assert directory.reads == 2  # known hosts need no read


async def test_concurrent_unknown_hosts_share_one_read(
    clustered: HostRegistry, directory: FakeDirectory
) -> None:
    calls = [clustered.agent(f"absent{i}") for i in range(20)]

    results = await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(r, NotFound) for r in results)
    assert directory.reads == 1


async def test_static_entries_win_over_the_directory(
    clustered: HostRegistry, directory: FakeDirectory
) -> None:
    directory.hosts["node2"] = "10.9.9.2:7443"
    await clustered.refresh()

    assert (await clustered.agent("node2")).address == "10.0.0.2:7443"
    assert clustered.remote["node2"] is clustered.static["node2"]
    assert "node2" not in clustered.live


@pytest.mark.parametrize("name", ["node1", "local", "localhost", ""])
async def test_the_directory_never_replaces_the_local_agent(
    clustered: HostRegistry, directory: FakeDirectory, name: str
) -> None:
    directory.hosts[name] = "10.9.9.1:7443"
    await clustered.refresh()

    assert await clustered.agent(name) is clustered.local
    assert [b.host for b in clustered.all()] == ["node1", "node2", "node4", "node5"]


async def test_a_host_that_disappears_loses_its_channel(
    clustered: HostRegistry, directory: FakeDirectory
) -> None:
    await clustered.refresh()
    node4 = clustered.live["node4"]
    node5 = clustered.live["node5"]

    del directory.hosts["node4"]
    await clustered.refresh()
    await asyncio.sleep(0)  # its channel closes in the background, with no call to wait for

    assert closed(node4)
    assert not closed(node5)
    assert clustered.live["node5"] is node5  # unchanged hosts keep their channel
    with pytest.raises(NotFound, match="'node4'"):
        await clustered.agent("node4")


async def test_a_host_with_a_new_address_gets_a_new_channel(
    clustered: HostRegistry, directory: FakeDirectory
) -> None:
    await clustered.refresh()
    before = clustered.live["node4"]

    directory.hosts["node4"] = "10.0.1.4:7443"
    await clustered.refresh()

    after = await clustered.agent("node4")
    await asyncio.sleep(0)
    assert after is not before
    assert after.address == "10.0.1.4:7443"
    assert closed(before)


async def test_a_call_in_flight_to_a_host_that_leaves_still_gets_its_answer(
    tmp_path: Path,
) -> None:
    """A call routed just before a refresh drops its host is not cancelled under its caller."""
    released = asyncio.Event()

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await released.wait()
        return b"answer:" + request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(slow)}
    )
    server.add_generic_rpc_handlers((handler,))
    address = f"unix://{tmp_path}/agent.sock"
    server.add_insecure_port(address)
    await server.start()
    directory = FakeDirectory({"node4": address})
    local = Backend("network", "node1", "unix:///run/berth/networkd.sock")
    registry = HostRegistry("node1", local, {}, directory)
    try:
        node4 = await registry.agent("node4")
        call = node4.callable("/test.Slow/Call", False, False)(b"ping", timeout=10)
        await asyncio.sleep(0.2)  # the call reaches the server

        del directory.hosts["node4"]
        await registry.refresh()
        with pytest.raises(NotFound):
            await registry.agent("node4")  # no new call goes there
        released.set()

        assert await call == b"answer:ping"
        assert await closed_within(node4, 5.0)  # once its last call is done
    finally:
        await registry.close()
        await local.close()
        await server.stop(None)


async def closed_within(backend: Backend, seconds: float) -> bool:
    for _ in range(int(seconds / 0.01)):
        if closed(backend):
            return True
        await asyncio.sleep(0.01)
    return closed(backend)


async def test_an_unreachable_directory_keeps_the_last_known_hosts(
    clustered: HostRegistry, directory: FakeDirectory
) -> None:
    await clustered.refresh()
    node4 = clustered.live["node4"]
    directory.down = "Redis at redis://10.0.0.100:6379/0: connection refused"

    with structlog.testing.capture_logs() as logs:
        assert await clustered.refresh() is False
        assert await clustered.refresh() is False

    assert await clustered.agent("node4") is node4
    assert not closed(node4)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1  # once per outage, not once per read
    assert "connection refused" in warnings[0]["error"]


async def test_during_an_outage_unknown_hosts_are_not_found_at_once(
    clustered: HostRegistry, directory: FakeDirectory
) -> None:
    directory.down = "Redis at redis://10.0.0.100:6379/0: connection refused"
    await clustered.refresh()
    reads = directory.reads

    with pytest.raises(NotFound) as caught:
        await clustered.agent("node4")

    assert directory.reads == reads  # the background retries, with backoff, not each call
    assert "host directory is unreachable" in caught.value.message
    assert "connection refused" in caught.value.message


async def test_the_directory_coming_back_brings_its_hosts(
    clustered: HostRegistry, directory: FakeDirectory
) -> None:
    directory.down = "Redis at redis://10.0.0.100:6379/0: connection refused"
    await clustered.refresh()
    directory.down = None
    directory.hosts["node6"] = "10.0.0.6:7443"

    with structlog.testing.capture_logs() as logs:
        assert await clustered.refresh() is True

    assert clustered.outage is None
    assert (await clustered.agent("node6")).address == "10.0.0.6:7443"
    assert any(entry["event"] == "host directory reachable again" for entry in logs)


def test_reads_back_off_while_the_directory_is_unreachable() -> None:
    delays = [1.0]
    for _ in range(6):
        delays.append(next_delay(delays[-1], False, 1.0))

    assert delays == [1.0, 2.0, 4.0, MAX_BACKOFF_S, MAX_BACKOFF_S, MAX_BACKOFF_S, MAX_BACKOFF_S]
    assert next_delay(MAX_BACKOFF_S, True, 1.0) == 1.0


async def reads_started(directory: FakeDirectory, count: int) -> None:
    for _ in range(count):
        await asyncio.wait_for(directory.started.get(), timeout=5)


async def test_watch_refreshes_in_the_background(directory: FakeDirectory) -> None:
    local = Backend("network", "node1", "unix:///run/berth/networkd.sock")
    registry = HostRegistry("node1", local, {}, directory, refresh_interval=0.01)
    watching = asyncio.create_task(registry.watch())
    try:
        await reads_started(directory, 2)  # reads are sequential: the first one is applied
        assert "node4" in registry.live
        directory.hosts.pop("node4")
        await reads_started(directory, 3)  # one read began after the pop and is applied
        assert "node4" not in registry.live
        assert "node5" in registry.live
    finally:
        watching.cancel()
        await registry.close()
        await local.close()
    assert directory.closed


async def test_close_closes_remote_channels_and_the_directory(
    clustered: HostRegistry, directory: FakeDirectory
) -> None:
    await clustered.refresh()
    remote = list(clustered.remote.values())

    await clustered.close()

    assert remote and all(closed(b) for b in remote)
    assert not closed(clustered.local)
    assert directory.closed


async def test_list_hosts_includes_the_directory_hosts(clustered: HostRegistry) -> None:
    await clustered.refresh()
    servicer = GatewayServicer([clustered.local], clustered, start_time=None)

    reply = await servicer.ListHosts(gateway_service_pb2.ListHostsRequest(), None)  # type: ignore[arg-type]

    assert [(h.name, h.address, h.local) for h in reply.hosts] == [
        ("node1", "unix:///run/berth/networkd.sock", True),
        ("node2", "10.0.0.2:7443", False),
        ("node4", "10.0.0.4:7443", False),
        ("node5", "10.0.0.5:7443", False),
    ]


# ---- host records (berth.gateway.host_directory) --------------------------------------


@pytest.mark.parametrize(
    ("record", "address"),
    [
        (
            b'{"name": "a", "underlay_address": "10.71.0.1", "agent_address": "10.71.0.1:7443", '
            b'"heartbeat_time": "2025-01-01T00:00:00+00:00"}',
            "10.71.0.1:7443",
        ),
        (b'{"name": "a", "agent_address": "unix:///run/a.sock"}', "unix:///run/a.sock"),
        (None, ""),  # expired key: a dead host
        (b'{"name": "a", "agent_address": ""}', ""),  # agent without --advertise-address
        (b'{"name": "a"}', ""),
        (b'{"name": "a", "agent_address": 7443}', ""),
        (b"[1, 2]", ""),
        (b"not json", ""),
        (b"\xff\xfe", ""),
    ],
)
def test_agent_address_of_a_host_record(record: bytes | None, address: str) -> None:
    assert agent_address(record) == address


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://10.0.0.100:6379/0", "redis://10.0.0.100:6379/0"),
        ("redis://:s3cret@10.0.0.100:6379/0", "redis://10.0.0.100:6379/0"),
        ("rediss://user:s3cret@redis.example:6380/1", "rediss://redis.example:6380/1"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock"),
    ],
)
def test_redis_urls_are_described_without_credentials(url: str, shown: str) -> None:
    assert describe_url(url) == shown


# ---- GatewaySettings: --redis-url and --hosts -----------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("BERTH_GATEWAY_REDIS_URL", "BERTH_REDIS_URL", "REDIS_URL", "BERTH_GATEWAY_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("argv", "env", "url"),
    [
        ([], {}, None),
        (["--redis-url", "redis://flag:6379/0"], {}, "redis://flag:6379/0"),
        ([], {"BERTH_GATEWAY_REDIS_URL": "redis://gw:6379/0"}, "redis://gw:6379/0"),
        ([], {"BERTH_REDIS_URL": "redis://all:6379/0"}, "redis://all:6379/0"),
        (
            [],
            {
                "BERTH_GATEWAY_REDIS_URL": "redis://gw:6379/0",
                "BERTH_REDIS_URL": "redis://all:6379/0",
            },
            "redis://gw:6379/0",
        ),
        (
            ["--redis-url", "redis://flag:6379/0"],
            {
                "BERTH_GATEWAY_REDIS_URL": "redis://gw:6379/0",
                "BERTH_REDIS_URL": "redis://all:6379/0",
            },
            "redis://flag:6379/0",
        ),
        ([], {"REDIS_URL": "redis://other:6379/0"}, None),  # not berth's variable
        ([], {"BERTH_REDIS_URL": ""}, None),
    ],
)
def test_redis_url_from_flag_or_environment(
    clean_env: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], url: str | None
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)

    assert GatewaySettings.from_args(argv).redis_url == url


def test_redis_url_wants_a_redis_scheme(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="--redis-url wants redis://"):
        GatewaySettings.from_args(["--redis-url", "http://10.0.0.100:6379"])


def test_static_hosts_still_come_from_flags(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BERTH_REDIS_URL", "redis://all:6379/0")

    settings = GatewaySettings.from_args(["--hosts", "a=10.0.0.2:7443", "--hosts", "b=unix:///b"])

    assert settings.remote_hosts() == {"a": "10.0.0.2:7443", "b": "unix:///b"}
    assert settings.redis_url == "redis://all:6379/0"
