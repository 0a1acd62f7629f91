"""A whole berth of one host (three daemons and the gateway) on temporary sockets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from berth.gateway.auth import add_token
from tests.support.hostns import AgentHost, host_namespace
from tests.support.mcp import MCP_GATEWAY_TOKEN
from tests.support.processes import DaemonProcess, free_port, start, wait_serving
from tests.support.tls import TlsFiles, make_tls

DAEMONS = {
    "network": ("berth.network.main", "networkd"),
    "models": ("berth.models.main", "modeld"),
    "mcp": ("berth.mcp.main", "mcpd"),
}
TOKEN_SCOPES = {
    "network-read": ["network:read"],
    "mcp-read": ["mcp:read"],
    "mcp-write": ["mcp:write"],
    "admin": ["admin"],
}
# The agent's stand-in for the host's resolv.conf: a server nothing can reach until a test
# points it elsewhere (TEST-NET-1, never routed).
UNREACHABLE_RESOLVER = "nameserver 192.0.2.53\n"


@dataclass
class Stack:
    root: Path
    daemons: dict[str, DaemonProcess]
    gateway: DaemonProcess
    tcp_port: int
    tls: TlsFiles
    host: AgentHost
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def resolv_conf(self) -> Path:
        """The file the network agent reads as the host's resolv.conf."""
        return self.root / "host-resolv.conf"

    @property
    def socket(self) -> Path:
        return self.gateway.socket

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.gateway.target)

    def tcp_channel(self) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(self.tls.ca.read_bytes())
        return grpc.secure_channel(f"localhost:{self.tcp_port}", credentials)

    def stop(self) -> None:
        for daemon in [self.gateway, *self.daemons.values()]:
            daemon.stop()


@contextmanager
def running_stack(root: Path, gateway_args: list[str] | None = None) -> Iterator[Stack]:
    """A whole berth whose network agent lives in a test host namespace."""
    with host_namespace() as host:
        stack = start_stack(root, host, gateway_args)
        try:
            yield stack
        finally:
            stack.stop()


def start_stack(root: Path, host: AgentHost, gateway_args: list[str] | None = None) -> Stack:
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    daemons: dict[str, DaemonProcess] = {}
    resolv_conf = root / "host-resolv.conf"
    resolv_conf.write_text(UNREACHABLE_RESOLVER)
    try:
        for domain, (module, program) in DAEMONS.items():
            extra = {
                "network": [*host.agent_args(), "--resolv-conf", str(resolv_conf)],
                "models": ["--openai-port", "0"],  # never the machine's 12434
                # never the machine's 8811, nor its /run
                "mcp": [
                    *("--gateway-port", "0", "--gateway-token", MCP_GATEWAY_TOKEN),
                    *("--runtime-dir", str(run / "mcp")),
                ],
            }.get(domain, [])
            daemons[domain] = start(
                program,
                module,
                run / f"{program}.sock",
                ["--state-dir", str(root / domain), *extra],
                root,
                wait=False,
            )
        for daemon in daemons.values():
            wait_serving(daemon.target)
        tls = make_tls(root)
        tokens_file = root / "gateway" / "tokens.json"
        tokens = {name: add_token(tokens_file, name, s) for name, s in TOKEN_SCOPES.items()}
        port = free_port()
        args = [
            "--state-dir",
            str(root / "gateway"),
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-cert",
            str(tls.cert),
            "--tls-key",
            str(tls.key),
            "--tokens-file",
            str(tokens_file),
            *[arg for d, p in daemons.items() for arg in (f"--{d}-address", p.target)],
            *(gateway_args or []),
        ]
        gateway = start("gateway", "berth.gateway.main", run / "berth.sock", args, root)
    except BaseException:
        for daemon in daemons.values():
            daemon.stop()
        raise
    return Stack(root, daemons, gateway, port, tls, host, tokens)
