"""An engine as a child process: one per loaded model, in its own process group, serving the
OpenAI HTTP API on a unix socket. Its output goes, line by line, to whoever started it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2
import structlog

from berth.common.errors import BerthError

log = structlog.get_logger("berth.models.engines")

ENGINE_FAILED = "ENGINE_FAILED"
LOG_TAIL_LINES = 10
# Longer output lines (a model's metadata can be long) are cut, not fatal.
LINE_LIMIT = 1 << 20
READY_POLL_S = 0.05
# How long the output is awaited after the child exits, for its last lines.
DRAIN_S = 1.0


@dataclass(frozen=True)
class EngineSpec:
    backend: str  # "llama.cpp" | "vllm"
    model_paths: list[Path]  # GGUF shards (first first) or a safetensors directory
    socket: Path  # the unix socket the engine listens on
    context_size: int | None
    embedding: bool = False
    chat_template: Path | None = None
    # The model's name as the engine reports it (its reference): never a file path.
    alias: str | None = None

    @property
    def model_name(self) -> str:
        if self.alias:
            return self.alias
        return str(self.model_paths[0]) if self.model_paths else "(no model)"


class EngineProcess:
    """A started engine: `wait_ready` before use, `stop` to end it (and anything it started)."""

    def __init__(
        self,
        spec: EngineSpec,
        process: asyncio.subprocess.Process,
        on_line: Callable[[str], None],
    ) -> None:
        self.spec = spec
        self.pid = process.pid
        self._process = process
        self._on_line = on_line
        self._tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._exited = asyncio.ensure_future(process.wait())
        self._readers = [
            asyncio.create_task(self._pump(stream))
            for stream in (process.stdout, process.stderr)
            if stream is not None
        ]

    @classmethod
    async def start(
        cls,
        spec: EngineSpec,
        command: list[str],
        environment: dict[str, str],
        on_line: Callable[[str], None],
    ) -> EngineProcess:
        process = await asyncio.create_subprocess_exec(
            *command,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=LINE_LIMIT,
        )
        return cls(spec, process, on_line)

    @property
    def alive(self) -> bool:
        """Not known to have exited (asyncio learns of an exit a little after it happens)."""
        return self._process.returncode is None and _running(self.pid)

    @property
    def log_tail(self) -> list[str]:
        """The child's last output lines."""
        return list(self._tail)

    def rss_bytes(self) -> int:
        """The child's resident memory (0 once it has exited)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the engine answers `GET /v1/models`; if it exits first or takes longer
        than `timeout_s` (it is then killed): BerthError ENGINE_FAILED with its last lines."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        transport = httpx2.AsyncHTTPTransport(uds=str(self.spec.socket))
        async with httpx2.AsyncClient(transport=transport, base_url="http://engine") as client:
            while not await self._answers(client):
                if self._exited.done():
                    raise await self._failure(f"exited with code {self._exited.result()}")
                if loop.time() > deadline:
                    await self.stop(grace_s=0)
                    raise await self._failure(f"was not ready after {timeout_s:g}s")
                await asyncio.wait([self._exited], timeout=READY_POLL_S)

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to the process group, SIGKILL after `grace_s` (or when cancelled)."""
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), grace_s)
        except TimeoutError:
            log.warning("engine_killed", pid=self.pid, model=self.spec.model_name, grace_s=grace_s)
        finally:
            # Also whatever the engine started and left behind in its group.
            self._signal_group(signal.SIGKILL)
        await asyncio.shield(self._exited)
        await self._drain()

    async def wait_exit(self) -> int:
        """The child's exit code (negative: the signal that ended it), once it has exited."""
        return await asyncio.shield(self._exited)

    async def _answers(self, client: httpx2.AsyncClient) -> bool:
        try:
            reply = await client.get("/v1/models", timeout=5.0)
        except httpx2.TransportError:
            return False
        return reply.status_code == 200

    async def _failure(self, what: str) -> BerthError:
        await self._drain()
        lines = "\n".join(self._tail) or "(no output)"
        return BerthError(
            f"the {self.spec.backend} engine for {self.spec.model_name} {what}; its last lines:"
            f"\n{lines}",
            reason=ENGINE_FAILED,
            metadata={"backend": self.spec.backend, "model": self.spec.model_name},
        )

    async def _drain(self) -> None:
        """Let the readers take the child's last lines (bounded: a grandchild may hold the
        pipes open)."""
        _, pending = await asyncio.wait(self._readers, timeout=DRAIN_S)
        for reader in pending:
            reader.cancel()

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # longer than LINE_LIMIT: asyncio has dropped it
                raw = b"(a line too long to show)\n"
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._tail.append(line)
                self._forward(line)

    def _forward(self, line: str) -> None:
        try:
            self._on_line(line)
        except Exception:
            # Never stop reading: a full pipe would block the engine.
            log.exception("engine_log_line_failed", pid=self.pid)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
