"""`berth up` as a newcomer runs it, then grpcurl and the CLI against it, then Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.hostns import AgentHost, host_namespace
from tests.support.processes import BIN, free_port, poll, wait_serving


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    socket: Path
    metrics_port: int
    root: Path
    host: AgentHost

    def berth(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BERTH_HOST": f"unix://{self.socket}"}
        return subprocess.run(
            [str(BIN / "berth"), *args], capture_output=True, text=True, env=env, timeout=60
        )


def free_port_block(size: int) -> int:
    return poll(lambda: _block(size), what="a block of free ports")


def _block(size: int) -> int | None:
    import socket

    base = free_port()
    for port in range(base, base + size):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return None
    return base


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    with host_namespace() as host:
        yield from _up(tmp_path, host)


def _up(tmp_path: Path, host: AgentHost) -> Iterator[Up]:
    socket_path = tmp_path / "run" / "berth.sock"
    metrics = free_port_block(4)
    process = subprocess.Popen(
        [
            str(BIN / "berth"),
            "up",
            "--state-dir",
            str(tmp_path / "state"),
            "--socket",
            str(socket_path),
            "--metrics-port",
            str(metrics),
            "--log-format",
            "json",
            "--agent-netns",
            host.netns,
            "--agent-prefix",
            host.prefix,
            "--mcp-port",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "up.log").open("wb"),
        start_new_session=True,
    )
    running = Up(process, socket_path, metrics, tmp_path, host)
    try:
        poll(socket_path.exists, timeout=60, what="the gateway socket")
        wait_serving(f"unix://{socket_path}")
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def children_of(root: Path) -> list[str]:
    """Command lines of running processes that mention `root` (berth up and its daemons)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in args:
            found.append(args)
    return found


def test_grpcurl_sees_everything_through_berth_up(up: Up) -> None:
    grpcurl = [str(BIN / "grpcurl"), "-unix", "-plaintext", str(up.socket)]
    listed = subprocess.run([*grpcurl, "list"], capture_output=True, text=True, timeout=30)
    for service in [
        "berth.network.v1.NetworkService",
        "berth.models.v1.ModelService",
        "berth.mcp.v1.ToolService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]:
        assert service in listed.stdout.split()
    health = subprocess.run(
        [*grpcurl, "grpc.health.v1.Health/Check"], capture_output=True, text=True, timeout=30
    )
    assert '"status": "SERVING"' in health.stdout


def test_status_and_version_report_every_daemon(up: Up) -> None:
    status = up.berth("status")
    assert status.returncode == 0, status.stderr
    for daemon in ["berth-networkd", "berth-modeld", "berth-mcpd"]:
        line = next(row for row in status.stdout.splitlines() if row.startswith(daemon))
        assert "serving" in line and str(up.socket.parent) in line
    version = up.berth("version")
    assert version.returncode == 0, version.stderr
    assert "Server: berth-modeld" in version.stdout


def test_the_secret_store_works_under_berth_up(up: Up) -> None:
    value = f"value-{uuid.uuid4().hex}"
    stored = up.berth("mcp", "secret", "set", f"E2E_TOKEN={value}")
    assert stored.returncode == 0, stored.stderr
    listed = up.berth("mcp", "secret", "ls")
    assert "E2E_TOKEN" in listed.stdout and value not in listed.stdout
    removed = up.berth("mcp", "secret", "rm", "E2E_TOKEN")
    assert removed.returncode == 0, removed.stderr


def test_the_model_store_answers_under_berth_up(up: Up) -> None:
    listed = up.berth("model", "ls")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:2] == ["MODEL", "NAME"]


def test_daemon_sockets_are_private_and_the_gateways_is_group_shared(up: Up) -> None:
    run = up.socket.parent
    assert oct(up.socket.stat().st_mode & 0o777) == oct(0o660)
    for name in ["networkd.sock", "modeld.sock", "mcpd.sock"]:
        assert oct((run / name).stat().st_mode & 0o777) == oct(0o600)


def test_every_daemon_exports_prometheus_metrics(up: Up) -> None:
    up.berth("status")
    for offset in range(4):
        url = f"http://127.0.0.1:{up.metrics_port + offset}/metrics"
        if offset == 1:  # the network agent serves them inside its host namespace
            fetch = f"import urllib.request as u; print(u.urlopen({url!r}).read().decode())"
            text = up.host.run(sys.executable, "-c", fetch).stdout
        else:
            with urllib.request.urlopen(url, timeout=10) as reply:
                text = reply.read().decode()
        assert "berth_rpc_total" in text and "berth_rpc_duration_seconds_bucket" in text


def test_ctrl_c_stops_everything_cleanly(up: Up) -> None:
    assert len(children_of(up.root)) >= 5
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=30) == 0
    assert children_of(up.root) == []
    assert not up.socket.exists()
    assert sorted(p.name for p in up.socket.parent.iterdir()) == []


def test_cli_without_berth_running_explains_what_to_do(tmp_path: Path) -> None:
    env = {**os.environ, "BERTH_HOST": f"unix://{tmp_path}/absent.sock"}
    result = subprocess.run(
        [sys.executable, "-m", "berth.cli.main", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot reach berth" in result.stderr and "berth up" in result.stderr
