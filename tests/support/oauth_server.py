"""A real OAuth 2.1 authorization server (authlib) and a real MCP server it protects, for
the OAuth tests.

The authorization server publishes RFC 8414 metadata, issues authorization codes with PKCE
(S256 required) to whoever asks (it approves at once: a test plays the browser by GETting
the authorization URL and following the redirect), refresh tokens (rotated), revokes tokens
(RFC 7009) and registers clients dynamically (RFC 7591, can be switched off). Token lifetime
is configurable, to test refresh. It counts what it saw (`events`).

The protected resource is the MCP SDK's own server over streamable HTTP, with a `whoami`
tool that answers which token (by serial number, never the token) was used. It checks
bearer tokens against the authorization server, publishes RFC 9728 metadata and answers 401
with `WWW-Authenticate: Bearer resource_metadata=...`.

Both listen on 127.0.0.1, each on a free port, in threads of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode

import uvicorn
from authlib.oauth2 import AuthorizationServer as _AuthorizationServer
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    JsonRequest,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

SCOPES = ["mcp:read", "mcp:write", "profile"]
AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]


# -- the model ------------------------------------------------------------------------------


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str = ""
    redirect_uris: list[str] = field(default_factory=list)
    token_endpoint_auth_method: str = "none"
    scope: str = ""
    grant_types: list[str] = field(default_factory=lambda: ["authorization_code", "refresh_token"])

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in (scope or "").split() if s in SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.client_secret) and secrets.compare_digest(
            self.client_secret, client_secret
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    code_challenge_method: str
    resource: str = ""
    auth_time: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_auth_time(self) -> int:
        return int(self.auth_time)

    def get_nonce(self) -> None:
        return None

    def is_expired(self) -> bool:
        return time.time() > self.auth_time + 300


@dataclass
class Token:
    serial: int
    client_id: str
    access_token: str
    refresh_token: str
    scope: str
    issued_at: float
    expires_in: int
    access_revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_revoked(self) -> bool:
        return self.refresh_revoked

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def get_user(self) -> str:
        return "tester"

    def get_client(self) -> Client:
        raise NotImplementedError

    def access_valid(self) -> bool:
        return not self.access_revoked and not self.is_expired()


@dataclass
class Store:
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    revoked: list[tuple[str, int]] = field(default_factory=list)  # (token kind, serial)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_access(self, value: str) -> Token | None:
        return next((t for t in self.tokens if t.access_token == value), None)

    def by_refresh(self, value: str) -> Token | None:
        return next((t for t in self.tokens if t.refresh_token == value), None)


# -- authlib, glued to Starlette -----------------------------------------------------------


class _Request(OAuth2Request):
    def __init__(self, method: str, url: str, headers: Any, query: dict[str, str], form: dict):
        super().__init__(method, url, headers=headers)
        self._query = query
        self._form = form
        self.payload = BasicOAuth2Payload({**query, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._query

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _JsonPayload:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


class _JsonRequest(JsonRequest):
    def __init__(self, method: str, url: str, headers: Any, data: dict[str, Any]) -> None:
        super().__init__(method, url, headers)
        self.payload = _JsonPayload(data)


class AuthorizationServer(_AuthorizationServer):
    def __init__(self, store: Store, settings: dict[str, Any]) -> None:
        super().__init__(scopes_supported=SCOPES)
        self.store = store
        self.settings = settings
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                lambda *a, **k: secrets.token_urlsafe(32),
                lambda *a, **k: secrets.token_urlsafe(32),
                lambda client, grant_type: int(settings["lifetime_s"]),
            ),
        )
        self.base_metadata: dict[str, Any] = {}

    @property
    def metadata(self) -> dict[str, Any]:
        """RFC 8414 metadata; without a registration endpoint while DCR is off."""
        found = dict(self.base_metadata)
        if not self.settings["dcr"]:
            found.pop("registration_endpoint", None)
        return found

    def query_client(self, client_id: str) -> Client | None:
        return self.store.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        with self.store.lock:
            self.store.tokens.append(
                Token(
                    serial=len(self.store.tokens) + 1,
                    client_id=request.client.client_id,
                    access_token=token["access_token"],
                    refresh_token=token.get("refresh_token", ""),
                    scope=token.get("scope", ""),
                    issued_at=time.time(),
                    expires_in=int(token["expires_in"]),
                )
            )

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request

    def create_json_request(self, request: _JsonRequest) -> _JsonRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        if isinstance(body, dict):
            return JSONResponse(body, status, headers=dict(headers))
        return Response(body, status, headers=dict(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = AUTH_METHODS

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        self.server.store.codes[code] = Code(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=data.get("redirect_uri", ""),
            scope=request.scope or "",
            code_challenge=data.get("code_challenge", ""),
            code_challenge_method=data.get("code_challenge_method", ""),
            resource=data.get("resource", ""),
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        found = self.server.store.codes.get(code)
        return found if found and found.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.store.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> str:
        return "tester"


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        token = self.server.store.by_refresh(refresh_token)
        return token if token and not token.refresh_revoked else None

    def authenticate_user(self, refresh_token: Token) -> str:
        return "tester"

    def revoke_old_credential(self, refresh_token: Token) -> None:
        refresh_token.refresh_revoked = True
        self.server.store.events["refresh_grant"] += 1
        if refresh_token.is_expired():  # the access token had run out before the refresh
            self.server.store.events["refresh_after_expiry"] += 1


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        store = self.server.store
        return store.by_refresh(token_string) or store.by_access(token_string)

    def revoke_token(self, token: Token, request: OAuth2Request) -> None:
        store = self.server.store
        kind = "refresh_token" if token.refresh_token == request.form["token"] else "access_token"
        if kind == "refresh_token":
            token.refresh_revoked = True
        token.access_revoked = True
        store.revoked.append((kind, token.serial))
        store.events["revocation"] += 1


class Registration(ClientRegistrationEndpoint):
    def authenticate_token(self, request: _JsonRequest) -> bool:
        return True  # open registration

    def get_server_metadata(self) -> dict[str, Any]:
        return self.server.metadata

    def resolve_public_key(self, request: _JsonRequest) -> None:
        return None

    def save_client(self, info: dict[str, Any], metadata: dict[str, Any], request: Any) -> Client:
        method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
        client = Client(
            client_id=info["client_id"],
            client_secret=info["client_secret"] if method != "none" else "",
            redirect_uris=list(metadata.get("redirect_uris", [])),
            token_endpoint_auth_method=method,
            scope=metadata.get("scope", ""),
        )
        self.server.store.clients[client.client_id] = client
        self.server.store.events["registration"] += 1
        return client


# -- the servers ------------------------------------------------------------------------------


@dataclass
class OAuthTestServer:
    """What a test gets: the URLs, the switches and what the servers saw."""

    issuer: str
    resource: str  # the protected MCP endpoint
    store: Store
    settings: dict[str, Any]

    @property
    def events(self) -> Counter[str]:
        return self.store.events

    def set(self, **switches: Any) -> None:
        """`dcr` (bool), `deny` (bool: answer access_denied), `lifetime_s` of new tokens."""
        self.settings.update(switches)

    def pre_register(self, redirect_uri: str, secret: str = "") -> Client:
        client = Client(
            client_id="pre-" + secrets.token_hex(4),
            client_secret=secret,
            redirect_uris=[redirect_uri],
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
        )
        self.store.clients[client.client_id] = client
        return client

    def token_serial(self, access_token: str) -> int | None:
        token = self.store.by_access(access_token)
        return token.serial if token else None

    def all_token_values(self) -> list[str]:
        return [v for t in self.store.tokens for v in (t.access_token, t.refresh_token) if v]


def _authorization_app(server: AuthorizationServer, test: OAuthTestServer) -> Starlette:
    store = test.store

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse(server.metadata)

    async def authorize(request: Request) -> Response:
        query = dict(request.query_params)
        store.events["authorization_request"] += 1
        if query.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request", "error_description": "PKCE S256"}, 400)
        oauth_request = _Request("GET", str(request.url), request.headers, query, {})
        try:
            grant = server.get_consent_grant(oauth_request)
        except OAuth2Error as error:
            return JSONResponse(dict(error.get_body()), error.status_code)
        if test.settings["deny"]:
            params = {"error": "access_denied", "state": query.get("state", "")}
            return RedirectResponse(f"{grant.redirect_uri}?{urlencode(params)}", 302)
        return server.create_authorization_response(oauth_request, grant_user="tester", grant=grant)

    async def token(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        store.events[f"token_{form.get('grant_type', '')}"] += 1
        oauth_request = _Request("POST", str(request.url), request.headers, {}, form)
        return server.create_token_response(oauth_request)

    async def revoke(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        oauth_request = _Request("POST", str(request.url), request.headers, {}, form)
        return server.create_endpoint_response("revocation", oauth_request)

    async def register(request: Request) -> Response:
        if not test.settings["dcr"]:
            return JSONResponse({"error": "invalid_request"}, 404)
        json_request = _JsonRequest("POST", str(request.url), request.headers, await request.json())
        return server.create_endpoint_response("client_registration", json_request)

    return Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", metadata),
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
            Route("/revoke", revoke, methods=["POST"]),
            Route("/register", register, methods=["POST"]),
        ]
    )


class _Verifier:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def verify_token(self, token: str) -> AccessToken | None:
        found = self.store.by_access(token)
        if found is None or not found.access_valid():
            return None
        return AccessToken(
            token=token,
            client_id=found.client_id,
            scopes=found.scope.split(),
            expires_at=int(found.issued_at + found.expires_in),
        )


def _resource_app(test: OAuthTestServer, resource_url: str) -> Starlette:
    mcp = MCPServer(
        "oauth-protected",
        token_verifier=_Verifier(test.store),
        auth=AuthSettings(
            issuer_url=test.issuer,
            resource_server_url=resource_url,
            required_scopes=["mcp:read"],
            validate_token_resource=False,
        ),
    )

    @mcp.tool()
    def whoami() -> str:
        """Which token this call carried (its serial number at the authorization server)."""
        token = get_access_token()
        serial = test.token_serial(token.token) if token else None
        return f"token #{serial}"

    return mcp.streamable_http_app(host="127.0.0.1")


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class _Thread:
    """uvicorn serving `app` on `sock` in a thread of its own."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.sock = sock
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test OAuth server did not start")
            time.sleep(0.02)

    def _run(self) -> None:
        with contextlib.suppress(BaseException):
            asyncio.run(self.server.serve(sockets=[self.sock]))

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@contextlib.contextmanager
def oauth_servers(lifetime_s: int = 3600, dcr: bool = True) -> Iterator[OAuthTestServer]:
    """The authorization server and the protected MCP server, running until the block ends."""
    as_sock, rs_sock = _listening_socket(), _listening_socket()
    issuer = f"http://127.0.0.1:{as_sock.getsockname()[1]}"
    resource = f"http://127.0.0.1:{rs_sock.getsockname()[1]}/mcp"
    store = Store()
    test = OAuthTestServer(
        issuer, resource, store, {"dcr": dcr, "deny": False, "lifetime_s": lifetime_s}
    )
    server = AuthorizationServer(store, test.settings)
    server.base_metadata = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "revocation_endpoint": f"{issuer}/revoke",
        "registration_endpoint": f"{issuer}/register",
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "client_secret_post",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "client_secret_post",
        ],
        "code_challenge_methods_supported": ["S256"],
    }
    server.register_grant(CodeGrant, [CodeChallenge(required=True)])
    server.register_grant(RefreshGrant)
    server.register_endpoint(Revocation)
    server.register_endpoint(Registration)
    threads = [_Thread(_authorization_app(server, test), as_sock)]
    try:
        threads.append(_Thread(_resource_app(test, resource), rs_sock))
        yield test
    finally:
        for thread in threads:
            thread.stop()
