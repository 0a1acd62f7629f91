"""berth's OAuth client and broker against a real authorization server and the real MCP
server it protects (tests.support.oauth_server), with berth's real secret store in a
temporary directory: the cases the CLI tests do not reach (stdio servers' tokens, tokens
set by hand, pre-registered clients, servers that answer 401 unannounced, refused refresh
tokens, abandoned authorizations)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from berth.common.errors import DeadlineExceeded
from berth.common.jsonfile import read_json, write_json
from berth.mcp.adapters.catalog_store import FileCatalogStore
from berth.mcp.adapters.oauth_state import DiscoveredApps
from berth.mcp.adapters.secret_store import open_vault
from berth.mcp.adapters.server_store import FileServerStore
from berth.mcp.domain.catalogs import Catalogs, load_builtin
from berth.mcp.domain.features import FeatureFlags
from berth.mcp.domain.oauth import OAuthRequired, dump_grant, parse_grant
from berth.mcp.domain.servers import Requirement, Servers
from berth.mcp.gateway.oauth import RENEW_RETRY_S, OAuthBroker, Started
from tests.support.oauth_server import OAuthTestServer, oauth_servers

REDIRECT = "http://127.0.0.1:53682/callback"  # the test reads the redirect, nobody listens


@pytest.fixture(scope="module")
def oauth_server() -> Iterator[OAuthTestServer]:
    with oauth_servers() as server:
        yield server


@pytest.fixture(autouse=True)
def reset_server(oauth_server: OAuthTestServer) -> Iterator[None]:
    yield
    oauth_server.set(dcr=True, deny=False, lifetime_s=3600)


@dataclass
class Daemon:
    """What berth-mcpd builds, minus gRPC: the catalogs, the secret store, the broker."""

    broker: OAuthBroker
    catalogs: Catalogs
    state: Path

    def catalog(self, servers: str) -> None:
        self.catalogs.import_("team", f"servers:\n{servers}", "test", dry_run=False)


def make_daemon(state: Path) -> Daemon:
    catalogs = Catalogs(load_builtin(), FileCatalogStore(state / "catalogs"))
    servers = Servers(catalogs, FileServerStore(state))
    features = state / "features.json"
    flags = FeatureFlags(
        functools.partial(read_json, features, {}), functools.partial(write_json, features)
    )
    vault = open_vault(state, state / "secret.key", {})
    broker = OAuthBroker(servers, vault, flags, DiscoveredApps(state))
    return Daemon(broker, catalogs, state)


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    return make_daemon(tmp_path / "mcp")


async def authorize(daemon: Daemon, app: str, scopes: list[str] | None = None) -> Any:
    """Authorizes `app`, playing the browser and delivering the redirect as the CLI would."""
    delivered: list[asyncio.Task[Any]] = []

    async def started(event: Started) -> None:
        async with httpx2.AsyncClient() as http:
            answer = await http.get(event.authorization_url)
        location = answer.headers["location"]
        delivered.append(asyncio.create_task(daemon.broker.complete(location)))

    view = await daemon.broker.authorize(app, scopes or [], REDIRECT, started)
    assert (await delivered[0]).authorized
    return view


@contextlib.asynccontextmanager
async def session(auth: httpx2.Auth, url: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as opened,
    ):
        await opened.initialize()
        yield opened


async def access_token(broker: OAuthBroker, app: str) -> str | None:
    """The token a stdio server of `app` would start with now."""
    token = await broker.server_token(app)
    return token.value if token else None


async def whoami(opened: ClientSession) -> int:
    result = await opened.call_tool("whoami", {})
    text = result.content[0].text  # type: ignore[union-attr]
    return int(text.removeprefix("token #"))


def stdio_entry(issuer: str, **oauth: str) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in oauth.items())
    return (
        "  notes:\n    command: notes-mcp\n"
        f"    oauth: {{provider: notes, authorizationServer: '{issuer}', env: NOTES_TOKEN"
        f"{', ' + fields if fields else ''}}}\n"
    )


# -- stdio servers: a token for the environment -------------------------------------------


async def test_a_stdio_servers_token_comes_from_the_issuer_and_is_refreshed(
    daemon: Daemon, oauth_server: OAuthTestServer
) -> None:
    daemon.catalog(stdio_entry(oauth_server.issuer, scopes="[profile]"))
    assert await access_token(daemon.broker, "notes") is None
    assert not daemon.broker.authorized("notes")
    oauth_server.set(lifetime_s=4)
    view = await authorize(daemon, "notes")
    assert view.authorized and view.scopes == ("profile",) and view.dynamic_client
    assert view.authorization_server.rstrip("/") == oauth_server.issuer
    issued = await daemon.broker.server_token("notes")
    assert issued and issued.renew_at  # the server restarts for a fresher token from then on
    first = issued.value
    assert oauth_server.token_serial(first)
    expires_at = oauth_server.store.by_access(first).issued_at + 4  # type: ignore[union-attr]
    assert time.time() < issued.renew_at < expires_at
    assert daemon.broker.authorized("notes")
    refreshes = oauth_server.events["refresh_grant"]
    late = oauth_server.events["refresh_after_expiry"]
    deadline = asyncio.get_running_loop().time() + 20
    while (token := await access_token(daemon.broker, "notes")) == first:
        assert asyncio.get_running_loop().time() < deadline, "never refreshed"
        await asyncio.sleep(0.3)
    assert token and oauth_server.token_serial(token) > oauth_server.token_serial(first)
    assert oauth_server.events["refresh_grant"] == refreshes + 1
    assert oauth_server.events["refresh_after_expiry"] == late  # refreshed before expiry
    # Kept refreshed in the store: a daemon started afresh finds the new token.
    assert await access_token(make_daemon(daemon.state).broker, "notes") == token


async def test_a_stdio_token_that_cannot_be_refreshed_is_tried_again_later(
    daemon: Daemon, oauth_server: OAuthTestServer
) -> None:
    """Without this, a stdio server would restart for a fresher token on every call while
    its authorization server is down."""
    daemon.catalog(stdio_entry(oauth_server.issuer))
    oauth_server.set(lifetime_s=4)
    await authorize(daemon, "notes")
    [stored] = daemon.broker.vault.reveal(["oauth.notes"]).values()
    grant = parse_grant(stored)
    unreachable = {**grant.metadata, "token_endpoint": "http://127.0.0.1:9/token"}
    daemon.broker.vault.put(
        "oauth.notes", dump_grant(replace(grant, metadata=unreachable)), "oauth/notes"
    )
    refresh_at = grant.refresh_at()
    assert refresh_at is not None
    await asyncio.sleep(max(refresh_at - time.time(), 0.0) + 0.2)
    issued = await daemon.broker.server_token("notes")
    assert issued and issued.value == grant.access_token and issued.renew_at
    assert issued.renew_at - time.time() == pytest.approx(RENEW_RETRY_S, abs=10)


async def test_a_token_set_by_hand_is_used_as_it_is(daemon: Daemon) -> None:
    daemon.catalog(stdio_entry("https://auth.invalid"))
    daemon.broker.vault.put("oauth.notes", "hand-made-token", "oauth/notes")
    issued = await daemon.broker.server_token("notes")
    assert issued and issued.value == "hand-made-token" and issued.renew_at is None
    assert daemon.broker.authorized("notes")
    [view] = [v for v in daemon.broker.list() if v.name == "notes"]
    assert view.authorized and view.expire_time is None


async def test_a_pre_registered_client_needs_no_registration(
    daemon: Daemon, oauth_server: OAuthTestServer
) -> None:
    client = oauth_server.pre_register(REDIRECT)
    daemon.catalog(stdio_entry(oauth_server.issuer, clientId=client.client_id))
    daemon.broker.flags.set("oauth-dcr", False)
    registrations = oauth_server.events["registration"]
    view = await authorize(daemon, "notes")
    assert view.authorized and not view.dynamic_client
    assert oauth_server.events["registration"] == registrations


async def test_an_abandoned_authorization_times_out(
    daemon: Daemon, oauth_server: OAuthTestServer
) -> None:
    daemon.catalog(stdio_entry(oauth_server.issuer))
    daemon.broker.pending_ttl_s = 0.5
    shown: list[Started] = []

    async def started(event: Started) -> None:
        shown.append(event)

    with pytest.raises(DeadlineExceeded):
        await daemon.broker.authorize("notes", [], REDIRECT, started)
    assert len(shown) == 1 and len(daemon.broker.pending) == 0
    assert not daemon.broker.authorized("notes")


# -- remote servers -----------------------------------------------------------------------


async def test_scopes_asked_for_replace_the_catalogs(
    daemon: Daemon, oauth_server: OAuthTestServer
) -> None:
    daemon.catalog(
        f"  prot:\n    remote: {{url: '{oauth_server.resource}'}}\n"
        "    oauth: {provider: prot, scopes: [mcp:read]}\n"
    )
    view = await authorize(daemon, "prot", ["mcp:read", "profile"])
    assert view.scopes == ("mcp:read", "profile")
    token = await access_token(daemon.broker, "prot")
    assert oauth_server.store.by_access(token).scope == "mcp:read profile"  # type: ignore[arg-type, union-attr]


async def test_a_remote_server_answering_401_becomes_an_app(
    daemon: Daemon, oauth_server: OAuthTestServer
) -> None:
    daemon.catalog(f"  plain:\n    remote: {{url: '{oauth_server.resource}'}}\n")
    entry = daemon.broker.servers.find("plain")[1]
    assert daemon.broker.requirement("plain", entry) is Requirement.NONE
    with pytest.raises(BaseException) as caught:
        async with session(
            daemon.broker.http_auth("plain", oauth_server.resource), oauth_server.resource
        ):
            pass
    assert isinstance(_innermost(caught.value), OAuthRequired)
    assert "berth mcp oauth authorize plain" in str(_innermost(caught.value))
    assert "plain" in daemon.broker.apps()
    assert daemon.broker.requirement("plain", entry) is Requirement.REQUIRED
    await authorize(daemon, "plain")
    assert daemon.broker.requirement("plain", entry) is Requirement.DONE
    async with session(
        daemon.broker.http_auth("plain", oauth_server.resource), oauth_server.resource
    ) as opened:
        assert await whoami(opened) > 0


async def test_a_revoked_access_token_is_replaced_by_refreshing(
    daemon: Daemon, oauth_server: OAuthTestServer
) -> None:
    daemon.catalog(
        f"  prot:\n    remote: {{url: '{oauth_server.resource}'}}\n    oauth: {{provider: prot}}\n"
    )
    await authorize(daemon, "prot")
    first = await access_token(daemon.broker, "prot")
    oauth_server.store.by_access(first).access_revoked = True  # type: ignore[arg-type, union-attr]
    auth = daemon.broker.http_auth("prot", oauth_server.resource)
    async with session(auth, oauth_server.resource) as opened:
        serial = await whoami(opened)
    assert serial > oauth_server.token_serial(first)  # type: ignore[arg-type, operator]


async def test_a_refused_refresh_token_needs_a_new_authorization(
    daemon: Daemon, oauth_server: OAuthTestServer
) -> None:
    daemon.catalog(
        f"  prot:\n    remote: {{url: '{oauth_server.resource}'}}\n    oauth: {{provider: prot}}\n"
    )
    await authorize(daemon, "prot")
    token = oauth_server.store.by_access(await access_token(daemon.broker, "prot"))  # type: ignore[arg-type]
    assert token is not None
    token.access_revoked = token.refresh_revoked = True
    auth = daemon.broker.http_auth("prot", oauth_server.resource)
    with pytest.raises(BaseException) as caught:
        async with session(auth, oauth_server.resource) as opened:
            await opened.list_tools()
    assert isinstance(_innermost(caught.value), OAuthRequired)
    assert "berth mcp oauth authorize prot" in str(_innermost(caught.value))
    grant = daemon.broker._grant("prot")
    assert grant is not None and not grant.refreshable


def _innermost(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
