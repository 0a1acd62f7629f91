"""berth-mcpd settings: BERTH_MCPD_* environment variables and flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from berth.common.settings import DaemonSettings


class McpdSettings(DaemonSettings):
    model_config = SettingsConfigDict(
        env_prefix="BERTH_MCPD_",
        cli_prog_name="berth-mcpd",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    state_dir: Path = Field(Path("/var/lib/berth/mcp"), description="catalogs, config, secrets")
    listen: list[str] = Field(
        default_factory=lambda: ["unix:///run/berth/mcpd.sock"],
        description="unix:///path.sock or host:port (repeatable)",
    )
    gateway_host: str = Field(
        "127.0.0.1", description="address of the aggregated MCP endpoint (/mcp and /sse)"
    )
    gateway_port: int = Field(
        8811, ge=-1, le=65535, description="its port; 0 picks a free one, -1 serves no HTTP"
    )
    gateway_token: str = Field(
        "",
        description="bearer token HTTP clients must send; empty: generate one, kept in "
        "STATE_DIR/gateway-token",
    )
    call_timeout: float = Field(
        60.0, gt=0, description="seconds a tools/call may take unless its server says otherwise"
    )
    server_idle_timeout: float = Field(
        300.0,
        gt=0,
        description="seconds a server `berth mcp tools` started stays without a call "
        "(unless its entry says longLived)",
    )
    client_home: Path = Field(
        default_factory=Path.home,
        description="home directory whose MCP client configuration files `client` commands edit",
    )
    runtime_dir: Path = Field(
        Path("/run/berth/mcp"),
        description="where secrets injected as files live while their server runs (tmpfs; "
        "never the state directory)",
    )
    secret_key_file: Path | None = Field(
        None,
        description="file holding the secret store's key; default STATE_DIR/secret.key when "
        "neither BERTH_SECRET_KEY nor the OS keyring has one",
    )
    oauth_callback_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="port of the loopback listener that receives OAuth redirects (127.0.0.1); "
        "0 picks a free one",
    )
