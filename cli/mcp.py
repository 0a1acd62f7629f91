"""`berth mcp`: Docker's `docker mcp` verbs against berth-mcpd.

Each group lives in a sibling module (mcp_catalog, mcp_servers, mcp_tools, mcp_secrets,
mcp_oauth, mcp_clients, mcp_gateway); this one assembles them and adds `version`.
"""

from __future__ import annotations

import typer

from berth.api.mcp.v1 import system_service_pb2 as pb
from berth.api.mcp.v1 import system_service_pb2_grpc as rpc
from berth.cli import (
    mcp_catalog,
    mcp_clients,
    mcp_gateway,
    mcp_oauth,
    mcp_secrets,
    mcp_servers,
    mcp_tools,
)
from berth.cli.mcp_common import emit, stub, when

app = typer.Typer(help="Manage MCP servers, tools, secrets and clients", no_args_is_help=True)
app.add_typer(mcp_catalog.app, name="catalog")
app.add_typer(mcp_clients.client_app, name="client")
app.add_typer(mcp_servers.config_app, name="config")
app.add_typer(mcp_clients.feature_app, name="feature")
app.add_typer(mcp_gateway.app, name="gateway")
app.add_typer(mcp_oauth.app, name="oauth")
app.add_typer(mcp_secrets.policy_app, name="policy")
app.add_typer(mcp_secrets.policy_app, name="policies", hidden=True)
app.add_typer(mcp_secrets.secret_app, name="secret")
app.add_typer(mcp_servers.server_app, name="server")
app.add_typer(mcp_tools.app, name="tools")


def version_lines(response: pb.GetVersionResponse) -> list[str]:
    info = response.version
    return [
        f"Component:    {info.component}",
        f"Version:      {info.version}",
        f"API version:  {info.api_version}",
        f"Python:       {info.python_version}",
        f"OS/Arch:      {info.os}/{info.arch}",
        f"Host:         {info.hostname}",
        f"Started:      {when(info.start_time)}",
    ]


@app.command("version")
def version() -> None:
    """Show the version information of berth-mcpd."""
    for line in version_lines(stub(rpc.SystemServiceStub).GetVersion(pb.GetVersionRequest())):
        emit(line)
