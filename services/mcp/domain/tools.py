"""The tools (and prompts) that the aggregated endpoint offers: their exposed names, which
server answers a name, and which tools `berth mcp tools disable` hid.

Naming is deterministic and never fatal: a name only one server offers is exposed as is; a
name several servers offer is exposed as `server__name` for each of them; with the
`tool-name-prefix` feature every name is `server__name`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from berth.common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

SEPARATOR = "__"
# A server's offers: (server name, the items of its tools/list or prompts/list, in order).
Offer = tuple[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Exposed:
    """One tool or prompt of one server as the endpoint offers it."""

    server: str
    name: str  # its own name on the server
    exposed: str  # the name clients see and call
    enabled: bool
    definition: dict[str, Any]  # the server's own description of it

    def as_offered(self) -> dict[str, Any]:
        """The definition with the exposed name, as the endpoint lists it."""
        return {**self.definition, "name": self.exposed}


def expose(
    offers: Iterable[Offer], prefix_all: bool, disabled: Mapping[str, set[str]] | None = None
) -> list[Exposed]:
    offers = list(offers)
    counts = Counter(name for _, items in offers for name in {str(i.get("name")) for i in items})
    disabled = disabled or {}
    found = []
    for server, items in offers:
        hidden = disabled.get(server, set())
        for item in items:
            name = str(item.get("name", ""))
            clash = prefix_all or counts[name] > 1
            exposed = f"{server}{SEPARATOR}{name}" if clash else name
            found.append(Exposed(server, name, exposed, name not in hidden, item))
    return found


def find(exposed: list[Exposed], name: str, server: str = "", kind: str = "tool") -> Exposed:
    """The item `name` means: an exposed name, or an own name with `server` (or when only one
    server offers it)."""
    if server:
        for item in exposed:
            if item.server == server and (item.name == name or item.exposed == name):
                return item
        raise _unknown(kind, name, f" on server {server}")
    for item in exposed:
        if item.exposed == name:
            return item
    owners = [item for item in exposed if item.name == name]
    if len(owners) == 1:
        return owners[0]
    if owners:
        servers = ", ".join(sorted(item.server for item in owners))
        raise FailedPrecondition(
            f"several servers offer the {kind} {name!r} ({servers}): give the server, or call "
            f"it {owners[0].exposed!r}",
            reason="AMBIGUOUS_NAME",
            metadata={"name": name, "servers": servers},
        )
    raise _unknown(kind, name, "")


def _unknown(kind: str, name: str, where: str) -> NotFound:
    return NotFound(
        f"no enabled server offers the {kind} {name!r}{where} (see `berth mcp tools ls`)",
        reason="TOOL_NOT_FOUND",
        metadata={"name": name},
    )


class ToolSwitchStore(Protocol):
    """Where the disabled tools are kept: server name -> tool names."""

    def load_disabled(self) -> dict[str, list[str]]: ...
    def save_disabled(self, disabled: Mapping[str, list[str]]) -> None: ...


class ToolSwitches:
    """`berth mcp tools enable|disable`: which tools are hidden from clients."""

    def __init__(self, store: ToolSwitchStore) -> None:
        self.store = store
        # Called after every change (connected MCP clients hear that the lists changed).
        self.on_change: Callable[[], None] = lambda: None

    def disabled(self) -> dict[str, set[str]]:
        return {server: set(names) for server, names in self.store.load_disabled().items()}

    def switch(self, targets: list[Exposed], enabled: bool) -> list[Exposed]:
        """Enables or disables the given tools; returns them."""
        disabled = self.disabled()
        for target in targets:
            names = disabled.setdefault(target.server, set())
            if enabled:
                names.discard(target.name)
            else:
                names.add(target.name)
        self.store.save_disabled({s: sorted(n) for s, n in sorted(disabled.items()) if n})
        self.on_change()
        return targets


def check_names(names: list[str]) -> None:
    if not names:
        raise InvalidArgument([FieldViolation("names", "give at least one tool name")])
    empty = [FieldViolation(f"names[{i}]", "empty tool name") for i, n in enumerate(names) if not n]
    if empty:
        raise InvalidArgument(empty)
