"""The store's catalog: which models exist and which references (tags) point at them.

Plain data and rules; the content store persists it (index.json) and holds the blobs.
A model is keyed by its ID (the manifest digest); a tag is a normalised reference and
points at exactly one model. Docker's rules for `tag`, `rm` and `purge` live here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from berth.common.errors import (
    BerthError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from berth.models.domain.reference import parse_reference

_ID_PREFIX = re.compile(r"(?:sha256:)?([0-9a-f]{12,64})")


class ModelNotFound(NotFound):
    default_reason = "MODEL_NOT_FOUND"

    def __init__(self, text: str) -> None:
        super().__init__(f"model {text!r} not found", metadata={"model": text})


@dataclass
class ModelEntry:
    id: str
    tags: list[str] = field(default_factory=list)
    # When the model entered this store (pull, package or tag of a remote).
    added: datetime | None = None


@dataclass(frozen=True)
class Removal:
    untagged: list[str]
    deleted: list[str]


class Catalog:
    def __init__(self, entries: Iterable[ModelEntry] = ()) -> None:
        self._models: dict[str, ModelEntry] = {e.id: e for e in entries}

    def __len__(self) -> int:
        return len(self._models)

    def entries(self) -> list[ModelEntry]:
        return list(self._models.values())

    def get(self, model_id: str) -> ModelEntry | None:
        return self._models.get(model_id)

    def owner_of(self, tag: str) -> str | None:
        for entry in self._models.values():
            if tag in entry.tags:
                return entry.id
        return None

    def resolve(self, text: str, field_name: str = "model") -> str:
        """The ID `text` names: a reference (tag), a full ID, or a unique ID prefix."""
        by_tag = self._by_reference(text)
        if by_tag:
            return by_tag
        match = _ID_PREFIX.fullmatch(text)
        if match:
            found = [i for i in self._models if i.removeprefix("sha256:").startswith(match[1])]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InvalidArgument(
                    [FieldViolation(field_name, f"{text!r} matches {len(found)} models")],
                    reason="AMBIGUOUS_MODEL_ID",
                )
        if not match:
            parse_reference(text, field_name)  # a malformed reference is INVALID_ARGUMENT
        raise ModelNotFound(text)

    def _by_reference(self, text: str) -> str | None:
        try:
            name = parse_reference(text).name
        except BerthError:
            return None
        return self.owner_of(name)

    def add(self, model_id: str, tag: str | None, added: datetime) -> list[str]:
        """Record a model (and its tag); returns the IDs left without any tag by the move."""
        self._models.setdefault(model_id, ModelEntry(model_id, added=added))
        return self.tag(model_id, tag) if tag else []

    def tag(self, model_id: str, tag: str) -> list[str]:
        """Point `tag` at `model_id`, moving it from another model; IDs left untagged."""
        orphans = []
        previous = self.owner_of(tag)
        if previous and previous != model_id:
            self._models[previous].tags.remove(tag)
            if not self._models[previous].tags:
                orphans.append(previous)
        entry = self._models[model_id]
        if tag not in entry.tags:
            entry.tags.append(tag)
        return orphans

    def plan_removal(self, targets: Sequence[str], force: bool) -> Removal:
        """What `rm` does, all targets resolved first (one unknown: nothing is removed).

        A reference untags; the model goes when its last tag does. An ID removes the model
        with all its tags, which needs `force` when it has several.
        """
        untagged: list[str] = []
        deleted: list[str] = []
        remaining = {i: list(e.tags) for i, e in self._models.items()}
        for index, text in enumerate(targets):
            field_name = f"models[{index}]"
            model_id = self.resolve(text, field_name)
            tag = self._as_tag(text, model_id)
            if model_id in deleted:
                continue
            if tag is not None:
                if tag not in remaining[model_id]:  # named twice
                    continue
                remaining[model_id].remove(tag)
                untagged.append(tag)
                if not remaining[model_id]:
                    deleted.append(model_id)
                continue
            tags = remaining[model_id]
            if len(tags) > 1 and not force:
                raise FailedPrecondition(
                    f"model {text!r} has several tags ({', '.join(tags)}): remove them by"
                    " reference, or use --force",
                    reason="MODEL_HAS_TAGS",
                    metadata={"model": model_id},
                )
            untagged.extend(tags)
            remaining[model_id] = []
            deleted.append(model_id)
        return Removal(untagged, deleted)

    def _as_tag(self, text: str, model_id: str) -> str | None:
        try:
            name = parse_reference(text).name
        except BerthError:
            return None
        return name if name in self._models[model_id].tags else None

    def apply(self, removal: Removal) -> None:
        for tag in removal.untagged:
            owner = self.owner_of(tag)
            if owner:
                self._models[owner].tags.remove(tag)
        for model_id in removal.deleted:
            self._models.pop(model_id, None)

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "id": e.id,
                    "tags": e.tags,
                    "added": e.added.isoformat() if e.added else None,
                }
                for e in self._models.values()
            ]
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalog:
        entries = []
        for item in data.get("models", []):
            added = item.get("added")
            entries.append(
                ModelEntry(
                    item["id"],
                    list(item.get("tags", [])),
                    datetime.fromisoformat(added) if added else None,
                )
            )
        return cls(entries)
