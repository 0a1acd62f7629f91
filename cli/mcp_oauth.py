"""`berth mcp oauth`: authorize the OAuth apps that servers need (OAuthService).

Tokens never reach the CLI. When the daemon is reached over TCP it may be on another host,
whose loopback the user's browser cannot reach; the CLI then serves the redirect itself on
its own loopback and hands it to the daemon with CompleteOAuthAuthorization.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import grpc
import typer

from berth.api.mcp.v1 import oauth_service_pb2 as pb
from berth.api.mcp.v1 import oauth_service_pb2_grpc as rpc
from berth.cli.context import connection
from berth.cli.errors import CliError
from berth.cli.mcp_common import (
    emit,
    emit_json,
    joined,
    note,
    split_list,
    stub,
    when,
    yes_no,
)
from berth.cli.output import print_table

app = typer.Typer(help="Manage OAuth apps", no_args_is_help=True)

CALLBACK_PATH = "/callback"


def _oauth() -> rpc.OAuthServiceStub:
    return stub(rpc.OAuthServiceStub)


# -- ls, revoke, complete -------------------------------------------------------------


def render_apps(response: pb.ListOAuthAppsResponse, as_json: bool) -> None:
    if as_json:
        emit_json(list(response.apps))
        return
    print_table(
        ["name", "authorized", "scopes", "expires", "servers"],
        (
            [a.name, yes_no(a.authorized), joined(a.scopes), when(a.expire_time), joined(a.servers)]
            for a in response.apps
        ),
    )


@app.command("ls")
def ls(json_: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """List available OAuth apps (alias: list)."""
    render_apps(_oauth().ListOAuthApps(pb.ListOAuthAppsRequest()), json_)


app.command("list", hidden=True)(ls)


@app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(metavar="APP")]) -> None:
    """Revoke the specified OAuth app."""
    revoked = _oauth().RevokeOAuthApp(pb.RevokeOAuthAppRequest(app=name)).app
    emit(f"Revoked {revoked.name or name}")


@app.command("complete")
def complete(url: Annotated[str, typer.Argument(metavar="CALLBACK_URL")]) -> None:
    """Hand a pending authorization the URL your browser was sent back to."""
    done = _oauth().CompleteOAuthAuthorization(
        pb.CompleteOAuthAuthorizationRequest(callback_url=url)
    )
    emit(f"Authorized {done.app.name}")


# -- authorize ------------------------------------------------------------------------


class LoopbackRedirect:
    """A one-purpose HTTP listener on 127.0.0.1 that passes OAuth redirects to `deliver`."""

    def __init__(self, deliver: Callable[[str], Any]) -> None:
        self.deliver = deliver
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{CALLBACK_PATH}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, text = listener.handle(self.path)
                body = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass  # the query holds the authorization code: keep it out of stderr

        return Handler

    def handle(self, path: str) -> tuple[int, str]:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        if parts.path != CALLBACK_PATH or "state" not in query:
            return HTTPStatus.NOT_FOUND, "Not an OAuth redirect."
        try:
            self.deliver(self.redirect_uri.removesuffix(CALLBACK_PATH) + path)
        except grpc.RpcError as error:
            details = error.details() if hasattr(error, "details") else str(error)
            return HTTPStatus.BAD_REQUEST, f"Authorization failed: {details}"
        return HTTPStatus.OK, "Authorization complete. You can close this window."


def deliver_callback(url: str) -> None:
    _oauth().CompleteOAuthAuthorization(pb.CompleteOAuthAuthorizationRequest(callback_url=url))


def follow_authorization(stream: Any, name: str) -> pb.OAuthApp:
    """Shows the URL to open, then waits for the stream's last message."""
    for event in stream:
        kind = event.WhichOneof("event")
        if kind == "started":
            started = event.started
            emit(f"Open this URL in a browser to authorize {name}:")
            emit(f"\n  {started.authorization_url}\n")
            deadline = when(started.expire_time, "it times out")
            note(f"Waiting for the authorization (until {deadline})...")
            note(
                f"If your browser cannot reach {started.redirect_uri}, run "
                "`berth mcp oauth complete URL` with the address it was sent to."
            )
        elif kind == "authorized":
            return event.authorized
    raise CliError(f"the authorization of {name} ended without a result")


@app.command("authorize")
def authorize(
    name: Annotated[str, typer.Argument(metavar="APP")],
    scopes: Annotated[
        list[str] | None, typer.Option("--scopes", help="OAuth scopes to request (space-separated)")
    ] = None,
) -> None:
    """Authorize the specified OAuth app."""
    remote = connection().target.grpc_target()[1]
    listener = LoopbackRedirect(deliver_callback) if remote else None
    request = pb.AuthorizeOAuthAppRequest(
        app=name,
        scopes=split_list(scopes, separator=None),
        redirect_uri=listener.redirect_uri if listener else "",
    )
    stream = _oauth().AuthorizeOAuthApp(request)
    try:
        done = follow_authorization(stream, name)
    except KeyboardInterrupt:
        stream.cancel()
        raise
    finally:
        if listener:
            listener.close()
    emit(f"Authorized {done.name or name} (scopes: {joined(done.scopes)})")
