"""A real redis-server for tests: on loopback or inside a test namespace, with its own
data folder (append-only, so a restart keeps the cluster's state as a deployment would)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import stop_process

READY_TIMEOUT_S = 10.0


@dataclass
class RedisServer:
    address: str
    port: int
    data_dir: Path
    netns: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.address}:{self.port}/0"

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def start(self) -> None:
        """Start (or start again, with the data written before) and wait until it answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "redis.log").open("ab")
        argv = [
            *self._prefix(),
            "redis-server",
            "--bind",
            self.address,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ]
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.cli("PING").strip() != "PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.data_dir}/redis.log")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def cli(self, *command: str) -> str:
        """redis-cli's answer to one command ('' when the server cannot be reached)."""
        argv = [*self._prefix(), "redis-cli", "-h", self.address, "-p", str(self.port), *command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        reached = done.returncode == 0 and "Could not connect" not in done.stdout
        return done.stdout if reached else ""


@contextmanager
def redis_server(
    data_dir: Path, address: str = "127.0.0.1", port: int = 6379, netns: str | None = None
) -> Iterator[RedisServer]:
    server = RedisServer(address=address, port=port, data_dir=data_dir, netns=netns)
    server.start()
    try:
        yield server
    finally:
        server.stop()
