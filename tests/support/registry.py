"""A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on
127.0.0.1, with its own storage folder, optionally behind htpasswd or token authentication.

Its access log (Apache's combined format, one line per request once the response is done,
on the registry's standard output) is kept in `access.log` and parsed by `access_log()`:

    127.0.0.1 - - [22/Nov/2026:15:17:27 +0000] "GET /v2/x/y/blobs/sha256:... HTTP/1.1" 206 1024
        "" "berth/0.1.0"        (one line: method, path, status, body bytes, referer, agent)

The line is written after the response, so a test waits for it (`wait_for_request`) rather
than reading it at once. The application log (logrus text) goes to `registry.log`.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import yaml

from tests.support.processes import free_port, poll, stop_process
from tests.support.token_server import TokenServer, token_server

REGISTRY_BIN = "/usr/bin/docker-registry"
HTPASSWD_BIN = "/usr/bin/htpasswd"
READY_TIMEOUT_S = 20.0
_ACCESS_LINE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-)')


@dataclass(frozen=True)
class AccessEntry:
    method: str
    path: str  # with its query
    status: int
    size: int  # body bytes sent


@dataclass
class RegistryServer:
    host: str  # "127.0.0.1:PORT"
    folder: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    token_server: TokenServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def storage(self) -> Path:
        return self.folder / "storage"

    @property
    def access_log_path(self) -> Path:
        return self.folder / "access.log"

    def log_lines(self) -> list[str]:
        """The registry's access log, a line per request answered."""
        try:
            return self.access_log_path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def access_log(self) -> list[AccessEntry]:
        entries = []
        for line in self.log_lines():
            match = _ACCESS_LINE.match(line)
            if match:
                method, path, status, size = match.groups()
                entries.append(AccessEntry(method, path, int(status), int(size.strip("-") or 0)))
        return entries

    def requests(
        self, method: str, path_contains: str, status: int | None = None
    ) -> list[AccessEntry]:
        return [
            entry
            for entry in self.access_log()
            if entry.method == method
            and path_contains in entry.path
            and (status is None or entry.status == status)
        ]

    def count_requests(self, method: str, path_contains: str, status: int | None = None) -> int:
        return len(self.requests(method, path_contains, status))

    def wait_for_request(
        self, method: str, path_contains: str, status: int | None = None, timeout: float = 10.0
    ) -> list[AccessEntry]:
        """The matching access-log entries, once there is at least one."""
        return poll(
            lambda: self.requests(method, path_contains, status),
            timeout,
            f"the registry's log of {method} {path_contains} {status or ''}",
        )

    def blob_data_path(self, digest: str) -> Path:
        hex_digest = digest.removeprefix("sha256:")
        return (
            self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
        )

    def corrupt_blob(self, digest: str, offset: int = 0, length: int = 16) -> None:
        """Flip some bytes of a stored blob in place (same size): the registry then serves
        content that no longer matches its digest."""
        with self.blob_data_path(digest).open("r+b") as file:
            file.seek(offset)
            original = file.read(length)
            file.seek(offset)
            file.write(bytes(byte ^ 0xFF for byte in original))

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        stop_process(self.process)


def _htpasswd_file(folder: Path, users: dict[str, str]) -> Path:
    """A bcrypt htpasswd file; passwords go to `htpasswd` on its stdin, never in argv."""
    lines = []
    for user, password in users.items():
        done = subprocess.run(
            [HTPASSWD_BIN, "-niB", "-C", "4", user],
            input=password,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        lines.append(done.stdout.strip())
    path = folder / "htpasswd"
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(
    folder: Path, port: int, htpasswd: Path | None, tokens: TokenServer | None
) -> dict[str, object]:
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(folder / "storage")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "berth-test-upload-state-secret"},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "berth-test", "path": str(htpasswd)}}
    if tokens is not None:
        config["auth"] = {
            "token": {
                "realm": tokens.realm,
                "service": tokens.service,
                "issuer": tokens.issuer,
                "rootcertbundle": str(tokens.cert_path),
            }
        }
    return config


def _answers(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/v2/", timeout=2.0).status_code in (200, 401)
    except httpx2.HTTPError:
        return False


@contextmanager
def registry_server(
    tmp_path: Path,
    *,
    users: dict[str, str] | None = None,
    token_auth: bool = False,
    anonymous_actions: tuple[str, ...] = ("pull",),
) -> Iterator[RegistryServer]:
    """A running registry with its files in `tmp_path/registry-PORT`, stopped on exit.

    `users` alone: htpasswd (HTTP basic) authentication. `token_auth`: Docker's token
    flow through a token service (`server.token_server`) knowing `users`, which grants
    anonymous callers `anonymous_actions` only."""
    port = free_port()
    folder = tmp_path / f"registry-{port}"
    folder.mkdir(parents=True)
    with ExitStack() as stack:
        tokens = None
        if token_auth:
            tokens = stack.enter_context(
                token_server(folder / "token", users or {}, anonymous_actions=anonymous_actions)
            )
        htpasswd = _htpasswd_file(folder, users) if users and not token_auth else None
        config_path = folder / "config.yml"
        config_path.write_text(yaml.safe_dump(_config(folder, port, htpasswd, tokens)))
        with (folder / "access.log").open("ab") as out, (folder / "registry.log").open("ab") as err:
            process = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(config_path)], stdout=out, stderr=err
            )
        server = RegistryServer(f"127.0.0.1:{port}", folder, process, tokens)
        stack.callback(server.stop)
        poll(
            lambda: _answers(server.url) or not server.running(),
            READY_TIMEOUT_S,
            "docker-registry to answer",
        )
        if not server.running():
            raise RuntimeError(f"docker-registry did not start; see {folder}/registry.log")
        yield server
