"""Methods whose capability is still to come answer UNIMPLEMENTED, naming that capability."""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.descriptor import ServiceDescriptor

from berth.common.errors import NotYetAvailable

S = TypeVar("S")
GENERATED = "berth.api."


def is_implemented(servicer: object, method: str) -> bool:
    """True when the servicer's class defines the method outside the generated stubs."""
    found = getattr(type(servicer), method, None)
    return found is not None and not getattr(found, "__module__", "").startswith(GENERATED)


def fill_planned(servicer: S, service: ServiceDescriptor, capability: str) -> S:
    """Make every method `servicer` does not implement raise NotYetAvailable(capability)."""
    for method in service.methods:
        if not is_implemented(servicer, method.name):
            path = f"{service.full_name}/{method.name}"
            setattr(servicer, method.name, _not_yet(path, capability))
    return servicer


def _not_yet(method: str, capability: str) -> Any:
    async def answer(_request: Any, _context: Any) -> None:
        raise NotYetAvailable(method, capability)

    return answer
