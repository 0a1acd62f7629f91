"""`berth mcp tools`: list, inspect, call, enable and disable tools (ToolService)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from berth.api.mcp.v1 import resources_pb2 as res
from berth.api.mcp.v1 import tool_service_pb2 as pb
from berth.api.mcp.v1 import tool_service_pb2_grpc as rpc
from berth.cli.errors import CliError
from berth.cli.mcp_common import Format, emit, emit_json, note, short, stub
from berth.cli.output import print_table

app = typer.Typer(help="Manage tools", no_args_is_help=True)

DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass
class ToolsOptions:
    """The group's options (`berth mcp tools --format json ls`)."""

    format: Format = Format.LIST
    verbose: bool = False


FormatOpt = Annotated[Format | None, typer.Option("--format", help="Output format (json|list)")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Verbose output")]
ServerOpt = Annotated[str, typer.Option("--server", help="Server offering the tool")]


@app.callback()
def tools_options(
    ctx: typer.Context,
    fmt: Annotated[
        Format, typer.Option("--format", help="Output format (json|list)")
    ] = Format.LIST,
    verbose: VerboseOpt = False,
    gateway_arg: Annotated[
        list[str] | None,
        typer.Option("--gateway-arg", help="Accepted for Docker compatibility; berth ignores it"),
    ] = None,
    version: Annotated[
        str, typer.Option("--version", help="Accepted for Docker compatibility; berth ignores it")
    ] = "2",
) -> None:
    """Manage tools. --format and --verbose also work after the subcommand."""
    ctx.obj = ToolsOptions(format=fmt, verbose=verbose)


def options(ctx: typer.Context, fmt: Format | None, verbose: bool) -> ToolsOptions:
    """The subcommand's own flags, else the group's."""
    group = ctx.obj if isinstance(ctx.obj, ToolsOptions) else ToolsOptions()
    return ToolsOptions(format=fmt or group.format, verbose=verbose or group.verbose)


def _tools() -> rpc.ToolServiceStub:
    return stub(rpc.ToolServiceStub)


def report_errors(errors: list[res.ServerError]) -> None:
    for error in errors:
        note(f"berth: server {error.server}: {error.message}")


# -- ls, count, inspect ---------------------------------------------------------------


def parameter_lines(schema_text: str) -> list[str]:
    """A tool's parameters, one line each, from its input schema."""
    try:
        schema = json.loads(schema_text) if schema_text else {}
    except json.JSONDecodeError:
        return []
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return []
    required = set(schema.get("required") or [])
    lines = []
    for name, prop in properties.items():
        prop = prop if isinstance(prop, dict) else {}
        kind = prop.get("type", "any")
        kind = "|".join(kind) if isinstance(kind, list) else str(kind)
        flag = ", required" if name in required else ""
        described = f" - {short(prop['description'])}" if prop.get("description") else ""
        lines.append(f"{name} ({kind}{flag}){described}")
    return lines


def tool_lines(tool: res.Tool, verbose: bool) -> list[str]:
    disabled = " (disabled)" if not tool.enabled else ""
    lines = [f" - {tool.exposed_name or tool.name}{disabled} - {short(tool.description, 100)}"]
    if verbose:
        lines.append(f"     server: {tool.server}")
        lines.extend(f"     {line}" for line in parameter_lines(tool.input_schema))
    return lines


def render_tools(response: pb.ListToolsResponse, opts: ToolsOptions) -> None:
    report_errors(list(response.errors))
    if opts.format is Format.JSON:
        emit_json(list(response.tools))
        return
    emit(f"{len(response.tools)} tools:")
    for tool in response.tools:
        for line in tool_lines(tool, opts.verbose):
            emit(line)


@app.command("ls")
def ls(
    ctx: typer.Context,
    fmt: FormatOpt = None,
    verbose: VerboseOpt = False,
    servers: Annotated[
        list[str] | None, typer.Option("--server", help="Only this server's")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include disabled tools")] = False,
) -> None:
    """List tools (alias: list)."""
    opts = options(ctx, fmt, verbose)
    request = pb.ListToolsRequest(
        servers=servers or [],
        verbose=opts.verbose or opts.format is Format.JSON,
        include_disabled=all_,
    )
    render_tools(_tools().ListTools(request), opts)


app.command("list", hidden=True)(ls)


def render_count(response: pb.CountToolsResponse, opts: ToolsOptions) -> None:
    report_errors(list(response.errors))
    if opts.format is Format.JSON:
        emit_json(
            {"count": response.count, "servers": dict(sorted(response.server_counts.items()))}
        )
        return
    emit(f"{response.count} tools")
    if opts.verbose:
        print_table(["server", "tools"], sorted(response.server_counts.items()))


@app.command("count")
def count(
    ctx: typer.Context,
    fmt: FormatOpt = None,
    verbose: VerboseOpt = False,
    servers: Annotated[
        list[str] | None, typer.Option("--server", help="Only this server's")
    ] = None,
) -> None:
    """Count tools."""
    response = _tools().CountTools(pb.CountToolsRequest(servers=servers or []))
    render_count(response, options(ctx, fmt, verbose))


def render_tool(tool: res.Tool, opts: ToolsOptions) -> None:
    if opts.format is Format.JSON:
        emit_json(tool)
        return
    emit(f"{tool.exposed_name or tool.name} ({tool.server}){'' if tool.enabled else ' (disabled)'}")
    if tool.title:
        emit(f"  title: {tool.title}")
    if tool.description:
        emit(f"  description: {tool.description.strip()}")
    hints = MessageToDict(tool.annotations, preserving_proto_field_name=True)
    hints.pop("title", None)
    if hints:
        emit("  hints: " + ", ".join(f"{key}={value}" for key, value in hints.items()))
    params = parameter_lines(tool.input_schema)
    emit("  parameters:" if params else "  parameters: none")
    for line in params:
        emit(f"    {line}")
    if opts.verbose and tool.output_schema:
        emit(f"  output schema: {tool.output_schema}")


@app.command("inspect")
def inspect(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="TOOL")],
    server: ServerOpt = "",
    fmt: FormatOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Inspect a tool."""
    tool = _tools().InspectTool(pb.InspectToolRequest(name=name, server=server)).tool
    render_tool(tool, options(ctx, fmt, verbose))


# -- call -----------------------------------------------------------------------------


def parse_arguments(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs as tool arguments; a value is JSON when it parses, else a string."""
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"invalid argument {pair!r}: expected key=value")
        key = key.strip()
        if key in arguments:
            raise CliError(f"argument {key!r} given twice")
        try:
            arguments[key] = json.loads(value)
        except json.JSONDecodeError:
            arguments[key] = value
    return arguments


