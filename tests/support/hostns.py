"""Throwaway network namespaces that play a host for a network agent in tests.

Every name starts with a prefix unique to this process and call, and everything with
that prefix (sandbox namespaces, their /etc/netns folders) is removed afterwards, even
when the test failed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")


@dataclass(frozen=True)
class AgentHost:
    netns: str  # the agent's namespace
    prefix: str  # what the agent puts before the namespaces it creates

    def agent_args(self) -> list[str]:
        return ["--netns", self.netns, "--name-prefix", self.prefix]

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return netns_run(self.netns, *argv, timeout=timeout)


def netns_run(netns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """A command in a network namespace, its output captured (not checked)."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=timeout
    )


def unique_prefix() -> str:
    return f"bt{os.getpid() % 10000}{secrets.token_hex(2)}-"


@contextmanager
def host_namespace() -> Iterator[AgentHost]:
    prefix = unique_prefix()
    host = AgentHost(netns=f"{prefix}host", prefix=prefix)
    subprocess.run(["ip", "netns", "add", host.netns], check=True)
    subprocess.run(["ip", "netns", "exec", host.netns, "ip", "link", "set", "lo", "up"], check=True)
    try:
        yield host
    finally:
        remove_everything(prefix)


def remove_everything(prefix: str) -> None:
    for path in NETNS_DIR.glob(f"{prefix}*"):
        subprocess.run(["ip", "netns", "delete", path.name], capture_output=True)
    for path in ETC_NETNS.glob(f"{prefix}*"):
        shutil.rmtree(path, ignore_errors=True)


def leftovers(prefix: str) -> list[str]:
    return sorted(p.name for p in [*NETNS_DIR.glob(f"{prefix}*"), *ETC_NETNS.glob(f"{prefix}*")])


@dataclass(frozen=True)
class Outside:
    """Another test host, joined to an agent's host by a veth underlay."""

    netns: str
    host_address: str  # the agent host's end of the underlay
    address: str  # this host's own

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return netns_run(self.netns, *argv, timeout=timeout)


@contextmanager
def outside_host(host: AgentHost, subnet_index: int) -> Iterator[Outside]:
    """A namespace `<prefix>out<n>` on 10.199.<n>.0/24 with the agent host at .1."""
    name = f"{host.prefix}o{subnet_index}"
    near, far = f"{host.prefix[:8]}u{subnet_index}a", f"{host.prefix[:8]}u{subnet_index}b"
    outside = Outside(name, f"10.199.{subnet_index}.1", f"10.199.{subnet_index}.2")
    steps = [
        ["ip", "netns", "add", name],
        [
            "ip",
            "link",
            "add",
            near,
            "netns",
            host.netns,
            "type",
            "veth",
            "peer",
            "name",
            far,
            "netns",
            name,
        ],
        ["ip", "-n", host.netns, "addr", "add", f"{outside.host_address}/24", "dev", near],
        ["ip", "-n", host.netns, "link", "set", near, "up"],
        ["ip", "-n", name, "addr", "add", f"{outside.address}/24", "dev", far],
        ["ip", "-n", name, "link", "set", far, "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        yield outside
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
