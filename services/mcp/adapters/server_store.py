"""Enabled servers and their config on disk: STATE_DIR/servers.json and STATE_DIR/config.yaml.

`servers.json` is `{"enabled": [names...]}`; `config.yaml` is the config of every server,
one document keyed by server name (Docker's config.yaml). Both are replaced atomically (a
crash leaves the old file or the new one), readable by the daemon's user only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from berth.common.jsonfile import read_json, write_json, write_text
from berth.mcp.domain.servers import Config, dump_config

ENABLED_FILE = "servers.json"
CONFIG_FILE = "config.yaml"


class FileServerStore:
    """The ServerStore of berth-mcpd."""

    def __init__(self, directory: Path) -> None:
        self.enabled_file = directory / ENABLED_FILE
        self.config_file = directory / CONFIG_FILE

    def load_enabled(self) -> list[str]:
        return list(read_json(self.enabled_file, {}).get("enabled", []))

    def save_enabled(self, names: list[str]) -> None:
        write_json(self.enabled_file, {"enabled": sorted(set(names))})

    def load_config(self) -> dict[str, Config]:
        try:
            text = self.config_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        return yaml.safe_load(text) or {}

    def save_config(self, config: Mapping[str, Config]) -> None:
        write_text(self.config_file, dump_config(config))
