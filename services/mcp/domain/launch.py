"""How to run one enabled server: its catalog entry with the config templated in.

`{{server.property}}` in args, env values, the working directory, a remote URL and header
values is replaced by that property of that server's config (a dotted path reaches nested
objects; lists and objects are written as JSON). A property that is missing is a
FAILED_PRECONDITION naming it: the server is not started half-configured. Secrets are not
templated: they reach a server only through the secret store (see `secrets` of the entry).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from berth.common.errors import FailedPrecondition
from berth.mcp.domain.catalogs import ServerEntry, parse_duration

TEMPLATE = re.compile(r"\{\{\s*([a-z0-9][a-z0-9-]*)\.([A-Za-z0-9_.-]+)\s*\}\}")
# What a stdio server inherits from berth-mcpd's environment: enough to find and run its
# program, nothing of berth's own settings (the gateway token among them).
INHERITED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
)


@dataclass(frozen=True)
class Launch:
    """Everything needed to start (stdio) or reach (remote) one server."""

    server: str
    command: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    url: str = ""
    transport: str = "streamable-http"  # remote only: "streamable-http" or "sse"
    headers: dict[str, str] = field(default_factory=dict)
    call_timeout_s: float | None = None
    long_lived: bool = False

    @property
    def remote(self) -> bool:
        return bool(self.url)


def launch_of(
    server: str,
    entry: ServerEntry,
    configs: Mapping[str, Mapping[str, Any]],
    base_env: Mapping[str, str],
) -> Launch:
    """The Launch of `server`, or FailedPrecondition saying what it still needs."""
    _refuse_unmet_secrets(server, entry)
    fill = _Templater(server, configs)
    timeout = parse_duration(entry["callTimeout"]) if entry.get("callTimeout") else None
    common: dict[str, Any] = {
        "server": server,
        "call_timeout_s": timeout.total_seconds() if timeout else None,
        "long_lived": bool(entry.get("longLived")),
    }
    remote = entry.get("remote")
    if remote:
        return Launch(
            url=fill(remote["url"]),
            transport=remote.get("transport", "streamable-http"),
            headers={k: fill(v) for k, v in (remote.get("headers") or {}).items()},
            **common,
        )
    env = {k: base_env[k] for k in INHERITED_ENV if k in base_env}
    env.update({k: fill(v) for k, v in (entry.get("env") or {}).items()})
    return Launch(
        command=fill(entry.get("command", "")),
        args=[fill(arg) for arg in entry.get("args") or []],
        env=env,
        working_dir=fill(entry.get("workingDir", "")),
        **common,
    )


def _refuse_unmet_secrets(server: str, entry: ServerEntry) -> None:
    names = [secret["name"] for secret in entry.get("secrets") or []]
    if names:
        raise FailedPrecondition(
            f"server {server} needs the secrets {', '.join(names)}, and berth-mcpd has no "
            "secret store yet: it cannot be started",
            reason="SECRETS_REQUIRED",
            metadata={"server": server},
        )
    if entry.get("oauth"):
        raise FailedPrecondition(
            f"server {server} needs an OAuth token, and berth-mcpd cannot authorize yet",
            reason="OAUTH_REQUIRED",
            metadata={"server": server},
        )


class _Templater:
    def __init__(self, server: str, configs: Mapping[str, Mapping[str, Any]]) -> None:
        self.server = server
        self.configs = configs

    def __call__(self, text: str) -> str:
        return TEMPLATE.sub(self._value, text)

    def _value(self, match: re.Match[str]) -> str:
        owner, path = match.group(1), match.group(2)
        value: Any = self.configs.get(owner, {})
        for part in path.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise FailedPrecondition(
                    f"server {self.server} needs config {owner}.{path}: set it with "
                    f"`berth mcp config write {owner}`",
                    reason="CONFIG_REQUIRED",
                    metadata={"server": self.server, "property": f"{owner}.{path}"},
                )
            value = value[part]
        return value if isinstance(value, str) else json.dumps(value)
