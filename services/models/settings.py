"""berth-modeld settings: BERTH_MODELD_* environment variables and flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from berth.common.settings import DaemonSettings


class ModeldSettings(DaemonSettings):
    model_config = SettingsConfigDict(
        env_prefix="BERTH_MODELD_",
        cli_prog_name="berth-modeld",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    state_dir: Path = Field(Path("/var/lib/berth/models"), description="model store and state")
    listen: list[str] = Field(
        default_factory=lambda: ["unix:///run/berth/modeld.sock"],
        description="unix:///path.sock or host:port (repeatable)",
    )
