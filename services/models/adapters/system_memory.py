"""The machine's memory, for the runtime memory check of `pull`."""

from __future__ import annotations

from pathlib import Path

_MEMINFO = Path("/proc/meminfo")


def total_memory() -> int:
    """Bytes of RAM this machine has (MemTotal)."""
    for line in _MEMINFO.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")
