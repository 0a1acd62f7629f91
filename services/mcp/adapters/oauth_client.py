"""berth's OAuth client: the MCP SDK's OAuthClientProvider with berth's storage and rules,
and the few direct calls the SDK's provider does not make (an issuer named by a catalog
entry, refresh ahead of expiry, RFC 7009 revocation).

The SDK's provider does discovery (RFC 9728 resource metadata, RFC 8414/OIDC authorization
server metadata), RFC 7591 registration, PKCE and the token exchange once a server answers
401. berth adds:
- storage: the tokens live in berth's secret store (GrantStorage over the broker's
  load/save), or in a DraftStorage while an authorization runs, committed once it succeeds;
- scopes: `--scopes` or the catalog's scopes win over the ones the server suggests;
- without a person (a server's connection in the gateway), a 401 or insufficient_scope
  403 is never answered by a new authorization: the token is refreshed once if it can be,
  else the request fails with OAuthRequired, whose text says to run
  `berth mcp oauth authorize APP`.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import httpx2
from mcp.client.auth import OAuthClientProvider, PKCEParameters
from mcp.client.auth.oauth2 import check_registration_usable
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    create_client_registration_request,
    create_oauth_metadata_request,
    extract_field_from_www_auth,
    handle_auth_metadata_response,
    handle_registration_response,
    handle_token_response_scopes,
    validate_authorization_response_iss,
    validate_metadata_issuer,
)
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
)
from pydantic import ValidationError

from berth.common.errors import FailedPrecondition
from berth.mcp.domain.oauth import Grant, OAuthRequired

CLIENT_NAME = "berth"
HTTP_TIMEOUT_S = 30.0
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

RedirectHandler = Callable[[str], Awaitable[None]]
CallbackHandler = Callable[[], Awaitable[AuthorizationCodeResult]]
# Runs before every request a provider signs (berth refreshes ahead of expiry there).
Prepare = Callable[["BerthOAuthProvider"], Awaitable[None]]
# After a 401 without a person: refreshes the token if it can; True when it did.
Recover = Callable[["BerthOAuthProvider"], Awaitable[bool]]
# Told of a Bearer challenge nobody could answer (berth remembers the server needs OAuth).
Challenged = Callable[[httpx2.Response], None]


class RefreshRefused(Exception):
    """The authorization server refused the refresh token (it is no longer valid)."""


def client_metadata(redirect_uri: str, scope: str | None = None) -> OAuthClientMetadata:
    """What berth registers as: a public native client using PKCE on a loopback redirect."""
    return OAuthClientMetadata(
        redirect_uris=[redirect_uri],  # type: ignore[list-item]  # pydantic parses it
        client_name=CLIENT_NAME,
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope=scope,
    )


def token_of(grant: Grant, now: float) -> OAuthToken:
    expires_in = None
    if grant.expires_at is not None and not grant.manual:
        expires_in = max(int(grant.expires_at - now), 0)
    return OAuthToken(
        access_token=grant.access_token,
        refresh_token=grant.refresh_token or None,
        expires_in=expires_in,
        scope=" ".join(grant.scopes) or None,
    )


def client_of(grant: Grant | None) -> OAuthClientInformationFull | None:
    if grant is None or not grant.client:
        return None
    try:
        return OAuthClientInformationFull.model_validate(dict(grant.client))
    except ValidationError:
        return None


def metadata_of(grant: Grant | None) -> OAuthMetadata | None:
    if grant is None or not grant.metadata:
        return None
    try:
        return OAuthMetadata.model_validate(dict(grant.metadata))
    except ValidationError:
        return None


def dumped(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(mode="json", exclude_none=True))


# -- storage ----------------------------------------------------------------------------


class DraftStorage:
    """TokenStorage of an authorization in progress; berth commits it once it succeeded."""

    def __init__(self, client: OAuthClientInformationFull | None = None) -> None:
        self.client = client
        self.tokens: OAuthToken | None = None
        self.registered = False  # the flow registered (or named) a client itself
        self.received_at = 0.0

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.received_at = time.time()

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info
        self.registered = True


class GrantStorage:
    """TokenStorage over an app's grant in the secret store (`load`, and `change` applying
    a function to the stored grant atomically)."""

    def __init__(
        self,
        load: Callable[[], Awaitable[Grant | None]],
        change: Callable[[Callable[[Grant | None], Grant | None]], Awaitable[Grant | None]],
    ) -> None:
        self._load = load
        self._change = change

    async def get_tokens(self) -> OAuthToken | None:
        grant = await self._load()
        return token_of(grant, time.time()) if grant else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        now = time.time()

        def update(grant: Grant | None) -> Grant | None:
            if grant is None:
                return None  # revoked meanwhile: do not bring it back
            return grant.with_token(
                tokens.access_token,
                tokens.refresh_token or "",
                tokens.expires_in,
                tokens.scope or "",
                now,
            )

        await self._change(update)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return client_of(await self._load())

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        def update(grant: Grant | None) -> Grant | None:
            if grant is None:
                return None
            return replace(grant, client=dumped(client_info))

        await self._change(update)


# -- the provider -----------------------------------------------------------------------


def bearer_challenge(response: httpx2.Response) -> bool:
    """A 401, or a 403 asking for more scope, with a Bearer challenge."""
    challenge = response.headers.get("WWW-Authenticate", "")
    if not challenge.lower().startswith("bearer"):
        return False
    if response.status_code == 401:
        return True
    return (
        response.status_code == 403
        and extract_field_from_www_auth(response, "error") == "insufficient_scope"
    )


def _why(response: httpx2.Response) -> str:
    if response.status_code == 403:
        wanted = extract_field_from_www_auth(response, "scope")
        return f"the server asks for the scopes {wanted}" if wanted else "more scopes needed"
    return f"{response.request.url.host} answered {response.status_code}"


class BerthOAuthProvider(OAuthClientProvider):
    """The SDK's OAuth client (an httpx2.Auth) as berth uses it: interactive when given
    redirect and callback handlers (an authorization), else a server connection's signer
    that never starts an authorization by itself."""

    def __init__(
        self,
        server_url: str,
        metadata: OAuthClientMetadata,
        storage: Any,
        *,
        app: str,
        redirect_handler: RedirectHandler | None = None,
        callback_handler: CallbackHandler | None = None,
        scope: str | None = None,
        prepare: Prepare | None = None,
        recover: Recover | None = None,
        on_challenge: Challenged | None = None,
    ) -> None:
        super().__init__(server_url, metadata, storage, redirect_handler, callback_handler)
        self.app = app
        self._scope = scope
        self._prepare = prepare
        self._recover = recover
        self._on_challenge = on_challenge

    @property
    def interactive(self) -> bool:
        return self.context.redirect_handler is not None

    def use_grant(self, grant: Grant | None, now: float) -> None:
        """Makes the SDK's context hold `grant` (berth may have refreshed it meanwhile)."""
        context = self.context
        if grant is None:
            context.current_tokens = None
            context.token_expiry_time = None
            return
        context.current_tokens = token_of(grant, now)
        context.token_expiry_time = None if grant.manual else grant.expires_at
        context.client_info = client_of(grant) or context.client_info
        context.oauth_metadata = context.oauth_metadata or metadata_of(grant)

    async def _perform_authorization(self) -> httpx2.Request:
        # SDK internal: the only point between its scope selection and the authorization
        # request, where the scopes berth was asked for replace the ones it selected.
        if self._scope:
            self.context.client_metadata.scope = self._scope
        return await super()._perform_authorization()

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        if self._prepare is not None:
            await self._prepare(self)
        flow = super().async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                if (
                    outgoing is request
                    and not self.interactive
                    and response.status_code
                    in (
                        401,
                        403,
                    )
                ):
                    if not bearer_challenge(response):
                        return  # no OAuth challenge: the caller gets the answer as it is
                    break
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        finally:
            await flow.aclose()
        # Refused, and no person to ask: refresh once, else OAuthRequired.
        if response.status_code == 401 and await self._refreshed(request):
            response = yield request
            if not bearer_challenge(response):
                return
        if self._on_challenge is not None:
            self._on_challenge(response)
        raise OAuthRequired(self.app, _why(response))

    async def _refreshed(self, request: httpx2.Request) -> bool:
        """Whether `recover` got a new token; `request` then carries it."""
        if self._recover is None or not await self._recover(self):
            return False
        tokens = self.context.current_tokens
        if tokens is None:
            return False
        request.headers["Authorization"] = f"Bearer {tokens.access_token}"
        return True


