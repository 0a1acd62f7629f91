"""This stands in for the Hugging Face Hub: a threaded HTTP server on 127.0.0.1.

It answers what `huggingface_hub` asks for a model's listing (`model_info` with blobs,
`list_repo_tree`) and for its files (`HEAD`/`GET /{repo}/resolve/{revision}/{path}` with the
`X-Repo-Commit`, `ETag`, `X-Linked-Etag`, `X-Linked-Size` headers and byte ranges), as the
Hub does:
- a repository id in another casing gets a 307 to the canonical one;
- an unknown repository is a 401 `RepoNotFound` without a token, a 404 with one;
- with `token=`, every repository is gated: its listing is public, its files answer 401
  `GatedRepo` without a token; a wrong token is refused everywhere;
- `.gguf` and `.safetensors` files are in LFS (their listing carries their sha256), others not;
- no Xet headers, so clients download over plain HTTP.
`cut_next_download_after(n)` makes the next file body stop after n bytes, connection closed.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

_LFS_SUFFIXES = (".gguf", ".safetensors")
_CHUNK = 1 << 20
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True)
class HubEntry:
    """One file of a fake repository."""

    path: str
    source: Path | bytes
    size: int
    sha256: str
    git_sha1: str

    @property
    def lfs(self) -> bool:
        return self.path.lower().endswith(_LFS_SUFFIXES)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_sha1

    def read(self, start: int, length: int) -> Iterator[bytes]:
        if isinstance(self.source, bytes):
            yield self.source[start : start + length]
            return
        with self.source.open("rb") as file:
            file.seek(start)
            while length > 0:
                chunk = file.read(min(_CHUNK, length))
                if not chunk:
                    return
                length -= len(chunk)
                yield chunk


@dataclass(frozen=True)
class HubRepo:
    repo_id: str
    files: dict[str, HubEntry]
    commit: str


def _entry(path: str, source: Path | bytes) -> HubEntry:
    sha256 = hashlib.sha256()
    size = 0
    for chunk in _chunks(source):
        sha256.update(chunk)
        size += len(chunk)
    git = hashlib.sha1(f"blob {size}\0".encode())
    for chunk in _chunks(source):
        git.update(chunk)
    return HubEntry(path, source, size, sha256.hexdigest(), git.hexdigest())


def _chunks(source: Path | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    with source.open("rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk


def _repo(repo_id: str, files: Mapping[str, Path | bytes]) -> HubRepo:
    entries = {path: _entry(path, source) for path, source in sorted(files.items())}
    state = json.dumps([[e.path, e.sha256] for e in entries.values()]).encode()
    return HubRepo(repo_id, entries, hashlib.sha1(repo_id.encode() + state).hexdigest())


class FakeHub:
    """The server; use `fake_hub(...)`, which starts and always stops it."""

    def __init__(
        self, repos: Mapping[str, Mapping[str, Path | bytes]], *, token: str | None = None
    ) -> None:
        self.repos = {repo_id: _repo(repo_id, files) for repo_id, files in repos.items()}
        self.token = token
        # (method, path without the query, Range header or None), in arrival order.
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._cut_after: int | None = None
        self._connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def repo(self, repo_id: str) -> HubRepo:
        return self.repos[repo_id]

    def cut_next_download_after(self, n: int) -> None:
        """The next GET of a file sends its headers and n bytes of body, then hangs up."""
        with self._lock:
            self._cut_after = n

    def take_cut(self) -> int | None:
        with self._lock:
            cut, self._cut_after = self._cut_after, None
            return cut

    def log(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # keep-alive connections clients left open
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join()

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: FakeHub


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.server.hub.track(self.connection, True)

    def finish(self) -> None:
        self.server.hub.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def _answer(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.hub.log(self.command, path, self.headers.get("Range"))
        try:
            self._route(path, parse_qs(url.query))
        except _HubError as error:
            self._send_error(error)

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        parts = [p for p in path.split("/") if p]
        self._check_token()
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = self._repo(parts[2:4], path, "/api/models/")
            rest = parts[4:]
            if not rest or (rest[0] == "revision" and len(rest) == 2):
                self._check_revision(repo, rest[1] if rest else "main")
                return self._send_json(_info(repo, _flag(query, "blobs"), self.hub.token))
            if rest[0] == "tree" and len(rest) >= 2:
                self._check_revision(repo, rest[1])
                tree = _tree(repo, "/".join(rest[2:]), _flag(query, "recursive"))
                return self._send_json(tree)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo(parts[:2], path, "/")
            return self._send_file(repo, parts[3], "/".join(parts[4:]))
        raise _HubError(404, "Sorry, we can't find the page you are looking for.")

    def _check_token(self) -> None:
        sent = self.headers.get("Authorization")
        if self.hub.token and sent is not None and sent != f"Bearer {self.hub.token}":
            raise _HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, names: list[str], path: str, before: str) -> HubRepo:
        asked = "/".join(names)
        for repo in self.hub.repos.values():
            if repo.repo_id == asked:
                return repo
            if repo.repo_id.lower() == asked.lower():
                location = quote(path.replace(before + asked, before + repo.repo_id, 1))
                query = urlsplit(self.path).query
                raise _HubError(307, "", Location=location + (f"?{query}" if query else ""))
        if self.headers.get("Authorization"):
            raise _HubError(404, "Repository not found", "RepoNotFound")
        raise _HubError(401, "Repository not found", "RepoNotFound")

    def _check_revision(self, repo: HubRepo, revision: str) -> None:
        if revision not in ("main", repo.commit):
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _send_file(self, repo: HubRepo, revision: str, file_path: str) -> None:
        self._check_revision(repo, revision)
        if self.hub.token and self.headers.get("Authorization") is None:
            raise _HubError(
                401,
                f"Access to model {repo.repo_id} is restricted. You must have access to it and"
                " be authenticated to access it. Please log in.",
                "GatedRepo",
            )
        entry = repo.files.get(file_path)
        if entry is None:
            raise _HubError(
                404, "Entry not found", "EntryNotFound", **{"X-Repo-Commit": repo.commit}
            )
        start, end, partial = self._range(entry.size)
        self.send_response(206 if partial else 200)
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{entry.etag}"')
        self.send_header("X-Repo-Commit", repo.commit)
        if entry.lfs:
            self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
            self.send_header("X-Linked-Size", str(entry.size))
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = self.hub.take_cut()
        sent = 0
        for chunk in entry.read(start, end - start + 1):
            if cut is not None and sent + len(chunk) >= cut:
                self.wfile.write(chunk[: cut - sent])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(chunk)
            sent += len(chunk)

    def _range(self, size: int) -> tuple[int, int, bool]:
        """(first byte, last byte, partial): the whole file unless a GET has a valid Range."""
        header = self.headers.get("Range")
        match = _RANGE.fullmatch(header.strip()) if header and self.command == "GET" else None
        if match is None:
            return 0, size - 1, False
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
        if start >= size or start > end:
            raise _HubError(416, "Range Not Satisfiable", **{"Content-Range": f"bytes */{size}"})
        return start, end, True

    def _send_json(self, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, error: _HubError) -> None:
        body = json.dumps({"error": error.message}).encode() if error.message else b""
        self.send_response(error.status)
        if error.code:
            self.send_header("X-Error-Code", error.code)
        if error.message:
            self.send_header("X-Error-Message", error.message)
        for name, value in error.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("1", "true")


def _info(repo: HubRepo, blobs: bool, token: str | None) -> dict[str, Any]:
    siblings: list[dict[str, Any]] = []
    for entry in repo.files.values():
        sibling: dict[str, Any] = {"rfilename": entry.path}
        if blobs:
            sibling.update(size=entry.size, blobId=entry.git_sha1)
            if entry.lfs:
                sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": 134}
        siblings.append(sibling)
    return {
        "_id": repo.commit[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.repo_id.split("/")[0],
        "sha": repo.commit,
        "lastModified": "2024-11-01T00:00:00.000Z",
        "private": False,
        "gated": "manual" if token else False,
        "disabled": False,
        "tags": ["gguf"],
        "siblings": siblings,
    }


def _tree(repo: HubRepo, folder: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = f"{folder}/" if folder else ""
    inside = [e for e in repo.files.values() if e.path.startswith(prefix)]
    if folder and not inside:
        raise _HubError(404, f"{folder} does not exist", "EntryNotFound")
    entries: dict[str, dict[str, Any]] = {}
    for entry in inside:
        rest = entry.path[len(prefix) :].split("/")
        for depth in range(1, len(rest) if recursive else min(len(rest), 2)):
            directory = prefix + "/".join(rest[:depth])
            oid = hashlib.sha1(directory.encode()).hexdigest()
            entries[directory] = {"type": "directory", "oid": oid, "size": 0, "path": directory}
        if recursive or len(rest) == 1:
            entries[entry.path] = _tree_file(entry)
    return [entries[path] for path in sorted(entries)]


def _tree_file(entry: HubEntry) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "file",
        "oid": entry.git_sha1,
        "size": entry.size,
        "path": entry.path,
    }
    if entry.lfs:
        item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": 134}
    return item


@contextmanager
def fake_hub(
    repos: Mapping[str, Mapping[str, Path | bytes]], *, token: str | None = None
) -> Iterator[FakeHub]:
    """A running fake Hub serving `repos` ({repo id: {path: file or bytes}}); always stopped."""
    hub = FakeHub(repos, token=token)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
