"""`berth info` against an in-process fake network SystemService."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from berth.api.network.v1 import system_service_pb2 as pb
from berth.api.network.v1 import system_service_pb2_grpc as pb_grpc
from berth.cli.main import app


class FakeSystem(pb_grpc.SystemServiceServicer):
    def __init__(self) -> None:
        self.reply = pb.GetInfoResponse(host_name="h1", networks=4, sandboxes=2)
        self.target = ""

    def GetInfo(self, request, context):
        return self.reply


@pytest.fixture
def fake() -> Iterator[FakeSystem]:
    servicer = FakeSystem()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_SystemServiceServicer_to_server(servicer, server)
    folder = Path(tempfile.mkdtemp(prefix="berth-cli-"))
    socket = folder / "gw.sock"
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    servicer.target = f"unix://{socket}"
    try:
        yield servicer
    finally:
        server.stop(None)
        shutil.rmtree(folder, ignore_errors=True)


def run(fake: FakeSystem, *args: str):
    return CliRunner().invoke(app, ["-H", fake.target, "info", *args])


def test_info_without_a_cluster_says_how_to_join_one(fake: FakeSystem) -> None:
    result = run(fake)
    assert result.exit_code == 0, result.output
    assert "h1" in result.output
    assert "none (no --redis-url)" in result.output


def test_info_lists_the_cluster_hosts_and_marks_this_one(fake: FakeSystem) -> None:
    fake.reply.underlay_address = "10.0.0.1"
    fake.reply.cluster.CopyFrom(
        pb.ClusterInfo(
            enabled=True,
            connected=False,
            hosts=[
                pb.ClusterHost(name="h1", underlay_address="10.0.0.1", local=True),
                pb.ClusterHost(name="h2", underlay_address="10.0.0.2", agent_address="h2:50061"),
            ],
        )
    )
    result = run(fake)
    assert result.exit_code == 0, result.output
    assert "disconnected" in result.output
    assert "h1 *" in result.output
    assert "10.0.0.2" in result.output and "h2:50061" in result.output
