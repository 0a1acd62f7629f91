"""Registry credentials for pull, push and `inspect --remote`, read as Docker's CLI reads them.

The contract (RegistryAuth) lets the CLI send its user's credentials for the reference's
registry: from `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`) through its
`credHelpers`, `credsStore` or inline `auths` (berth.common.docker_config), and for Hugging
Face from `HF_TOKEN`. Nothing found means no credentials are sent and berth-modeld falls back
to its own. Secrets are never printed.
"""

from __future__ import annotations

import os
from pathlib import Path

from berth.api.models.v1.resources_pb2 import RegistryAuth
from berth.common.docker_config import DOCKER_HUB, credentials_for

__all__ = ["DOCKER_HUB", "registry_auth_for", "registry_host"]

_HF_HOSTS = {"hf.co", "huggingface.co"}


def registry_host(reference: str) -> str:
    """The registry a reference names: its first component when that is a host, else Hub."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return DOCKER_HUB


def registry_auth_for(reference: str, config_dir: Path | None = None) -> RegistryAuth | None:
    """The caller's credentials for the registry of `reference`, or None."""
    host = registry_host(reference)
    found = credentials_for(host, config_dir)
    auth = None
    if found is not None:
        auth = RegistryAuth(
            username=found.username,
            password=found.password,
            identity_token=found.identity_token,
            registry_token=found.registry_token,
        )
    elif host in _HF_HOSTS:
        token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
        if token:
            auth = RegistryAuth(registry_token=token)
    if auth is not None:
        auth.server_address = host
    return auth
