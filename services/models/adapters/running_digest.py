"""The sha256 of a file while it is being appended to, computed on a worker thread.

A download hands each piece it writes to `feed`; hashing then overlaps the network instead
of costing a second pass over the file once it is complete. What the file held before (a
resumed download) is hashed first, from the file. If pieces arrive out of order (the
download started again from byte 0), the running digest gives up and `result` says None:
the caller hashes the file instead.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from pathlib import Path

_CHUNK = 1 << 20
_END = b""


class RunningDigest:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._prefix = path.stat().st_size if path.exists() else 0
        self._next = self._prefix
        self._broken = False
        self._pieces: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._hasher = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name="running-digest", daemon=True)
        self._thread.start()

    def feed(self, offset: int, piece: bytes) -> None:
        if self._broken or offset != self._next:
            self._broken = True
            return
        self._next += len(piece)
        self._pieces.put(piece)

    def result(self) -> str | None:
        """The digest of everything fed (None if it could not follow); ends the thread."""
        self._pieces.put(_END)
        self._thread.join()
        return None if self._broken else "sha256:" + self._hasher.hexdigest()

    def _run(self) -> None:
        if self._prefix:
            with self._path.open("rb") as handle:
                left = self._prefix
                while left and (chunk := handle.read(min(_CHUNK, left))):
                    self._hasher.update(chunk)
                    left -= len(chunk)
        while (piece := self._pieces.get()) is not _END:
            self._hasher.update(piece)
