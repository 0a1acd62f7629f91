"""Authentication to OCI registries, as Docker's client does it.

A request goes out with what is already known for the registry (a cached bearer token, HTTP
basic once the registry asked for it, or nothing); on 401 the `WWW-Authenticate` challenge
says how to answer:
- `Basic realm=...`: again with the username and password;
- `Bearer realm=...,service=...`: a token from the realm for `repository:<repo>:pull` (or
  `pull,push`), asked with HTTP basic (username/password), with OAuth2's
  `grant_type=refresh_token` form (an identity token), or anonymously; kept until it expires.
A `registry_token` is used as the bearer token as it is. Tokens are cached per registry,
scope and credentials (a fingerprint of them), so callers with different credentials never
share a token. No secret ever reaches a message or a log line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass

import httpx2

from berth.common.credentials import RegistryCredentials
from berth.common.errors import BerthError, PermissionDenied, Unauthenticated, Unavailable
from berth.models.domain.reference import Reference

REGISTRY_UNAUTHORIZED = "REGISTRY_UNAUTHORIZED"
REGISTRY_UNAVAILABLE = "REGISTRY_UNAVAILABLE"

_TOKEN_MIN_LIFETIME_S = 60  # Docker's floor for a token that says less (or nothing)
_CHALLENGE_PARAM = re.compile(r'([\w-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


@dataclass(frozen=True)
class RegistryCall:
    """One operation on one repository, with its caller's credentials."""

    ref: Reference
    creds: RegistryCredentials
    push: bool

    @property
    def host(self) -> str:
        return self.ref.api_host

    @property
    def scope(self) -> str:
        return f"repository:{self.ref.repository}:{'pull,push' if self.push else 'pull'}"

    @property
    def what(self) -> str:
        return f"push to {self.ref.name}" if self.push else f"pull {self.ref.name}"

    @property
    def metadata(self) -> dict[str, str]:
        return {"registry": self.host, "reference": self.ref.name}


@dataclass(frozen=True)
class _Challenge:
    scheme: str  # "basic" or "bearer", lower-cased
    params: dict[str, str]


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic()


class RegistryAuthenticator:
    """The Authorization headers for registry calls, and the bearer tokens behind them."""

    def __init__(self, http: httpx2.AsyncClient) -> None:
        self._http = http
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._basic_hosts: set[str] = set()

    def known_auth(self, call: RegistryCall) -> str | None:
        """The Authorization header to send first, from what is known; None for none."""
        creds = call.creds
        if creds.registry_token:
            return f"Bearer {creds.registry_token}"
        token = self._cached_token(call)
        if token is not None:
            return f"Bearer {token}"
        if call.host in self._basic_hosts and creds.username and creds.password:
            return _basic(creds)
        return None

    async def answer(self, call: RegistryCall, response: httpx2.Response) -> str | None:
        """The Authorization header answering the challenge of 401 `response` (fetching a
        token when it asks for one), or None when there is no answer to give."""
        creds = call.creds
        challenge = _challenge(response)
        if challenge is None or creds.registry_token:
            return None
        if challenge.scheme == "basic":
            if not (creds.username and creds.password):
                return None
            self._basic_hosts.add(call.host)
            return _basic(creds)
        if challenge.scheme == "bearer":
            return f"Bearer {await self._fetch_token(call, challenge)}"
        return None

    # --- bearer tokens ---

    def _token_key(self, call: RegistryCall, scope: str) -> tuple[str, str, str]:
        creds = call.creds
        who = "\0".join((creds.username, creds.password, creds.identity_token))
        return call.host, scope, hashlib.sha256(who.encode()).hexdigest()

    def _cached_token(self, call: RegistryCall) -> str | None:
        scopes = [call.scope]
        if not call.push:  # a push token serves pulls of the same repository too
            scopes.append(RegistryCall(call.ref, call.creds, push=True).scope)
        now = time.monotonic()
        for scope in scopes:
            token = self._tokens.get(self._token_key(call, scope))
            if token is not None and token.expires_at > now:
                return token.value
        return None

    async def _fetch_token(self, call: RegistryCall, challenge: _Challenge) -> str:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise Unavailable(
                f"{call.what}: the registry {call.host} asked for a token without naming"
                " where to get it",
                reason=REGISTRY_UNAVAILABLE,
                metadata=call.metadata,
            )
        response = await self._token_request(call, realm, challenge.params.get("service", ""))
        if response.status_code in (401, 403):
            raise unauthenticated(call)
        if response.status_code != 200:
            raise Unavailable(
                f"{call.what}: the token service of registry {call.host} answered"
                f" {response.status_code}",
                reason=REGISTRY_UNAVAILABLE,
                metadata=call.metadata,
            )
        value, lifetime = _parse_token(response.content)
        if not value:
            raise Unavailable(
                f"{call.what}: the token service of registry {call.host} gave no token",
                reason=REGISTRY_UNAVAILABLE,
                metadata=call.metadata,
            )
        expires_at = time.monotonic() + max(lifetime, _TOKEN_MIN_LIFETIME_S)
        self._tokens[self._token_key(call, call.scope)] = _Token(value, expires_at)
        return value

    async def _token_request(self, call: RegistryCall, realm: str, service: str) -> httpx2.Response:
        creds = call.creds
        try:
            if creds.identity_token:  # OAuth2 refresh-token grant, as Docker does
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "service": service,
                    "scope": call.scope,
                    "client_id": "berth",
                }
                return await self._http.post(realm, data=form)
            params = {"service": service, "scope": call.scope}
            headers = {}
            if creds.username and creds.password:
                params["account"] = creds.username
                headers["Authorization"] = _basic(creds)
            return await self._http.get(realm, params=params, headers=headers)
        except httpx2.RequestError as error:
            raise unreachable(call, error) from None


