"""`berth version`, `berth status` and `berth token`: berth itself rather than a domain."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Annotated

import typer

from berth.api.gateway.v1 import gateway_service_pb2 as pb
from berth.api.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from berth.api.network.v1 import system_service_pb2 as net_pb
from berth.api.network.v1 import system_service_pb2_grpc as net_grpc
from berth.cli.context import connection
from berth.cli.errors import CliError
from berth.cli.output import message_dict, print_json, print_table
from berth.common.version import API_VERSION, berth_version
from berth.gateway.auth import SCOPES, add_token, list_tokens, remove_token

DEFAULT_TOKENS_FILE = Path("/var/lib/berth/gateway/tokens.json")
STATUS_WORDS = {
    pb.SERVING_STATUS_SERVING: "serving",
    pb.SERVING_STATUS_NOT_SERVING: "not serving",
    pb.SERVING_STATUS_UNREACHABLE: "unreachable",
}
DAEMONS = {"network": "berth-networkd", "models": "berth-modeld", "mcp": "berth-mcpd"}

JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON")]


def fetch_status() -> pb.GetStatusResponse:
    return connection().stub(pb_grpc.GatewayServiceStub).GetStatus(pb.GetStatusRequest())


def version(json_output: JsonFlag = False) -> None:
    """Show the client's and the servers' versions, like `docker version`."""
    client = {
        "version": berth_version(),
        "api_version": API_VERSION,
        "python_version": platform.python_version(),
        "os": platform.system().lower(),
        "arch": platform.machine(),
    }
    status = fetch_status()
    if json_output:
        print_json({"client": client, "server": message_dict(status)})
        return
    print("Client:")
    _print_fields(client)
    for component, info in [("berth-gateway", status.version)] + [
        (DAEMONS.get(b.domain, b.domain), b.version) for b in status.backends
    ]:
        print(f"\nServer: {component}")
        if info.version:
            _print_fields(message_dict(info) | {"start_time": info.start_time.ToJsonString()})
        else:
            print(" (unreachable)")


def info(json_output: JsonFlag = False) -> None:
    """Show the network agent's host and its cluster, like `docker info`'s network part."""
    reply = connection().stub(net_grpc.SystemServiceStub).GetInfo(net_pb.GetInfoRequest())
    if json_output:
        print_json(reply)
        return
    cluster = reply.cluster
    _print_fields(
        {
            "host_name": reply.host_name,
            "underlay_address": reply.underlay_address or "-",
            "networks": reply.networks,
            "sandboxes": f"{reply.sandboxes} ({reply.sandboxes_running} running)",
            "cluster": ("connected" if cluster.connected else "disconnected")
            if cluster.enabled
            else "none (no --redis-url)",
        }
    )
    if cluster.hosts:
        print()
        print_table(
            ["host", "underlay", "agent", "last heartbeat"],
            [
                (
                    h.name + (" *" if h.local else ""),
                    h.underlay_address,
                    h.agent_address or "-",
                    h.heartbeat_time.ToJsonString(),
                )
                for h in cluster.hosts
            ],
        )


def _print_fields(fields: dict[str, object]) -> None:
    for key, value in fields.items():
        if key != "component":
            print(f" {key.replace('_', ' ').capitalize() + ':':<16}{value}")


def status(json_output: JsonFlag = False) -> None:
    """Show each daemon's health, version and address; exits 1 unless all are serving."""
    reply = fetch_status()
    if json_output:
        print_json(reply)
    else:
        print_table(
            ["daemon", "host", "status", "version", "address"],
            [
                (
                    DAEMONS.get(b.domain, b.domain),
                    b.host,
                    STATUS_WORDS.get(b.status, "unknown"),
                    b.version.version or "-",
                    b.address,
                )
                for b in reply.backends
            ],
        )
    if any(b.status != pb.SERVING_STATUS_SERVING for b in reply.backends):
        raise typer.Exit(1)


token_app = typer.Typer(
    help="Manage bearer tokens for the gateway's TCP listeners", no_args_is_help=True
)
TokensFile = Annotated[
    Path,
    typer.Option(
        "--tokens-file", envvar="BERTH_GATEWAY_TOKENS_FILE", help="the gateway's tokens file"
    ),
]


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="a name to recognise the token by")],
    scope: Annotated[
        list[str], typer.Option("--scope", help=f"repeatable; one of: {', '.join(SCOPES)}")
    ],
    tokens_file: TokensFile = DEFAULT_TOKENS_FILE,
) -> None:
    """Create a token; it is printed once and only its digest is stored."""
    try:
        print(add_token(tokens_file, name, scope))
    except ValueError as error:
        raise CliError(str(error)) from error


@token_app.command("ls")
def token_ls(tokens_file: TokensFile = DEFAULT_TOKENS_FILE) -> None:
    """List tokens by name and scopes (never the tokens)."""
    print_table(
        ["name", "scopes"], [(t.name, ",".join(sorted(t.scopes))) for t in list_tokens(tokens_file)]
    )


@token_app.command("rm")
def token_rm(name: str, tokens_file: TokensFile = DEFAULT_TOKENS_FILE) -> None:
    """Revoke a token."""
    try:
        remove_token(tokens_file, name)
    except ValueError as error:
        raise CliError(str(error)) from error
