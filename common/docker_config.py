"""Registry credentials read from Docker's client configuration, as Docker's CLI reads them.

`$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`) names credentials per registry
through `credHelpers` (a helper per registry), `credsStore` (one helper for all) or inline
`auths` entries. A helper is the program `docker-credential-NAME`: it gets the server's name
on its standard input and answers `{"Username", "Secret"}` as JSON; a Username of `<token>`
means the secret is an identity (refresh) token. Secrets never go on a command line and are
never printed: `RegistryCredentials` hides them from its repr.

Both the `berth` CLI (which forwards its user's credentials) and berth-modeld (which falls
back to its own) read credentials through `credentials_for`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from berth.common.credentials import RegistryCredentials

DOCKER_HUB = "https://index.docker.io/v1/"
"""The key Docker files Docker Hub's credentials under (and asks its helpers for)."""

HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_TIMEOUT_S = 15


def config_path(config_dir: Path | None = None) -> Path:
    """Where Docker's client configuration lives: `config_dir`, `$DOCKER_CONFIG` or ~/.docker."""
    directory = config_dir or Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    return directory / "config.json"


def server_key(host: str) -> str:
    """The name Docker files a registry's credentials under: Hub's URL or the host itself."""
    name = _host_of(host)
    return DOCKER_HUB if name in HUB_ALIASES else name


def credentials_for(host: str, config_dir: Path | None = None) -> RegistryCredentials | None:
    """The credentials configured for the registry `host` ("127.0.0.1:5000",
    "index.docker.io" or DOCKER_HUB), or None when there are none."""
    key = server_key(host)
    config = _load_config(config_path(config_dir))
    return _from_helper(config, key) or _from_auths(config, key)


def _load_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _host_of(key: str) -> str:
    """The host a config key names: "https://host/v1/" and "host" both give "host"."""
    return key.split("://", 1)[-1].split("/", 1)[0].lower()


def _matching(section: Any, key: str) -> Any:
    if not isinstance(section, dict):
        return None
    for name, value in section.items():
        if isinstance(name, str) and server_key(name) == key:
            return value
    return None


def _from_helper(config: dict[str, Any], key: str) -> RegistryCredentials | None:
    helper = _matching(config.get("credHelpers"), key) or config.get("credsStore")
    if not isinstance(helper, str) or not helper:
        return None
    found = _run_helper(helper, key)
    username, secret = str(found.get("Username") or ""), str(found.get("Secret") or "")
    if not secret:
        return None
    if username == "<token>":
        return RegistryCredentials(identity_token=secret)
    return RegistryCredentials(username=username, password=secret)


def _run_helper(helper: str, key: str) -> dict[str, Any]:
    """`docker-credential-HELPER get`'s answer for `key`, {} when it has none or fails."""
    try:
        done = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=key,
            capture_output=True,
            text=True,
            timeout=_HELPER_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if done.returncode != 0:
        return {}
    try:
        found = json.loads(done.stdout)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _from_auths(config: dict[str, Any], key: str) -> RegistryCredentials | None:
    entry = _matching(config.get("auths"), key)
    if not isinstance(entry, dict):
        return None
    username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        user, secret = _decode_auth(encoded)
        username, password = user or username, secret or password
    credentials = RegistryCredentials(
        username=username,
        password=password,
        identity_token=str(entry.get("identitytoken") or ""),
        registry_token=str(entry.get("registrytoken") or ""),
    )
    if not (credentials.password or credentials.identity_token or credentials.registry_token):
        return None
    return credentials


def _decode_auth(encoded: str) -> tuple[str, str]:
    """The "user:password" of an `auth` field (base64), ("", "") when it is not that."""
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return user, password
