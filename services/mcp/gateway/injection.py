"""Starting a server with its secrets.

The values are read from the secret store each time a server starts (so `berth mcp secret
set` reaches the next start without a restart of anything else), and only those that the
server's entry declares and the policy allows. Secrets injected as files are written to a
directory of that one process under the runtime directory (tmpfs, not the state
directory), readable by its owner only, and removed when the process stops.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import httpx2
import structlog

from berth.mcp.domain.catalogs import ServerEntry
from berth.mcp.domain.launch import Launch, with_secrets
from berth.mcp.domain.oauth import ServerToken
from berth.mcp.gateway.links import HttpLink, Link, StdioLink

log = structlog.get_logger("berth.mcp.injection")

# Shorter values would match ordinary text: secret scanning looks for these lengths only.
MIN_KNOWN = 6


class GrantedSecrets(Protocol):
    def granted(self, server: str, entry: ServerEntry) -> dict[str, str]: ...


class OAuthTokens(Protocol):
    async def server_token(self, app: str) -> ServerToken | None: ...
    def http_auth(self, app: str, server_url: str) -> httpx2.Auth: ...


class Injector:
    """Opens links to servers with their secrets and OAuth tokens in place."""

    def __init__(
        self, files_root: Path, secrets_source: GrantedSecrets, oauth: OAuthTokens
    ) -> None:
        self.files_root = files_root
        self.secrets = secrets_source
        self.oauth = oauth
        self._given: dict[str, set[str]] = {}

    def given(self, server: str) -> frozenset[str]:
        """The secret values (of at least MIN_KNOWN characters) berth has given `server`
        since it started: secret scanning refuses tool calls that carry them."""
        return frozenset(self._given.get(server, ()))

    def clear_leftovers(self) -> None:
        """Removes the files of servers a previous, killed berth-mcpd did not stop."""
        shutil.rmtree(self.files_root, ignore_errors=True)

    async def open_link(self, launch: Launch, entry: ServerEntry) -> Link:
        """Starts (or connects to) the server `launch` runs, with what its `entry` declares."""
        values = await self._granted(launch, entry)
        self._remember(launch.server, values.values())
        if launch.remote:
            placed, _ = with_secrets(launch, values, None, "")
            return await HttpLink.connect(
                placed.url, placed.transport, placed.headers, self._auth(launch)
            )
        token = await self._token(launch)
        given = [token.value] if token else []
        self._remember(launch.server, given)
        files_dir = self.files_root / f"{launch.server}-{secrets.token_hex(4)}"
        placed, files = with_secrets(launch, values, token.value if token else None, str(files_dir))
        if files:
            await asyncio.to_thread(_write_files, files_dir, files)
        link = await StdioLink.start(
            placed.command,
            placed.args,
            placed.env,
            placed.working_dir or None,
            redact=[*values.values(), *given],
            on_close=lambda: shutil.rmtree(files_dir, ignore_errors=True),
        )
        link.renew_at = token.renew_at if token else None
        return link

    def _remember(self, server: str, values: Iterable[str]) -> None:
        self._given.setdefault(server, set()).update(v for v in values if len(v) >= MIN_KNOWN)

    async def _granted(self, launch: Launch, entry: ServerEntry) -> dict[str, str]:
        if not launch.secrets:
            return {}
        values = await asyncio.to_thread(self.secrets.granted, launch.server, entry)
        left_out = sorted({mount.name for mount in launch.secrets} - values.keys())
        if left_out:
            log.info("mcp server starts without secrets", server=launch.server, secrets=left_out)
        return values

    async def _token(self, launch: Launch) -> ServerToken | None:
        if not launch.oauth_app or not launch.oauth_env:
            return None
        token = await self.oauth.server_token(launch.oauth_app)
        if token is None:
            log.info("mcp server starts without its oauth token", server=launch.server)
        return token

    def _auth(self, launch: Launch) -> httpx2.Auth:
        """Every remote server's requests go through the OAuth client: one that answers 401
        is an OAuth app named after the server unless its entry names one."""
        return self.oauth.http_auth(launch.oauth_app or launch.server, launch.url)


def _write_files(directory: Path, files: Mapping[str, str]) -> None:
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700)
    for path, content in files.items():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(content)
