"""The OAuth broker: authorizes apps, keeps their grants in the secret store, hands tokens to
the servers that need them, and serves the loopback listener the browser is sent back to.

An authorization runs in two halves: `authorize` starts it and tells the caller the URL to
open (`started`), then waits; the browser's redirect reaches either the daemon's loopback
listener (`callback_app`) or the caller, who passes it on (`complete`). Either way the
waiting authorization exchanges the code, stores the grant, and both halves return the
authorized app. Grants are refreshed ahead of expiry (berth.mcp.domain.oauth.Grant) by
whoever needs a token first, one refresh per app at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx2
import structlog
from mcp.client.auth import OAuthFlowError
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthToken
from mcp_types import LATEST_PROTOCOL_VERSION
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from berth.common.errors import (
    BerthError,
    Code,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unavailable,
)
from berth.mcp.adapters.oauth_client import (
    HTTP_TIMEOUT_S,
    BerthOAuthProvider,
    DraftStorage,
    GrantStorage,
    RefreshRefused,
    authorize_at_issuer,
    client_metadata,
    client_of,
    dumped,
    issuer_metadata,
    refresh,
    register,
    revoke,
)
from berth.mcp.adapters.oauth_state import DiscoveredApps
from berth.mcp.domain.catalogs import ServerEntry
from berth.mcp.domain.features import FeatureFlags
from berth.mcp.domain.oauth import (
    CALLBACK_PATH,
    PENDING_TTL_S,
    PROVIDER_PREFIX,
    App,
    AppView,
    Grant,
    PendingAuthorizations,
    ServerToken,
    app_not_found,
    apps_of,
    check_client_available,
    dump_grant,
    parse_callback,
    parse_grant,
    provider_of,
    refused,
    requested_scopes,
    secret_name,
    view_of,
)
from berth.mcp.domain.secrets import SecretVault
from berth.mcp.domain.servers import Requirement, Servers

log = structlog.get_logger("berth.mcp.oauth")

DCR_FEATURE = "oauth-dcr"
# Where a connection's client says it would be sent back (it never starts an authorization).
UNUSED_REDIRECT = "http://127.0.0.1/callback"
# A stdio server whose token could not be refreshed keeps it; the next try is this much later.
RENEW_RETRY_S = 60.0
HTTP_STATUS = {
    Code.INVALID_ARGUMENT: 400,
    Code.NOT_FOUND: 404,
    Code.PERMISSION_DENIED: 403,
    Code.DEADLINE_EXCEEDED: 408,
}

HttpClient = Callable[..., httpx2.AsyncClient]


def default_http(auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(auth=auth, timeout=HTTP_TIMEOUT_S, follow_redirects=False)


@dataclass(frozen=True)
class Started:
    """The first half of an authorization: where to send the user."""

    authorization_url: str
    state: str
    redirect_uri: str
    expire_time: datetime


StartedHandler = Callable[[Started], Awaitable[None]]


class OAuthBroker:
    def __init__(
        self,
        servers: Servers,
        vault: SecretVault,
        flags: FeatureFlags,
        discovered: DiscoveredApps,
        *,
        http: HttpClient = default_http,
        clock: Callable[[], float] = time.time,
        pending_ttl_s: float = PENDING_TTL_S,
    ) -> None:
        self.servers = servers
        self.vault = vault
        self.flags = flags
        self.discovered = discovered
        self.http = http
        self.clock = clock
        self.pending_ttl_s = pending_ttl_s
        self.pending = PendingAuthorizations()
        # The daemon's loopback listener, once it listens (see `callback_app`).
        self.callback_url = ""
        # Called after an app was authorized or revoked (not after a refresh): servers
        # started with the old token are out of date.
        self.on_change: Callable[[], None] = lambda: None
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # -- apps -----------------------------------------------------------------------------

    def apps(self) -> dict[str, App]:
        entries = {name: entry for name, (_, entry) in self.servers.entries().items()}
        return apps_of(entries, self.discovered.load())

    def app(self, name: str, grant: Grant | None = None) -> App:
        found = self.apps().get(name)
        if found is not None:
            return found
        if grant is not None:  # tokens set by hand for an app no catalog names
            return App(name)
        raise app_not_found(name)

    def list(self) -> list[AppView]:
        now = self.clock()
        grants = self._all_grants()
        apps = self.apps()
        apps.update({name: App(name) for name in grants if name not in apps})
        return [view_of(app, grants.get(name), now) for name, app in sorted(apps.items())]

    def authorized(self, app: str) -> bool:
        """Whether berth holds a usable token for `app` (cheap enough for `server ls`)."""
        try:
            grant = self._grant(app)
        except BerthError:
            return False
        return grant is not None and grant.usable(self.clock())

    def requirement(self, server: str, entry: ServerEntry) -> Requirement:
        """The OAUTH column of `server ls` for `server`."""
        if entry.get("oauth"):
            app = str(entry["oauth"]["provider"])
        elif entry.get("remote") and server in self.discovered.load():
            app = server
        else:
            return Requirement.NONE
        return Requirement.DONE if self.authorized(app) else Requirement.REQUIRED

    # -- tokens for servers ---------------------------------------------------------------

    async def server_token(self, app: str) -> ServerToken | None:
        """A token to give a stdio server now (refreshed first when little of its life
        remains), or None when `app` is not authorized."""
        grant = await self.fresh_grant(app)
        now = self.clock()
        if grant is None or (grant.expired(now) and not grant.manual):
            return None
        renew_at = grant.refresh_at()
        if grant.refresh_due(now):  # due, and still not refreshed: the refresh failed
            renew_at = now + RENEW_RETRY_S
        return ServerToken(grant.access_token, renew_at)

    def http_auth(self, app: str, server_url: str) -> httpx2.Auth:
        """Signs a remote server's requests with `app`'s token. A 401 it cannot answer by
        refreshing fails the request with OAuthRequired (`berth mcp oauth authorize APP`)."""

        async def prepare(provider: BerthOAuthProvider) -> None:
            provider.use_grant(await self.fresh_grant(app), self.clock())

        async def recover(provider: BerthOAuthProvider) -> bool:
            before = provider.context.current_tokens
            grant = await self.fresh_grant(app, force=True)
            provider.use_grant(grant, self.clock())
            return grant is not None and (
                before is None or grant.access_token != before.access_token
            )

        def challenged(_: httpx2.Response) -> None:
            if app not in self.apps() and self.discovered.add(app, server_url):
                log.info("remote mcp server asks for oauth", app=app, url=server_url)

        return BerthOAuthProvider(
            server_url,
            client_metadata(self.callback_url or UNUSED_REDIRECT),
            GrantStorage(lambda: self._load(app), lambda change: self._change(app, change)),
            app=app,
            prepare=prepare,
            recover=recover,
            on_challenge=challenged,
        )

    async def fresh_grant(self, app: str, force: bool = False) -> Grant | None:
        """`app`'s grant, refreshed first when due (or `force`d) and refreshable."""
        async with self._locks[app]:
            grant = await self._load(app)
            now = self.clock()
            if grant is None or not grant.refreshable or not (force or grant.refresh_due(now)):
                return grant
            try:
                async with self.http() as http:
                    token = await refresh(http, grant)
            except RefreshRefused:
                return await self._refused(app, grant)
            except (httpx2.HTTPError, OAuthFlowError) as error:
                log.warning("oauth refresh failed", app=app, error=type(error).__name__)
                return grant
            renewed = _with_tokens(grant, token, now)
            stored = await self._change(app, lambda old: renewed if old is not None else None)
            log.info("oauth token refreshed", app=app)
            return stored

    async def _refused(self, app: str, used: Grant) -> Grant | None:
        current = await self._load(app)
        if current is not None and current.refresh_token != used.refresh_token:
            return current  # another replica refreshed it first
        log.warning("oauth refresh token refused: the app needs authorizing again", app=app)
        return await self._change(
            app, lambda old: replace(old, refresh_token="") if old is not None else None
        )

    # -- authorize, complete, revoke ------------------------------------------------------

    async def authorize(
        self, name: str, scopes: list[str], redirect_uri: str, started: StartedHandler
    ) -> AppView:
        """Runs one authorization to its end: `started` is told where to send the user."""
        previous = await self._load(name)
        app = self.app(name, previous)
        redirect_uri = self._redirect_uri(redirect_uri)
        scope = " ".join(requested_scopes(app, scopes)) or None
        seed = self._seed_client(app, previous, redirect_uri)
        check_client_available(app, self._dcr_enabled(), seed is not None)
        if not app.resource and not app.issuer:
            raise FailedPrecondition(
                f"OAuth app {name} has no remote server to start from and no "
                "`authorizationServer` in its catalog entries",
                reason="OAUTH_NO_AUTHORIZATION_SERVER",
                metadata={"app": name},
            )
        bridge = _Bridge(self, name, redirect_uri, started)
        try:
            if app.resource:
                grant = await self._authorize_remote(app, seed, scope, redirect_uri, bridge)
            else:
                grant = await self._authorize_issuer(app, seed, scope, redirect_uri, bridge)
            if previous is not None and seed is not None and not app.client_id:
                # Authorized as the client registered before: as dynamic as it was.
                grant = replace(grant, dynamic=previous.dynamic or grant.dynamic)
            await asyncio.to_thread(self.vault.put, app.secret, dump_grant(grant), app.provider)
        except (OAuthFlowError, httpx2.HTTPError) as error:
            failure = _failed(name, error)
            bridge.finish(failure)
            raise failure from None
        except BaseException as error:
            bridge.finish(error)
            raise
        view = view_of(app, grant, self.clock())
        log.info("oauth app authorized", app=name, scopes=" ".join(view.scopes))
        bridge.finish(view)
        self.on_change()
        return view

    async def complete(self, callback_url: str) -> AppView:
        """Hands the browser's redirect to the authorization waiting for it; returns once
        that authorization ended (authorized, or its error)."""
        pending = self.pending.deliver(parse_callback(callback_url))
        return await asyncio.shield(pending.outcome)

    async def revoke(self, name: str) -> AppView:
        """Revokes the tokens at the authorization server where it can, then deletes them."""
        grant = await self._load(name)
        app = self.app(name, grant)
        if grant is not None:
            try:
                async with self.http() as http:
                    revoked = await revoke(http, grant)
            except httpx2.HTTPError as error:
                revoked = []
                log.warning("oauth revocation failed", app=name, error=type(error).__name__)
            await self._change(name, lambda _: None)
            log.info("oauth app revoked", app=name, revoked=",".join(revoked))
            self.on_change()
        return view_of(app, None, self.clock())

    # -- the loopback listener ------------------------------------------------------------

    def callback_app(self) -> Starlette:
        """The ASGI app of the daemon's loopback listener (GET /callback). It never logs the
        query: it holds the authorization code."""

        async def callback(request: Request) -> PlainTextResponse:
            try:
                view = await self.complete(str(request.url))
            except BerthError as error:
                status = HTTP_STATUS.get(error.code, 500)
                return PlainTextResponse(f"Authorization failed: {error.message}\n", status)
            return PlainTextResponse(f"Authorized {view.name}. You can close this window.\n", 200)

        return Starlette(routes=[Route(CALLBACK_PATH, callback, methods=["GET"])])

    # -- helpers --------------------------------------------------------------------------

    def _dcr_enabled(self) -> bool:
        return any(f.enabled for f in self.flags.list() if f.name == DCR_FEATURE)

    def _redirect_uri(self, given: str) -> str:
        if not given:
            if not self.callback_url:
                raise FailedPrecondition(
                    "berth-mcpd's OAuth redirect listener is not running: give a redirect URI",
                    reason="OAUTH_NO_REDIRECT",
                )
            return self.callback_url
        parts = urlsplit(given)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise InvalidArgument(
                [FieldViolation("redirect_uri", "give an absolute http(s) URL without fragment")],
                reason="INVALID_REDIRECT_URI",
            )
        return given

    @staticmethod
    def _seed_client(
        app: App, previous: Grant | None, redirect_uri: str
    ) -> OAuthClientInformationFull | None:
        """The client to authorize as without registering: the catalog's pre-registered one,
        else the one registered before for this very redirect URI."""
        if app.client_id:
            return OAuthClientInformationFull(
                client_id=app.client_id,
                redirect_uris=[redirect_uri],  # type: ignore[list-item]
                token_endpoint_auth_method="none",
            )
        known = client_of(previous)
        if known is not None and redirect_uri in {str(u) for u in known.redirect_uris or []}:
            return known
        return None

    async def _authorize_remote(
        self,
        app: App,
        seed: OAuthClientInformationFull | None,
        scope: str | None,
        redirect_uri: str,
        bridge: _Bridge,
    ) -> Grant:
        """The SDK's flow, started by the remote server's 401."""
        draft = DraftStorage(seed)
        provider = BerthOAuthProvider(
            app.resource,
            client_metadata(redirect_uri, scope),
            draft,
            app=app.name,
            redirect_handler=bridge.redirect,
            callback_handler=bridge.callback,
            scope=scope,
        )
        async with self.http(auth=provider) as http:
            status = await _probe(http, app.resource)
        if draft.tokens is None or status in (401, 403):
            raise FailedPrecondition(
                f"{app.resource} did not accept an OAuth authorization (it answered {status})",
                reason="OAUTH_NOT_ACCEPTED",
                metadata={"app": app.name},
            )
        context = provider.context
        metadata = context.oauth_metadata
        origin = _origin(app.resource)
        tokens = draft.tokens
        registration = Grant(
            access_token="",
            scopes=tuple((scope or "").split()),
            issuer=str(metadata.issuer) if metadata else (context.auth_server_url or origin),
            client=dumped(draft.client) if draft.client else {},
            dynamic=draft.registered,
            metadata=dumped(metadata) if metadata else {},
            resource=context.get_resource_url() if context.protected_resource_metadata else "",
        )
        return _with_tokens(registration, tokens, draft.received_at or self.clock())

    async def _authorize_issuer(
        self,
        app: App,
        seed: OAuthClientInformationFull | None,
        scope: str | None,
        redirect_uri: str,
        bridge: _Bridge,
    ) -> Grant:
        """Code and PKCE straight at the issuer a stdio server's entry names."""
        async with self.http() as http:
            metadata = await issuer_metadata(http, app.issuer)
            client, registered = seed, False
            if client is None:
                if metadata.registration_endpoint is None:
                    raise FailedPrecondition(
                        f"the authorization server of {app.name} offers no dynamic client "
                        "registration: set `oauth.clientId` in its catalog entry",
                        reason="OAUTH_CLIENT_REQUIRED",
                        metadata={"app": app.name},
                    )
                client = await register(http, metadata, client_metadata(redirect_uri, scope))
                registered = True
            tokens = await authorize_at_issuer(
                http, metadata, client, redirect_uri, scope, bridge.redirect, bridge.callback
            )
        registration = Grant(
            access_token="",
            scopes=tuple((scope or "").split()),
            issuer=str(metadata.issuer),
            client=dumped(client),
            dynamic=registered,
            metadata=dumped(metadata),
        )
        return _with_tokens(registration, tokens, self.clock())

    # -- the secret store -----------------------------------------------------------------

    def _grant(self, app: str) -> Grant | None:
        value = self.vault.reveal([secret_name(app)]).get(secret_name(app))
        return parse_grant(value) if value is not None else None

    def _all_grants(self) -> dict[str, Grant]:
        names = {
            info.name: info.provider.removeprefix(PROVIDER_PREFIX)
            for info in self.vault.list()
            if info.provider.startswith(PROVIDER_PREFIX)
        }
        values = self.vault.reveal(list(names)) if names else {}
        return {names[name]: parse_grant(value) for name, value in values.items()}

    async def _load(self, app: str) -> Grant | None:
        return await asyncio.to_thread(self._grant, app)

    async def _change(
        self, app: str, change: Callable[[Grant | None], Grant | None]
    ) -> Grant | None:
        """Applies `change` to the stored grant atomically (None deletes it)."""

        def apply(old: str | None) -> str | None:
            new = change(parse_grant(old) if old is not None else None)
            return dump_grant(new) if new is not None else None

        value = await asyncio.to_thread(
            self.vault.update, secret_name(app), provider_of(app), apply
        )
        return parse_grant(value) if value is not None else None


