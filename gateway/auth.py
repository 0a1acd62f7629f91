"""Bearer tokens and scopes for the gateway's TCP listeners.

The tokens file holds only SHA-256 digests of tokens, never tokens:
    {"tokens": [{"name": "ci", "sha256": "<hex>", "scopes": ["network:read"]}]}
`berth token create` writes entries and prints the token once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from berth.common.errors import PermissionDenied, Unauthenticated
from berth.common.jsonfile import read_json, write_json

SCOPES = (
    "network:read",
    "network:write",
    "models:read",
    "models:write",
    "mcp:read",
    "mcp:write",
    "admin",
)


def scopes_allowing(domain: str, access: str) -> frozenset[str]:
    """The scopes any one of which lets a caller use a method of `domain` with `access`."""
    if access == "admin":
        return frozenset({"admin"})
    if access == "write":
        return frozenset({f"{domain}:write", "admin"})
    return frozenset({f"{domain}:read", f"{domain}:write", "admin"})


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "berth_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    sha256: str
    scopes: frozenset[str]


class TokenBook:
    """The known tokens, by digest."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._by_digest = {e.sha256: e for e in entries}

    @classmethod
    def load(cls, path: Path | None) -> TokenBook:
        data = read_json(path, {"tokens": []}) if path else {"tokens": []}
        entries = []
        for item in data.get("tokens", []):
            unknown = set(item["scopes"]) - set(SCOPES)
            if unknown:
                raise ValueError(f"{path}: token {item['name']!r} has unknown scopes {unknown}")
            entries.append(TokenEntry(item["name"], item["sha256"], frozenset(item["scopes"])))
        return cls(entries)

    def identify(self, authorization: str | None) -> TokenEntry:
        """The entry of a `Bearer <token>` header value, or Unauthenticated."""
        if not authorization:
            raise Unauthenticated(
                "this listener needs a bearer token (metadata 'authorization: Bearer <token>')",
                reason="TOKEN_MISSING",
            )
        scheme, _, token = authorization.partition(" ")
        entry = self._by_digest.get(digest(token.strip())) if scheme.lower() == "bearer" else None
        if entry is None:
            raise Unauthenticated("the bearer token is not valid", reason="TOKEN_INVALID")
        return entry

    def authorize(self, authorization: str | None, domain: str, access: str, method: str) -> None:
        entry = self.identify(authorization)
        needed = scopes_allowing(domain, access)
        if not entry.scopes & needed:
            raise PermissionDenied(
                f"token {entry.name!r} may not call {method}: it needs one of "
                f"{', '.join(sorted(needed))}",
                reason="SCOPE_MISSING",
                metadata={"method": method, "needed": ",".join(sorted(needed))},
            )


class TokenFile:
    """The tokens file, re-read when it changes (checked at most once a second), so
    `berth token create` takes effect without restarting the gateway."""

    CHECK_INTERVAL_S = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._book = TokenBook([])
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")

    def book(self) -> TokenBook:
        now = time.monotonic()
        if now - self._checked >= self.CHECK_INTERVAL_S:
            self._checked = now
            self._reload_if_changed()
        return self._book

    def _reload_if_changed(self) -> None:
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._book = TokenBook.load(self.path if stamp else None)
            self._stamp = stamp


def add_token(path: Path, name: str, scopes: list[str]) -> str:
    """Create a token, store its digest in the tokens file (mode 0600), return the token."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
    data = read_json(path, {"tokens": []})
    if any(item["name"] == name for item in data["tokens"]):
        raise ValueError(f"a token named {name!r} exists already")
    token = new_token()
    data["tokens"].append({"name": name, "sha256": digest(token), "scopes": sorted(scopes)})
    write_json(path, data)
    return token


def remove_token(path: Path, name: str) -> None:
    data = read_json(path, {"tokens": []})
    kept = [item for item in data["tokens"] if item["name"] != name]
    if len(kept) == len(data["tokens"]):
        raise ValueError(f"no token named {name!r}")
    write_json(path, {"tokens": kept})


def list_tokens(path: Path) -> list[TokenEntry]:
    return [
        TokenEntry(item["name"], item["sha256"], frozenset(item["scopes"]))
        for item in read_json(path, {"tokens": []})["tokens"]
    ]
