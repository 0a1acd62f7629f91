"""`berth up`: every daemon of one host and the gateway, in the foreground.

The daemons start first, each on its own unix socket beside the gateway's; the gateway
starts once they answer health checks. Ctrl-C or SIGTERM stops the gateway, then the
daemons, each draining its calls; a daemon that dies takes the others down with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

READY_TIMEOUT_S = 60.0
KILL_AFTER_GRACE_S = 5.0


@dataclass(frozen=True)
class Child:
    name: str
    module: str
    args: list[str]
    socket: Path


class _StopRequested(Exception):
    pass


def up(
    state_dir: Annotated[Path, typer.Option(help="root of every daemon's state")] = Path(
        "/var/lib/berth"
    ),
    socket: Annotated[Path, typer.Option(help="the gateway's unix socket")] = Path(
        "/run/berth/berth.sock"
    ),
    tcp: Annotated[
        str | None, typer.Option(help="also serve the gateway on TCP, e.g. 0.0.0.0:50051")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="certificate for --tcp")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="private key for --tcp")] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(help="CA whose client certificates --tcp requires (mTLS)"),
    ] = None,
    insecure_tcp: Annotated[bool, typer.Option(help="plaintext --tcp (development)")] = False,
    metrics_port: Annotated[
        int, typer.Option(help="first of 4 Prometheus ports on 127.0.0.1 (0: off)")
    ] = 9460,
    grace_period: Annotated[float, typer.Option(help="seconds calls get to finish")] = 10.0,
    log_format: Annotated[str, typer.Option(help="auto, json or console")] = "auto",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    agent_netns: Annotated[
        str | None, typer.Option(help="run the network agent inside this network namespace")
    ] = None,
    agent_prefix: Annotated[
        str, typer.Option(help="prefix of the namespaces the network agent creates")
    ] = "",
    mcp_port: Annotated[
        int, typer.Option(help="port of the aggregated MCP endpoint (0: any free port, -1: off)")
    ] = 8811,
) -> None:
    """Start berth on this host (all daemons and the gateway) until Ctrl-C."""
    common = [
        "--grace-period",
        str(grace_period),
        "--log-format",
        log_format,
        "--log-level",
        log_level,
    ]
    agent_args = (["--netns", agent_netns] if agent_netns else []) + (
        ["--name-prefix", agent_prefix] if agent_prefix else []
    )
    # The MCP servers' secret files live beside the sockets (a tmpfs under /run by default).
    mcp_args = ["--gateway-port", str(mcp_port), "--runtime-dir", str(socket.parent / "mcp")]
    extra = {"network": agent_args, "mcp": mcp_args}
    daemons = _daemon_children(state_dir, socket.parent, common, metrics_port, extra)
    gateway_args = [
        "--state-dir",
        str(state_dir / "gateway"),
        "--listen",
        f"unix://{socket}",
        *common,
        *[arg for d in daemons for arg in (f"--{d.name}-address", f"unix://{d.socket}")],
        *_metrics(metrics_port, 0),
    ]
    if tcp:
        gateway_args += ["--listen", tcp]
        gateway_args += ["--tls-cert", str(tls_cert)] if tls_cert else []
        gateway_args += ["--tls-key", str(tls_key)] if tls_key else []
        gateway_args += ["--tls-client-ca", str(tls_client_ca)] if tls_client_ca else []
        gateway_args += ["--insecure-tcp"] if insecure_tcp else []
    gateway = Child("gateway", "berth.gateway.main", gateway_args, socket)
    raise typer.Exit(_supervise(daemons, gateway, grace_period))


def _daemon_children(
    state_dir: Path,
    socket_dir: Path,
    common: list[str],
    metrics_port: int,
    extra: dict[str, list[str]],
) -> list[Child]:
    specs = [
        ("network", "berth.network.main", "networkd"),
        ("models", "berth.models.main", "modeld"),
        ("mcp", "berth.mcp.main", "mcpd"),
    ]
    children = []
    for offset, (name, module, program) in enumerate(specs, start=1):
        sock = socket_dir / f"{program}.sock"
        args = [
            "--state-dir",
            str(state_dir / name),
            "--listen",
            f"unix://{sock}",
            *common,
            *_metrics(metrics_port, offset),
            *extra.get(name, []),
        ]
        children.append(Child(name, module, args, sock))
    return children


def _metrics(base: int, offset: int) -> list[str]:
    return ["--metrics-address", f"127.0.0.1:{base + offset}"] if base else []


def _supervise(daemons: list[Child], gateway: Child, grace: float) -> int:
    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        raise _StopRequested

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    running: list[tuple[Child, subprocess.Popen[bytes]]] = []
    code = 0
    try:
        for child in daemons:
            running.append((child, _start(child)))
        for child, _ in running:
            _wait_ready(child)
        running.append((gateway, _start(gateway)))
        _wait_ready(gateway)
        print(f"berth is up on unix://{gateway.socket} (Ctrl-C stops it)", file=sys.stderr)
        pid, status = os.wait()
        name = next((c.name for c, p in running if p.pid == pid), str(pid))
        print(f"berth: the {name} daemon exited ({status}); stopping berth", file=sys.stderr)
        code = 1
    except _StopRequested:
        pass
    except RuntimeError as error:
        print(f"berth: {error}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop([p for c, p in running if c is gateway], grace)
        _stop([p for c, p in running if c is not gateway], grace)
    return code


def _start(child: Child) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C reaches only the supervisor, which stops children in order.
    return subprocess.Popen(
        [sys.executable, "-m", child.module, *child.args], start_new_session=True
    )


def _wait_ready(child: Child) -> None:
    with grpc.insecure_channel(f"unix://{child.socket}") as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=READY_TIMEOUT_S, wait_for_ready=True
            )
        except grpc.RpcError as error:
            raise RuntimeError(f"the {child.name} daemon did not become ready: {error}") from error


def _stop(processes: list[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM them together; SIGKILL any that outlives its grace period."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=grace + KILL_AFTER_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
