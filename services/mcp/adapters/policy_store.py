"""The secret policy on disk: STATE_DIR/policy.conf, the text exactly as it was set.

Replaced atomically (a crash leaves the old policy or the new one), readable by the daemon's
user only; its modification time is the policy's update time.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from berth.common.jsonfile import write_text

POLICY_FILE = "policy.conf"


class FilePolicyStore:
    """The PolicyStore of berth-mcpd (berth.mcp.domain.policy)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / POLICY_FILE

    def load(self) -> tuple[str, datetime] | None:
        try:
            with self.path.open("rb") as file:
                raw = file.read()
                modified = datetime.fromtimestamp(os.fstat(file.fileno()).st_mtime, UTC)
        except FileNotFoundError:
            return None
        # Bytes, not text mode: text mode would turn CRLF into LF and break the round trip.
        return raw.decode("utf-8"), modified

    def save(self, text: str) -> None:
        write_text(self.path, text)
