"""OAuth apps (`berth mcp oauth ...`): which apps servers need, the grants berth keeps for
them, when a token is refreshed, and the authorizations waiting for a browser.

An app is named by the `oauth.provider` of catalog entries; its servers are the entries
naming it. A remote server's entry (`remote.url`) is the protected resource an
authorization starts from (its 401 leads to the authorization server); a stdio server's
entry names the authorization server itself (`authorizationServer`, an issuer URL) and
receives the access token in the environment variable `oauth.env`. A remote server whose
entry has no `oauth` but that answered 401 with a Bearer challenge is an app named after
the server (berth remembers that it did).

An app's grant is kept in the secret store as the secret `oauth.<app>`, provider
`oauth/<app>`: JSON with the tokens, their absolute expiry, the granted scopes, the client
registration and the authorization server's endpoints. A value that is not such JSON is an
access token set by hand: used as it is, never refreshed. Tokens never leave the daemon
except to the servers that use them; no message of this module contains one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from berth.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from berth.mcp.domain.catalogs import ServerEntry

SECRET_PREFIX = "oauth."
PROVIDER_PREFIX = "oauth/"
GRANT_VERSION = 1
# A token is refreshed when less than a minute or less than a tenth of its lifetime
# remains, but never earlier than half-way through its life.
REFRESH_MARGIN_S = 60.0
REFRESH_FRACTION = 0.1
# How long an authorization waits for the browser's redirect.
PENDING_TTL_S = 300.0
CALLBACK_PATH = "/callback"


def secret_name(app: str) -> str:
    return SECRET_PREFIX + app


def provider_of(app: str) -> str:
    return PROVIDER_PREFIX + app


def authorize_hint(app: str) -> str:
    return f"run `berth mcp oauth authorize {app}`"


class OAuthRequired(FailedPrecondition):
    """A server needs a token that only a person can grant."""

    default_reason = "OAUTH_REQUIRED"

    def __init__(self, app: str, why: str = "") -> None:
        cause = f" ({why})" if why else ""
        super().__init__(
            f"OAuth app {app} is not authorized{cause}: {authorize_hint(app)}",
            metadata={"app": app},
        )


# -- apps -------------------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    """An OAuth app as the catalog entries (and the 401s berth saw) describe it."""

    name: str
    scopes: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    resource: str = ""  # the remote server's URL an authorization starts from
    issuer: str = ""  # the authorization server named by the entries (stdio servers)
    client_id: str = ""  # a pre-registered client
    env: str = ""  # where stdio servers receive the access token

    @property
    def secret(self) -> str:
        return secret_name(self.name)

    @property
    def provider(self) -> str:
        return provider_of(self.name)


def _merged(app: App, server: str, entry: ServerEntry) -> App:
    oauth = entry["oauth"]
    remote = entry.get("remote") or {}
    return replace(
        app,
        scopes=tuple(dict.fromkeys([*app.scopes, *(oauth.get("scopes") or [])])),
        servers=(*app.servers, server),
        resource=app.resource or remote.get("url", ""),
        issuer=app.issuer or oauth.get("authorizationServer", ""),
        client_id=app.client_id or oauth.get("clientId", ""),
        env=app.env or oauth.get("env", ""),
    )


def apps_of(entries: Mapping[str, ServerEntry], discovered: Mapping[str, str]) -> dict[str, App]:
    """App name -> App, from the catalog entries (server name -> entry) and the remote
    servers without `oauth` that answered 401 (server name -> URL); sorted by name."""
    apps: dict[str, App] = {}
    for server in sorted(entries):
        entry = entries[server]
        if entry.get("oauth"):
            name = entry["oauth"]["provider"]
            apps[name] = _merged(apps.get(name, App(name)), server, entry)
    for server, url in sorted(discovered.items()):
        entry = entries.get(server)
        if entry is None or entry.get("oauth") or not entry.get("remote") or server in apps:
            continue
        apps[server] = App(server, servers=(server,), resource=url)
    return dict(sorted(apps.items()))


def app_of_server(server: str, entry: ServerEntry) -> str:
    """The app a server's tokens come from: its entry's provider, else the server's name
    (a remote server that may answer 401)."""
    oauth = entry.get("oauth")
    return str(oauth["provider"]) if oauth else server


# -- grants -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerToken:
    """The access token a stdio server starts with, and from when (epoch seconds) a fresher
    one can be had: berth restarts the server then to give it that one. None: never."""

    value: str = field(repr=False)
    renew_at: float | None = None


@dataclass(frozen=True)
class Grant:
    """What berth holds for an app. `manual`: a bare access token set by hand."""

    access_token: str = field(repr=False)
    refresh_token: str = field(default="", repr=False)
    expires_at: float | None = None  # epoch seconds
    issued_at: float | None = None
    scopes: tuple[str, ...] = ()
    issuer: str = ""
    client: Mapping[str, Any] = field(default_factory=dict, repr=False)  # RFC 7591 info
    dynamic: bool = False  # the client was registered dynamically (RFC 7591)
    metadata: Mapping[str, Any] = field(default_factory=dict)  # RFC 8414 metadata
    resource: str = ""
    manual: bool = False

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @property
    def refreshable(self) -> bool:
        return bool(self.refresh_token) and not self.manual

    def usable(self, now: float) -> bool:
        """A token berth can send now, or get by refreshing."""
        return self.manual or not self.expired(now) or self.refreshable

    def refresh_due(self, now: float) -> bool:
        """Whether to refresh before using it: little of its lifetime remains."""
        refresh_at = self.refresh_at()
        return refresh_at is not None and now > refresh_at

    def refresh_at(self) -> float | None:
        """When (epoch seconds) a refresh becomes due; None when it never does. Without
        `issued_at` the lifetime is unknown and the token is refreshed once it expired."""
        if not self.refreshable or self.expires_at is None:
            return None
        lifetime = 0.0 if self.issued_at is None else max(self.expires_at - self.issued_at, 0.0)
        early = max(min(REFRESH_MARGIN_S, lifetime / 2), lifetime * REFRESH_FRACTION)
        return self.expires_at - early

    def expire_time(self) -> datetime | None:
        if self.expires_at is None or self.manual:
            return None
        return datetime.fromtimestamp(self.expires_at, UTC)

    def with_token(
        self, access_token: str, refresh_token: str, expires_in: int | None, scope: str, now: float
    ) -> Grant:
        """This grant after a token response (a refresh keeps what the response omits)."""
        return replace(
            self,
            access_token=access_token,
            refresh_token=refresh_token or self.refresh_token,
            expires_at=now + expires_in if expires_in is not None else None,
            issued_at=now,
            scopes=tuple(scope.split()) if scope else self.scopes,
        )


def parse_grant(value: str) -> Grant:
    """The grant a secret value holds; anything but berth's JSON is a bare access token."""
    try:
        document = json.loads(value)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("access_token"), str):
        return Grant(access_token=value.strip(), manual=True)
    return Grant(
        access_token=document["access_token"],
        refresh_token=str(document.get("refresh_token") or ""),
        expires_at=_number(document.get("expires_at")),
        issued_at=_number(document.get("issued_at")),
        scopes=tuple(str(document.get("scope") or "").split()),
        issuer=str(document.get("issuer") or ""),
        client=dict(document.get("client") or {}),
        dynamic=bool(document.get("dynamic")),
        metadata=dict(document.get("metadata") or {}),
        resource=str(document.get("resource") or ""),
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def dump_grant(grant: Grant) -> str:
    if grant.manual:
        return grant.access_token
    document = {
        "version": GRANT_VERSION,
        "access_token": grant.access_token,
        "token_type": "Bearer",
        "refresh_token": grant.refresh_token or None,
        "expires_at": grant.expires_at,
        "issued_at": grant.issued_at,
        "scope": " ".join(grant.scopes),
        "issuer": grant.issuer,
        "client": dict(grant.client),
        "dynamic": grant.dynamic,
        "metadata": dict(grant.metadata),
        "resource": grant.resource,
    }
    return json.dumps(document, separators=(",", ":"))


# -- what `oauth ls` shows --------------------------------------------------------------


@dataclass(frozen=True)
class AppView:
    name: str
    provider: str
    authorized: bool
    scopes: tuple[str, ...]
    expire_time: datetime | None
    servers: tuple[str, ...]
    authorization_server: str
    dynamic_client: bool


def view_of(app: App, grant: Grant | None, now: float) -> AppView:
    authorized = grant is not None and grant.usable(now)
    return AppView(
        name=app.name,
        provider=app.provider,
        authorized=authorized,
        scopes=grant.scopes if grant is not None and authorized and grant.scopes else app.scopes,
        expire_time=grant.expire_time() if grant is not None and authorized else None,
        servers=app.servers,
        authorization_server=(grant.issuer if grant else "") or app.issuer,
        dynamic_client=bool(grant and grant.dynamic),
    )


def requested_scopes(app: App, scopes: Iterable[str]) -> tuple[str, ...]:
    """`--scopes` when given, else those the catalog entries declare."""
    given = tuple(dict.fromkeys(s for s in scopes if s))
    return given or app.scopes


def check_client_available(app: App, dynamic_registration: bool, reusable_client: bool) -> None:
    """Refuses an authorization that would need dynamic registration while it is off."""
    if dynamic_registration or app.client_id or reusable_client:
        return
    raise FailedPrecondition(
        f"OAuth app {app.name} has no pre-registered client and dynamic client registration "
        "is off: set `oauth.clientId` in its catalog entry, or run "
        "`berth mcp feature enable oauth-dcr`",
        reason="OAUTH_CLIENT_REQUIRED",
        metadata={"app": app.name},
    )


def app_not_found(name: str) -> NotFound:
    return NotFound(
        f"no OAuth app {name!r}: no catalog server uses it (see `berth mcp oauth ls`)",
        reason="OAUTH_APP_NOT_FOUND",
        metadata={"app": name},
    )


# -- the browser's redirect -------------------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """The query of the redirect an authorization server sent the browser to."""

    state: str
    code: str = field(default="", repr=False)
    error: str = ""
    error_description: str = ""
    iss: str | None = None


def parse_callback(url: str) -> Callback:
    """The redirect's parameters, or InvalidArgument when it is no OAuth redirect."""
    query = parse_qs(urlsplit(url).query)

    def one(name: str) -> str:
        values = query.get(name) or [""]
        return values[0]

    if not one("state"):
        raise InvalidArgument(
            [FieldViolation("callback_url", "not an OAuth redirect: it has no `state`")],
            reason="INVALID_OAUTH_CALLBACK",
        )
    if not one("code") and not one("error"):
        raise InvalidArgument(
            [FieldViolation("callback_url", "the redirect has neither `code` nor `error`")],
            reason="INVALID_OAUTH_CALLBACK",
        )
    return Callback(
        state=one("state"),
        code=one("code"),
        error=one("error"),
        error_description=one("error_description"),
        iss=one("iss") or None,
    )


def refused(app: str, callback: Callback) -> Exception:
    """The error for a redirect that carries `error` instead of a code."""
    detail = f": {callback.error_description}" if callback.error_description else ""
    if callback.error == "access_denied":
        return PermissionDenied(
            f"the authorization of {app} was refused{detail}",
            reason="OAUTH_ACCESS_DENIED",
            metadata={"app": app},
        )
    return FailedPrecondition(
        f"the authorization server refused to authorize {app}: {callback.error}{detail}",
        reason="OAUTH_AUTHORIZATION_FAILED",
        metadata={"app": app, "error": callback.error},
    )


# -- authorizations waiting for the browser ---------------------------------------------


@dataclass
class Pending:
    """One authorization waiting for its redirect. `redirect` resolves with the redirect;
    `outcome` with the authorized app (or the error that ended the authorization)."""

    app: str
    state: str
    redirect_uri: str
    expires_at: float
    redirect: asyncio.Future[Callback]
    outcome: asyncio.Future[AppView]


class PendingAuthorizations:
    """The authorizations waiting for a browser, by their OAuth `state`."""

    def __init__(self) -> None:
        self._by_state: dict[str, Pending] = {}

    def open(self, app: str, state: str, redirect_uri: str, expires_at: float) -> Pending:
        loop = asyncio.get_running_loop()
        pending = Pending(
            app, state, redirect_uri, expires_at, loop.create_future(), loop.create_future()
        )
        self._by_state[state] = pending
        return pending

    def deliver(self, callback: Callback) -> Pending:
        """Hands a redirect to the authorization it belongs to."""
        pending = self._by_state.get(callback.state)
        if pending is None or pending.redirect.done():
            raise NotFound(
                "no authorization is waiting for this redirect (it ended, timed out or was "
                "never started here)",
                reason="OAUTH_AUTHORIZATION_NOT_FOUND",
            )
        pending.redirect.set_result(callback)
        return pending

    async def wait(self, pending: Pending, now: float) -> Callback:
        """The redirect, or DeadlineExceeded once the authorization expires."""
        try:
            async with asyncio.timeout(max(pending.expires_at - now, 0.0)):
                return await asyncio.shield(pending.redirect)
        except TimeoutError:
            raise DeadlineExceeded(
                f"nobody completed the authorization of {pending.app} in time",
                reason="OAUTH_AUTHORIZATION_EXPIRED",
                metadata={"app": pending.app},
            ) from None

    def close(self, pending: Pending, outcome: AppView | BaseException) -> None:
        self._by_state.pop(pending.state, None)
        if pending.outcome.done():
            return
        if isinstance(outcome, AppView):
            pending.outcome.set_result(outcome)
        else:
            pending.outcome.set_exception(outcome)
            pending.outcome.exception()  # retrieved: nobody may be waiting for it

    def __len__(self) -> int:
        return len(self._by_state)
