"""Docker's registry token service, for tests: a registry configured with `auth.token` sends
clients here, and accepts the JWTs this signs.

    GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...]   (HTTP basic, optional)
    POST /token  grant_type=password (username, password)
                 | grant_type=refresh_token (refresh_token)   + service, scope, client_id

Known users get every action they ask for; a wrong password gets 401; anonymous callers get
`anonymous_actions` only (pull by default). A refresh token (Docker's identity token) comes
from `issue_refresh_token(user)`. Tokens are RS256 JWTs whose header carries the signing
certificate (`x5c`), which the registry verifies against `rootcertbundle` (`cert_path`).
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

SERVICE = "berth-test-registry"
ISSUER = "berth-test-token-issuer"
TOKEN_LIFETIME_S = 300


@dataclass(frozen=True)
class TokenRequest:
    """What one call to the token service asked, and whom it was answered for."""

    method: str
    user: str | None  # who was authenticated: None when anonymous or refused
    scopes: tuple[str, ...]
    status: int


@dataclass
class TokenServer:
    host: str
    port: int
    cert_path: Path
    users: dict[str, str]
    anonymous_actions: tuple[str, ...]
    service: str = SERVICE
    issuer: str = ISSUER
    requests: list[TokenRequest] = field(default_factory=list)
    _key: rsa.RSAPrivateKey | None = field(default=None, repr=False)
    _cert_der: bytes = field(default=b"", repr=False)
    _refresh_tokens: dict[str, str] = field(default_factory=dict, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def realm(self) -> str:
        return f"http://{self.host}:{self.port}/token"

    def issue_refresh_token(self, user: str) -> str:
        token = secrets.token_urlsafe(24)
        self._refresh_tokens[token] = user
        return token

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- answering ---

    def answer(
        self, method: str, account: str | None, secret: str | None, fields: dict[str, list[str]]
    ) -> tuple[int, dict[str, object]]:
        """(status, JSON body) for a token request; `account` None means no credentials."""
        user = self._authenticate(account, secret, fields)
        scopes = tuple(scope for value in fields.get("scope", []) for scope in value.split(" "))
        status = 401 if user is False else 200
        with self._lock:
            self.requests.append(TokenRequest(method, user or None, scopes, status))
        if user is False:
            return 401, {"details": "incorrect username or password"}
        access = [self._grant(scope, user is not None) for scope in scopes if scope]
        token = self._sign(user or "", [item for item in access if item])
        now = datetime.datetime.now(datetime.UTC).isoformat()
        body = {"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME_S}
        return 200, {**body, "issued_at": now}

    def _authenticate(
        self, account: str | None, secret: str | None, fields: dict[str, list[str]]
    ) -> str | bool | None:
        """The user's name, None for anonymous, False when the credentials are wrong."""
        grant = (fields.get("grant_type") or [""])[0]
        if grant == "refresh_token":
            return self._refresh_tokens.get((fields.get("refresh_token") or [""])[0], False)
        if account is None:
            return None
        known = self.users.get(account)
        ok = known is not None and secret is not None and secrets.compare_digest(known, secret)
        return account if ok else False

    def _grant(self, scope: str, authenticated: bool) -> dict[str, object] | None:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not name:
            return None
        wanted = [action for action in actions.split(",") if action]
        allowed = wanted if authenticated else [a for a in wanted if a in self.anonymous_actions]
        return {"type": kind, "name": name, "actions": allowed}

    def _sign(self, subject: str, access: list[dict[str, object]]) -> str:
        assert self._key is not None
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + TOKEN_LIFETIME_S,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header))}.{_b64url(json.dumps(claims))}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


def _b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _make_signing_cert(folder: Path) -> tuple[rsa.RSAPrivateKey, bytes, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth test token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = folder / "token-signer.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert.public_bytes(serialization.Encoding.DER), path


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            account, secret = self._basic()
            fields = parse_qs(urlsplit(self.path).query)
            self._reply(*server.answer("GET", account, secret, fields))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            fields = parse_qs(self.rfile.read(length).decode())
            account = secret = None
            if (fields.get("grant_type") or [""])[0] == "password":
                account = (fields.get("username") or [""])[0]
                secret = (fields.get("password") or [""])[0]
            self._reply(*server.answer("POST", account, secret, fields))

        def _basic(self) -> tuple[str | None, str | None]:
            header = self.headers.get("Authorization") or ""
            scheme, _, encoded = header.partition(" ")
            if scheme.lower() != "basic":
                return None, None
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                return "", ""
            return user, password

        def _reply(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # requests are recorded in server.requests instead

    return Handler


@contextmanager
def token_server(
    folder: Path,
    users: dict[str, str],
    *,
    anonymous_actions: tuple[str, ...] = ("pull",),
) -> Iterator[TokenServer]:
    """A running token service on 127.0.0.1 (a free port), stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert_der, cert_path = _make_signing_cert(folder)
    state = TokenServer("127.0.0.1", 0, cert_path, dict(users), anonymous_actions)
    state._key, state._cert_der = key, cert_der
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    http.daemon_threads = True
    state.port, state._server = int(http.server_address[1]), http
    thread = threading.Thread(target=http.serve_forever, name="token-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop()
        thread.join(timeout=10)
