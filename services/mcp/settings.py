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
