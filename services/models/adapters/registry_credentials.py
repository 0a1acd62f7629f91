"""The daemon's own registry credentials: its user's Docker config, as `docker` reads it.

Used when a request brings none (the CLI normally sends its user's)."""

from __future__ import annotations

from berth.common.credentials import ANONYMOUS, RegistryCredentials
from berth.common.docker_config import credentials_for
from berth.models.domain.reference import HUGGING_FACE


def own_credentials(registry: str) -> RegistryCredentials:
    if registry == HUGGING_FACE:
        return ANONYMOUS
    return credentials_for(registry) or ANONYMOUS
