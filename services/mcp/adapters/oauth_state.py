"""STATE_DIR/oauth-discovered.json: the remote servers without `oauth` in their catalog entry
that answered 401 with a Bearer challenge, and so are OAuth apps of their own
(`{"server": "https://host/mcp"}`). Nothing secret is kept here."""

from __future__ import annotations

import threading
from pathlib import Path

from berth.common.jsonfile import read_json, write_json

FILE_NAME = "oauth-discovered.json"


class DiscoveredApps:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._lock = threading.Lock()

    def load(self) -> dict[str, str]:
        found = read_json(self.path, {})
        if not isinstance(found, dict):
            return {}
        return {str(k): str(v) for k, v in found.items() if isinstance(v, str)}

    def add(self, server: str, url: str) -> bool:
        """Remembers that `server` (at `url`) needs OAuth; False when it was known."""
        with self._lock:
            found = self.load()
            if found.get(server) == url:
                return False
            found[server] = url
            write_json(self.path, found)
            return True
