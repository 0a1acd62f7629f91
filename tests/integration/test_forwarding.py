"""The gateway forwards calls: streams, deadlines, cancellation, metadata, routing."""

from __future__ import annotations

import datetime
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from berth.api.mcp.v1 import feature_service_pb2, feature_service_pb2_grpc
from berth.api.models.v1 import runner_service_pb2, runner_service_pb2_grpc
from berth.api.network.v1 import (
    event_service_pb2,
    event_service_pb2_grpc,
    system_service_pb2,
    system_service_pb2_grpc,
)
from tests.support.processes import poll
from tests.support.stack import Stack


def request_id() -> str:
    return uuid.uuid4().hex[:16]


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the status details")


def test_server_streaming_call_streams_through_the_gateway(stack: Stack) -> None:
    """`model logs -f`: lines written while the stream is open arrive on it."""
    with stack.channel() as channel:
        logs = runner_service_pb2_grpc.RunnerServiceStub(channel)
        marker = request_id()
        stream = logs.StreamLogs(
            runner_service_pb2.StreamLogsRequest(follow=True, tail=1), timeout=30
        )
        try:
            next(stream)  # the backlog line: the daemon is following now
            # Each RPC the runner handles writes a log line carrying its request id.
            ping = logs.StreamLogs(
                runner_service_pb2.StreamLogsRequest(tail=0),
                metadata=[("x-request-id", marker)],
            )
            assert list(ping) == []
            for reply in stream:
                if marker in reply.line:
                    assert reply.source == "runner"
                    break
        finally:
            stream.cancel()


def test_tail_returns_the_last_lines_and_ends(stack: Stack) -> None:
    with stack.channel() as channel:
        stub = runner_service_pb2_grpc.RunnerServiceStub(channel)
        lines = list(stub.StreamLogs(runner_service_pb2.StreamLogsRequest(tail=2), timeout=10))
    assert len(lines) == 2
    assert all(line.line.startswith("{") for line in lines)


def test_client_deadline_reaches_the_daemon(stack: Stack) -> None:
    marker = request_id()
    with stack.channel() as channel:
        events = event_service_pb2_grpc.EventServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(
                events.StreamEvents(
                    event_service_pb2.StreamEventsRequest(),
                    timeout=0.5,
                    metadata=[("x-request-id", marker)],
                )
            )
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    line = stack.daemons["network"].rpc_line(marker)
    assert line["method"] == "/berth.network.v1.EventService/StreamEvents"
    # About the client's 500 ms (grpc-timeout rounds up when it is encoded on each hop).
    assert 0 < line["deadline_ms"] <= 525
    assert line["code"] == "DEADLINE_EXCEEDED"


def test_cancelling_the_client_cancels_the_daemons_handler(stack: Stack) -> None:
    marker = request_id()
    with stack.channel() as channel:
        stub = runner_service_pb2_grpc.RunnerServiceStub(channel)
        stream = stub.StreamLogs(
            runner_service_pb2.StreamLogsRequest(follow=True, tail=1),
            metadata=[("x-request-id", marker)],
        )
        next(stream)  # the daemon's handler is running
        stream.cancel()
    line = stack.daemons["models"].rpc_line(marker)
    assert line["code"] == "CANCELLED"
    assert line["method"] == "/berth.models.v1.RunnerService/StreamLogs"


def test_request_metadata_and_id_reach_the_daemon(stack: Stack) -> None:
    marker = request_id()
    with stack.channel() as channel:
        stub = feature_service_pb2_grpc.FeatureServiceStub(channel)
        reply = stub.ListFeatures(
            feature_service_pb2.ListFeaturesRequest(), metadata=[("x-request-id", marker)]
        )
    assert reply.features
    assert stack.daemons["mcp"].rpc_line(marker)["code"] == "OK"
    assert stack.gateway.rpc_line(marker)["method"] == "/berth.mcp.v1.FeatureService/ListFeatures"


def test_events_stream_ends_cleanly_at_until(stack: Stack) -> None:
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(milliseconds=300)
    request = event_service_pb2.StreamEventsRequest()
    request.until.FromDatetime(until)
    with stack.channel() as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        assert list(stub.StreamEvents(request, timeout=10)) == []


def test_unknown_host_is_not_found(stack: Stack) -> None:
    with stack.channel() as channel:
        stub = system_service_pb2_grpc.SystemServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetVersion(
                system_service_pb2.GetVersionRequest(), metadata=[("x-berth-host", "atlantis")]
            )
        local = stub.GetVersion(
            system_service_pb2.GetVersionRequest(), metadata=[("x-berth-host", "local")]
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(raised.value)
    assert (info.reason, info.domain, info.metadata["host"]) == (
        "HOST_NOT_FOUND",
        "network.berth",
        "atlantis",
    )
    assert local.version.component == "berth-networkd"


def test_concurrent_streams_and_unary_calls_do_not_block_each_other(stack: Stack) -> None:
    with stack.channel() as channel:
        stub = runner_service_pb2_grpc.RunnerServiceStub(channel)
        streams = [
            stub.StreamLogs(runner_service_pb2.StreamLogsRequest(follow=True, tail=0))
            for _ in range(8)
        ]
        system = system_service_pb2_grpc.SystemServiceStub(channel)
        try:
            replies = [
                system.GetVersion(system_service_pb2.GetVersionRequest(), timeout=5)
                for _ in range(20)
            ]
        finally:
            for stream in streams:
                stream.cancel()
    assert {r.version.component for r in replies} == {"berth-networkd"}


def test_health_of_a_fronted_service_follows_its_daemon(stack: Stack) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with stack.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            reply = health.Check(
                health_pb2.HealthCheckRequest(service="berth.mcp.v1.ToolService"), timeout=5
            )
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        poll(serving, what="ToolService to be SERVING through the gateway")
