"""`berth mcp client` (ClientService) and `berth mcp feature` (FeatureService)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from berth.api.mcp.v1 import client_service_pb2 as pb
from berth.api.mcp.v1 import client_service_pb2_grpc as rpc
from berth.api.mcp.v1 import feature_service_pb2 as feature_pb
from berth.api.mcp.v1 import feature_service_pb2_grpc as feature_rpc
from berth.cli.mcp_common import (
    TRANSPORT_LABEL,
    TRANSPORT_PROTO,
    Transport,
    emit,
    emit_json,
    short,
    stub,
    yes_no,
)
from berth.cli.output import print_table

client_app = typer.Typer(help="Manage MCP clients", no_args_is_help=True)
feature_app = typer.Typer(help="Manage experimental features", no_args_is_help=True)

# The clients the contract names; the daemon has the final list (`client ls`).
KNOWN_CLIENTS = (
    "claude-desktop",
    "claude-code",
    "codex",
    "continue",
    "cursor",
    "gemini-cli",
    "goose",
    "lm-studio",
    "vscode",
    "windsurf",
    "zed",
)


def complete_client(incomplete: str) -> list[str]:
    return [name for name in KNOWN_CLIENTS if name.startswith(incomplete)]


ClientArg = Annotated[
    str,
    typer.Argument(
        metavar="CLIENT",
        help=f"e.g. {', '.join(KNOWN_CLIENTS)}",
        autocompletion=complete_client,
    ),
]
GlobalOpt = Annotated[
    bool, typer.Option("--global", "-g", help="The user-wide configuration, not the project's")
]
ConfigFileOpt = Annotated[
    str, typer.Option("--config-file", help="Use this file instead of the client's usual one")
]


def _clients() -> rpc.ClientServiceStub:
    return stub(rpc.ClientServiceStub)


def scope(global_: bool) -> int:
    return pb.CLIENT_SCOPE_GLOBAL if global_ else pb.CLIENT_SCOPE_UNSPECIFIED


def project_dir(global_: bool) -> str:
    return "" if global_ else os.getcwd()


def absolute(config_file: str) -> str:
    """The daemon has its own working directory: send it absolute paths."""
    return os.path.abspath(config_file) if config_file else ""


def render_change(client: pb.ClientInfo, backup: str, verb: str) -> None:
    emit(f"{verb} {client.display_name or client.name} ({client.config_path})")
    if backup:
        emit(f"Previous file saved as {backup}")


@client_app.command("connect")
def connect(
    client: ClientArg,
    global_: GlobalOpt = False,
    transport: Annotated[
        Transport, typer.Option("--transport", help="How the client reaches berth")
    ] = Transport.STDIO,
    config_file: ConfigFileOpt = "",
) -> None:
    """Add berth to an MCP client's configuration."""
    request = pb.ConnectClientRequest(
        client=client,
        scope=scope(global_),
        project_dir=project_dir(global_),
        transport=TRANSPORT_PROTO[transport],
        config_path=absolute(config_file),
    )
    response = _clients().ConnectClient(request)
    render_change(response.client, response.backup_path, "Connected berth to")


@client_app.command("disconnect")
def disconnect(
    client: ClientArg, global_: GlobalOpt = False, config_file: ConfigFileOpt = ""
) -> None:
    """Remove berth from an MCP client's configuration."""
    request = pb.DisconnectClientRequest(
        client=client,
        scope=scope(global_),
        project_dir=project_dir(global_),
        config_path=absolute(config_file),
    )
    response = _clients().DisconnectClient(request)
    if not response.backup_path:  # nothing changed
        shown = response.client
        emit(f"berth is not connected to {shown.display_name or shown.name} ({shown.config_path})")
        return
    render_change(response.client, response.backup_path, "Disconnected berth from")


def client_status(client: pb.ClientInfo) -> str:
    if client.connected:
        return "connected"
    return "disconnected" if client.installed else "not installed"


def render_clients(response: pb.ListClientsResponse, as_json: bool) -> None:
    if as_json:
        emit_json(list(response.clients))
        return
    print_table(
        ["name", "status", "transport", "config file"],
        (
            [
                c.name,
                client_status(c),
                TRANSPORT_LABEL.get(c.transport, "-") if c.connected else "-",
                c.config_path or "-",
            ]
            for c in response.clients
        ),
    )


@client_app.command("ls")
def ls(
    global_: GlobalOpt = False,
    json_: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List MCP clients and whether berth is connected to each (alias: list)."""
    request = pb.ListClientsRequest(scope=scope(global_), project_dir=project_dir(global_))
    render_clients(_clients().ListClients(request), json_)


client_app.command("list", hidden=True)(ls)


# -- feature --------------------------------------------------------------------------


def _features() -> feature_rpc.FeatureServiceStub:
    return stub(feature_rpc.FeatureServiceStub)


def render_features(response: feature_pb.ListFeaturesResponse, as_json: bool) -> None:
    if as_json:
        emit_json(list(response.features))
        return
    print_table(
        ["name", "enabled", "description"],
        (
            [f.name, yes_no(f.enabled), short(f.description, FEATURE_DESCRIPTION_WIDTH)]
            for f in response.features
        ),
    )


# Feature descriptions are berth's own one-liners: show them whole.
FEATURE_DESCRIPTION_WIDTH = 120
FeatureArg = Annotated[str, typer.Argument(metavar="NAME")]


@feature_app.command("ls")
def feature_ls(
    json_: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the features and whether each is on (alias: list)."""
    render_features(_features().ListFeatures(feature_pb.ListFeaturesRequest()), json_)


feature_app.command("list", hidden=True)(feature_ls)


@feature_app.command("enable")
def feature_enable(name: FeatureArg) -> None:
    """Turn a feature on."""
    feature = _features().EnableFeature(feature_pb.EnableFeatureRequest(name=name)).feature
    emit(f"Enabled feature {feature.name or name}")


@feature_app.command("disable")
def feature_disable(name: FeatureArg) -> None:
    """Turn a feature off."""
    feature = _features().DisableFeature(feature_pb.DisableFeatureRequest(name=name)).feature
    emit(f"Disabled feature {feature.name or name}")
