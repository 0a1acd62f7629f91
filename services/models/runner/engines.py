"""The loaded engines: one process per model, loaded on demand, unloaded when idle.

`acquire` is how every request (gRPC and HTTP) gets an engine: it resolves the model in the
store, picks the backend, loads the engine once however many requests ask at the same time,
and counts the request while it runs. After the request the engine's keep-alive is what the
request asked for (or stays as it was); a reaper unloads engines idle past it. Loading one
more than `max_loaded` first unloads the least recently used idle engine. An engine that dies
fails the requests it had (Unavailable, ENGINE_FAILED) and is loaded again by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from berth.common.errors import ResourceExhausted, Unavailable
from berth.models.domain.digests import hex_of
from berth.models.domain.engines import (
    DEFAULT_KEEP_ALIVE,
    VLLM,
    EngineKey,
    EngineState,
    EngineUse,
    choose_backend,
    eviction_candidate,
    keep_alive_for,
)
from berth.models.engines.backends import EngineHost, engine_command
from berth.models.engines.client import EngineClient
from berth.models.engines.process import EngineProcess, EngineSpec
from berth.models.runner.bundles import make_bundle, remove_bundle
from berth.models.store.local import ModelStore, ModelView

log = structlog.get_logger("berth.models.engines")

# Engine log lines go here: (source, line), source "engine <model>".
LineSink = Callable[[str, str], None]


@dataclass(frozen=True)
class Lease:
    """An engine lent to one request."""

    client: EngineClient
    model: str
    model_id: str
    backend: str


@dataclass
class Engine:
    use: EngineUse
    model: str
    context_size: int | None
    process: EngineProcess | None = None
    client: EngineClient | None = None
    loading: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class EngineManager:
    def __init__(
        self,
        store: ModelStore,
        state_dir: Path,
        on_line: LineSink,
        host: EngineHost,
        *,
        default_keep_alive: timedelta | None = DEFAULT_KEEP_ALIVE,  # None: never unloads
        max_loaded: int = 2,
        load_timeout_s: float = 300.0,
    ) -> None:
        self.store = store
        # Replaced by the runner when its configuration (--gpu) changes.
        self.host = host
        self.default_keep_alive = default_keep_alive
        self.max_loaded = max_loaded
        self._sockets = state_dir / "engines"
        self._bundles = state_dir / "bundles"
        self._on_line = on_line
        self._load_timeout_s = load_timeout_s
        self._engines: dict[EngineKey, Engine] = {}
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None

    # --- requests ---

    @contextlib.asynccontextmanager
    async def acquire(
        self,
        model: str,
        *,
        backend: str | None = None,
        embedding: bool = False,
        keep_alive: timedelta | None = None,
    ) -> AsyncIterator[Lease]:
        view = self.store.inspect(model)
        chosen = choose_backend(view.name or view.id, view.config.format, backend)
        engine = await self._ready(EngineKey(view.id, chosen, embedding), view)
        if engine.client is None:
            raise Unavailable(
                f"the {chosen} engine for {engine.model} went away", reason="ENGINE_FAILED"
            )
        use = engine.use
        use.active_requests += 1
        use.last_used = _now()
        try:
            yield Lease(engine.client, engine.model, view.id, chosen)
        finally:
            use.active_requests -= 1
            use.last_used = _now()
            use.keep_alive = keep_alive_for(keep_alive, use.keep_alive, self.default_keep_alive)
            self._changed.set()

    def list_models(self) -> list[ModelView]:
        return self.store.list_models()

    def engines(self) -> list[Engine]:
        return list(self._engines.values())

    def is_loaded(self, model_id: str) -> bool:
        return any(key.model_id == model_id for key in self._engines)

    # --- loading ---

    async def _ready(self, key: EngineKey, view: ModelView) -> Engine:
        async with self._lock:
            engine = self._engines.get(key)
            if engine is not None and engine.process is not None and not engine.process.alive:
                await self._forget(engine)  # died; its watcher has not caught up yet
                engine = None
            if engine is None:
                await self._make_room()
                engine = self._new_engine(key, view)
        assert engine.loading is not None
        await asyncio.shield(engine.loading)
        return engine

    def _new_engine(self, key: EngineKey, view: ModelView) -> Engine:
        now = _now()
        engine = Engine(
            use=EngineUse(key, now, now, self.default_keep_alive),
            model=view.tags[0] if view.tags else view.id,
            context_size=view.config.context_size,
        )
        self._engines[key] = engine
        engine.loading = asyncio.create_task(self._load(engine, view))
        return engine

    async def _load(self, engine: Engine, view: ModelView) -> None:
        key = engine.use.key
        try:
            self.host.require(key.backend)
            spec = self._spec(engine, view)
            spec.socket.unlink(missing_ok=True)
            source = f"engine {engine.model}"
            engine.process = await EngineProcess.start(
                spec,
                engine_command(spec, self.host),
                self.host.environment(),
                lambda line: self._on_line(source, line),
            )
            await engine.process.wait_ready(self._load_timeout_s)
        except BaseException:
            self._engines.pop(key, None)
            if engine.process is not None:
                await engine.process.stop()
            if not self.is_loaded(key.model_id):
                remove_bundle(self._bundles, key.model_id)
            raise
        engine.client = EngineClient(spec.socket)
        engine.use.state = EngineState.READY
        engine.watcher = asyncio.create_task(self._watch(engine))
        log.info("engine_loaded", model=engine.model, backend=key.backend, pid=engine.process.pid)

    def _spec(self, engine: Engine, view: ModelView) -> EngineSpec:
        key = engine.use.key
        bundle = make_bundle(self.store.content, self._bundles, key.model_id, view.manifest)
        self._sockets.mkdir(parents=True, exist_ok=True)
        return EngineSpec(
            backend=key.backend,
            # vLLM serves the directory (weights, config, tokenizer); llama.cpp the GGUF.
            model_paths=[bundle.directory] if key.backend == VLLM else bundle.weights,
            socket=self._socket_path(key),
            context_size=engine.context_size,
            embedding=key.embedding,
            chat_template=bundle.chat_template,
            alias=engine.model,
        )

    def _socket_path(self, key: EngineKey) -> Path:
        # Short: a unix socket's path has at most 107 bytes. A model's format decides its
        # backend, so the backend needs no place in the name.
        suffix = "-e" if key.embedding else ""
        return self._sockets / f"{hex_of(key.model_id)[:16]}{suffix}.sock"

    async def _watch(self, engine: Engine) -> None:
        """Notice an engine that dies on its own: the next request loads it again."""
        assert engine.process is not None
        code = await engine.process.wait_exit()
        if engine.use.state in (EngineState.UNLOADING, EngineState.FAILED):
            return
        log.warning("engine_died", model=engine.model, exit_code=code)
        await self._forget(engine)

    async def _forget(self, engine: Engine) -> None:
        """Drop an engine that died on its own: the next request loads it again."""
        engine.use.state = EngineState.FAILED
        if self._engines.get(engine.use.key) is engine:
            del self._engines[engine.use.key]
        if engine.client is not None:
            await engine.client.aclose()
            engine.client = None

    async def _make_room(self) -> None:
        while len(self._engines) >= self.max_loaded:
            victim = eviction_candidate(e.use for e in self._engines.values())
            if victim is None:
                raise ResourceExhausted(
                    f"{len(self._engines)} engines are loaded and busy (the limit is"
                    f" {self.max_loaded}): try again when one is idle",
                    reason="ENGINES_BUSY",
                )
            await self._unload(self._engines[victim.key])

    # --- unloading ---

    async def unload(
        self, model_ids: set[str] | None = None, backend: str | None = None
    ) -> list[Engine]:
        """Unload the engines of these models (all when None); those unloaded."""
        async with self._lock:
            chosen = [
                e
                for e in self._engines.values()
                if (model_ids is None or e.use.key.model_id in model_ids)
                and (backend is None or e.use.key.backend == backend)
            ]
            for engine in chosen:
                await self._unload(engine)
        return chosen

    async def _unload(self, engine: Engine) -> None:
        key = engine.use.key
        engine.use.state = EngineState.UNLOADING
        self._engines.pop(key, None)
        if engine.loading is not None and not engine.loading.done():
            engine.loading.cancel()
        if engine.client is not None:
            await engine.client.aclose()
        if engine.process is not None:
            await engine.process.stop()
        if not self.is_loaded(key.model_id):
            remove_bundle(self._bundles, key.model_id)
        log.info("engine_unloaded", model=engine.model, backend=key.backend)

    # --- the reaper ---

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        await self.unload()

    async def _reap(self) -> None:
        while True:
            async with self._lock:
                now = _now()
                for engine in list(self._engines.values()):
                    if engine.use.expired(now):
                        await self._unload(engine)
            self._changed.clear()
            await self._wait(self._next_expiry())

    def _next_expiry(self) -> float | None:
        moments = [m for e in self._engines.values() if (m := e.use.expires_at()) is not None]
        if not moments:
            return None
        return max(0.0, (min(moments) - _now()).total_seconds())

    async def _wait(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)


def _now() -> datetime:
    return datetime.now(UTC)
