"""The local model store: what `ls`, `inspect`, `tag`, `rm` and `purge` work on, and where
pull, package and push commit or read their models.

Catalog changes are serialised by one lock and saved atomically. Blobs no model needs any
more are deleted after `rm` and `purge`, except those pinned by work under way (a pull
whose layers are stored but whose manifest is not committed yet).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from berth.common.errors import BerthError, FailedPrecondition
from berth.models.adapters.content_store import ContentStore
from berth.models.domain.artifact import Manifest, parse_manifest
from berth.models.domain.catalog import Removal
from berth.models.domain.model_config import ModelConfig, parse_config_blob
from berth.models.domain.reference import parse_reference


@dataclass(frozen=True)
class ModelView:
    id: str
    name: str
    tags: list[str]
    created: datetime | None
    config: ModelConfig
    manifest: Manifest
    manifest_size: int

    @property
    def size_bytes(self) -> int:
        return self.manifest.layers_size


@dataclass(frozen=True)
class Purge:
    removal: Removal
    reclaimed_bytes: int


class Pins:
    """Blobs one piece of work holds on to (see ModelStore.pinned)."""

    def __init__(self, counts: Counter[str]) -> None:
        self._counts = counts
        self._held: list[str] = []

    def add(self, *digests: str) -> None:
        self._counts.update(digests)
        self._held.extend(digests)

    def release(self) -> None:
        self._counts.subtract(self._held)
        for digest in set(self._held):
            if self._counts[digest] <= 0:
                del self._counts[digest]
        self._held.clear()


class ModelStore:
    def __init__(self, content: ContentStore) -> None:
        self.content = content
        self._catalog = content.load_catalog()
        self._lock = asyncio.Lock()
        self._pins: Counter[str] = Counter()
        self._views: dict[str, tuple[Manifest, ModelConfig, datetime | None, int]] = {}
        # Whether an engine has the model loaded; the inference side sets this.
        self.in_use: Callable[[str], bool] = lambda model_id: False

    # --- reading ---

    def list_models(self) -> list[ModelView]:
        views = [self._view(e.id, e.tags[0] if e.tags else "") for e in self._catalog.entries()]
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(views, key=lambda v: v.created or epoch, reverse=True)

    def inspect(self, text: str, field_name: str = "model") -> ModelView:
        model_id = self._catalog.resolve(text, field_name)
        entry = self._catalog.get(model_id)
        tags = entry.tags if entry else []
        asked = _normalised(text)
        return self._view(model_id, asked if asked in tags else (tags[0] if tags else ""))

    def id_of_tag(self, name: str) -> str | None:
        return self._catalog.owner_of(name)

    def _view(self, model_id: str, name: str) -> ModelView:
        if model_id not in self._views:
            manifest = parse_manifest(self.content.read_blob(model_id), model_id)
            config, created = parse_config_blob(self.content.read_blob(manifest.config.digest))
            size = self.content.blob_size(model_id)
            self._views[model_id] = (manifest, config, created, size)
        manifest, config, created, size = self._views[model_id]
        entry = self._catalog.get(model_id)
        tags = list(entry.tags) if entry else []
        return ModelView(model_id, name, tags, created, config, manifest, size)

    # --- writing ---

    @contextmanager
    def pinned(self, digests: Sequence[str] = ()) -> Iterator[Pins]:
        """Keep these blobs, and those added to the yielded Pins, from garbage collection
        while the work that will use them runs."""
        pins = Pins(self._pins)
        pins.add(*digests)
        try:
            yield pins
        finally:
            pins.release()

    async def commit(self, tag: str | None, manifest_body: bytes) -> ModelView:
        """Make a model visible: its manifest stored, then its tag, in one catalog write."""
        manifest = parse_manifest(manifest_body, tag or "model")
        missing = [b.digest for b in manifest.blobs if not self.content.has_blob(b.digest)]
        if missing:
            raise FailedPrecondition(f"cannot commit {tag}: blobs missing: {', '.join(missing)}")
        async with self._lock:
            model_id = self.content.write_blob(manifest_body)
            self._catalog.add(model_id, tag, datetime.now(UTC))
            self.content.save_catalog(self._catalog)
        return self._view(model_id, tag or "")

    async def tag(self, source: str, target: str) -> ModelView:
        name = parse_reference(target, "target").name
        async with self._lock:
            model_id = self._catalog.resolve(source, "source")
            self._catalog.tag(model_id, name)
            self.content.save_catalog(self._catalog)
        return self._view(model_id, name)

    async def remove(self, targets: Sequence[str], force: bool) -> Removal:
        async with self._lock:
            removal = self._catalog.plan_removal(targets, force)
            self._refuse_loaded(removal.deleted, force)
            self._catalog.apply(removal)
            self.content.save_catalog(self._catalog)
            self._collect_garbage()
        return removal

    async def purge(self, force: bool) -> Purge:
        async with self._lock:
            entries = self._catalog.entries()
            self._refuse_loaded([e.id for e in entries], force)
            removal = Removal([t for e in entries for t in e.tags], [e.id for e in entries])
            self._catalog.apply(removal)
            self.content.save_catalog(self._catalog)
            freed = self._collect_garbage()
            if not self._pins:
                freed += self.content.clear_ingest()
        return Purge(removal, freed)

    def _refuse_loaded(self, model_ids: Sequence[str], force: bool) -> None:
        loaded = [i for i in model_ids if self.in_use(i)]
        if loaded and not force:
            raise FailedPrecondition(
                f"model {loaded[0]} is loaded in an engine: unload it first, or use --force",
                reason="MODEL_IN_USE",
                metadata={"model": loaded[0]},
            )

    def _collect_garbage(self) -> int:
        keep = set(self._pins)
        for entry in self._catalog.entries():
            keep.add(entry.id)
            keep.update(b.digest for b in self._view(entry.id, "").manifest.blobs)
        freed = 0
        for digest in list(self.content.blobs()):
            if digest not in keep:
                freed += self.content.remove_blob(digest)
                self._views.pop(digest, None)
        return freed


def _normalised(text: str) -> str:
    try:
        return parse_reference(text).name
    except BerthError:
        return ""
