"""What the deploy/ checks share: the daemons, the settings each accepts (flags and BERTH_*
variables), building a daemon's settings from an environment, and the image Dockerfile."""

from __future__ import annotations

import io
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from berth.common import pki
from berth.common.settings import DaemonSettings, SharedEnvironment
from berth.gateway.settings import GatewaySettings
from berth.mcp.adapters.secret_key import ENV_KEY, ENV_PREVIOUS
from berth.mcp.settings import McpdSettings
from berth.models.settings import ModeldSettings
from berth.network.settings import NetworkdSettings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
TLS_DIR = "/etc/berth/tls/"
DAEMONS: dict[str, type[DaemonSettings]] = {
    "gateway": GatewaySettings,
    "networkd": NetworkdSettings,
    "modeld": ModeldSettings,
    "mcpd": McpdSettings,
}
# Variables a daemon reads besides its BERTH_<DAEMON>_* settings.
EXTRA_ENV = {"mcpd": {ENV_KEY, ENV_PREVIOUS}}


def console_scripts() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def accepted_env(daemon: str) -> set[str]:
    """Every BERTH_* variable the daemon reads."""
    settings = DAEMONS[daemon]
    prefix = settings.model_config.get("env_prefix", "")
    names = {f"{prefix}{field.upper()}" for field in settings.model_fields}
    shared = SharedEnvironment.VARIABLES.items()
    names |= {var for field, var in shared if field in settings.model_fields}
    return names | EXTRA_ENV.get(daemon, set())


def accepted_flags(daemon: str) -> set[str]:
    return {f"--{field.replace('_', '-')}" for field in DAEMONS[daemon].model_fields}


def unknown_flags(daemon: str, args: list[str]) -> list[str]:
    flags = [arg.partition("=")[0] for arg in args if arg.startswith("--")]
    return [flag for flag in flags if flag not in accepted_flags(daemon)]


def settings_from_env(
    daemon: str, env: Mapping[str, str], tls_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> DaemonSettings:
    """The daemon's settings built from `env` alone, as the daemon builds them; paths under
    /etc/berth/tls/ point into `tls_dir` (real certificates from berth.common.pki)."""
    if not (tls_dir / "ca.pem").exists():
        pki.init_cluster(tls_dir, hosts=["host1"], ips=["10.0.0.1"])
        pki.init_cluster(tls_dir / "users")  # the gateway's CA for people's certificates
    for name in [name for name in os.environ if name.startswith("BERTH_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace(TLS_DIR, f"{tls_dir}/"))
    return DAEMONS[daemon]()


@dataclass
class Stage:
    name: str
    parent: str  # a base image or an earlier stage
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """A Dockerfile's global ARG defaults and its stages, in order."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "COMMENT":
            continue
        if instruction == "FROM":
            parts = re.split(r"\s+as\s+", value, flags=re.IGNORECASE)
            image, name = parts[0].strip(), (parts[1].strip() if len(parts) > 1 else "")
            stages.append(Stage(name or f"stage{len(stages)}", image))
        elif instruction == "ARG" and not stages:
            key, _, default = value.partition("=")
            args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append((instruction, value))
    return args, stages
