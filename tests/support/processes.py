"""Real berth daemons as child processes, with their JSON logs captured to files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

READY_TIMEOUT_S = 30.0
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def poll(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Call check() until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def group_members(pgid: int) -> list[int]:
    """The processes (zombies too) of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After "(comm)": state, ppid, pgrp, ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


@dataclass
class DaemonProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    socket: Path

    @property
    def target(self) -> str:
        return f"unix://{self.socket}"

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines

    def rpc_line(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The daemon's log line for the RPC with this x-request-id (written when it ends)."""

        def find() -> dict[str, Any] | None:
            return next(
                (
                    line
                    for line in self.log_lines()
                    if line.get("event") == "rpc" and line.get("request_id") == request_id
                ),
                None,
            )

        return poll(find, timeout, f"{self.name}'s log line for request {request_id}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return int(self.process.returncode)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` seconds; reaped either way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start(
    name: str,
    module: str,
    socket_path: Path,
    args: list[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> DaemonProcess:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                "--listen",
                f"unix://{socket_path}",
                "--log-format",
                "json",
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    daemon = DaemonProcess(name, process, log_path, socket_path)
    if wait:
        wait_serving(daemon.target)
    return daemon


def wait_serving(target: str, timeout: float = READY_TIMEOUT_S) -> None:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def run_berth(
    target: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `berth` CLI against `target` (unix://... or host:port), as a user runs it."""
    return subprocess.run(
        [str(BIN / "berth"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "BERTH_HOST": target},
        timeout=60,
    )
