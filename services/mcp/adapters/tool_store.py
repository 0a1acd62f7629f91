"""Disabled tools on disk: STATE_DIR/tools.json, `{"disabled": {server: [tool names]}}`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from berth.common.jsonfile import read_json, write_json

TOOLS_FILE = "tools.json"


class FileToolSwitchStore:
    def __init__(self, directory: Path) -> None:
        self.file = directory / TOOLS_FILE

    def load_disabled(self) -> dict[str, list[str]]:
        return dict(read_json(self.file, {}).get("disabled", {}))

    def save_disabled(self, disabled: Mapping[str, list[str]]) -> None:
        write_json(self.file, {"disabled": dict(disabled)})
