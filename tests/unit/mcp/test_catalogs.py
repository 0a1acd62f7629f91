"""Catalog YAML: parsing, the problems it reports with line and column, and round trips."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from berth.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from berth.mcp.adapters.catalog_store import FileCatalogStore
from berth.mcp.domain.catalogs import (
    Catalogs,
    dump_catalog,
    entry_from_mapping,
    load_builtin,
    parse_catalog,
    parse_duration,
)
from berth.mcp.transport.catalogs import entry_from_spec, spec_from_entry

FULL = textwrap.dedent(
    """\
    name: team
    displayName: Team servers
    description: What the team runs
    servers:
      clock:
        title: Clock
        command: mcp-server-time
        args: ["--local-timezone", "{{clock.zone}}"]
        workingDir: /srv
        env: {TZ: UTC}
        config:
          type: object
          properties: {zone: {type: string}}
          required: [zone]
        tools:
          - {name: get_current_time, description: Now}
        longLived: true
        callTimeout: 90s
        tags: [time]
      search:
        description: Search the web
        remote:
          url: https://example.com/mcp
          transport: sse
          headers: {X-Client: berth}
        secrets:
          - {name: search.key, header: X-API-Key}
          - {name: search.token, env: TOKEN, injection: file, path: /run/token}
        oauth: {provider: search, scopes: [read], clientId: abc}
        icon: https://example.com/icon.png
        homepage: https://example.com
    """
)


def problems(text: str) -> list[str]:
    with pytest.raises(InvalidArgument) as raised:
        parse_catalog(text)
    assert {v.field for v in raised.value.violations} == {"content"}
    return [v.description for v in raised.value.violations]


def test_a_full_catalog_parses() -> None:
    catalog = parse_catalog(FULL, source="/tmp/team.yaml")
    assert (catalog.name, catalog.display_name, catalog.source) == (
        "team",
        "Team servers",
        "/tmp/team.yaml",
    )
    assert list(catalog.servers) == ["clock", "search"]
    assert catalog.servers["clock"]["config"]["required"] == ["zone"]
    assert catalog.servers["search"]["remote"]["transport"] == "sse"


def test_the_requested_name_wins_over_the_files() -> None:
    assert parse_catalog(FULL, "other").name == "other"


def test_a_nameless_file_is_named_after_its_source() -> None:
    assert parse_catalog("servers: {}\n", source="/tmp/team.yaml").name == "team"
    assert parse_catalog("servers: {}\n", source="https://host/x/ops.yml?v=2").name == "ops"


def test_a_nameless_file_from_nowhere_needs_a_name() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_catalog("servers: {}\n")
    assert raised.value.violations[0].field == "name"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "servers:\n  time:\n    command: [a]\n",
            "line 3, column 14: servers.time.command: expected a string, got a list",
        ),
        (
            "servers:\n  time:\n    command: x\n    colour: red\n",
            "line 4, column 5: servers.time.colour: unknown key 'colour'",
        ),
        ("name: x\n", "line 1, column 1: servers: required key missing"),
        (
            "servers:\n  Time_Server:\n    command: x\n",
            "line 2, column 3: servers.Time_Server: 'Time_Server' is not a valid name",
        ),
        (
            "servers:\n  t:\n    command: x\n    remote: {url: u}\n",
            "line 3, column 5: servers.t: needs exactly one of `command` (stdio) and `remote`",
        ),
        (
            "servers:\n  t:\n    title: T\n",
            "line 3, column 5: servers.t: needs exactly one of",
        ),
        (
            "servers:\n  t:\n    command: x\n    longLived: yes please\n",
            "line 4, column 16: servers.t.longLived: expected true or false",
        ),
        (
            "servers:\n  t:\n    command: x\n    callTimeout: soon\n",
            "line 3, column 5: servers.t: callTimeout: 'soon' is not a duration",
        ),
        (
            "servers:\n  t:\n    remote: {url: u, transport: ws}\n",
            "line 3, column 33: servers.t.remote.transport: 'ws' is not one of",
        ),
        (
            "servers:\n  t:\n    remote: {url: u}\n    secrets: [{name: s, injection: file}]\n",
            "line 4, column 15: servers.t.secrets[0]: file injection needs `env`",
        ),
        (
            "servers:\n  t:\n    command: x\n    env: {PORT: 8080}\n",
            "line 4, column 17: servers.t.env.PORT: expected a string, got a number (8080)",
        ),
        (
            "servers:\n  t:\n    command: x\n  t:\n    command: y\n",
            "line 4, column 3: servers.t: duplicate key",
        ),
        ("servers: [\n", "line 2, column 1: invalid YAML"),
        ("", "line 1, column 1: the file is empty"),
        ("- a\n", "line 1, column 1: expected a mapping, got a list"),
    ],
)
def test_each_problem_names_its_line_column_and_reason(text: str, expected: str) -> None:
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_every_problem_is_reported() -> None:
    found = problems("servers:\n  a:\n    command: 1\n  b:\n    title: [x]\n    command: y\n")
    assert [p.split(":")[0] for p in found] == ["line 3, column 14", "line 5, column 12"]


def test_export_imports_again_to_the_same_catalog() -> None:
    catalog = parse_catalog(FULL)
    assert parse_catalog(dump_catalog(catalog)) == catalog


def test_a_server_spec_converts_to_the_same_entry() -> None:
    for name, entry in parse_catalog(FULL).servers.items():
        assert entry_from_mapping(entry_from_spec(spec_from_entry(name, entry)), "spec") == entry


def test_spec_conversion_keeps_the_proto_fields() -> None:
    search = spec_from_entry("search", parse_catalog(FULL).servers["search"])
    assert search.remote.headers["X-Client"] == "berth"
    assert [s.injection for s in search.secrets] == [3, 2]  # HEADER, FILE
    assert search.oauth.client_id == "abc"
    clock = spec_from_entry("clock", parse_catalog(FULL).servers["clock"])
    assert clock.call_timeout.seconds == 90
    assert clock.stdio.args[1] == "{{clock.zone}}"


def test_the_builtin_catalog_holds_the_reference_servers() -> None:
    builtin = load_builtin()
    assert builtin.builtin and builtin.name == "berth"
    assert {"time", "git", "everything", "filesystem"} <= set(builtin.servers)
    assert builtin.servers["time"]["command"] == "mcp-server-time"
    assert builtin.servers["git"]["command"] == "mcp-server-git"
    assert builtin.servers["everything"]["args"] == [
        "-y",
        "@modelcontextprotocol/server-everything",
    ]
    filesystem = builtin.servers["filesystem"]
    assert "{{filesystem.root}}" in filesystem["args"]
    assert filesystem["config"]["required"] == ["root"]


def catalogs(tmp_path: Path) -> Catalogs:
    clock = lambda: datetime(2025, 1, 2, tzinfo=UTC)  # noqa: E731
    return Catalogs(load_builtin(), FileCatalogStore(tmp_path / "catalogs"), clock)


def test_the_store_keeps_imported_catalogs(tmp_path: Path) -> None:
    catalogs(tmp_path).import_("", FULL, "/tmp/team.yaml", dry_run=False)
    again = catalogs(tmp_path)
    assert [c.name for c in again.list()] == ["berth", "team"]
    team = again.get("team")
    assert team.source == "/tmp/team.yaml"
    assert team.update_time == datetime(2025, 1, 2, tzinfo=UTC)
    assert team.servers == parse_catalog(FULL).servers


def test_dry_run_and_invalid_imports_store_nothing(tmp_path: Path) -> None:
    book = catalogs(tmp_path)
    book.import_("", FULL, "", dry_run=True)
    with pytest.raises(InvalidArgument):
        book.import_("team", "servers: {a: {}}\n", "", dry_run=False)
    assert [c.name for c in book.list()] == ["berth"]


def test_the_builtin_catalog_cannot_change(tmp_path: Path) -> None:
    book = catalogs(tmp_path)
    with pytest.raises(FailedPrecondition):
        book.remove("berth")
    with pytest.raises(FailedPrecondition):
        book.import_("berth", FULL, "", dry_run=False)
    with pytest.raises(AlreadyExists):
        book.create("berth", "", "")


def test_add_and_remove_entries(tmp_path: Path) -> None:
    book = catalogs(tmp_path)
    book.create("mine", "Mine", "")
    entry = parse_catalog(FULL).servers["clock"]
    book.add_server("mine", "clock", entry, force=False)
    with pytest.raises(AlreadyExists):
        book.add_server("mine", "clock", entry, force=False)
    book.add_server("mine", "clock", entry, force=True)
    book.remove_server("mine", "clock")
    with pytest.raises(NotFound):
        book.remove_server("mine", "clock")
    assert book.reset() == ["mine"]
    with pytest.raises(NotFound):
        book.get("mine")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("1m30s", 90), ("2h", 7200), ("500ms", 0.5)]
)
def test_durations(text: str, seconds: float) -> None:
    duration = parse_duration(text)
    assert duration is not None and duration.total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "30", "1d", "s", "1.5s", "30s1m"])
def test_not_durations(text: str) -> None:
    assert parse_duration(text) is None
