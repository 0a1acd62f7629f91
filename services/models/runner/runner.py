"""The runner: its configuration, whether it runs, its backends, and its status.

"Installed" means a backend was made available and the configuration written
(`<state-dir>/runner.json`); "running" means the OpenAI-compatible HTTP API answers and
inference is served. The model store works either way. berth-modeld installs and starts the
runner with its defaults when it starts and nothing is installed yet, so a fresh host serves
at once (Docker's CLI does the same implicitly).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import structlog
from starlette.applications import Starlette

from berth.common.errors import BerthError, FailedPrecondition
from berth.common.http_server import HttpServer
from berth.models.adapters.system_memory import total_memory
from berth.models.domain.engines import BACKENDS, LLAMA_CPP
from berth.models.engines.backends import BackendNotInstalled, gpu_present
from berth.models.runner.engines import EngineManager

log = structlog.get_logger("berth.models.runner")


@dataclass(frozen=True)
class RunnerConfig:
    installed: bool = False
    running: bool = False
    default_backend: str = LLAMA_CPP
    gpu: str = "auto"
    host: str = "127.0.0.1"
    port: int = 12434
    debug: bool = False
    do_not_track: bool = False


@dataclass(frozen=True)
class BackendStatus:
    name: str
    installed: bool
    version: str
    running: bool
    device: str  # "cpu" | "cuda"


class RunnerNotRunning(FailedPrecondition):
    default_reason = "RUNNER_NOT_RUNNING"


class NoGpu(FailedPrecondition):
    default_reason = "GPU_NOT_FOUND"


class PortUnavailable(FailedPrecondition):
    default_reason = "PORT_UNAVAILABLE"


class Runner:
    def __init__(
        self,
        state_dir: Path,
        engines: EngineManager,
        app: Starlette,
        defaults: RunnerConfig,
        memory_total: Callable[[], int] = total_memory,
        has_gpu: Callable[[], bool] = gpu_present,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.engines = engines
        self._tls = tls  # the OpenAI endpoint serves HTTPS with it
        self._has_gpu = has_gpu
        self._file = state_dir / "runner.json"
        self._app = app
        self._defaults = defaults
        self._memory_total = memory_total
        self.config = self._load()
        self.http: HttpServer | None = None
        self.endpoint = ""
        self.bound_port = 0
        self.start_time: datetime | None = None

    # --- life ---

    async def boot(self) -> None:
        """At daemon start: install with the defaults when nothing is, start if it ran."""
        # Asking each backend's interpreter takes a subprocess: once, here, off the event loop.
        host = self.engines.host
        await asyncio.to_thread(lambda: [host.installation(name) for name in BACKENDS])
        if (
            not self.config.installed
            and self.engines.host.installation(self._defaults.default_backend) is not None
        ):
            self.config = replace(self._defaults, installed=True, running=True)
            self._save()
        if self.config.running:
            try:
                await self.start()
            except (BerthError, OSError) as error:  # e.g. the port is taken: serve the rest
                log.error("runner_not_started", error=str(error))

    @property
    def defaults(self) -> RunnerConfig:
        """berth-modeld's own defaults (its --openai-host/--openai-port)."""
        return self._defaults

    async def install(self, config: RunnerConfig) -> None:
        self.require_backend(config.default_backend)
        self.require_gpu(config.gpu)
        await self.stop()
        # Installed now; running once start has its port.
        self.config = replace(config, installed=True, running=False)
        self._save()
        await self.start()

    async def start(self, changes: dict[str, object] | None = None) -> None:
        if not self.config.installed:
            raise FailedPrecondition(
                "the runner is not installed: run `berth model install-runner`",
                reason="RUNNER_NOT_INSTALLED",
            )
        wanted = replace(self.config, **(changes or {}), running=True)
        self.require_backend(wanted.default_backend)
        self.require_gpu(wanted.gpu)
        if self.http is not None and wanted == self.config:
            return
        await self.stop(persist=False)
        self.engines.host = replace(self.engines.host, gpu=wanted.gpu)
        http = HttpServer(self._app, wanted.host, wanted.port, tls=self._tls)
        try:
            host, port = await http.start()
        except OSError as error:
            raise PortUnavailable(
                f"the runner cannot listen on {wanted.host}:{wanted.port}:"
                f" {error.strerror or error}",
                metadata={"host": wanted.host, "port": str(wanted.port)},
            ) from error
        self.http = http
        self.endpoint = f"{http.scheme}://{host}:{port}"
        self.bound_port = port
        self.start_time = datetime.now(UTC)
        self.config = wanted
        self._save()

    async def stop(self, persist: bool = True) -> None:
        await self.engines.unload()
        if self.http is not None:
            await self.http.stop()
            self.http = None
        self.endpoint = ""
        self.bound_port = 0
        if persist and self.config.running:
            self.config = replace(self.config, running=False)
            self._save()

    async def remove_models(self) -> list[str]:
        """Every model out of the store (`--models`): the IDs deleted."""
        purge = await self.engines.store.purge(force=True)
        return list(purge.removal.deleted)

    async def uninstall(self) -> None:
        await self.stop()
        self.config = RunnerConfig()
        self._file.unlink(missing_ok=True)

    # --- checks ---

    def require_running(self) -> None:
        if self.http is None:
            raise RunnerNotRunning(
                "the model runner is not running: start it with `berth model start-runner`"
            )

    def require_backend(self, name: str) -> None:
        if name not in BACKENDS:
            raise BackendNotInstalled(f"there is no {name} backend", metadata={"backend": name})
        self.engines.host.require(name)

    def require_gpu(self, gpu: str) -> None:
        if gpu == "cuda" and not self._has_gpu():
            raise NoGpu("--gpu cuda: this host has no NVIDIA GPU", metadata={"gpu": gpu})

    # --- status ---

    def backends(self) -> list[BackendStatus]:
        busy = {engine.use.key.backend for engine in self.engines.engines()}
        return [self._backend_status(name, name in busy) for name in BACKENDS]

    def _backend_status(self, name: str, running: bool) -> BackendStatus:
        found = self.engines.host.installation(name)
        if found is None:
            return BackendStatus(name, False, "", False, "cpu")
        on_gpu = not found.cpu_only and self.config.gpu != "none" and self._has_gpu()
        return BackendStatus(name, True, found.version, running, "cuda" if on_gpu else "cpu")

    def memory(self) -> tuple[int, int]:
        """(total, available) bytes of host memory."""
        total = self._memory_total()
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return total, min(total, pages)

    # --- the file ---

    def _load(self) -> RunnerConfig:
        try:
            data = json.loads(self._file.read_text())
            return RunnerConfig(
                **{k: v for k, v in data.items() if k in RunnerConfig.__dataclass_fields__}
            )
        except (FileNotFoundError, ValueError, TypeError):
            return RunnerConfig(**{**asdict(self._defaults), "installed": False, "running": False})

    def _save(self) -> None:
        temporary = self._file.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self.config), indent=1))
        os.replace(temporary, self._file)
