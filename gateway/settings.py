"""berth-gateway settings: BERTH_GATEWAY_* environment variables and flags."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from berth.common.settings import DaemonSettings, check_redis_url
from berth.common.tls import ClientTlsFiles


class GatewaySettings(DaemonSettings):
    model_config = SettingsConfigDict(
        env_prefix="BERTH_GATEWAY_",
        cli_prog_name="berth-gateway",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    state_dir: Path = Field(Path("/var/lib/berth/gateway"), description="gateway state")
    listen: list[str] = Field(
        default_factory=lambda: ["unix:///run/berth/berth.sock"],
        description="unix sockets are trusted (file mode is the boundary); TCP needs tokens",
    )
    socket_mode: int = Field(0o660, description="file mode of the gateway's unix sockets")
    socket_group: str | None = Field(
        "berth", description="group owning the unix sockets, when that group exists"
    )
    tokens_file: Path | None = Field(
        None, description="bearer tokens for TCP listeners (default: STATE_DIR/tokens.json)"
    )
    network_address: str = Field(
        "unix:///run/berth/networkd.sock", description="this host's network agent"
    )
    models_address: str = Field("unix:///run/berth/modeld.sock", description="the model runner")
    mcp_address: str = Field("unix:///run/berth/mcpd.sock", description="the MCP service")
    host_name: str = Field(
        default_factory=socket.gethostname, description="this host's name for x-berth-host"
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="other hosts' network agents as NAME=ADDRESS (repeatable; these win over "
        "the cluster's hosts of the same name)",
    )
    redis_url: str | None = Field(
        None,
        description="the cluster's Redis (redis://HOST:PORT/DB, rediss://, unix://): its live "
        "hosts become routable by name; also BERTH_REDIS_URL",
    )

    upstream_tls_ca: Path | None = Field(
        None,
        description="CA that signs the daemons' server certificates: TCP daemon addresses "
        "are then dialed with TLS (unix sockets never are)",
    )
    upstream_tls_cert: Path | None = Field(
        None, description="the gateway's client certificate for the daemons (mTLS)"
    )
    upstream_tls_key: Path | None = Field(None, description="its private key")
    upstream_tls_server_name: str | None = Field(
        None,
        description="check daemon certificates against this name instead of the host dialed "
        "(agents dialed by IP address)",
    )

    _redis_scheme = field_validator("redis_url")(check_redis_url)

    @model_validator(mode="after")
    def _upstream_tls_files(self) -> Self:
        cert, key = self.upstream_tls_cert, self.upstream_tls_key
        if (cert is None) != (key is None):
            raise ValueError(
                "--upstream-tls-cert and --upstream-tls-key come together: give both or neither"
            )
        if self.upstream_tls_ca is None and (cert is not None or self.upstream_tls_server_name):
            raise ValueError(
                "--upstream-tls-cert/-key and --upstream-tls-server-name need --upstream-tls-ca"
            )
        for flag, path in (
            ("--upstream-tls-ca", self.upstream_tls_ca),
            ("--upstream-tls-cert", cert),
            ("--upstream-tls-key", key),
        ):
            if path is not None and not path.is_file():
                raise ValueError(f"{flag} {path}: no such file")
        return self

    @property
    def upstream_tls(self) -> ClientTlsFiles | None:
        """What the gateway dials TCP daemons with; None: plaintext."""
        if self.upstream_tls_ca is None:
            return None
        return ClientTlsFiles(self.upstream_tls_ca, self.upstream_tls_cert, self.upstream_tls_key)

    @property
    def tokens_path(self) -> Path:
        return self.tokens_file or self.state_dir / "tokens.json"

    def remote_hosts(self) -> dict[str, str]:
        hosts: dict[str, str] = {}
        for item in self.hosts:
            name, sep, address = item.partition("=")
            if not sep or not name or not address:
                raise ValueError(f"--hosts wants NAME=ADDRESS, got {item!r}")
            hosts[name] = address
        return hosts
