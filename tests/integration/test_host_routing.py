"""x-berth-host picks the network agent of another host from the gateway's host registry:
static `--hosts` entries, and with `--redis-url` the hosts the agents register in Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from berth.api.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from berth.api.network.v1 import system_service_pb2, system_service_pb2_grpc
from tests.support.hostns import AgentHost, host_namespace
from tests.support.processes import DaemonProcess, free_port, poll, start
from tests.support.redis import RedisServer, redis_server

HOST_TTL_MS = 5000


def test_calls_reach_the_named_hosts_agent_and_only_it(tmp_path: Path) -> None:
    with host_namespace() as host_here, host_namespace() as host_there:
        route_between(tmp_path, host_here, host_there)


def route_between(tmp_path: Path, host_here: AgentHost, host_there: AgentHost) -> None:
    here = start_agent(tmp_path, "here", host_here)
    there = start_agent(tmp_path, "there", host_there)
    gateway = start_gateway(tmp_path, here, ["--hosts", f"there={there.target}"])
    try:
        marker = uuid.uuid4().hex[:16]
        with grpc.insecure_channel(gateway.target) as channel:
            system = system_service_pb2_grpc.SystemServiceStub(channel)
            system.GetVersion(
                system_service_pb2.GetVersionRequest(),
                metadata=[("x-berth-host", "there"), ("x-request-id", marker)],
            )
            hosts = list_hosts(channel)
        assert there.rpc_line(marker)["code"] == "OK"
        assert not any(line.get("request_id") == marker for line in here.log_lines())
        assert hosts == [("here", True), ("there", False)]
    finally:
        for daemon in (gateway, here, there):
            daemon.stop()


# ---- hosts from Redis (--redis-url) ----------------------------------------------------


@dataclass
class Cluster:
    redis: RedisServer
    here: DaemonProcess
    there: DaemonProcess
    gateway: DaemonProcess

    def register(self, name: str, agent: DaemonProcess) -> None:
        """What a network agent's heartbeat writes (see the overlay brief's Redis layout)."""
        record = {
            "name": name,
            "underlay_address": "10.71.0.2",
            "agent_address": agent.target,
            "heartbeat_time": datetime.now(UTC).isoformat(),
        }
        assert self.redis.cli(
            "SET", f"berth:host:{name}", json.dumps(record), "PX", str(HOST_TTL_MS)
        )
        assert self.redis.cli("SADD", "berth:hosts", name)

    def gateway_logged(self, event: str) -> bool:
        return any(line.get("event", "").startswith(event) for line in self.gateway.log_lines())


@contextmanager
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Redis on loopback, two agents, and a gateway on host `here` that reads Redis."""
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(tmp_path / "redis", port=free_port()))
        host_here = stack.enter_context(host_namespace())
        host_there = stack.enter_context(host_namespace())
        here = start_agent(tmp_path, "here", host_here)
        stack.callback(here.stop)
        there = start_agent(tmp_path, "there", host_there)
        stack.callback(there.stop)
        gateway = start_gateway(tmp_path, here, ["--redis-url", redis.url])
        stack.callback(gateway.stop)
        yield Cluster(redis, here, there, gateway)


def test_hosts_registered_in_redis_are_routable_until_they_expire(tmp_path: Path) -> None:
    with cluster(tmp_path) as running, grpc.insecure_channel(running.gateway.target) as channel:
        running.register("there", running.there)
        running.register("here", running.there)  # the gateway's own name stays local

        # Unknown to the gateway until now: the call looks it up unless a refresh came first.
        marker = get_version(channel, "there")

        assert running.there.rpc_line(marker)["code"] == "OK"
        assert not any(line.get("request_id") == marker for line in running.here.log_lines())
        assert list_hosts(channel) == [("here", True), ("there", False)]
        assert running.here.rpc_line(get_version(channel, "here"))["code"] == "OK"

        # The agent stops heartbeating: its record expires while `berth:hosts` still holds it.
        assert running.redis.cli("PEXPIRE", "berth:host:there", "200").strip() == "1"
        poll(lambda: not_found(channel, "there"), 10, "NOT_FOUND for the expired host")
        assert list_hosts(channel) == [("here", True)]


def test_a_redis_outage_keeps_the_known_hosts(tmp_path: Path) -> None:
    with cluster(tmp_path) as running, grpc.insecure_channel(running.gateway.target) as channel:
        running.register("there", running.there)
        poll(lambda: ("there", False) in list_hosts(channel), 10, "the refresh to list 'there'")

        running.redis.stop()
        poll(lambda: running.gateway_logged("host directory unreachable"), 10, "the outage log")

        assert running.there.rpc_line(get_version(channel, "there"))["code"] == "OK"
        with pytest.raises(grpc.RpcError) as raised:
            get_version(channel, "elsewhere")
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert "host directory is unreachable" in (raised.value.details() or "")
        assert running.gateway.process.poll() is None

        running.redis.start()
        running.register("there", running.there)  # the agent's next heartbeat
        poll(lambda: running.gateway_logged("host directory reachable again"), 15, "recovery")
        assert running.there.rpc_line(get_version(channel, "there"))["code"] == "OK"
        outages = [
            line
            for line in running.gateway.log_lines()
            if line.get("event", "").startswith("host directory unreachable")
        ]
        assert len(outages) == 1  # logged once per outage, not once per retry


# ---- helpers ---------------------------------------------------------------------------


def start_agent(tmp_path: Path, name: str, host: AgentHost) -> DaemonProcess:
    return start(
        f"agent-{name}",
        "berth.network.main",
        tmp_path / f"{name}.sock",
        ["--state-dir", str(tmp_path / name), *host.agent_args()],
        tmp_path,
    )


def start_gateway(tmp_path: Path, here: DaemonProcess, args: list[str]) -> DaemonProcess:
    nowhere = f"unix://{tmp_path}/absent.sock"
    return start(
        "gateway",
        "berth.gateway.main",
        tmp_path / "berth.sock",
        [
            "--state-dir",
            str(tmp_path / "gw"),
            "--host-name",
            "here",
            "--network-address",
            here.target,
            "--models-address",
            nowhere,
            "--mcp-address",
            nowhere,
            *args,
        ],
        tmp_path,
    )


def get_version(channel: grpc.Channel, host: str) -> str:
    """GetVersion on `host`'s agent through the gateway; returns the call's request id."""
    marker = uuid.uuid4().hex[:16]
    system_service_pb2_grpc.SystemServiceStub(channel).GetVersion(
        system_service_pb2.GetVersionRequest(),
        metadata=[("x-berth-host", host), ("x-request-id", marker)],
        timeout=10,
    )
    return marker


def not_found(channel: grpc.Channel, host: str) -> bool:
    try:
        get_version(channel, host)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
            return True
        raise
    return False


def list_hosts(channel: grpc.Channel) -> list[tuple[str, bool]]:
    reply = gateway_service_pb2_grpc.GatewayServiceStub(channel).ListHosts(
        gateway_service_pb2.ListHostsRequest(), timeout=10
    )
    return [(h.name, h.local) for h in reply.hosts]
