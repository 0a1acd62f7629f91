"""`berth mcp oauth` against the real berth stack, a real authorization server (authlib) and
a real MCP server it protects (tests.support.oauth_server).

The test plays the user's browser: it reads the URL `oauth authorize` prints, GETs it (the
authorization server approves at once) and follows the redirect to berth-mcpd's loopback
listener.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx2
import pytest

from berth.api.mcp.v1 import oauth_service_pb2 as pb
from berth.api.mcp.v1 import oauth_service_pb2_grpc as rpc
from tests.integration.mcp.test_catalog_service import berth, unique
from tests.support.oauth_server import OAuthTestServer, Token, oauth_servers
from tests.support.processes import BIN
from tests.support.stack import Stack

LIFETIME_S = 3600
PROBE = Path(__file__).resolve().parents[2] / "fixtures" / "probe_server.py"


@pytest.fixture(scope="module")
def oauth_server() -> Iterator[OAuthTestServer]:
    with oauth_servers(lifetime_s=LIFETIME_S) as server:
        yield server


@dataclass(frozen=True)
class Protected:
    """A catalog with one remote server behind OAuth app `app`."""

    catalog: str
    server: str
    app: str


@pytest.fixture
def protected(stack: Stack, oauth_server: OAuthTestServer, tmp_path: Path) -> Iterator[Protected]:
    """A remote server: the protected resource itself."""
    with protected_server(
        stack,
        oauth_server,
        tmp_path,
        lambda app: (
            f"remote: {{url: {oauth_server.resource}}}\n"
            f"    oauth: {{provider: {app}, scopes: [mcp:read]}}"
        ),
    ) as found:
        yield found


@pytest.fixture
def protected_stdio(
    stack: Stack, oauth_server: OAuthTestServer, tmp_path: Path
) -> Iterator[Protected]:
    """The probe server (stdio), with its token in PROBE_TOKEN."""
    with protected_server(
        stack,
        oauth_server,
        tmp_path,
        lambda app: (
            f"command: {sys.executable}\n"
            f"    args: ['{PROBE}']\n"
            f"    oauth: {{provider: {app}, authorizationServer: '{oauth_server.issuer}', "
            "env: PROBE_TOKEN}"
        ),
    ) as found:
        yield found


@contextlib.contextmanager
def protected_server(
    stack: Stack, oauth_server: OAuthTestServer, tmp_path: Path, entry: Callable[[str], str]
) -> Iterator[Protected]:
    """A catalog with one server whose `entry` (lines, given the app's name) names an app."""
    found = Protected(unique("oauth-cat"), unique("prot"), unique("app"))
    source = tmp_path / "catalog.yaml"
    source.write_text(
        f"name: {found.catalog}\nservers:\n  {found.server}:\n    {entry(found.app)}\n"
    )
    imported = berth(stack, "mcp", "catalog", "import", str(source))
    assert imported.returncode == 0, imported.stderr
    try:
        yield found
    finally:
        oauth_server.set(deny=False, lifetime_s=LIFETIME_S)
        berth(stack, "mcp", "oauth", "revoke", found.app)
        berth(stack, "mcp", "server", "disable", found.server)
        berth(stack, "mcp", "catalog", "rm", found.catalog)


# -- the user's side ----------------------------------------------------------------------


@dataclass
class Authorization:
    result: subprocess.CompletedProcess[str]
    page: httpx2.Response | None  # what the browser showed after the redirect


def play_browser(url: str) -> httpx2.Response:
    """What a browser does: open the URL, follow the redirect back to the loopback."""
    with httpx2.Client(timeout=60) as http:
        at_server = http.get(url)
        assert at_server.status_code == 302, at_server.text
        return http.get(at_server.headers["location"])


def authorize(stack: Stack, app: str, *args: str, tcp: bool = False) -> Authorization:
    """Runs `berth mcp oauth authorize APP`, opening the URL it prints; over the socket, or
    over TCP (TLS and a write token) when `tcp`."""
    env = {**os.environ, "BERTH_HOST": f"unix://{stack.socket}", "PYTHONUNBUFFERED": "1"}
    if tcp:
        env["BERTH_HOST"] = f"tcp://localhost:{stack.tcp_port}"
        env["BERTH_TLS_CA"] = str(stack.tls.ca)
        env["BERTH_TOKEN"] = stack.tokens["mcp-write"]
    process = subprocess.Popen(
        [str(BIN / "berth"), "mcp", "oauth", "authorize", app, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    assert process.stdout is not None
    url = _printed_url(process, lines)
    page = play_browser(url) if url else None
    out, err = process.communicate(timeout=60)
    result = subprocess.CompletedProcess(
        process.args, process.returncode, "".join(lines) + out, err
    )
    return Authorization(result, page)


def _printed_url(process: subprocess.Popen[str], lines: list[str]) -> str:
    """The URL the command prints, or "" when it ended without one."""
    found: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.strip().startswith("http"):
                found.append(line.strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    return found[0] if found else ""


def apps(stack: Stack) -> dict[str, dict]:
    listed = berth(stack, "mcp", "oauth", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    return {app["name"]: app for app in json.loads(listed.stdout)}


def call_whoami(stack: Stack, server: str) -> int:
    """The serial number of the token the protected server saw."""
    called = berth(stack, "mcp", "tools", "call", "whoami", "--server", server)
    assert called.returncode == 0, called.stdout + called.stderr
    match = re.search(r"token #(\d+)", called.stdout)
    assert match, called.stdout
    return int(match.group(1))


# -- the tests ----------------------------------------------------------------------------


def test_an_app_is_listed_then_authorized_through_the_loopback(
    stack: Stack, oauth_server: OAuthTestServer, protected: Protected
) -> None:
    before = apps(stack)[protected.app]
    assert before["authorized"] is False
    assert before["servers"] == [protected.server] and before["scopes"] == ["mcp:read"]
    assert before["provider"] == f"oauth/{protected.app}"
    table = berth(stack, "mcp", "oauth", "ls").stdout
    row = next(line.split() for line in table.splitlines() if line.startswith(protected.app))
    assert row[:3] == [protected.app, "no", "mcp:read"]

    done = authorize(stack, protected.app)
    assert done.result.returncode == 0, done.result.stderr
    assert f"Authorized {protected.app} (scopes: mcp:read)" in done.result.stdout
    assert done.page is not None and done.page.status_code == 200
    assert "You can close this window" in done.page.text

    after = apps(stack)[protected.app]
    assert after["authorized"] is True and after["scopes"] == ["mcp:read"]
    assert after["authorization_server"].rstrip("/") == oauth_server.issuer
    assert after["dynamic_client"] is True
    expiry = after["expire_time"]
    assert abs(_epoch(expiry) - (time.time() + LIFETIME_S)) < 120
    table = berth(stack, "mcp", "oauth", "ls").stdout
    row = next(line.split() for line in table.splitlines() if line.startswith(protected.app))
    assert row[1:3] == ["yes", "mcp:read"]


def test_over_tcp_the_cli_receives_the_redirect_itself(
    stack: Stack, oauth_server: OAuthTestServer, protected: Protected
) -> None:
    done = authorize(stack, protected.app, "--scopes", "mcp:read profile", tcp=True)
    assert done.result.returncode == 0, done.result.stderr
    assert f"Authorized {protected.app} (scopes: mcp:read, profile)" in done.result.stdout
    assert done.page is not None and done.page.status_code == 200
    assert "Authorization complete" in done.page.text  # the CLI's page, not the daemon's
    assert apps(stack)[protected.app]["scopes"] == ["mcp:read", "profile"]


def test_a_tool_of_the_protected_server_works_once_authorized(
    stack: Stack, oauth_server: OAuthTestServer, protected: Protected
) -> None:
    enabled = berth(stack, "mcp", "server", "enable", protected.server)
    assert enabled.returncode == 0, enabled.stderr
    refused = berth(stack, "mcp", "tools", "call", "whoami", "--server", protected.server)
    assert refused.returncode != 0
    assert f"berth mcp oauth authorize {protected.app}" in refused.stderr
    assert authorize(stack, protected.app).result.returncode == 0
    assert call_whoami(stack, protected.server) > 0


def test_tokens_are_refreshed_before_they_expire(
    stack: Stack, oauth_server: OAuthTestServer, protected: Protected
) -> None:
    oauth_server.set(lifetime_s=6)  # refreshed once less than half of it remains
    assert authorize(stack, protected.app).result.returncode == 0
    assert berth(stack, "mcp", "server", "enable", protected.server).returncode == 0
    refreshes = oauth_server.events["refresh_grant"]
    late = oauth_server.events["refresh_after_expiry"]
    first = call_whoami(stack, protected.server)
    deadline = time.monotonic() + 30
    while (serial := call_whoami(stack, protected.server)) == first:
        assert time.monotonic() < deadline, "the token in use never changed"
        time.sleep(0.5)
    assert serial > first
    assert oauth_server.events["refresh_grant"] > refreshes
    assert oauth_server.events["refresh_after_expiry"] == late  # refreshed before expiry


def test_a_stdio_server_restarts_with_its_refreshed_token_between_calls(
    stack: Stack, oauth_server: OAuthTestServer, protected_stdio: Protected
) -> None:
    oauth_server.set(lifetime_s=20)  # a fresher token can be had after 10 s
    assert authorize(stack, protected_stdio.app).result.returncode == 0
    authorized = time.time()  # just after the token was issued
    assert berth(stack, "mcp", "server", "enable", protected_stdio.server).returncode == 0
    refreshes = oauth_server.events["refresh_grant"]
    late = oauth_server.events["refresh_after_expiry"]

    # The first call starts the server and is still running when the renewal is due: it
    # holds the renewal off, and gets its answer.
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            berth, stack, "mcp", "tools", "call", "pause",
            f"seconds={authorized + 16 - time.time():.1f}", "--server", protected_stdio.server,
        )  # fmt: skip
        time.sleep(max(authorized + 11 - time.time(), 0.0))
        first = token_in_environment(stack, protected_stdio.server, oauth_server)
        assert oauth_server.events["refresh_grant"] == refreshes  # the first token, still
        paused = running.result(timeout=60)
    assert paused.returncode == 0 and "done" in paused.stdout, paused.stderr
    first_pid = inspect_server(stack, protected_stdio.server)["pid"]

    deadline = time.monotonic() + 30
    while (now := token_in_environment(stack, protected_stdio.server, oauth_server)) == first:
        assert time.monotonic() < deadline, "the server never got a fresher token"
        time.sleep(0.5)
    assert now.serial > first.serial and now.access_valid()
    assert oauth_server.events["refresh_grant"] > refreshes
    assert oauth_server.events["refresh_after_expiry"] == late  # refreshed before expiry
    after = inspect_server(stack, protected_stdio.server)
    assert after["pid"] != first_pid and after["restart_count"] == 0  # renewed, not crashed


def inspect_server(stack: Stack, server: str) -> dict:
    inspected = berth(stack, "mcp", "server", "inspect", server)
    assert inspected.returncode == 0, inspected.stderr
    return json.loads(inspected.stdout)["server"]


def token_in_environment(stack: Stack, server: str, oauth_server: OAuthTestServer) -> Token:
    """The token (as the authorization server knows it) in the probe server's PROBE_TOKEN."""
    called = berth(
        stack, "mcp", "tools", "call", "env_digest", "variable=PROBE_TOKEN",
        "--server", server, "--format", "json",
    )  # fmt: skip
    assert called.returncode == 0, called.stdout + called.stderr
    seen = json.loads(called.stdout)["structured_content"]
    assert seen["set"], "the server started without its token"
    issued = {
        hashlib.sha256(t.access_token.encode()).hexdigest(): t for t in oauth_server.store.tokens
    }
    return issued[seen["sha256"]]


def test_revoke_revokes_at_the_authorization_server_and_forgets(
    stack: Stack, oauth_server: OAuthTestServer, protected: Protected
) -> None:
    assert authorize(stack, protected.app).result.returncode == 0
    revocations = oauth_server.events["revocation"]
    revoked = berth(stack, "mcp", "oauth", "revoke", protected.app)
    assert revoked.returncode == 0, revoked.stderr
    assert f"Revoked {protected.app}" in revoked.stdout
    assert oauth_server.events["revocation"] == revocations + 2
    kinds = [kind for kind, _ in oauth_server.store.revoked[-2:]]
    assert kinds == ["refresh_token", "access_token"]
    assert apps(stack)[protected.app]["authorized"] is False
    secrets_listed = berth(stack, "mcp", "secret", "ls").stdout
    assert f"oauth.{protected.app}" not in secrets_listed


def test_tokens_never_show_in_listings_state_or_logs(
    stack: Stack, oauth_server: OAuthTestServer, protected: Protected
) -> None:
    assert authorize(stack, protected.app).result.returncode == 0
    listed = (
        berth(stack, "mcp", "secret", "ls").stdout
        + berth(stack, "mcp", "secret", "ls", "--json").stdout
    )
    assert f"oauth.{protected.app}" in listed
    shown = listed + berth(stack, "mcp", "oauth", "ls", "--json").stdout
    state = stack.daemons["mcp"].log_path.read_text(errors="replace")
    for path in (stack.root / "mcp").rglob("*"):
        if path.is_file():
            state += path.read_text(errors="replace")
    tokens = oauth_server.all_token_values()
    assert tokens
    for token in tokens:
        assert token not in shown
        assert token not in state


def test_without_dynamic_registration_a_client_id_is_required(
    stack: Stack, protected: Protected
) -> None:
    assert berth(stack, "mcp", "feature", "disable", "oauth-dcr").returncode == 0
    try:
        done = authorize(stack, protected.app)
        with stack.channel() as channel, pytest.raises(grpc.RpcError) as caught:
            list(_oauth(channel).AuthorizeOAuthApp(pb.AuthorizeOAuthAppRequest(app=protected.app)))
    finally:
        berth(stack, "mcp", "feature", "enable", "oauth-dcr")
    assert done.result.returncode != 0 and done.page is None
    assert "oauth.clientId" in done.result.stderr and "oauth-dcr" in done.result.stderr
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_refusal_in_the_browser_is_permission_denied(
    stack: Stack, oauth_server: OAuthTestServer, protected: Protected
) -> None:
    oauth_server.set(deny=True)
    done = authorize(stack, protected.app)
    assert done.result.returncode != 0
    assert f"the authorization of {protected.app} was refused" in done.result.stderr
    assert done.page is not None and done.page.status_code == 403
    with stack.channel() as channel:
        stream = _oauth(channel).AuthorizeOAuthApp(pb.AuthorizeOAuthAppRequest(app=protected.app))
        started = next(stream).started
        assert started.redirect_uri.startswith("http://127.0.0.1:")
        assert started.state in started.authorization_url
        page = play_browser(started.authorization_url)
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert page.status_code == 403
    assert apps(stack)[protected.app]["authorized"] is False


def test_a_redirect_nobody_waits_for_is_not_found(stack: Stack) -> None:
    url = "http://127.0.0.1:1/callback?code=x&state=nobody"
    completed = berth(stack, "mcp", "oauth", "complete", url)
    assert completed.returncode != 0
    assert "no authorization is waiting" in completed.stderr
    request = pb.CompleteOAuthAuthorizationRequest(callback_url=url)
    with stack.channel() as channel, pytest.raises(grpc.RpcError) as caught:
        _oauth(channel).CompleteOAuthAuthorization(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def _oauth(channel: grpc.Channel) -> rpc.OAuthServiceStub:
    return rpc.OAuthServiceStub(channel)


def test_an_unknown_app_is_not_found(stack: Stack) -> None:
    done = berth(stack, "mcp", "oauth", "revoke", unique("no-such-app"))
    assert done.returncode != 0 and "no OAuth app" in done.stderr


def _epoch(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
