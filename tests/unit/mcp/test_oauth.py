"""The OAuth app rules: apps from catalog entries, grants, refresh timing, redirects."""

from __future__ import annotations

import asyncio
import json

import pytest

from berth.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from berth.mcp.domain.oauth import (
    App,
    Grant,
    OAuthRequired,
    PendingAuthorizations,
    app_of_server,
    apps_of,
    check_client_available,
    dump_grant,
    parse_callback,
    parse_grant,
    refused,
    requested_scopes,
    view_of,
)

GITHUB = {"provider": "github", "scopes": ["repo"]}
ENTRIES = {
    "issues": {"remote": {"url": "https://api.example.com/mcp"}, "oauth": GITHUB},
    "gists": {"command": "gists-mcp", "oauth": {**GITHUB, "scopes": ["gist", "repo"]}},
    "notion": {
        "command": "notion-mcp",
        "oauth": {
            "provider": "notion",
            "authorizationServer": "https://auth.notion.example",
            "clientId": "berth-notion",
            "env": "NOTION_TOKEN",
        },
    },
    "time": {"command": "mcp-server-time"},
    "search": {"remote": {"url": "https://search.example/mcp"}},
}


def test_apps_come_from_the_entries_naming_them() -> None:
    apps = apps_of(ENTRIES, {})
    assert list(apps) == ["github", "notion"]
    github = apps["github"]
    assert github.servers == ("gists", "issues")
    assert github.scopes == ("gist", "repo")  # the union, in the entries' order
    assert github.resource == "https://api.example.com/mcp"
    notion = apps["notion"]
    assert (notion.issuer, notion.client_id, notion.env, notion.resource) == (
        "https://auth.notion.example",
        "berth-notion",
        "NOTION_TOKEN",
        "",
    )
    assert (notion.secret, notion.provider) == ("oauth.notion", "oauth/notion")


def test_a_remote_server_that_answered_401_is_an_app_of_its_own() -> None:
    seen = {"search": "https://search.example/mcp", "time": "x", "gone": "https://gone/mcp"}
    apps = apps_of(ENTRIES, seen)
    assert apps["search"] == App("search", servers=("search",), resource=seen["search"])
    # Only remote servers still in a catalog count; stdio servers never answer 401.
    assert "time" not in apps and "gone" not in apps
    assert app_of_server("search", ENTRIES["search"]) == "search"
    assert app_of_server("issues", ENTRIES["issues"]) == "github"


def test_scopes_asked_for_replace_the_declared_ones() -> None:
    app = apps_of(ENTRIES, {})["github"]
    assert requested_scopes(app, []) == ("gist", "repo")
    assert requested_scopes(app, ["repo", "read:org", "repo", ""]) == ("repo", "read:org")


def test_a_grant_survives_the_secret_store_as_json() -> None:
    grant = Grant(
        access_token="at-1",
        refresh_token="rt-1",
        expires_at=2000.0,
        issued_at=1000.0,
        scopes=("repo",),
        issuer="https://auth.example",
        client={"client_id": "c1", "client_secret": "s1"},
        dynamic=True,
        metadata={"issuer": "https://auth.example", "token_endpoint": "https://auth/token"},
        resource="https://api.example.com/mcp",
    )
    value = dump_grant(grant)
    assert json.loads(value)["expires_at"] == 2000.0
    assert parse_grant(value) == grant
    assert "at-1" not in repr(grant) and "rt-1" not in repr(grant) and "s1" not in repr(grant)


def test_a_value_that_is_not_a_grant_is_a_token_set_by_hand() -> None:
    grant = parse_grant("ghp_handmade\n")
    assert grant.manual and grant.access_token == "ghp_handmade"
    assert grant.usable(now=1e12) and not grant.refreshable and not grant.refresh_due(1e12)
    assert grant.expire_time() is None
    assert dump_grant(grant) == "ghp_handmade"
    assert parse_grant('{"not": "a grant"}').manual


@pytest.mark.parametrize(
    ("lifetime", "refreshed_after"),
    [
        (3600, 3600 - 360),  # a tenth of an hour before expiry
        (300, 300 - 60),  # a minute before
        (30, 15),  # half-way through a short life
    ],
)
def test_tokens_are_refreshed_before_they_expire(lifetime: int, refreshed_after: int) -> None:
    grant = Grant(access_token="a", refresh_token="r", issued_at=0.0, expires_at=float(lifetime))
    assert grant.refresh_at() == refreshed_after
    assert not grant.refresh_due(refreshed_after - 1)
    assert grant.refresh_due(refreshed_after + 1)
    assert grant.refresh_due(lifetime + 10)  # expired: still refreshable