def unauthenticated(call: RegistryCall, response: httpx2.Response | None = None) -> BerthError:
    """The error for credentials missing, refused or short of the scope, as the challenge
    of 401 `response` (when given) tells."""
    challenge = _challenge(response) if response is not None else None
    hidden = challenge is not None and challenge.params.get("error") == "insufficient_scope"
    if call.creds.anonymous:
        why = "the registry requires authentication (no credentials given)"
        if hidden and not call.push:  # registries such as Hub answer so for unknown names too
            why += ", or the model does not exist"
    elif hidden:
        return PermissionDenied(
            f"{call.what}: the credentials given are not allowed to"
            f" {'push to' if call.push else 'pull from'} this repository",
            reason=REGISTRY_UNAUTHORIZED,
            metadata={"registry": call.host},
        )
    else:
        why = "the registry refused the credentials given"
    return Unauthenticated(
        f"{call.what}: {why}", reason=REGISTRY_UNAUTHORIZED, metadata={"registry": call.host}
    )


def unreachable(call: RegistryCall, error: httpx2.RequestError) -> Unavailable:
    """The error for a registry (or its token service) that cannot be reached."""
    if isinstance(error, httpx2.TimeoutException):
        why = "it did not answer in time"
    elif isinstance(error, httpx2.ConnectError):
        why = f"cannot connect ({error or 'connection failed'})"
    else:
        why = f"the connection was lost ({error or type(error).__name__})"
    return Unavailable(
        f"{call.what}: registry {call.host} unavailable: {why}",
        reason=REGISTRY_UNAVAILABLE,
        metadata={"registry": call.host},
    )


def _basic(creds: RegistryCredentials) -> str:
    pair = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _challenge(response: httpx2.Response) -> _Challenge | None:
    """The first Basic or Bearer challenge of a 401, parameters unquoted."""
    for header in response.headers.get_list("www-authenticate"):
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() in ("basic", "bearer"):
            params = {
                key.lower(): value[1:-1].replace('\\"', '"') if value.startswith('"') else value
                for key, value in _CHALLENGE_PARAM.findall(rest)
            }
            return _Challenge(scheme.lower(), params)
    return None


def _parse_token(body: bytes) -> tuple[str, int]:
    """(token, lifetime in seconds) of a token service's JSON answer; ("", 0) if none."""
    try:
        found = json.loads(body)
    except ValueError:
        return "", 0
    if not isinstance(found, dict):
        return "", 0
    value = found.get("token") or found.get("access_token") or ""
    lifetime = found.get("expires_in")
    return str(value), lifetime if isinstance(lifetime, int) else 0
