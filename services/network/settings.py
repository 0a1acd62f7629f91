"""berth-networkd settings: BERTH_NETWORKD_* environment variables and flags."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from berth.common.settings import DaemonSettings


class NetworkdSettings(DaemonSettings):
    model_config = SettingsConfigDict(
        env_prefix="BERTH_NETWORKD_",
        cli_prog_name="berth-networkd",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    state_dir: Path = Field(Path("/var/lib/berth/network"), description="agent state")
    listen: list[str] = Field(
        default_factory=lambda: ["unix:///run/berth/networkd.sock"],
        description="unix:///path.sock or host:port (repeatable)",
    )
    name_prefix: str = Field(
        "", description="prefix of every namespace this agent creates (agents sharing a machine)"
    )
    default_bridge_name: str = Field("berth0", description="device of the default bridge network")
    netns: str | None = Field(
        None,
        description="run inside this existing network namespace (a test host, or a dedicated one)",
    )
    host_name: str = Field(default_factory=socket.gethostname, description="this host's name")
    resolv_conf: Path = Field(
        Path("/etc/resolv.conf"),
        description="the host's resolvers: the embedded DNS forwards what it does not know to "
        "its nameservers (re-read when it changes)",
    )
    dns_upstream_timeout: float = Field(
        1.5, gt=0, le=10, description="seconds each upstream resolver gets to answer"
    )
    dns_upstream_limit: int = Field(
        256, gt=0, description="forwarded queries in flight at most; more get SERVFAIL at once"
    )
