"""grpcurl, the real binary, against the gateway alone: list, describe, health, calls."""

from __future__ import annotations

import json
import subprocess

from tests.support.processes import BIN, poll
from tests.support.stack import Stack

FRONTED = [
    "berth.network.v1.EventService",
    "berth.network.v1.NetworkService",
    "berth.network.v1.SandboxService",
    "berth.network.v1.SystemService",
    "berth.models.v1.InferenceService",
    "berth.models.v1.ModelService",
    "berth.models.v1.OperationService",
    "berth.models.v1.RunnerService",
    "berth.models.v1.SystemService",
    "berth.mcp.v1.CatalogService",
    "berth.mcp.v1.ClientService",
    "berth.mcp.v1.FeatureService",
    "berth.mcp.v1.GatewayService",
    "berth.mcp.v1.OAuthService",
    "berth.mcp.v1.PolicyService",
    "berth.mcp.v1.SecretService",
    "berth.mcp.v1.ServerService",
    "berth.mcp.v1.SystemService",
    "berth.mcp.v1.ToolService",
]


def grpcurl(stack: Stack, *args: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "grpcurl"), "-unix", "-plaintext"]
    if data is not None:
        command += ["-d", data]
    command += [str(stack.socket), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_list_shows_every_service_health_and_reflection(stack: Stack) -> None:
    listed = grpcurl(stack, "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert set(FRONTED) <= services
    assert {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "berth.gateway.v1.GatewayService",
    } <= services


def test_describe_shows_a_methods_messages(stack: Stack) -> None:
    method = grpcurl(stack, "describe", "berth.mcp.v1.FeatureService.EnableFeature")
    assert method.returncode == 0, method.stderr
    assert "rpc EnableFeature ( .berth.mcp.v1.EnableFeatureRequest )" in method.stdout
    request = grpcurl(stack, "describe", "berth.mcp.v1.EnableFeatureRequest")
    assert request.returncode == 0, request.stderr
    assert "string name = 1;" in request.stdout


def test_health_answers_serving_overall_and_per_service(stack: Stack) -> None:
    overall = grpcurl(stack, "grpc.health.v1.Health/Check")
    assert json.loads(overall.stdout) == {"status": "SERVING"}

    def network_serving() -> bool:
        reply = grpcurl(
            stack,
            "grpc.health.v1.Health/Check",
            data='{"service": "berth.network.v1.NetworkService"}',
        )
        return json.loads(reply.stdout or "{}").get("status") == "SERVING"

    poll(network_serving, what="the network service's health through the gateway")


def test_grpcurl_calls_a_method_of_each_daemon(stack: Stack) -> None:
    for domain, component in [
        ("network", "berth-networkd"),
        ("models", "berth-modeld"),
        ("mcp", "berth-mcpd"),
    ]:
        reply = grpcurl(stack, f"berth.{domain}.v1.SystemService/GetVersion")
        assert reply.returncode == 0, reply.stderr
        assert json.loads(reply.stdout)["version"]["component"] == component


def test_grpcurl_shows_rich_error_details(stack: Stack) -> None:
    reply = grpcurl(
        stack, "berth.mcp.v1.FeatureService/EnableFeature", data='{"name": "warp-drive"}'
    )
    assert reply.returncode != 0
    assert "InvalidArgument" in reply.stderr
    assert "google.rpc.BadRequest" in reply.stderr
    assert '"field":"name"' in reply.stderr.replace(" ", "")
