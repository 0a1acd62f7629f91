"""Network events (`berth network` / `docker events` style) and their filters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from berth.common.broadcast import Broadcast
from berth.common.errors import FieldViolation, InvalidArgument

FILTER_KEYS = frozenset({"type", "action", "network", "sandbox"})
EVENT_TYPES = frozenset({"network", "sandbox", "endpoint"})
KNOWN_KEYS = ", ".join(sorted(FILTER_KEYS))
KNOWN_TYPES = ", ".join(sorted(EVENT_TYPES))


@dataclass(frozen=True)
class Event:
    type: str  # network | sandbox | endpoint
    action: str  # create, connect, disconnect, destroy, start, stop, ...
    actor_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    scope: str = "local"


@dataclass(frozen=True)
class EventFilter:
    """Docker's filter semantics: values of one key are OR-ed, different keys AND-ed."""

    values: Mapping[str, frozenset[str]]

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, str]], field_name: str = "filters") -> EventFilter:
        grouped: dict[str, set[str]] = {}
        violations = []
        for index, (key, value) in enumerate(pairs):
            if key not in FILTER_KEYS:
                violations.append(
                    FieldViolation(
                        f"{field_name}[{index}].key",
                        f"unknown filter {key!r}; use one of {KNOWN_KEYS}",
                    )
                )
            elif key == "type" and value not in EVENT_TYPES:
                violations.append(
                    FieldViolation(
                        f"{field_name}[{index}].value",
                        f"unknown event type {value!r}; use one of {KNOWN_TYPES}",
                    )
                )
            grouped.setdefault(key, set()).add(value)
        if violations:
            raise InvalidArgument(violations)
        return cls({k: frozenset(v) for k, v in grouped.items()})

    def matches(self, event: Event) -> bool:
        for key, wanted in self.values.items():
            if key == "type":
                actual = {event.type}
            elif key == "action":
                actual = {event.action}
            else:  # network / sandbox: by name or id
                actual = {event.attributes.get(key, ""), event.attributes.get(f"{key}_id", "")}
                if event.type == key:
                    actual |= {event.actor_id, event.attributes.get("name", "")}
            if not wanted & actual:
                return False
        return True


def check_window(since: datetime | None, until: datetime | None) -> None:
    if since and until and since > until:
        raise InvalidArgument([FieldViolation("until", "must not be before since")])


class EventLog(Broadcast[Event]):
    """The agent's recent events and their live subscribers."""