def parse_duration(text: str) -> Duration:
    """`30s`, `1m30s`, `500ms` or plain seconds as a Duration."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = DURATION_PART.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            raise CliError(f"invalid duration {text!r}: use e.g. 30s, 2m or 500ms") from None
        seconds = sum(float(number) * UNIT_SECONDS[unit] for number, unit in parts)
    if seconds <= 0:
        raise CliError(f"invalid duration {text!r}: must be positive")
    duration = Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def build_call_request(
    name: str, pairs: list[str], server: str, timeout: str | None
) -> pb.CallToolRequest:
    arguments = Struct()
    arguments.update(parse_arguments(pairs))
    request = pb.CallToolRequest(name=name, server=server, arguments=arguments)
    if timeout:
        request.timeout.CopyFrom(parse_duration(timeout))
    return request


def size(count: int) -> str:
    """A byte count for people."""
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"


def content_text(item: pb.Content) -> str:
    """One content item: text as is, anything else as a one-line summary."""
    kind = item.WhichOneof("kind")
    if kind == "text":
        return item.text.text
    if kind in ("image", "audio"):
        media = getattr(item, kind)
        return f"[{kind}: {media.mime_type or 'unknown type'}, {size(len(media.data))}]"
    if kind == "resource":
        found = item.resource
        held = (
            f"{len(found.text)} chars"
            if found.WhichOneof("contents") == "text"
            else size(len(found.blob))
        )
        return f"[resource: {found.uri} ({found.mime_type or 'unknown type'}), {held}]"
    if kind == "resource_link":
        link = item.resource_link
        details = [link.mime_type] if link.mime_type else []
        if link.HasField("size"):
            details.append(size(link.size))
        extra = f" ({', '.join(details)})" if details else ""
        return f"[resource link: {link.title or link.name} <{link.uri}>{extra}]"
    return "[empty content item]"


def result_lines(response: pb.CallToolResponse, verbose: bool) -> list[str]:
    lines = [content_text(item) for item in response.content]
    has_text = any(item.WhichOneof("kind") == "text" for item in response.content)
    if response.HasField("structured_content") and (verbose or not has_text):
        structured = MessageToDict(response.structured_content)
        lines.append(json.dumps(structured, indent=2))
    return lines


def render_call(response: pb.CallToolResponse, opts: ToolsOptions) -> int:
    """Prints the result; returns the exit status (1 when the tool reported an error)."""
    if opts.format is Format.JSON:
        emit_json(response)
        return 1 if response.is_error else 0
    out = sys.stderr if response.is_error else sys.stdout
    for line in result_lines(response, opts.verbose):
        out.write(line if line.endswith("\n") else line + "\n")
    return 1 if response.is_error else 0


@app.command("call")
def call(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="TOOL")],
    pairs: Annotated[list[str] | None, typer.Argument(metavar="[KEY=VALUE]...")] = None,
    server: ServerOpt = "",
    timeout: Annotated[str | None, typer.Option("--timeout", help="e.g. 30s, 2m")] = None,
    fmt: FormatOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Call a tool; values are JSON when they parse (n=3, flag=true, l='[1,2]'), else text."""
    request = build_call_request(name, list(pairs or []), server, timeout)
    pending = _tools().CallTool.future(request)
    try:
        response = pending.result()
    except KeyboardInterrupt:
        pending.cancel()  # cancels the MCP request on the server too
        raise
    status = render_call(response, options(ctx, fmt, verbose))
    if status:
        raise typer.Exit(status)


# -- enable, disable ------------------------------------------------------------------


ToolsArg = Annotated[list[str], typer.Argument(metavar="TOOL...")]
ToolsServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        help="Specify which server provides the tools "
        "(optional, will auto-discover if not provided)",
    ),
]


def render_switched(refs: list[res.ToolRef], verb: str) -> None:
    for ref in refs:
        emit(f"{verb} tool {ref.name} of server {ref.server}")


@app.command("enable")
def enable(names: ToolsArg, server: ToolsServerOpt = "") -> None:
    """Enable one or more tools."""
    response = _tools().EnableTools(pb.EnableToolsRequest(server=server, names=names))
    render_switched(list(response.tools), "Enabled")


@app.command("disable")
def disable(names: ToolsArg, server: ToolsServerOpt = "") -> None:
    """Disable one or more tools: clients no longer see them and calls are refused."""
    response = _tools().DisableTools(pb.DisableToolsRequest(server=server, names=names))
    render_switched(list(response.tools), "Disabled")
