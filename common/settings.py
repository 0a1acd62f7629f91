"""Typed settings shared by the daemons: BERTH_<DAEMON>_* environment variables and flags.

Each daemon subclasses DaemonSettings with its own env prefix and defaults; flags win
over the environment, which wins over defaults. Domain code never reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, CliApp, PydanticBaseSettingsSource, SettingsConfigDict

from berth.common.addresses import Address, parse_address
from berth.common.tls import ServerTlsFiles

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class SharedEnvironment(PydanticBaseSettingsSource):
    """Variables every berth daemon shares (BERTH_REDIS_URL), below BERTH_<DAEMON>_* ones,
    for the daemons that have the setting."""

    VARIABLES: ClassVar[dict[str, str]] = {"redis_url": "BERTH_REDIS_URL"}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return os.environ.get(self.VARIABLES.get(field_name, "")), field_name, False

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        found = {
            name: os.environ.get(var) for name, var in self.VARIABLES.items() if name in fields
        }
        return {name: value for name, value in found.items() if value is not None}


def check_redis_url(cls: type, value: str | None) -> str | None:
    if value and not value.startswith(REDIS_SCHEMES):
        raise ValueError("--redis-url wants redis://HOST:PORT/DB, rediss://... or unix://...")
    return value or None


class DaemonSettings(BaseSettings):
    model_config = SettingsConfigDict(cli_kebab_case=True, cli_implicit_flags=True)

    state_dir: Path = Field(description="where the daemon keeps its state")
    listen: list[str] = Field(
        description="addresses to serve gRPC on: unix:///path/to.sock or host:port (repeatable)"
    )
    socket_mode: int = Field(0o600, description="file mode of unix sockets (octal in env: 0o600)")
    socket_group: str | None = Field(None, description="group owning the unix sockets")
    tls_cert: Path | None = Field(None, description="PEM certificate for TCP listeners")
    tls_key: Path | None = Field(None, description="PEM private key for TCP listeners")
    tls_client_ca: Path | None = Field(
        None,
        description="PEM CA bundle: gRPC TCP listeners then require a client certificate "
        "signed by it (mTLS)",
    )
    insecure_tcp: bool = Field(
        False, description="allow plaintext TCP listeners (development only: anyone can connect)"
    )
    metrics_address: str | None = Field(
        None, description="host:port to serve Prometheus metrics on (off when unset)"
    )
    grace_period: float = Field(
        10.0, description="seconds in-flight calls get to finish after SIGTERM"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="json off a terminal, console on one, unless told"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        shared = SharedEnvironment(settings_cls)
        return init_settings, env_settings, shared, dotenv_settings, file_secret_settings

    @field_validator("socket_mode", mode="before")
    @classmethod
    def _octal_mode(cls, value: object) -> object:
        """Accept 0o600 / 0600 / 384, as people write file modes."""
        if isinstance(value, str):
            text = value.strip()
            return int(text, 8) if text.startswith("0") and text.isdigit() else int(text, 0)
        return value

    @property
    def addresses(self) -> list[Address]:
        return [parse_address(a) for a in self.listen]

    @property
    def tls_files(self) -> ServerTlsFiles | None:
        """The TLS files of TCP listeners, None when they serve plaintext."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return ServerTlsFiles(self.tls_cert, self.tls_key, self.tls_client_ca)

    @model_validator(mode="after")
    def _tcp_needs_tls(self) -> Self:
        tcp = [a for a in self.addresses if not a.is_unix]
        if tcp and not (self.tls_cert and self.tls_key) and not self.insecure_tcp:
            raise ValueError(
                "TCP listeners need --tls-cert and --tls-key (or --insecure-tcp for development)"
            )
        return self

    @model_validator(mode="after")
    def _tls_files_exist(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key come together: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mTLS is TLS first)")
        for flag, path in (
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
            ("--tls-client-ca", self.tls_client_ca),
        ):
            if path is not None and not path.is_file():
                raise ValueError(f"{flag} {path}: no such file")
        return self

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> Self:
        """Build the settings from flags (argv) over BERTH_* environment variables."""
        return CliApp.run(cls, cli_args=list(argv) if argv is not None else None)
