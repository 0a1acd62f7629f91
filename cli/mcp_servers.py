"""`berth mcp server` and `berth mcp config`: enabled servers and their config (ServerService)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

import typer

from berth.api.mcp.v1 import resources_pb2 as res
from berth.api.mcp.v1 import server_service_pb2 as pb
from berth.api.mcp.v1 import server_service_pb2_grpc as rpc
from berth.cli.errors import CliError
from berth.cli.mcp_common import emit, emit_json, read_source, read_stdin, short, stub
from berth.cli.output import print_table

server_app = typer.Typer(help="Manage servers", no_args_is_help=True)
config_app = typer.Typer(help="Manage the configuration", no_args_is_help=True)

REQUIREMENT_LABEL = {
    res.REQUIREMENT_STATUS_NONE: "-",
    res.REQUIREMENT_STATUS_DONE: "done",
    res.REQUIREMENT_STATUS_PARTIAL: "partial",
    res.REQUIREMENT_STATUS_REQUIRED: "required",
}
STATE_LABEL = {
    res.SERVER_STATE_STOPPED: "stopped",
    res.SERVER_STATE_STARTING: "starting",
    res.SERVER_STATE_RUNNING: "running",
    res.SERVER_STATE_FAILED: "failed",
}
# A server name as catalogs spell them; a config document never looks like one.
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NamesArg = Annotated[list[str], typer.Argument(metavar="NAME...")]


def _servers() -> rpc.ServerServiceStub:
    return stub(rpc.ServerServiceStub)


def requirement(status: int) -> str:
    return REQUIREMENT_LABEL.get(status, "-")


# -- server ---------------------------------------------------------------------------


def missing_requirements(server: res.Server) -> list[str]:
    """What an enabled server still needs before it can run, in words."""
    checks = [
        (server.secrets_status, "secrets"),
        (server.config_status, "config"),
        (server.oauth_status, "OAuth authorization"),
        (server.policy_status, "a policy allowing its secrets"),
    ]
    return [
        what
        for status, what in checks
        if status in (res.REQUIREMENT_STATUS_REQUIRED, res.REQUIREMENT_STATUS_PARTIAL)
    ]


def render_enabled(response: pb.EnableServersResponse) -> None:
    for server in response.servers:
        emit(f"Enabled {server.name}")
        missing = missing_requirements(server)
        if missing:
            emit(
                f"  {server.name} needs {', '.join(missing)}: "
                f"see `berth mcp server inspect {server.name}`"
            )


@server_app.command("enable")
def enable(names: NamesArg) -> None:
    """Enable a server or multiple servers (alias: add)."""
    render_enabled(_servers().EnableServers(pb.EnableServersRequest(names=names)))


server_app.command("add", hidden=True)(enable)


def render_disabled(names: list[str], asked: list[str]) -> None:
    for name in names:
        emit(f"Disabled {name}")
    for name in asked:
        if name not in names:
            emit(f"{name} was not enabled")


@server_app.command("disable")
def disable(names: NamesArg) -> None:
    """Disable a server or multiple servers (aliases: remove, rm)."""
    disabled = list(_servers().DisableServers(pb.DisableServersRequest(names=names)).names)
    render_disabled(disabled, names)


server_app.command("remove", hidden=True)(disable)
server_app.command("rm", hidden=True)(disable)


def render_servers(response: pb.ListServersResponse, as_json: bool) -> None:
    if as_json:
        emit_json(list(response.servers))
        return
    print_table(
        ["name", "oauth", "secrets", "config", "policy", "state", "description"],
        (
            [
                s.name,
                requirement(s.oauth_status),
                requirement(s.secrets_status),
                requirement(s.config_status),
                requirement(s.policy_status),
                STATE_LABEL.get(s.state, "-"),
                short(s.description or s.title),
            ]
            for s in response.servers
        ),
    )


@server_app.command("list")
def list_(
    json_: Annotated[bool, typer.Option("--json", help="Output in JSON format")] = False,
) -> None:
    """List enabled servers (alias: ls)."""
    render_servers(_servers().ListServers(pb.ListServersRequest()), json_)


server_app.command("ls", hidden=True)(list_)


@server_app.command("inspect")
def inspect(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Get information about a server: its entry, state, tools, config and secrets, as JSON."""
    emit_json(_servers().InspectServer(pb.InspectServerRequest(name=name)))


@server_app.command("reset")
def reset() -> None:
    """Disable all the servers."""
    names = _servers().ResetServers(pb.ResetServersRequest()).names
    emit(f"Disabled {', '.join(names)}" if names else "No server was enabled")


# -- config ---------------------------------------------------------------------------


class ConfigFormat(StrEnum):
    YAML = "yaml"
    JSON = "json"


CONFIG_FORMAT = {ConfigFormat.YAML: pb.CONFIG_FORMAT_YAML, ConfigFormat.JSON: pb.CONFIG_FORMAT_JSON}
ServerArg = Annotated[str, typer.Argument(metavar="[SERVER]", help="One server (default: all)")]


@config_app.command("read")
def config_read(
    server: ServerArg = "",
    fmt: Annotated[
        ConfigFormat, typer.Option("--format", help="Output format")
    ] = ConfigFormat.YAML,
) -> None:
    """Print the config of one server or of all."""
    request = pb.ReadServerConfigRequest(server=server, format=CONFIG_FORMAT[fmt])
    emit(_servers().ReadServerConfig(request).content)


def split_write_args(args: list[str], file: str | None) -> tuple[str, str | None]:
    """(server, where the document is) from `config write`'s arguments.

    The document is the last argument, or `--file`, or stdin (None). One argument alone is
    a server name when it looks like one and a document otherwise (a document holds `:`,
    `{` or a newline, which no server name does).
    """
    if len(args) > 2:
        raise CliError("config write takes at most SERVER and the config")
    if file is not None and len(args) == 2:
        raise CliError("give the config either as an argument or with --file, not both")
    if len(args) == 2:
        return args[0], args[1]
    if len(args) == 1 and (file is not None or SERVER_NAME.match(args[0])):
        return args[0], None
    return "", args[0] if args else None


def write_content(document: str | None, file: str | None) -> str:
    if file is not None:
        return read_source(file, "config")
    if document is None or document == "-":
        return read_stdin("config")
    return document


@config_app.command("write")
def config_write(
    args: Annotated[list[str] | None, typer.Argument(metavar="[SERVER] [CONFIG]")] = None,
    file: Annotated[
        str | None, typer.Option("-f", "--file", help="Read the config from a file (- for stdin)")
    ] = None,
) -> None:
    """Replace the config of one server or of all (YAML or JSON; argument, --file or stdin)."""
    server, document = split_write_args(list(args or []), file)
    content = write_content(document, file)
    _servers().WriteServerConfig(pb.WriteServerConfigRequest(server=server, content=content))
    emit(f"Wrote the config of {server or 'all servers'}")


@config_app.command("reset")
def config_reset(server: ServerArg = "") -> None:
    """Clear the config of one server or of all."""
    _servers().ResetServerConfig(pb.ResetServerConfigRequest(server=server))
    emit(f"Reset the config of {server or 'all servers'}")
