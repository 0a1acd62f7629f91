"""CatalogService through the gateway and the real berth-mcpd, and `berth mcp catalog`."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from berth.api.mcp.v1 import catalog_service_pb2 as pb
from berth.api.mcp.v1 import catalog_service_pb2_grpc as rpc
from berth.api.mcp.v1 import resources_pb2
from tests.integration.test_errors import violations
from tests.support.processes import run_berth
from tests.support.stack import Stack

TEAM = """\
displayName: Team
description: Servers of the team
servers:
  clock:
    title: Clock
    command: mcp-server-time
    callTimeout: 30s
  search:
    remote: {url: "https://example.com/mcp"}
    secrets: [{name: search.key, header: X-API-Key}]
"""
BROKEN = "servers:\n  clock:\n    command: mcp-server-time\n    args: --verbose\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture
def catalogs(stack: Stack) -> Iterator[rpc.CatalogServiceStub]:
    with stack.channel() as channel:
        yield rpc.CatalogServiceStub(channel)


def names(catalogs: rpc.CatalogServiceStub) -> list[str]:
    return [c.name for c in catalogs.ListCatalogs(pb.ListCatalogsRequest()).catalogs]


def remove_quietly(catalogs: rpc.CatalogServiceStub, name: str) -> None:
    try:
        catalogs.RemoveCatalog(pb.RemoveCatalogRequest(name=name))
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND


def test_the_builtin_catalog_is_listed_first_and_shown(
    catalogs: rpc.CatalogServiceStub,
) -> None:
    first = catalogs.ListCatalogs(pb.ListCatalogsRequest()).catalogs[0]
    assert (first.name, first.builtin, first.source) == ("berth", True, "")
    shown = catalogs.ShowCatalog(pb.ShowCatalogRequest())
    assert shown.catalog.server_count == len(shown.servers) == first.server_count
    by_name = {s.name: s for s in shown.servers}
    assert {"time", "git", "everything", "filesystem"} <= set(by_name)
    assert by_name["time"].stdio.command == "mcp-server-time"
    assert "get_current_time" in {t.name for t in by_name["time"].tools}
    assert [s.name for s in shown.servers] == sorted(by_name)


def test_import_show_export_and_remove(catalogs: rpc.CatalogServiceStub) -> None:
    name = unique("team")
    try:
        imported = catalogs.ImportCatalog(
            pb.ImportCatalogRequest(name=name, content=TEAM, source="/srv/team.yaml")
        )
        assert [s.name for s in imported.servers] == ["clock", "search"]
        listed = {c.name: c for c in catalogs.ListCatalogs(pb.ListCatalogsRequest()).catalogs}
        assert listed[name].source == "/srv/team.yaml"
        assert listed[name].server_count == 2 and listed[name].update_time.seconds > 0
        search = catalogs.ShowCatalog(pb.ShowCatalogRequest(name=name)).servers[1]
        assert search.remote.url == "https://example.com/mcp"
        assert search.secrets[0].injection == resources_pb2.SECRET_INJECTION_HEADER
        exported = catalogs.ExportCatalog(pb.ExportCatalogRequest(name=name)).content
        again = catalogs.ImportCatalog(pb.ImportCatalogRequest(content=exported, dry_run=True))
        assert again.catalog.name == name and list(again.servers) == list(imported.servers)
    finally:
        remove_quietly(catalogs, name)
    assert name not in names(catalogs)


def test_an_invalid_file_is_refused_with_its_line_and_stores_nothing(
    catalogs: rpc.CatalogServiceStub,
) -> None:
    name = unique("broken")
    with pytest.raises(grpc.RpcError) as raised:
        catalogs.ImportCatalog(pb.ImportCatalogRequest(name=name, content=BROKEN))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value)["content"].startswith(
        "line 4, column 11: servers.clock.args: expected a list"
    )
    assert name not in names(catalogs)


def test_dry_run_stores_nothing(catalogs: rpc.CatalogServiceStub) -> None:
    name = unique("dry")
    reply = catalogs.ImportCatalog(pb.ImportCatalogRequest(name=name, content=TEAM, dry_run=True))
    assert reply.catalog.server_count == 2
    assert name not in names(catalogs)


def test_the_builtin_catalog_cannot_be_removed_or_changed(
    catalogs: rpc.CatalogServiceStub,
) -> None:
    calls = [
        lambda: catalogs.RemoveCatalog(pb.RemoveCatalogRequest(name="berth")),
        lambda: catalogs.RemoveCatalogServer(
            pb.RemoveCatalogServerRequest(catalog="berth", server="time")
        ),
        lambda: catalogs.ImportCatalog(pb.ImportCatalogRequest(name="berth", content=TEAM)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "time" in {s.name for s in catalogs.ShowCatalog(pb.ShowCatalogRequest()).servers}


def test_create_add_and_remove_entries(catalogs: rpc.CatalogServiceStub) -> None:
    name = unique("mine")
    try:
        created = catalogs.CreateCatalog(pb.CreateCatalogRequest(name=name, display_name="Mine"))
        assert created.catalog.server_count == 0
        with pytest.raises(grpc.RpcError) as raised:
            catalogs.CreateCatalog(pb.CreateCatalogRequest(name=name))
        assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS

        add = pb.AddCatalogServerRequest(catalog=name, server="clock", content=TEAM)
        assert catalogs.AddCatalogServer(add).server.stdio.command == "mcp-server-time"
        with pytest.raises(grpc.RpcError) as raised:
            catalogs.AddCatalogServer(add)
        assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
        add.force = True
        catalogs.AddCatalogServer(add)

        spec = resources_pb2.ServerSpec(
            name="echo", stdio=resources_pb2.StdioRun(command="echo-mcp", args=["-v"])
        )
        catalogs.AddCatalogServer(
            pb.AddCatalogServerRequest(catalog=name, server="echo", spec=spec)
        )
        shown = catalogs.ShowCatalog(pb.ShowCatalogRequest(name=name))
        assert [s.name for s in shown.servers] == ["clock", "echo"]

        catalogs.RemoveCatalogServer(pb.RemoveCatalogServerRequest(catalog=name, server="echo"))
        with pytest.raises(grpc.RpcError) as raised:
            catalogs.RemoveCatalogServer(pb.RemoveCatalogServerRequest(catalog=name, server="echo"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        remove_quietly(catalogs, name)


def test_adding_to_a_missing_catalog_is_not_found(catalogs: rpc.CatalogServiceStub) -> None:
    add = pb.AddCatalogServerRequest(catalog=unique("nobody"), server="clock", content=TEAM)
    with pytest.raises(grpc.RpcError) as raised:
        catalogs.AddCatalogServer(add)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_reset_removes_the_user_catalogs(catalogs: rpc.CatalogServiceStub) -> None:
    first, second = unique("one"), unique("two")
    try:
        catalogs.CreateCatalog(pb.CreateCatalogRequest(name=first))
        catalogs.CreateCatalog(pb.CreateCatalogRequest(name=second))
        removed = catalogs.ResetCatalog(pb.ResetCatalogRequest()).names
        assert {first, second} <= set(removed)
        assert names(catalogs) == ["berth"]
    finally:
        for name in (first, second):
            remove_quietly(catalogs, name)


# -- the CLI ----------------------------------------------------------------------------


def berth(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return run_berth(f"unix://{stack.socket}", *args)


def test_the_cli_imports_lists_and_exports(stack: Stack, tmp_path: Path) -> None:
    name = unique("cli")
    source = tmp_path / "team.yaml"
    source.write_text(f"name: {name}\n{TEAM}")
    try:
        imported = berth(stack, "mcp", "catalog", "import", str(source))
        assert imported.returncode == 0, imported.stderr
        assert f"Imported catalog {name} with 2 servers: clock, search" in imported.stdout

        listed = berth(stack, "mcp", "catalog", "ls")
        assert listed.returncode == 0, listed.stderr
        rows = [line.split() for line in listed.stdout.splitlines()]
        assert [row[0] for row in rows[1:3]] == ["berth", name]
        assert str(source) in listed.stdout

        exported_file = tmp_path / "out.yaml"
        exported = berth(stack, "mcp", "catalog", "export", name, str(exported_file))
        assert exported.returncode == 0, exported.stderr
        assert "mcp-server-time" in exported_file.read_text()
    finally:
        berth(stack, "mcp", "catalog", "rm", name)


def test_the_cli_explains_a_bad_file(stack: Stack, tmp_path: Path) -> None:
    source = tmp_path / "broken.yaml"
    source.write_text(BROKEN)
    result = berth(stack, "mcp", "catalog", "import", "--name", unique("bad"), str(source))
    assert result.returncode == 1
    assert "line 4, column 11: servers.clock.args: expected a list" in result.stderr
    assert "Traceback" not in result.stderr
