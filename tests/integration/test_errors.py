"""Bad input gets INVALID_ARGUMENT with field details; every method of every daemon answers."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from berth.api.mcp.v1 import feature_service_pb2, feature_service_pb2_grpc
from berth.api.models.v1 import runner_service_pb2, runner_service_pb2_grpc
from berth.api.network.v1 import event_service_pb2, event_service_pb2_grpc, resources_pb2
from berth.gateway.routes import build_routes
from tests.integration.test_forwarding import error_info
from tests.support.processes import start
from tests.support.stack import Stack


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    found = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found |= {v.field: v.description for v in bad.field_violations}
    return found


def test_undecodable_bytes_are_invalid_argument(stack: Stack) -> None:
    with stack.channel() as channel:
        raw = channel.unary_unary("/berth.mcp.v1.FeatureService/EnableFeature")
        with pytest.raises(grpc.RpcError) as raised:
            raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "berth.mcp.v1.EnableFeatureRequest" in violations(error)["request"]
    assert error_info(error).reason == "MALFORMED_REQUEST"


def test_unknown_feature_names_the_field(stack: Stack) -> None:
    with stack.channel() as channel:
        stub = feature_service_pb2_grpc.FeatureServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.EnableFeature(feature_service_pb2.EnableFeatureRequest(name="warp-drive"))
        after = stub.ListFeatures(feature_service_pb2.ListFeaturesRequest())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "warp-drive" in violations(raised.value)["name"]
    assert "warp-drive" not in {f.name for f in after.features}


def test_negative_tail_names_the_field(stack: Stack) -> None:
    with stack.channel() as channel:
        stub = runner_service_pb2_grpc.RunnerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.StreamLogs(runner_service_pb2.StreamLogsRequest(tail=-3)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(raised.value)) == {"tail"}


def test_unknown_event_filter_names_the_field(stack: Stack) -> None:
    request = event_service_pb2.StreamEventsRequest(
        filters=[
            resources_pb2.Filter(key="type", value="network"),
            resources_pb2.Filter(key="colour", value="red"),
        ]
    )
    with stack.channel() as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.StreamEvents(request, timeout=10))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(raised.value)) == {"filters[1].key"}


def call_once(
    channel: grpc.Channel, path: str, request_streaming: bool, response_streaming: bool
) -> grpc.StatusCode:
    kind = (
        ("stream" if request_streaming else "unary")
        + "_"
        + ("stream" if response_streaming else "unary")
    )
    method = getattr(channel, kind)(path)
    request = iter([]) if request_streaming else b""
    try:
        result = method(request, timeout=2)
        if response_streaming:
            list(result)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_every_method_is_implemented_and_an_empty_request_gets_a_real_answer(
    stack: Stack,
) -> None:
    routes = build_routes()
    with stack.channel() as channel:
        codes = {
            path: call_once(channel, path, r.request_streaming, r.response_streaming)
            for path, r in routes.items()
        }
    unimplemented = {p for p, code in codes.items() if code == grpc.StatusCode.UNIMPLEMENTED}
    assert unimplemented == set()
    # The secret calls that need a name or a text say so, and nothing is changed.
    secret_codes = {
        p.rsplit("/", 1)[1]: c
        for p, c in codes.items()
        if ".SecretService/" in p or ".PolicyService/" in p or ".OAuthService/" in p
    }
    assert {m for m, c in secret_codes.items() if c == grpc.StatusCode.INVALID_ARGUMENT} == {
        "SetSecret",
        "RemoveSecrets",
        "SetPolicy",
        "AuthorizeOAuthApp",
        "CompleteOAuthAuthorization",
        "RevokeOAuthApp",
    }
    # An empty request names no model: refused at once, not a bench with every default.
    bench = codes["/berth.models.v1.InferenceService/BenchModel"]
    assert bench == grpc.StatusCode.INVALID_ARGUMENT
    # Server calls that need a name or a document say so; the others answer.
    server_codes = {p.rsplit("/", 1)[1]: c for p, c in codes.items() if ".ServerService/" in p}
    refused = {m for m, code in server_codes.items() if code != grpc.StatusCode.OK}
    assert refused == {"EnableServers", "DisableServers", "InspectServer", "WriteServerConfig"}
    assert {server_codes[m] for m in refused} == {grpc.StatusCode.INVALID_ARGUMENT}


def test_a_daemon_that_is_down_is_unavailable_with_its_address(
    tmp_path: Path, stack: Stack
) -> None:
    missing = tmp_path / "nobody.sock"
    gateway = start(
        "gateway-alone",
        "berth.gateway.main",
        tmp_path / "berth.sock",
        [
            "--state-dir",
            str(tmp_path),
            "--mcp-address",
            f"unix://{missing}",
            "--network-address",
            stack.daemons["network"].target,
            "--models-address",
            stack.daemons["models"].target,
        ],
        tmp_path,
    )
    try:
        with grpc.insecure_channel(gateway.target) as channel:
            stub = feature_service_pb2_grpc.FeatureServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.ListFeatures(feature_service_pb2.ListFeaturesRequest(), timeout=10)
    finally:
        gateway.stop()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(raised.value)
    assert info.reason == "BACKEND_UNAVAILABLE"
    assert info.metadata["address"] == f"unix://{missing}"