def test_a_grant_of_unknown_age_is_refreshed_once_it_expired() -> None:
    grant = Grant(access_token="a", refresh_token="r", expires_at=100.0)
    assert grant.refresh_at() == 100.0
    assert not grant.refresh_due(99.0) and grant.refresh_due(101.0)


def test_without_refresh_token_or_expiry_nothing_is_refreshed() -> None:
    no_refresh = Grant(access_token="a", issued_at=0.0, expires_at=100.0)
    assert not no_refresh.refresh_due(99.0) and no_refresh.refresh_at() is None
    assert no_refresh.usable(99.0) and not no_refresh.usable(100.0)
    no_expiry = Grant(access_token="a", refresh_token="r")
    assert not no_expiry.refresh_due(1e12) and no_expiry.usable(1e12)
    assert no_expiry.refresh_at() is None


def test_a_token_response_updates_the_grant() -> None:
    grant = Grant(access_token="a", refresh_token="r", scopes=("repo",), issued_at=0, expires_at=10)
    renewed = grant.with_token("b", "", 60, "", now=100.0)
    assert (renewed.access_token, renewed.refresh_token) == ("b", "r")  # refresh token kept
    assert (renewed.issued_at, renewed.expires_at, renewed.scopes) == (100.0, 160.0, ("repo",))
    assert grant.with_token("c", "r2", None, "repo gist", 5.0).expires_at is None


def test_the_listed_app_shows_the_granted_scopes_and_expiry() -> None:
    app = apps_of(ENTRIES, {})["github"]
    assert not view_of(app, None, 0).authorized
    assert view_of(app, None, 0).scopes == ("gist", "repo")
    grant = Grant(access_token="a", expires_at=100.0, scopes=("repo",), issuer="https://i")
    view = view_of(app, grant, 50.0)
    assert view.authorized and view.scopes == ("repo",) and view.authorization_server == "https://i"
    assert view.expire_time is not None and view.expire_time.timestamp() == 100.0
    assert not view_of(app, grant, 100.0).authorized  # expired, nothing to refresh it with


def test_without_dynamic_registration_a_client_id_is_needed() -> None:
    apps = apps_of(ENTRIES, {})
    with pytest.raises(FailedPrecondition) as caught:
        check_client_available(apps["github"], dynamic_registration=False, reusable_client=False)
    assert caught.value.reason == "OAUTH_CLIENT_REQUIRED"
    assert "oauth.clientId" in caught.value.message and "oauth-dcr" in caught.value.message
    check_client_available(apps["notion"], dynamic_registration=False, reusable_client=False)
    check_client_available(apps["github"], dynamic_registration=False, reusable_client=True)
    check_client_available(apps["github"], dynamic_registration=True, reusable_client=False)


def test_redirects_are_read_and_refusals_named() -> None:
    callback = parse_callback("http://127.0.0.1:5/callback?code=c0de&state=s1&iss=https%3A%2F%2Fi")
    assert (callback.state, callback.code, callback.iss) == ("s1", "c0de", "https://i")
    assert "c0de" not in repr(callback)
    denied = parse_callback("http://x/callback?error=access_denied&state=s1")
    assert isinstance(refused("github", denied), PermissionDenied)
    other = parse_callback("http://x/callback?error=invalid_scope&error_description=no&state=s")
    error = refused("github", other)
    assert isinstance(error, FailedPrecondition) and "invalid_scope: no" in error.message
    for url in ("http://x/callback?code=c", "http://x/callback?state=s", "not a url"):
        with pytest.raises(InvalidArgument):
            parse_callback(url)


def test_oauth_required_says_how_to_authorize() -> None:
    error = OAuthRequired("github", "api.example.com answered 401")
    assert "berth mcp oauth authorize github" in str(error)
    assert error.reason == "OAUTH_REQUIRED"


async def test_a_pending_authorization_receives_its_redirect() -> None:
    pending = PendingAuthorizations()
    waiting = pending.open("github", "s1", "http://127.0.0.1:5/callback", expires_at=1e12)
    with pytest.raises(NotFound):
        pending.deliver(parse_callback("http://x/callback?code=c&state=unknown"))
    pending.deliver(parse_callback("http://x/callback?code=c&state=s1"))
    assert (await pending.wait(waiting, now=0.0)).code == "c"
    with pytest.raises(NotFound):  # a redirect is used once
        pending.deliver(parse_callback("http://x/callback?code=c&state=s1"))
    pending.close(waiting, RuntimeError("done"))
    assert len(pending) == 0


async def test_a_pending_authorization_expires() -> None:
    pending = PendingAuthorizations()
    loop = asyncio.get_running_loop()
    waiting = pending.open("github", "s1", "http://x/callback", expires_at=loop.time() + 0.05)
    with pytest.raises(DeadlineExceeded):
        await pending.wait(waiting, now=loop.time())
