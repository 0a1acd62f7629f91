"""Docker's --filter semantics for networks and sandboxes.

Values of one key are OR-ed, different keys AND-ed; `label` matches `key` or `key=value`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from berth.common.errors import FieldViolation, InvalidArgument
from berth.network.domain.model import Network, Sandbox, SandboxState

NETWORK_KEYS = frozenset(
    {"driver", "id", "label", "label!", "name", "scope", "type", "dangling", "until"}
)
DOCKER_STATES = {  # Docker's words for the states (`docker ps --filter status=`)
    SandboxState.CREATED: "created",
    SandboxState.RUNNING: "running",
    SandboxState.STOPPED: "exited",
}
SANDBOX_KEYS = frozenset({"id", "name", "label", "status", "network"})


def group(
    pairs: Iterable[tuple[str, str]], known: frozenset[str], field: str = "filters"
) -> dict[str, set[str]]:
    grouped: dict[str, set[str]] = {}
    for index, (key, value) in enumerate(pairs):
        if key not in known:
            raise InvalidArgument(
                [
                    FieldViolation(
                        f"{field}[{index}].key",
                        f"invalid filter {key!r}; use one of {', '.join(sorted(known))}",
                    )
                ]
            )
        grouped.setdefault(key, set()).add(value)
    return grouped


def labels_match(labels: Mapping[str, str], wanted: set[str]) -> bool:
    return any(
        (key in labels and (not sep or labels[key] == value))
        for key, sep, value in (w.partition("=") for w in wanted)
    )


def network_matches(network: Network, filters: dict[str, set[str]], in_use: bool) -> bool:
    checks = {
        "driver": lambda v: network.driver.value in v,
        "id": lambda v: any(network.id.startswith(x) for x in v),
        "name": lambda v: any(x in network.name for x in v),
        "scope": lambda v: ("global" if network.overlay else "local") in v,
        "type": lambda v: ("builtin" if network.predefined else "custom") in v,
        "dangling": lambda v: any((x.lower() in ("true", "1")) != in_use for x in v),
        "label": lambda v: labels_match(network.labels, v),
        "label!": lambda v: not labels_match(network.labels, v),
        "until": lambda v: all(network.created < _until(x) for x in v),
    }
    return all(checks[key](values) for key, values in filters.items())


def sandbox_matches(
    sandbox: Sandbox, filters: dict[str, set[str]], network_names: Mapping[str, str]
) -> bool:
    joined = {network_names.get(i, i) for i in sandbox.endpoints} | set(sandbox.endpoints)
    checks = {
        "id": lambda v: any(sandbox.id.startswith(x) for x in v),
        "name": lambda v: any(x in sandbox.name for x in v),
        "label": lambda v: labels_match(sandbox.labels, v),
        "status": lambda v: bool({sandbox.state.value, DOCKER_STATES[sandbox.state]} & v),
        "network": lambda v: bool(joined & v),
    }
    return all(checks[key](values) for key, values in filters.items())


def _until(value: str) -> datetime:
    """A timestamp (RFC 3339 or Unix seconds) or a duration before now (10m, 24h)."""
    units = {"s": 1, "m": 60, "h": 3600}
    if value and value[-1] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(
            [FieldViolation("filters", f"invalid until value {value!r}")]
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
