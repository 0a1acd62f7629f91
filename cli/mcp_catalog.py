"""`berth mcp catalog`: the catalogs of MCP servers (CatalogService)."""

from __future__ import annotations

import urllib.error
import urllib.request
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from berth.api.mcp.v1 import catalog_service_pb2 as pb
from berth.api.mcp.v1 import catalog_service_pb2_grpc as rpc
from berth.api.mcp.v1 import resources_pb2
from berth.cli.errors import CliError
from berth.cli.mcp_common import emit, emit_json, read_source, short, stub, when
from berth.cli.output import print_table

app = typer.Typer(help="Manage MCP server catalogs", no_args_is_help=True)
server_app = typer.Typer(help="Manage the entries of a user catalog", no_args_is_help=True)
app.add_typer(server_app, name="server")

URL_TIMEOUT_S = 30


class ShowFormat(StrEnum):
    LIST = "list"
    JSON = "json"
    YAML = "yaml"


def _catalogs() -> rpc.CatalogServiceStub:
    return stub(rpc.CatalogServiceStub)


# -- ls -------------------------------------------------------------------------------


def render_catalogs(response: pb.ListCatalogsResponse, as_json: bool) -> None:
    if as_json:
        emit_json(list(response.catalogs))
        return
    print_table(
        ["name", "servers", "source", "updated", "description"],
        (
            [
                c.name,
                c.server_count,
                "(built-in)" if c.builtin else c.source or "-",
                when(c.update_time),
                short(c.description or c.display_name),
            ]
            for c in response.catalogs
        ),
    )


@app.command("ls")
def ls(json_: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """List the catalogs (alias: list)."""
    render_catalogs(_catalogs().ListCatalogs(pb.ListCatalogsRequest()), json_)


app.command("list", hidden=True)(ls)


# -- show -----------------------------------------------------------------------------


def run_kind(spec: resources_pb2.ServerSpec) -> str:
    """How an entry runs, in a few words: its command or its URL."""
    if spec.HasField("remote"):
        return spec.remote.url
    if spec.HasField("stdio"):
        return " ".join([spec.stdio.command, *spec.stdio.args])
    return "-"


def render_catalog(response: pb.ShowCatalogResponse, fmt: ShowFormat) -> None:
    if fmt is ShowFormat.JSON:
        emit_json(response)
        return
    print_table(
        ["name", "runs", "description"],
        (
            [s.name, short(run_kind(s), 40), short(s.description or s.title)]
            for s in response.servers
        ),
    )


@app.command("show")
def show(
    name: Annotated[
        str, typer.Argument(metavar="[NAME]", help="Catalog (default: the built-in one)")
    ] = "",
    fmt: Annotated[ShowFormat, typer.Option("--format", help="Output format")] = ShowFormat.LIST,
) -> None:
    """Show a catalog's servers."""
    if fmt is ShowFormat.YAML:
        emit(_catalogs().ExportCatalog(pb.ExportCatalogRequest(name=name)).content)
        return
    render_catalog(_catalogs().ShowCatalog(pb.ShowCatalogRequest(name=name)), fmt)


# -- create, rm, reset ----------------------------------------------------------------


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    display_name: Annotated[str, typer.Option("--display-name", help="Human-readable name")] = "",
    description: Annotated[str, typer.Option("--description", help="What it holds")] = "",
) -> None:
    """Create an empty user catalog."""
    request = pb.CreateCatalogRequest(name=name, display_name=display_name, description=description)
    emit(f"Created catalog {_catalogs().CreateCatalog(request).catalog.name}")


@app.command("rm")
def rm(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Remove a user catalog and its entries (alias: remove)."""
    _catalogs().RemoveCatalog(pb.RemoveCatalogRequest(name=name))
    emit(f"Removed catalog {name}")


app.command("remove", hidden=True)(rm)


@app.command("reset")
def reset() -> None:
    """Remove every user catalog, keeping the built-in one."""
    names = _catalogs().ResetCatalog(pb.ResetCatalogRequest()).names
    emit(f"Removed catalogs: {', '.join(names)}" if names else "No user catalog to remove")


# -- import, export -------------------------------------------------------------------


def read_catalog_text(source: str) -> str:
    """A catalog's YAML text from a file, `-` (stdin) or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=URL_TIMEOUT_S) as reply:
                return reply.read().decode("utf-8")
        except (urllib.error.URLError, OSError, UnicodeDecodeError) as error:
            raise CliError(f"cannot fetch catalog {source}: {error}") from None
    return read_source(source, "catalog")


def build_import_request(
    source: str, text: str, name: str, dry_run: bool
) -> pb.ImportCatalogRequest:
    """The request for `catalog import`; the source is recorded as the user gave it."""
    recorded = "" if source == "-" else source
    if recorded and not recorded.startswith(("http://", "https://")):
        recorded = str(Path(recorded).resolve())
    return pb.ImportCatalogRequest(name=name, content=text, source=recorded, dry_run=dry_run)


def render_import(response: pb.ImportCatalogResponse, dry_run: bool) -> None:
    names = ", ".join(s.name for s in response.servers) or "none"
    verb = "Would import" if dry_run else "Imported"
    emit(f"{verb} catalog {response.catalog.name} with {len(response.servers)} servers: {names}")


@app.command("import")
def import_(
    source: Annotated[
        str, typer.Argument(metavar="FILE|URL|-", help="Catalog file, URL or - for stdin")
    ],
    name: Annotated[str, typer.Option("--name", help="Store it under this name")] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate only, store nothing")
    ] = False,
) -> None:
    """Import a catalog from its YAML file."""
    request = build_import_request(source, read_catalog_text(source), name, dry_run)
    render_import(_catalogs().ImportCatalog(request), dry_run)


@app.command("export")
def export(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    path: Annotated[
        str, typer.Argument(metavar="[FILE]", help="Where to write (default: stdout)")
    ] = "-",
) -> None:
    """Export a catalog as YAML to a file or to stdout."""
    content = _catalogs().ExportCatalog(pb.ExportCatalogRequest(name=name)).content
    if path == "-":
        emit(content)
        return
    try:
        Path(path).write_text(content, encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot write {path}: {error}") from None
    emit(f"Exported catalog {name} to {path}")


# -- add, server rm -------------------------------------------------------------------


@app.command("add")
def add(
    catalog: Annotated[str, typer.Argument(metavar="CATALOG")],
    server: Annotated[str, typer.Argument(metavar="SERVER")],
    source: Annotated[
        str, typer.Argument(metavar="CATALOG_FILE|-", help="Catalog file holding the entry")
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace an entry of that name")] = False,
) -> None:
    """Add a server entry, taken from another catalog file, to a user catalog."""
    request = pb.AddCatalogServerRequest(
        catalog=catalog, server=server, content=read_catalog_text(source), force=force
    )
    added = _catalogs().AddCatalogServer(request).server
    emit(f"Added {added.name or server} to catalog {catalog}")


@server_app.command("rm")
def server_rm(
    catalog: Annotated[str, typer.Argument(metavar="CATALOG")],
    servers: Annotated[list[str], typer.Argument(metavar="SERVER...")],
) -> None:
    """Remove entries from a user catalog (alias: remove)."""
    for server in servers:
        _catalogs().RemoveCatalogServer(
            pb.RemoveCatalogServerRequest(catalog=catalog, server=server)
        )
        emit(f"Removed {server} from catalog {catalog}")


server_app.command("remove", hidden=True)(server_rm)
