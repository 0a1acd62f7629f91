"""The model store on disk: content-addressed blobs and the catalog of names.

    <root>/blobs/sha256/<hex>    every blob: layers, configs and manifests, by digest
    <root>/ingest/<hex>          a blob being downloaded; kept so a later pull resumes it
    <root>/tmp/                  files being written, renamed into blobs/ once complete
    <root>/index.json            the catalog (models and their tags)

A blob appears under blobs/ only complete and verified (written aside, fsynced, renamed),
and index.json is replaced atomically, so a crash never leaves half a model visible.
Identical blobs are stored once, whatever model they belong to.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from berth.models.domain.catalog import Catalog
from berth.models.domain.digests import DigestMismatch, hex_of, is_digest, sha256_digest

_CHUNK = 1 << 20


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._ingest = root / "ingest"
        self._tmp = root / "tmp"
        self._index = root / "index.json"
        for directory in (self._blobs, self._ingest, self._tmp):
            directory.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():  # files of writes a crash interrupted
            leftover.unlink(missing_ok=True)

    # --- blobs ---

    def blob_path(self, digest: str) -> Path:
        return self._blobs / hex_of(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def blobs(self) -> Iterator[str]:
        for path in self._blobs.iterdir():
            digest = f"sha256:{path.name}"
            if is_digest(digest):
                yield digest

    def blob_size(self, digest: str) -> int:
        return self.blob_path(digest).stat().st_size

    def remove_blob(self, digest: str) -> int:
        path = self.blob_path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def write_blob(self, data: bytes, expected: str | None = None) -> str:
        """Store `data` (checked against `expected` when given); its digest."""
        digest = sha256_digest(data)
        if expected and digest != expected:
            raise DigestMismatch(f"blob {expected}", expected, digest)
        if not self.has_blob(digest):
            with self._temporary() as (handle, path):
                handle.write(data)
                self._publish(handle, path, digest)
        return digest

    def import_file(self, source: Path, on_progress: Callable[[int], None]) -> tuple[str, int]:
        """Copy a file into the store, hashing it on the way; (digest, size)."""
        hasher = hashlib.sha256()
        done = 0
        with source.open("rb") as reader, self._temporary() as (handle, path):
            while chunk := reader.read(_CHUNK):
                hasher.update(chunk)
                handle.write(chunk)
                done += len(chunk)
                on_progress(done)
            digest = "sha256:" + hasher.hexdigest()
            if not self.has_blob(digest):
                self._publish(handle, path, digest)
        return digest, done

    # --- downloads in progress ---

    def ingest_path(self, digest: str) -> Path:
        """Where a download of `digest` writes; what is there already is resumed."""
        return self._ingest / hex_of(digest)

    def ingest_work_dir(self, key: str) -> Path:
        """A directory a downloader owns between attempts (Hugging Face files)."""
        path = self._ingest / "work" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def commit_ingest(
        self, digest: str, source: Path | None = None, computed: str | None = None
    ) -> int:
        """Verify a finished download and move it into blobs/; its size.

        `computed` is the file's digest when the caller hashed it as it was written;
        otherwise the file is hashed here. A file whose bytes do not hash to `digest` is
        deleted (so the next pull starts afresh) and DigestMismatch raised.
        """
        path = source or self.ingest_path(digest)
        actual = computed or file_digest(path)
        if actual != digest:
            path.unlink(missing_ok=True)
            raise DigestMismatch(f"blob {digest}", digest, actual)
        size = path.stat().st_size
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(path, self.blob_path(digest))
        _fsync_dir(self._blobs)
        return size

    def discard_ingest(self, digest: str) -> None:
        self.ingest_path(digest).unlink(missing_ok=True)

    def clear_ingest(self) -> int:
        """Remove every partial download; the bytes freed."""
        freed = 0
        for path in self._ingest.rglob("*"):
            if path.is_file():
                freed += path.stat().st_size
        shutil.rmtree(self._ingest, ignore_errors=True)
        self._ingest.mkdir(parents=True, exist_ok=True)
        return freed

    # --- the catalog ---

    def load_catalog(self) -> Catalog:
        try:
            return Catalog.from_json(json.loads(self._index.read_text()))
        except FileNotFoundError:
            return Catalog()

    def save_catalog(self, catalog: Catalog) -> None:
        with self._temporary() as (handle, path):
            handle.write(json.dumps(catalog.to_json(), indent=1).encode())
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(path, self._index)
        _fsync_dir(self.root)

    # --- helpers ---

    def _temporary(self) -> _Temporary:
        return _Temporary(self._tmp)

    def _publish(self, handle: BinaryIO, path: Path, digest: str) -> None:
        handle.flush()
        os.fsync(handle.fileno())
        os.replace(path, self.blob_path(digest))
        _fsync_dir(self._blobs)


class _Temporary:
    """A file in tmp/, removed on exit unless it was renamed away."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def __enter__(self) -> tuple[BinaryIO, Path]:
        fd, name = tempfile.mkstemp(dir=self._directory)
        self._path = Path(name)
        self._handle = os.fdopen(fd, "wb")
        return self._handle, self._path

    def __exit__(self, *exc: object) -> None:
        self._handle.close()
        self._path.unlink(missing_ok=True)


def file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
