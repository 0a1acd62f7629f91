"""Registry credentials for pull, push and `inspect --remote`, read as Docker's CLI reads them.

The contract (RegistryAuth) lets the CLI send its user's credentials for the reference's
registry: from `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`) through its
`credHelpers`, `credsStore` or inline `auths`, and for Hugging Face from `HF_TOKEN`. Nothing
found means no credentials are sent and berth-modeld falls back to its own. Secrets go to a
credential helper on its standard input, never on a command line, and are never printed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from berth.api.models.v1.resources_pb2 import RegistryAuth

DOCKER_HUB = "https://index.docker.io/v1/"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_HF_HOSTS = {"hf.co", "huggingface.co"}
_HELPER_TIMEOUT_S = 15


def registry_host(reference: str) -> str:
    """The registry a reference names: its first component when that is a host, else Hub."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return DOCKER_HUB


def registry_auth_for(reference: str, config_dir: Path | None = None) -> RegistryAuth | None:
    """The caller's credentials for the registry of `reference`, or None."""
    host = registry_host(reference)
    config = _load_config(config_dir)
    auth = _from_helper(config, host) or _from_auths(config, host)
    if auth is None and host in _HF_HOSTS:
        token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
        if token:
            auth = RegistryAuth(registry_token=token)
    if auth is not None:
        auth.server_address = host
    return auth


def _load_config(config_dir: Path | None) -> dict[str, Any]:
    directory = config_dir or Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _same_registry(key: str, host: str) -> bool:
    """Whether a config key ("https://host/v1/", "host") names `host`."""
    name = key.split("://", 1)[-1].split("/", 1)[0].lower()
    if host == DOCKER_HUB:
        return name in _HUB_ALIASES
    return name == host


def _matching(section: Any, host: str) -> Any:
    if not isinstance(section, dict):
        return None
    for key, value in section.items():
        if _same_registry(key, host):
            return value
    return None


def _from_helper(config: dict[str, Any], host: str) -> RegistryAuth | None:
    helper = _matching(config.get("credHelpers"), host) or config.get("credsStore")
    if not isinstance(helper, str) or not helper:
        return None
    server = DOCKER_HUB if host == DOCKER_HUB else host
    try:
        done = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=server,
            capture_output=True,
            text=True,
            timeout=_HELPER_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    try:
        found = json.loads(done.stdout)
    except ValueError:
        return None
    username, secret = found.get("Username", ""), found.get("Secret", "")
    if not secret:
        return None
    if username == "<token>":
        return RegistryAuth(identity_token=secret)
    return RegistryAuth(username=username, password=secret)


def _from_auths(config: dict[str, Any], host: str) -> RegistryAuth | None:
    entry = _matching(config.get("auths"), host)
    if not isinstance(entry, dict):
        return None
    auth = RegistryAuth(
        username=str(entry.get("username", "")),
        password=str(entry.get("password", "")),
        identity_token=str(entry.get("identitytoken", "")),
        registry_token=str(entry.get("registrytoken", "")),
    )
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        auth.username, auth.password = user or auth.username, password or auth.password
    if not (auth.password or auth.identity_token or auth.registry_token):
        return None
    return auth
