"""berth-networkd settings: BERTH_NETWORKD_* environment variables and flags."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from berth.common.settings import DaemonSettings, check_redis_url


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
    redis_url: str | None = Field(
        None,
        description="the cluster store (redis://HOST:PORT/DB): joins the cluster, for overlay "
        "networks (also BERTH_REDIS_URL)",
    )
    underlay_address: str | None = Field(
        None,
        description="this host's VXLAN tunnel endpoint (default: the address the kernel uses "
        "towards the Redis server)",
    )
    advertise_address: str = Field(
        "", description="this agent's gRPC HOST:PORT for other hosts and gateways"
    )
    vxlan_port: int = Field(4789, gt=0, lt=65536, description="UDP port of VXLAN")
    heartbeat_interval: float = Field(1.0, gt=0, description="seconds between heartbeats")
    host_ttl: float = Field(
        5.0,
        gt=0,
        description="seconds after its last heartbeat a host counts as dead (its endpoints "
        "are then removed everywhere)",
    )
    resync_interval: float = Field(
        10.0, gt=0, description="seconds between full resynchronisations with the cluster"
    )

    _redis_scheme = field_validator("redis_url")(check_redis_url)
