"""The aggregated endpoint's hub: the connected sessions, what they are told about the
servers (read once per change, not once per call), and the gRPC services' own session.

Every change to catalogs, enabled servers, config, disabled tools or features calls
`changed()`, which refreshes that view and tells every connected client that its lists
changed (and stops the connections to servers no longer enabled).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from berth.common.errors import BerthError, NotFound
from berth.mcp.domain import secret_scan
from berth.mcp.domain.catalogs import ServerEntry
from berth.mcp.domain.features import FeatureFlags
from berth.mcp.domain.launch import Launch, launch_of
from berth.mcp.domain.servers import Servers
from berth.mcp.domain.tools import ToolSwitches
from berth.mcp.gateway.injection import Injector
from berth.mcp.gateway.links import Link
from berth.mcp.gateway.session import GatewaySession, Send, SessionInfo, Slot

log = structlog.get_logger("berth.mcp.hub")

PREFIX_FEATURE = "tool-name-prefix"
SECRETS_FEATURE = secret_scan.FEATURE


@dataclass(frozen=True)
class FleetView:
    """What sessions need about the servers, as of the last change."""

    enabled: list[str]
    disabled: dict[str, set[str]]
    prefix_all: bool
    block_secrets: bool
    launches: dict[str, Launch | BerthError] = field(default_factory=dict)
    entries: dict[str, ServerEntry] = field(default_factory=dict)  # of the enabled servers


@dataclass(frozen=True)
class Endpoint:
    transport: str  # "streaming" or "sse"
    url: str


class Hub:
    """Implements the sessions' Fleet over the MCP domain."""

    def __init__(
        self,
        servers: Servers,
        switches: ToolSwitches,
        flags: FeatureFlags,
        state_dir: Path,
        call_timeout_s: float,
        injector: Injector,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.servers = servers
        self.injector = injector
        self.switches = switches
        self.flags = flags
        self.state_dir = state_dir
        self.call_timeout_s = call_timeout_s
        # Servers installed beside berth (mcp-server-time in its virtual environment) are
        # found even when that environment is not on the daemon's PATH.
        here = str(Path(sys.executable).parent)
        self.environ = {**environ, "PATH": os.pathsep.join([here, environ.get("PATH", "")])}
        self.start_time = datetime.now(UTC)
        self.endpoints: list[Endpoint] = []
        self.sessions: dict[str, GatewaySession] = {}
        self._ids = itertools.count(1)
        self._service: GatewaySession | None = None
        self._view = self._read_view()

    # -- Fleet ----------------------------------------------------------------------------

    def enabled(self) -> list[str]:
        return self._view.enabled

    def launch(self, server: str) -> Launch:
        found = self._view.launches.get(server)
        if found is None:
            raise NotFound(f"server {server!r} is not enabled", reason="SERVER_NOT_ENABLED")
        if isinstance(found, BerthError):
            raise found
        return found

    async def open_link(self, launch: Launch) -> Link:
        return await self.injector.open_link(launch, self._view.entries.get(launch.server, {}))

    def given_secrets(self, server: str) -> frozenset[str]:
        return self.injector.given(server)

    def disabled_tools(self) -> dict[str, set[str]]:
        return self._view.disabled

    def prefix_all(self) -> bool:
        return self._view.prefix_all

    def block_secrets(self) -> bool:
        return self._view.block_secrets

    # -- sessions -------------------------------------------------------------------------

    def open_session(
        self,
        send: Send,
        transport: str,
        peer: str = "",
        servers: list[str] | None = None,
        tools: list[str] | None = None,
        session_id: str = "",
    ) -> GatewaySession:
        info = SessionInfo(
            id=session_id or f"{transport}-{next(self._ids)}",
            transport=transport,
            peer=peer,
            servers=list(servers or []),
            tools=list(tools or []),
        )
        session = GatewaySession(self, send, info)
        self.sessions[info.id] = session
        log.info("mcp session opened", session=info.id, transport=transport, peer=peer)
        return session

    async def close_session(self, session: GatewaySession) -> None:
        self.sessions.pop(session.info.id, None)
        await session.close()
        log.info("mcp session closed", session=session.info.id, client=session.info.client_name)

    @property
    def service(self) -> GatewaySession:
        """The session behind ToolService: no MCP client, so nothing is asked back."""
        if self._service is None:
            self._service = GatewaySession(
                self, _drop, SessionInfo("berth-mcpd", "grpc"), implicit=True
            )
        return self._service

    def server_slot(self, server: str) -> Slot | None:
        """The service session's connection to `server`, for status listings."""
        return self._service.slots.get(server) if self._service else None

    async def keep_tidy(self, idle_s: float) -> None:
        """Runs for the daemon's life: the gRPC session's servers stop when idle for
        `idle_s` (MCP clients' sessions keep theirs until they end); long-lived ones start
        at once and stay."""
        self.service.start_long_lived()
        while True:
            await asyncio.sleep(max(idle_s / 4, 1.0))
            stopped = await self.service.stop_idle(idle_s)
            if stopped:
                log.info("idle mcp servers stopped", servers=stopped)

    def changed(self) -> None:
        self._view = self._read_view()
        for session in self._all_sessions():
            session.changed()
        if self._service is not None:
            self._service.start_long_lived()

    async def close(self) -> None:
        sessions = self._all_sessions()
        self.sessions.clear()
        self._service = None
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    def _all_sessions(self) -> list[GatewaySession]:
        return [*self.sessions.values(), *([self._service] if self._service else [])]

    def _read_view(self) -> FleetView:
        """Reads the stores once: enabled servers, catalogs, config, switches, features."""
        enabled = sorted(self.servers.store.load_enabled())
        entries = self.servers.entries()
        configs = self.servers.store.load_config()
        features = {feature.name: feature.enabled for feature in self.flags.list()}
        return FleetView(
            enabled=enabled,
            disabled=self.switches.disabled(),
            prefix_all=features.get(PREFIX_FEATURE, False),
            block_secrets=features.get(SECRETS_FEATURE, True),
            launches={name: self._launch(name, entries, configs) for name in enabled},
            entries={name: entries[name][1] for name in enabled if name in entries},
        )

    def _launch(
        self,
        server: str,
        entries: Mapping[str, tuple[str, ServerEntry]],
        configs: Mapping[str, Mapping[str, Any]],
    ) -> Launch | BerthError:
        try:
            if server not in entries:
                self.servers.find(server)  # raises the NOT_FOUND that says so
            launch = launch_of(server, entries[server][1], configs, self.environ)
        except BerthError as error:
            return error
        if launch.remote or launch.working_dir:
            return launch
        working_dir = self.state_dir / "servers" / server
        working_dir.mkdir(parents=True, exist_ok=True)
        return replace(launch, working_dir=str(working_dir))


async def _drop(_message: object, _related: object) -> None:
    """Where the service session's notifications go: nobody listens."""
