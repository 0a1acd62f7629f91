"""SIGTERM drains: health goes NOT_SERVING, in-flight calls finish within the grace period."""

from __future__ import annotations

import signal
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from berth.api.network.v1 import system_service_pb2, system_service_pb2_grpc
from tests.support.processes import DaemonProcess, poll, start

SLOW = "tests.support.slow_daemon"


def slow_daemon(tmp_path: Path, delay: float, grace: float) -> DaemonProcess:
    return start(
        "slow",
        SLOW,
        tmp_path / "slow.sock",
        ["--state-dir", str(tmp_path / "slow"), "--grace-period", str(grace)],
        tmp_path,
        env={"BERTH_TEST_DELAY_S": str(delay)},
    )


def gateway_in_front(tmp_path: Path, agent: DaemonProcess) -> DaemonProcess:
    nowhere = f"unix://{tmp_path}/absent.sock"
    return start(
        "gateway",
        "berth.gateway.main",
        tmp_path / "berth.sock",
        [
            "--state-dir",
            str(tmp_path / "gw"),
            "--network-address",
            agent.target,
            "--models-address",
            nowhere,
            "--mcp-address",
            nowhere,
            "--grace-period",
            "10",
        ],
        tmp_path,
    )


def call_in_background(target: str) -> tuple[Future, str, ThreadPoolExecutor]:
    marker = uuid.uuid4().hex[:16]
    pool = ThreadPoolExecutor(1)

    def call() -> system_service_pb2.GetVersionResponse:
        with grpc.insecure_channel(target) as channel:
            return system_service_pb2_grpc.SystemServiceStub(channel).GetVersion(
                system_service_pb2.GetVersionRequest(),
                timeout=30,
                metadata=[("x-request-id", marker)],
            )

    return pool.submit(call), marker, pool


def wait_started(daemon: DaemonProcess, marker: str) -> None:
    poll(
        lambda: any(
            line.get("event") == "slow call started" and line.get("request_id") == marker
            for line in daemon.log_lines()
        ),
        what="the slow call to start",
    )


def test_sigterm_lets_an_in_flight_call_finish(tmp_path: Path) -> None:
    daemon = slow_daemon(tmp_path, delay=1.5, grace=10)
    future, marker, pool = call_in_background(daemon.target)
    try:
        wait_started(daemon, marker)
        daemon.process.send_signal(signal.SIGTERM)
        reply = future.result(timeout=20)
        assert reply.version.component == "slow-daemon"
        assert daemon.process.wait(timeout=20) == 0
        assert not daemon.socket.exists()
    finally:
        pool.shutdown()
        daemon.stop()


def test_calls_past_the_grace_period_are_cut_off(tmp_path: Path) -> None:
    daemon = slow_daemon(tmp_path, delay=60, grace=0.5)
    future, marker, pool = call_in_background(daemon.target)
    try:
        wait_started(daemon, marker)
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as raised:
            future.result(timeout=20)
        assert raised.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
        assert daemon.process.wait(timeout=20) == 0
        assert time.monotonic() - started < 15
    finally:
        pool.shutdown()
        daemon.stop()


def test_a_draining_daemon_turns_not_serving_at_the_gateway_and_finishes(tmp_path: Path) -> None:
    agent = slow_daemon(tmp_path, delay=2, grace=10)
    gateway = gateway_in_front(tmp_path, agent)
    future, marker, pool = call_in_background(gateway.target)
    try:
        with grpc.insecure_channel(gateway.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="berth.network.v1.SystemService")
            serving = health_pb2.HealthCheckResponse.SERVING
            poll(lambda: health.Check(request).status == serving, what="SERVING")
            wait_started(agent, marker)
            agent.process.send_signal(signal.SIGTERM)
            poll(lambda: health.Check(request).status != serving, what="NOT_SERVING")
        assert future.result(timeout=20).version.component == "slow-daemon"
        assert gateway.rpc_line(marker)["code"] == "OK"
    finally:
        pool.shutdown()
        gateway.stop()
        agent.stop()


def test_sigterm_to_the_gateway_drains_forwarded_calls(tmp_path: Path) -> None:
    agent = slow_daemon(tmp_path, delay=1.5, grace=10)
    gateway = gateway_in_front(tmp_path, agent)
    future, marker, pool = call_in_background(gateway.target)
    try:
        wait_started(agent, marker)
        gateway.process.send_signal(signal.SIGTERM)
        assert future.result(timeout=20).version.component == "slow-daemon"
        assert gateway.process.wait(timeout=20) == 0
    finally:
        pool.shutdown()
        gateway.stop()
        agent.stop()