class _Bridge:
    """Connects the SDK's redirect and callback handlers to a pending authorization."""

    def __init__(
        self, broker: OAuthBroker, app: str, redirect_uri: str, started: StartedHandler
    ) -> None:
        self.broker = broker
        self.app = app
        self.redirect_uri = redirect_uri
        self.started = started
        self.pending = None

    async def redirect(self, authorization_url: str) -> None:
        state = (parse_qs(urlsplit(authorization_url).query).get("state") or [""])[0]
        expires_at = self.broker.clock() + self.broker.pending_ttl_s
        if self.pending is not None:
            self.broker.pending.close(self.pending, _abandoned(self.app))
        self.pending = self.broker.pending.open(self.app, state, self.redirect_uri, expires_at)
        expire_time = datetime.fromtimestamp(expires_at, UTC)
        await self.started(Started(authorization_url, state, self.redirect_uri, expire_time))

    async def callback(self) -> AuthorizationCodeResult:
        assert self.pending is not None
        callback = await self.broker.pending.wait(self.pending, self.broker.clock())
        if callback.error:
            raise refused(self.app, callback)
        return AuthorizationCodeResult(code=callback.code, state=callback.state, iss=callback.iss)

    def finish(self, outcome: AppView | BaseException) -> None:
        if self.pending is None:
            return
        if not isinstance(outcome, (AppView, Exception)):
            outcome = _abandoned(self.app)
        self.broker.pending.close(self.pending, outcome)


