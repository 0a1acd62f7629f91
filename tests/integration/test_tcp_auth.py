"""TCP listeners: TLS plus bearer tokens whose scopes must cover the method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from berth.api.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from berth.api.mcp.v1 import feature_service_pb2 as features
from berth.api.mcp.v1 import feature_service_pb2_grpc as features_grpc
from berth.api.network.v1 import system_service_pb2, system_service_pb2_grpc
from tests.integration.test_forwarding import error_info
from tests.support.stack import Stack


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def refused(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    return raised.value


def test_no_token_is_unauthenticated(stack: Stack) -> None:
    with stack.tcp_channel() as channel:
        stub = features_grpc.FeatureServiceStub(channel)
        error = refused(stub.ListFeatures, features.ListFeaturesRequest(), timeout=10)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "TOKEN_MISSING"


def test_wrong_token_is_unauthenticated(stack: Stack) -> None:
    with stack.tcp_channel() as channel:
        stub = features_grpc.FeatureServiceStub(channel)
        error = refused(
            stub.ListFeatures, features.ListFeaturesRequest(), metadata=bearer("berth_guess")
        )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "TOKEN_INVALID"


def test_read_token_reads_but_cannot_write(stack: Stack) -> None:
    token = bearer(stack.tokens["mcp-read"])
    with stack.tcp_channel() as channel:
        stub = features_grpc.FeatureServiceStub(channel)
        listed = stub.ListFeatures(features.ListFeaturesRequest(), metadata=token)
        error = refused(
            stub.EnableFeature,
            features.EnableFeatureRequest(name="tool-name-prefix"),
            metadata=token,
        )
    assert listed.features
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "mcp:write" in error.details()


def test_write_token_writes(stack: Stack) -> None:
    token = bearer(stack.tokens["mcp-write"])
    with stack.tcp_channel() as channel:
        stub = features_grpc.FeatureServiceStub(channel)
        reply = stub.EnableFeature(
            features.EnableFeatureRequest(name="tool-name-prefix"), metadata=token
        )
        stub.DisableFeature(features.DisableFeatureRequest(name="tool-name-prefix"), metadata=token)
    assert reply.feature.enabled


def test_a_domains_token_does_not_open_another_domain(stack: Stack) -> None:
    with stack.tcp_channel() as channel:
        stub = system_service_pb2_grpc.SystemServiceStub(channel)
        error = refused(
            stub.GetVersion,
            system_service_pb2.GetVersionRequest(),
            metadata=bearer(stack.tokens["mcp-write"]),
        )
        allowed = stub.GetVersion(
            system_service_pb2.GetVersionRequest(), metadata=bearer(stack.tokens["network-read"])
        )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert allowed.version.component == "berth-networkd"


def test_gateway_own_methods_need_a_token_but_health_does_not(stack: Stack) -> None:
    with stack.tcp_channel() as channel:
        status = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        error = refused(status.GetStatus, gateway_service_pb2.GetStatusRequest())
        reply = status.GetStatus(
            gateway_service_pb2.GetStatusRequest(), metadata=bearer(stack.tokens["network-read"])
        )
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(reply.backends) == 3
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_unix_socket_needs_no_token(stack: Stack) -> None:
    with stack.channel() as channel:
        reply = features_grpc.FeatureServiceStub(channel).ListFeatures(
            features.ListFeaturesRequest()
        )
    assert reply.features


def test_tokens_never_reach_a_log_line(stack: Stack) -> None:
    with stack.tcp_channel() as channel:
        features_grpc.FeatureServiceStub(channel).ListFeatures(
            features.ListFeaturesRequest(), metadata=bearer(stack.tokens["admin"])
        )
    logs = [d.log_path.read_text() for d in [stack.gateway, *stack.daemons.values()]]
    assert stack.gateway.log_lines(), "the gateway wrote no log lines"
    for token in stack.tokens.values():
        assert all(token not in text for text in logs)


def test_plaintext_client_cannot_use_the_tls_listener(stack: Stack) -> None:
    with grpc.insecure_channel(f"localhost:{stack.tcp_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        error = refused(stub.Check, health_pb2.HealthCheckRequest(), timeout=5)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
