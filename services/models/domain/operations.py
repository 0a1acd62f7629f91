"""Long work (pull, push, package, bench) as the client sees it: state, phase, per-layer
progress and, for a bench, the concurrency levels finished.

An Operation is changed only by the work it describes. Every change bumps a version, and
each layer (and finished bench level) remembers the version it changed at, so a watcher asks
for "what changed since version N" and gets one event: a slow watcher gets fewer, bigger
events and nobody queues without bound. The first event a watcher gets (since version 0) is a
full snapshot.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from berth.common.errors import BerthError
from berth.models.domain.bench import BenchResult, LevelResult


class Kind(enum.Enum):
    PULL_MODEL = "PULL_MODEL"
    PUSH_MODEL = "PUSH_MODEL"
    PACKAGE_MODEL = "PACKAGE_MODEL"
    BENCH_MODEL = "BENCH_MODEL"


class State(enum.Enum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Phase(enum.Enum):
    QUEUED = "QUEUED"
    RESOLVING = "RESOLVING"
    PREPARING = "PREPARING"
    DOWNLOADING = "DOWNLOADING"
    UPLOADING = "UPLOADING"
    VERIFYING = "VERIFYING"
    COMMITTING = "COMMITTING"
    LOADING = "LOADING"
    BENCHMARKING = "BENCHMARKING"
    DONE = "DONE"


class LayerStatus(enum.Enum):
    WAITING = "WAITING"
    TRANSFERRING = "TRANSFERRING"
    VERIFYING = "VERIFYING"
    DONE = "DONE"
    EXISTS = "EXISTS"


@dataclass(frozen=True)
class LayerProgress:
    key: str
    digest: str = ""
    media_type: str = ""
    name: str = ""
    status: LayerStatus = LayerStatus.WAITING
    total_bytes: int = 0
    completed_bytes: int = 0


@dataclass(frozen=True)
class ModelResult:
    model: str
    id: str
    size_bytes: int


# What a successful operation produced: a model (pull, push, package) or a bench run.
Result = ModelResult | BenchResult


@dataclass(frozen=True)
class Event:
    operation_id: str
    kind: Kind
    state: State
    phase: Phase
    model: str
    message: str
    time: datetime
    layers: list[LayerProgress]
    total_bytes: int
    completed_bytes: int
    # Bench: the levels finished since the watcher's previous event, in the order run.
    bench_levels: list[LevelResult] = field(default_factory=list)
    result: Result | None = None
    error: BerthError | None = None


@dataclass
class Operation:
    id: str
    kind: Kind
    model: str
    state: State = State.RUNNING
    phase: Phase = Phase.QUEUED
    message: str = ""
    start_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    end_time: datetime | None = None
    result: Result | None = None
    error: BerthError | None = None
    version: int = 0
    _layers: dict[str, tuple[int, LayerProgress]] = field(default_factory=dict)
    _levels: list[tuple[int, LevelResult]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.state is not State.RUNNING

    @property
    def layers(self) -> list[LayerProgress]:
        return [layer for _, layer in self._layers.values()]

    @property
    def total_bytes(self) -> int:
        return sum(layer.total_bytes for layer in self.layers)

    @property
    def completed_bytes(self) -> int:
        return sum(layer.completed_bytes for layer in self.layers)

    def set_phase(self, phase: Phase, message: str) -> None:
        self.phase, self.message = phase, message
        self._bump()

    def add_layer(self, layer: LayerProgress) -> None:
        self.version += 1
        self._layers[layer.key] = (self.version, layer)
        self._notify()

    def update_layer(self, key: str, **changes: object) -> None:
        _, layer = self._layers[key]
        self.version += 1
        self._layers[key] = (self.version, replace(layer, **changes))  # type: ignore[arg-type]
        self._notify()

    def add_bench_level(self, level: LevelResult) -> None:
        self.version += 1
        self._levels.append((self.version, level))
        self._notify()

    def succeed(self, result: Result, message: str) -> None:
        self.result = result
        self._end(State.SUCCEEDED, message)

    def fail(self, error: BerthError, cancelled: bool = False) -> None:
        self.error = error
        self._end(State.CANCELLED if cancelled else State.FAILED, error.message)

    def _end(self, state: State, message: str) -> None:
        self.state, self.phase, self.message = state, Phase.DONE, message
        self.end_time = datetime.now(UTC)
        self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def event_since(self, version: int) -> Event:
        return Event(
            operation_id=self.id,
            kind=self.kind,
            state=self.state,
            phase=self.phase,
            model=self.model,
            message=self.message,
            time=datetime.now(UTC),
            layers=[layer for changed, layer in self._layers.values() if changed > version],
            total_bytes=self.total_bytes,
            completed_bytes=self.completed_bytes,
            bench_levels=[level for changed, level in self._levels if changed > version],
            result=self.result,
            error=self.error,
        )

    async def watch(self) -> AsyncIterator[Event]:
        """A snapshot, then one event per batch of changes, until the operation ends."""
        seen = -1
        while True:
            if self.version != seen:
                event = self.event_since(seen if seen >= 0 else 0)
                if seen < 0:
                    event = replace(event, layers=self.layers)
                seen = self.version
                yield event
                if event.state is not State.RUNNING:  # not self.state: it may have moved on
                    return
            else:
                await self._changed.wait()