def _failed(app: str, error: Exception) -> BerthError:
    if isinstance(error, httpx2.HTTPError):
        where = error.request.url.host if _has_request(error) else "the server"
        return Unavailable(
            f"the authorization of {app} failed: cannot reach {where}: {type(error).__name__}",
            reason="OAUTH_UNREACHABLE",
            metadata={"app": app},
        )
    return FailedPrecondition(
        f"the authorization of {app} failed: {error}",
        reason="OAUTH_FLOW_FAILED",
        metadata={"app": app},
    )


def _has_request(error: httpx2.HTTPError) -> bool:
    try:
        error.request  # noqa: B018  # raises when the error has none
    except RuntimeError:
        return False
    return True


def _abandoned(app: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the authorization of {app} was abandoned",
        reason="OAUTH_AUTHORIZATION_ABANDONED",
        metadata={"app": app},
    )


def _with_tokens(grant: Grant, tokens: OAuthToken, now: float) -> Grant:
    """`grant` after a token response: from an authorization, or from a refresh."""
    return grant.with_token(
        tokens.access_token, tokens.refresh_token or "", tokens.expires_in, tokens.scope or "", now
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _probe(http: httpx2.AsyncClient, url: str) -> int:
    """Starts an MCP session at `url` (a 401 there starts the authorization), then ends it;
    the status of the final answer."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": LATEST_PROTOCOL_VERSION,
    }
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "berth", "version": "oauth"},
        },
    }
    response = await http.post(url, json=message, headers=headers)
    session = response.headers.get("mcp-session-id")
    if session and response.status_code < 300:
        with contextlib.suppress(httpx2.HTTPError):  # else it times out on its own
            await http.delete(url, headers={**headers, "mcp-session-id": session})
    return response.status_code
