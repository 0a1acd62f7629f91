"""How to run one enabled server: its catalog entry with the config templated in.

`{{server.property}}` in args, env values, the working directory, a remote URL and header
values is replaced by that property of that server's config (a dotted path reaches nested
objects; lists and objects are written as JSON). A property that is missing is a
FAILED_PRECONDITION naming it: the server is not started half-configured.

Secrets are not templated. A Launch names the secrets the entry declares and how each is
injected (`SecretMount`); `with_secrets` places the values the policy grants, just before the
server starts: as an environment variable, as a file whose path an environment variable holds
(the file itself is written by the gateway, outside the state directory), or as an HTTP header
of a remote server. A stdio server's OAuth token goes to its `oauth.env` variable; a remote
server's is sent as `Authorization: Bearer` by the link. Never on a command line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

from berth.common.errors import FailedPrecondition
from berth.mcp.domain.catalogs import ServerEntry, injection_of, parse_duration

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
class SecretMount:
    """How one declared secret reaches its server."""

    name: str
    injection: str  # "env", "file" or "header"
    env: str = ""  # env: the variable holding the value; file: the one holding the path
    file_name: str = ""  # file: the file's name in the server's private secrets directory
    header: str = ""  # header: the HTTP header carrying the value


@dataclass(frozen=True)
class Launch:
    """Everything needed to start (stdio) or reach (remote) one server. Once secrets are in,
    `env` and `headers` hold values: they stay out of reprs, and so out of logs."""

    server: str
    command: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    working_dir: str = ""
    url: str = ""
    transport: str = "streamable-http"  # remote only: "streamable-http" or "sse"
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    call_timeout_s: float | None = None
    long_lived: bool = False
    secrets: tuple[SecretMount, ...] = ()
    oauth_app: str = ""  # the entry's `oauth.provider`
    oauth_env: str = ""  # stdio: the variable that receives the OAuth access token

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
    fill = _Templater(server, configs)
    timeout = parse_duration(entry["callTimeout"]) if entry.get("callTimeout") else None
    oauth = entry.get("oauth") or {}
    common: dict[str, Any] = {
        "server": server,
        "call_timeout_s": timeout.total_seconds() if timeout else None,
        "long_lived": bool(entry.get("longLived")),
        "secrets": tuple(_mount(secret) for secret in entry.get("secrets") or []),
        "oauth_app": oauth.get("provider", ""),
        "oauth_env": oauth.get("env", ""),
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


def with_secrets(
    launch: Launch, values: Mapping[str, str], oauth_token: str | None, files_dir: str
) -> tuple[Launch, dict[str, str]]:
    """`launch` with the granted secret `values` (name -> value) and the OAuth token placed,
    and the files to write first (path -> content). A declared secret without a value is
    left out: the server starts without it."""
    env, headers, files = dict(launch.env), dict(launch.headers), {}
    for mount in launch.secrets:
        value = values.get(mount.name)
        if value is None:
            continue
        if mount.injection == "header":
            headers[mount.header] = value
        elif mount.injection == "file":
            path = str(PurePosixPath(files_dir) / mount.file_name)
            files[path] = value
            env[mount.env] = path
        else:
            env[mount.env] = value
    if oauth_token is not None and launch.oauth_env and not launch.remote:
        env[launch.oauth_env] = oauth_token
    return replace(launch, env=env, headers=headers), files


def _mount(secret: Mapping[str, Any]) -> SecretMount:
    injection = injection_of(secret)
    return SecretMount(
        name=secret["name"],
        injection=injection,
        env=secret.get("env", ""),
        # Only a name: the file lives in the server's own directory, wherever `path` points.
        file_name=PurePosixPath(secret.get("path") or secret["name"]).name
        if injection == "file"
        else "",
        header=secret.get("header", ""),
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
