"""x-berth-host picks the network agent of another host from the gateway's host registry."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc

from berth.api.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from berth.api.network.v1 import system_service_pb2, system_service_pb2_grpc
from tests.support.hostns import AgentHost, host_namespace
from tests.support.processes import start


def test_calls_reach_the_named_hosts_agent_and_only_it(tmp_path: Path) -> None:
    with host_namespace() as host_here, host_namespace() as host_there:
        route_between(tmp_path, host_here, host_there)


def route_between(tmp_path: Path, host_here: AgentHost, host_there: AgentHost) -> None:
    here = start(
        "agent-here",
        "berth.network.main",
        tmp_path / "here.sock",
        ["--state-dir", str(tmp_path / "here"), *host_here.agent_args()],
        tmp_path,
    )
    there = start(
        "agent-there",
        "berth.network.main",
        tmp_path / "there.sock",
        ["--state-dir", str(tmp_path / "there"), *host_there.agent_args()],
        tmp_path,
    )
    nowhere = f"unix://{tmp_path}/absent.sock"
    gateway = start(
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
            "--hosts",
            f"there={there.target}",
            "--models-address",
            nowhere,
            "--mcp-address",
            nowhere,
        ],
        tmp_path,
    )
    try:
        marker = uuid.uuid4().hex[:16]
        with grpc.insecure_channel(gateway.target) as channel:
            system = system_service_pb2_grpc.SystemServiceStub(channel)
            system.GetVersion(
                system_service_pb2.GetVersionRequest(),
                metadata=[("x-berth-host", "there"), ("x-request-id", marker)],
            )
            hosts = gateway_service_pb2_grpc.GatewayServiceStub(channel).ListHosts(
                gateway_service_pb2.ListHostsRequest()
            )
        assert there.rpc_line(marker)["code"] == "OK"
        assert not any(line.get("request_id") == marker for line in here.log_lines())
        assert [(h.name, h.local) for h in hosts.hosts] == [("here", True), ("there", False)]
    finally:
        for daemon in (gateway, here, there):
            daemon.stop()
