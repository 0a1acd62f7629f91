"""Feature flags of the MCP gateway (`berth mcp feature enable|disable|ls`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from berth.common.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    description: str
    default: bool


KNOWN_FEATURES = {
    spec.name: spec
    for spec in (
        FeatureSpec(
            "tool-name-prefix",
            "Prefix every tool of the aggregated endpoint with its server's name (server__tool)",
            default=False,
        ),
        FeatureSpec(
            "block-secrets",
            "Refuse tool calls whose arguments or results contain secrets",
            default=True,
        ),
        FeatureSpec(
            "oauth-dcr",
            "Register OAuth clients dynamically where the authorization server supports it",
            default=True,
        ),
    )
}


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    enabled: bool


class FeatureFlags:
    """Known features and their state; the state is what differs from the defaults."""

    def __init__(
        self, load: Callable[[], dict[str, Any]], save: Callable[[dict[str, Any]], None]
    ) -> None:
        self._load = load
        self._save = save

    def list(self) -> list[Feature]:
        overrides = self._load()
        specs = sorted(KNOWN_FEATURES.values(), key=lambda spec: spec.name)
        return [self._feature(spec, overrides) for spec in specs]

    def set(self, name: str, enabled: bool) -> Feature:
        spec = KNOWN_FEATURES.get(name)
        if spec is None:
            known = ", ".join(sorted(KNOWN_FEATURES))
            raise InvalidArgument(
                [FieldViolation("name", f"unknown feature {name!r}; known features: {known}")],
                reason="UNKNOWN_FEATURE",
                metadata={"name": name},
            )
        overrides = self._load()
        overrides[name] = enabled
        self._save(overrides)
        return self._feature(spec, overrides)

    @staticmethod
    def _feature(spec: FeatureSpec, overrides: dict[str, Any]) -> Feature:
        return Feature(spec.name, spec.description, bool(overrides.get(spec.name, spec.default)))
