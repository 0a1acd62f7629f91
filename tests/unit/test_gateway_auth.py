"""berth.gateway.auth: bearer tokens, scopes and the tokens file."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from berth.common.errors import Code, PermissionDenied, Unauthenticated
from berth.gateway import auth
from berth.gateway.auth import (
    TokenBook,
    TokenEntry,
    TokenFile,
    add_token,
    list_tokens,
    remove_token,
    scopes_allowing,
)

READ_TOKEN = "berth_read-token"
WRITE_TOKEN = "berth_write-token"
ADMIN_TOKEN = "berth_admin-token"
MODELS_TOKEN = "berth_models-token"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def book() -> TokenBook:
    return TokenBook(
        [
            TokenEntry("reader", sha(READ_TOKEN), frozenset({"network:read"})),
            TokenEntry("writer", sha(WRITE_TOKEN), frozenset({"network:write"})),
            TokenEntry("root", sha(ADMIN_TOKEN), frozenset({"admin"})),
            TokenEntry("models", sha(MODELS_TOKEN), frozenset({"models:read", "mcp:write"})),
        ]
    )


# ---- scopes ----------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["network", "models", "mcp"])
def test_scopes_allowing(domain: str) -> None:
    assert scopes_allowing(domain, "read") == {f"{domain}:read", f"{domain}:write", "admin"}
    assert scopes_allowing(domain, "write") == {f"{domain}:write", "admin"}
    assert scopes_allowing(domain, "admin") == {"admin"}


def test_every_allowing_scope_is_a_known_scope() -> None:
    for domain in ("network", "models", "mcp"):
        for access in ("read", "write", "admin"):
            assert scopes_allowing(domain, access) <= set(auth.SCOPES)


# ---- identify --------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, ""])
def test_missing_token_is_unauthenticated(book: TokenBook, header: str | None) -> None:
    with pytest.raises(Unauthenticated) as caught:
        book.identify(header)

    assert caught.value.code is Code.UNAUTHENTICATED
    assert caught.value.reason == "TOKEN_MISSING"
    assert "Bearer" in caught.value.message


@pytest.mark.parametrize(
    "header",
    [
        f"Basic {READ_TOKEN}",
        f"Token {READ_TOKEN}",
        READ_TOKEN,
        "Bearer berth_not-a-known-token",
        "Bearer ",
        "Bearer",
        f"Bearer {READ_TOKEN}x",
        f"Bearer {sha(READ_TOKEN)}",  # the digest itself is not a token
    ],
)
def test_wrong_scheme_or_token_is_invalid(book: TokenBook, header: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        book.identify(header)

    assert caught.value.reason == "TOKEN_INVALID"
    assert READ_TOKEN not in caught.value.message


@pytest.mark.parametrize("header", [f"Bearer {READ_TOKEN}", f"bearer {READ_TOKEN}"])
def test_valid_token_identifies_its_entry(book: TokenBook, header: str) -> None:
    entry = book.identify(header)

    assert entry.name == "reader"
    assert entry.scopes == {"network:read"}


# ---- authorize -------------------------------------------------------------------------


def test_read_token_may_read(book: TokenBook) -> None:
    book.authorize(
        f"Bearer {READ_TOKEN}", "network", "read", "/berth.network.v1.NetworkService/ListNetworks"
    )


def test_read_token_on_a_write_method_is_denied(book: TokenBook) -> None:
    method = "/berth.network.v1.NetworkService/CreateNetwork"

    with pytest.raises(PermissionDenied) as caught:
        book.authorize(f"Bearer {READ_TOKEN}", "network", "write", method)

    error = caught.value
    assert error.code is Code.PERMISSION_DENIED
    assert error.reason == "SCOPE_MISSING"
    assert error.metadata == {"method": method, "needed": "admin,network:write"}
    assert "reader" in error.message
    assert method in error.message
    assert READ_TOKEN not in error.message


def test_write_token_may_read_and_write_its_domain_only(book: TokenBook) -> None:
    header = f"Bearer {WRITE_TOKEN}"
    book.authorize(header, "network", "read", "/m")
    book.authorize(header, "network", "write", "/m")

    for domain in ("models", "mcp"):
        with pytest.raises(PermissionDenied):
            book.authorize(header, domain, "read", "/m")
    with pytest.raises(PermissionDenied):
        book.authorize(header, "network", "admin", "/m")


def test_scopes_of_one_domain_do_not_leak_to_another(book: TokenBook) -> None:
    header = f"Bearer {MODELS_TOKEN}"
    book.authorize(header, "models", "read", "/m")
    book.authorize(header, "mcp", "write", "/m")

    with pytest.raises(PermissionDenied):
        book.authorize(header, "models", "write", "/m")
    with pytest.raises(PermissionDenied):
        book.authorize(header, "network", "read", "/m")


@pytest.mark.parametrize("domain", ["network", "models", "mcp"])
@pytest.mark.parametrize("access", ["read", "write", "admin"])
def test_admin_passes_everything(book: TokenBook, domain: str, access: str) -> None:
    book.authorize(f"Bearer {ADMIN_TOKEN}", domain, access, "/m")


def test_authorize_checks_the_token_first(book: TokenBook) -> None:
    with pytest.raises(Unauthenticated) as caught:
        book.authorize(None, "network", "read", "/m")
    assert caught.value.reason == "TOKEN_MISSING"

    with pytest.raises(Unauthenticated) as caught:
        book.authorize("Bearer nope", "network", "read", "/m")
    assert caught.value.reason == "TOKEN_INVALID"


# ---- the tokens file -------------------------------------------------------------------


def test_add_token_stores_only_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tokens.json"

    token = add_token(path, "ci", ["network:read", "models:write"])

    assert token.startswith("berth_")
    assert len(token) > 30
    text = path.read_text()
    assert token not in text
    assert token.removeprefix("berth_") not in text
    assert json.loads(text) == {
        "tokens": [{"name": "ci", "sha256": sha(token), "scopes": ["models:write", "network:read"]}]
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_added_token_authenticates_with_its_scopes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = add_token(path, "ci", ["network:read"])

    book = TokenBook.load(path)

    assert book.identify(f"Bearer {token}").name == "ci"
    book.authorize(f"Bearer {token}", "network", "read", "/m")
    with pytest.raises(PermissionDenied):
        book.authorize(f"Bearer {token}", "network", "write", "/m")


def test_each_token_is_new(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    first = add_token(path, "a", ["admin"])
    second = add_token(path, "b", ["admin"])

    assert first != second
    assert [e.name for e in list_tokens(path)] == ["a", "b"]


def test_list_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    assert list_tokens(path) == []
    token = add_token(path, "ci", ["mcp:write", "network:read"])

    assert list_tokens(path) == [
        TokenEntry("ci", sha(token), frozenset({"mcp:write", "network:read"}))
    ]


def test_duplicate_name_is_refused_and_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "ci", ["network:read"])
    before = path.read_bytes()

    with pytest.raises(ValueError, match="'ci' exists already"):
        add_token(path, "ci", ["admin"])

    assert path.read_bytes() == before


def test_unknown_scopes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"

    with pytest.raises(ValueError, match="unknown scopes: network:delete, root"):
        add_token(path, "ci", ["network:read", "root", "network:delete"])

    assert not path.exists()


def test_remove_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    gone = add_token(path, "gone", ["admin"])
    kept = add_token(path, "kept", ["network:read"])

    remove_token(path, "gone")

    assert [e.name for e in list_tokens(path)] == ["kept"]
    book = TokenBook.load(path)
    book.identify(f"Bearer {kept}")
    with pytest.raises(Unauthenticated):
        book.identify(f"Bearer {gone}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_remove_unknown_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "ci", ["admin"])
    before = path.read_bytes()

    with pytest.raises(ValueError, match="no token named 'other'"):
        remove_token(path, "other")
    assert path.read_bytes() == before


def test_load_refuses_unknown_scopes_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps({"tokens": [{"name": "x", "sha256": sha("t"), "scopes": ["superuser"]}]})
    )

    with pytest.raises(ValueError, match="superuser"):
        TokenBook.load(path)


def test_load_without_a_file_knows_no_tokens(tmp_path: Path) -> None:
    for book in (TokenBook.load(None), TokenBook.load(tmp_path / "missing.json")):
        with pytest.raises(Unauthenticated):
            book.identify("Bearer anything")


# ---- TokenFile reloads -----------------------------------------------------------------


def test_token_file_picks_up_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TokenFile, "CHECK_INTERVAL_S", 0)
    path = tmp_path / "tokens.json"
    tokens = TokenFile(path)

    with pytest.raises(Unauthenticated):  # no file yet
        tokens.book().identify("Bearer whatever")

    first = add_token(path, "first", ["network:read"])
    assert tokens.book().identify(f"Bearer {first}").name == "first"

    second = add_token(path, "second", ["admin"])
    assert tokens.book().identify(f"Bearer {second}").name == "second"

    remove_token(path, "first")
    with pytest.raises(Unauthenticated):
        tokens.book().identify(f"Bearer {first}")

    path.unlink()
    with pytest.raises(Unauthenticated):
        tokens.book().identify(f"Bearer {second}")


def test_token_file_waits_for_its_check_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TokenFile, "CHECK_INTERVAL_S", 3600)
    path = tmp_path / "tokens.json"
    old = add_token(path, "old", ["admin"])
    tokens = TokenFile(path)
    assert tokens.book().identify(f"Bearer {old}").name == "old"

    new = add_token(path, "new", ["admin"])
    with pytest.raises(Unauthenticated):  # not checked again yet
        tokens.book().identify(f"Bearer {new}")

    monkeypatch.setattr(TokenFile, "CHECK_INTERVAL_S", 0)
    assert tokens.book().identify(f"Bearer {new}").name == "new"


def test_token_file_keeps_its_book_while_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TokenFile, "CHECK_INTERVAL_S", 0)
    path = tmp_path / "tokens.json"
    add_token(path, "ci", ["admin"])
    tokens = TokenFile(path)

    assert tokens.book() is tokens.book()
