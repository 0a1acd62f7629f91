"""The host's resolv.conf, read again whenever it changes, and the per-sandbox resolver
files under /etc/netns/NAME, written only when their content changes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from berth.network.domain.resolvconf import ResolvConf

ETC_NETNS = Path("/etc/netns")  # iproute2's: `ip netns exec NAME` mounts NAME/* over /etc
SANDBOX_FILES = ("resolv.conf", "hosts")


class HostResolvConf:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._parsed = ResolvConf()

    def read(self) -> ResolvConf:
        """The file as it is now; a stat per call, a parse only after a change."""
        try:
            stat = os.stat(self.path)
        except OSError:
            self._seen, self._parsed = None, ResolvConf()
            return self._parsed
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            try:
                self._parsed = ResolvConf.parse(self.path.read_text())
            except (OSError, UnicodeDecodeError):
                self._parsed = ResolvConf()
            self._seen = seen
        return self._parsed


class SandboxFiles:
    """resolv.conf and hosts of the sandboxes, in `root`/NAME (iproute2's /etc/netns)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._written: dict[Path, str] = {}

    def folder(self, netns_name: str) -> Path:
        return self.root / netns_name

    def write(self, netns_name: str, name: str, content: str) -> None:
        path = self.folder(netns_name) / name
        if self._written.get(path) == content and path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # In place, not replaced: a process that `ip netns exec` started earlier has the
        # file bind-mounted and keeps seeing this inode.
        path.write_text(content)
        self._written[path] = content

    def remove(self, netns_name: str) -> None:
        folder = self.folder(netns_name)
        for name in SANDBOX_FILES:
            self._written.pop(folder / name, None)
            (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: someone else's files are there too
            folder.rmdir()
