"""The client under test of the MCP conformance suite's `auth/*` client scenarios.

`npx @modelcontextprotocol/conformance client --command "python oauth_client.py"` starts a
scenario's MCP server and authorization server, then runs this with the server's URL as the
last argument (the scenario in MCP_CONFORMANCE_SCENARIO, pre-registered credentials in
MCP_CONFORMANCE_CONTEXT). It is berth's own OAuth client, the classes berth-mcpd uses
(BerthOAuthProvider over a DraftStorage, as in `berth mcp oauth authorize`), under the SDK's
ClientSession: it connects, lists the tools and calls the first one. Without a browser, it
plays the user: it GETs the authorization URL and takes the code from the redirect.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull

from berth.mcp.adapters.oauth_client import BerthOAuthProvider, DraftStorage, client_metadata

# Never listened on: the redirect is read from the authorization server's answer.
REDIRECT_URI = "http://127.0.0.1:53682/callback"


class HeadlessBrowser:
    """The SDK's redirect and callback handlers, without a person."""

    def __init__(self) -> None:
        self.result: AuthorizationCodeResult | None = None

    async def redirect(self, authorization_url: str) -> None:
        async with httpx2.AsyncClient(timeout=30, follow_redirects=False) as http:
            answer = await http.get(authorization_url)
        location = answer.headers.get("location", "")
        query = parse_qs(urlsplit(location).query)
        if "code" not in query:
            raise RuntimeError(f"no authorization code in the redirect ({answer.status_code})")
        self.result = AuthorizationCodeResult(
            code=query["code"][0],
            state=(query.get("state") or [None])[0],
            iss=(query.get("iss") or [None])[0],
        )

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


def pre_registered(context: dict[str, str]) -> OAuthClientInformationFull | None:
    """The client the scenario registered beforehand, when it did."""
    if not context.get("client_id"):
        return None
    secret = context.get("client_secret")
    return OAuthClientInformationFull(
        client_id=context["client_id"],
        client_secret=secret,
        redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
    )


async def run(server_url: str) -> None:
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    browser = HeadlessBrowser()
    provider = BerthOAuthProvider(
        server_url,
        client_metadata(REDIRECT_URI),
        DraftStorage(pre_registered(context)),
        app="conformance",
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )
    async with (
        httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30, read=60)) as http,
        streamable_http_client(server_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = (await session.list_tools()).tools
        if tools:
            await session.call_tool(tools[0].name, {})


def main() -> None:
    asyncio.run(run(sys.argv[-1]))


if __name__ == "__main__":
    main()