# -- direct calls -----------------------------------------------------------------------


def _client_auth(
    client: OAuthClientInformationFull | None, data: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The form and headers of a token or revocation request, with the client's credentials
    as its registration says (RFC 6749 §2.3.1)."""
    headers = dict(FORM)
    if client is None:
        return data, headers
    method = client.token_endpoint_auth_method
    if method == "client_secret_basic" and client.client_secret:
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return data, headers
    data = {**data, "client_id": client.client_id}
    if method == "client_secret_post" and client.client_secret:
        data["client_secret"] = client.client_secret
    return data, headers


def token_endpoint(grant: Grant) -> str:
    """The grant's token endpoint; without metadata, /token at the resource's origin (as
    the SDK falls back to)."""
    metadata = metadata_of(grant)
    if metadata is not None:
        return str(metadata.token_endpoint)
    parts = urlsplit(grant.resource or grant.issuer)
    return urljoin(f"{parts.scheme}://{parts.netloc}", "/token")


async def refresh(http: httpx2.AsyncClient, grant: Grant) -> OAuthToken:
    """A new token for the grant's refresh token; RefreshRefused when the server refuses it,
    httpx2.HTTPError when it cannot be reached."""
    data = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
    if grant.resource:
        data["resource"] = grant.resource
    form, headers = _client_auth(client_of(grant), data)
    response = await http.post(token_endpoint(grant), data=form, headers=headers)
    if response.status_code in (400, 401):
        raise RefreshRefused(f"the token endpoint answered {response.status_code}")
    response.raise_for_status()
    return await handle_token_response_scopes(response)


async def revoke(http: httpx2.AsyncClient, grant: Grant) -> list[str]:
    """RFC 7009: revokes the refresh token, then the access token, where the authorization
    server advertises a revocation endpoint; the token types it confirmed revoked."""
    metadata = metadata_of(grant)
    if grant.manual or metadata is None or metadata.revocation_endpoint is None:
        return []
    revoked = []
    for kind, token in (
        ("refresh_token", grant.refresh_token),
        ("access_token", grant.access_token),
    ):
        if not token:
            continue
        form, headers = _client_auth(client_of(grant), {"token": token, "token_type_hint": kind})
        response = await http.post(str(metadata.revocation_endpoint), data=form, headers=headers)
        if response.status_code == 200:
            revoked.append(kind)
    return revoked


async def issuer_metadata(http: httpx2.AsyncClient, issuer: str) -> OAuthMetadata:
    """RFC 8414 (or OIDC) metadata of the authorization server `issuer`."""
    for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, issuer):
        response = await http.send(create_oauth_metadata_request(url))
        found, metadata = await handle_auth_metadata_response(response)
        if not found:
            break
        if metadata is not None:
            validate_metadata_issuer(metadata, _issuer_as_named(str(metadata.issuer), issuer))
            return metadata
    raise FailedPrecondition(
        f"no authorization server metadata for the issuer {issuer}",
        reason="OAUTH_DISCOVERY_FAILED",
        metadata={"issuer": issuer},
    )


def _issuer_as_named(found: str, issuer: str) -> str:
    """`found` when it names `issuer` (a root issuer may carry a trailing slash, as pydantic
    writes it); else `issuer`, which then fails the SDK's check (RFC 8414 §3.3)."""
    return found if found.rstrip("/") == issuer.rstrip("/") else issuer


async def register(
    http: httpx2.AsyncClient, metadata: OAuthMetadata, wanted: OAuthClientMetadata
) -> OAuthClientInformationFull:
    """RFC 7591 dynamic registration at the authorization server."""
    base = f"{urlsplit(str(metadata.issuer)).scheme}://{urlsplit(str(metadata.issuer)).netloc}"
    response = await http.send(create_client_registration_request(metadata, wanted, base))
    client = await handle_registration_response(response)
    check_registration_usable(client)
    client.issuer = str(metadata.issuer)
    return client


async def authorize_at_issuer(
    http: httpx2.AsyncClient,
    metadata: OAuthMetadata,
    client: OAuthClientInformationFull,
    redirect_uri: str,
    scope: str | None,
    redirect_handler: RedirectHandler,
    callback_handler: CallbackHandler,
) -> OAuthToken:
    """Authorization code with PKCE straight at an authorization server (no protected
    resource to start from: a stdio server's token)."""
    pkce = PKCEParameters.generate()
    state = secrets.token_urlsafe(32)
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": pkce.code_challenge,
        "code_challenge_method": "S256",
    }
    if scope:
        params["scope"] = scope
    await redirect_handler(f"{metadata.authorization_endpoint}?{urlencode(params)}")
    result = await callback_handler()
    if result.state is None or not secrets.compare_digest(result.state, state):
        raise FailedPrecondition("the redirect's state does not match", reason="OAUTH_STATE")
    validate_authorization_response_iss(result.iss, metadata)
    data = {
        "grant_type": "authorization_code",
        "code": result.code,
        "redirect_uri": redirect_uri,
        "code_verifier": pkce.code_verifier,
    }
    form, headers = _client_auth(client, data)
    response = await http.post(str(metadata.token_endpoint), data=form, headers=headers)
    if response.status_code not in (200, 201):
        raise FailedPrecondition(
            f"the token endpoint refused the authorization code ({response.status_code})",
            reason="OAUTH_TOKEN_EXCHANGE_FAILED",
        )
    return await handle_token_response_scopes(response)
