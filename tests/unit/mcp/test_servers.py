"""Enabled servers and their config: all-or-nothing enabling, schema checks, persistence."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from berth.api.mcp.v1 import resources_pb2 as res
from berth.common.errors import InvalidArgument, NotFound
from berth.mcp.adapters.catalog_store import FileCatalogStore
from berth.mcp.adapters.server_store import FileServerStore
from berth.mcp.domain import json_schema
from berth.mcp.domain.catalogs import Catalogs, load_builtin
from berth.mcp.domain.servers import ConfigFormat, Requirement, Servers
from berth.mcp.transport.servers import inspection, server_to_proto

TEAM = textwrap.dedent(
    """\
    servers:
      search:
        description: Search the web
        remote: {url: "https://example.com/mcp"}
        secrets: [{name: search.key, header: X-API-Key}]
        oauth: {provider: search}
      tuned:
        command: tuned-mcp
        config:
          type: object
          properties:
            level: {type: integer, minimum: 1, maximum: 5}
            mode: {enum: [fast, slow]}
            paths: {type: array, items: {type: string}}
          required: [level]
          additionalProperties: false
    """
)


def make_servers(state: Path) -> Servers:
    catalogs = Catalogs(load_builtin(), FileCatalogStore(state / "catalogs"))
    return Servers(catalogs, FileServerStore(state))


@pytest.fixture
def servers(tmp_path: Path) -> Servers:
    made = make_servers(tmp_path)
    made.catalogs.import_("team", TEAM, "", dry_run=False)
    return made


def content_violations(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    assert {v.field for v in error.value.violations} == {"content"}
    return [v.description for v in error.value.violations]


# -- enabling ---------------------------------------------------------------------------


def test_enable_list_disable_and_reset(servers: Servers) -> None:
    enabled = servers.enable(["time", "git", "time"])
    assert [s.name for s in enabled] == ["time", "git"]
    assert all(s.enabled and s.catalog == "berth" for s in enabled)
    assert [s.name for s in servers.list()] == ["git", "time"]
    assert servers.disable(["time", "everything"]) == ["time"]
    assert [s.name for s in servers.list()] == ["git"]
    servers.enable(["search"])
    assert servers.reset() == ["git", "search"]
    assert servers.list() == []
    assert servers.reset() == []


def test_an_unknown_name_enables_nothing(servers: Servers, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as raised:
        servers.enable(["time", "nobody", "git"])
    assert raised.value.reason == "SERVER_NOT_FOUND"
    assert raised.value.metadata == {"name": "nobody"}
    assert servers.list() == []
    assert not (tmp_path / "servers.json").exists()


@pytest.mark.parametrize("names", [[], ["time", ""]])
def test_names_are_needed(servers: Servers, names: list[str]) -> None:
    for call in (servers.enable, servers.disable):
        with pytest.raises(InvalidArgument) as raised:
            call(names)
        assert raised.value.violations[0].field.startswith("names")


def test_the_state_survives_a_restart(servers: Servers, tmp_path: Path) -> None:
    servers.enable(["filesystem"])
    servers.write_config("filesystem", "root: /srv")
    again = make_servers(tmp_path)
    assert [s.name for s in again.list()] == ["filesystem"]
    assert again.read_config("filesystem", ConfigFormat.YAML) == "root: /srv\n"
    assert json.loads((tmp_path / "servers.json").read_text()) == {"enabled": ["filesystem"]}


def test_requirements_follow_the_entry(servers: Servers) -> None:
    search, tuned = servers.enable(["search", "tuned"])
    # No secret, OAuth or policy store yet: every declared need is missing.
    assert (search.secrets, search.oauth, search.policy) == (Requirement.REQUIRED,) * 3
    assert search.config_status == Requirement.NONE
    assert (tuned.secrets, tuned.config_status) == (Requirement.NONE, Requirement.REQUIRED)
    servers.write_config("tuned", "level: 2")
    assert servers.list()[1].config_status == Requirement.DONE


def test_a_server_whose_entry_went_away_stays_listed(servers: Servers) -> None:
    servers.enable(["search"])
    servers.catalogs.remove("team")
    (orphan,) = servers.list()
    assert (orphan.name, orphan.catalog, orphan.enabled) == ("search", "", True)
    assert "no catalog" in server_to_proto(orphan).description
    with pytest.raises(NotFound):
        servers.inspect("search")
    assert servers.disable(["search"]) == ["search"]


def test_inspect_shows_the_entry_declared_tools_and_secrets(servers: Servers) -> None:
    servers.write_config("filesystem", '{"root": "/data"}')
    reply = inspection(servers.inspect("filesystem"))
    assert reply.server.enabled is False
    assert reply.spec.stdio.command == "npx"
    assert reply.config == "root: /data\n"
    assert "write_file" in {t.name for t in reply.tools}
    assert all(t.enabled and t.server == "filesystem" for t in reply.tools)
    secret = inspection(servers.inspect("search")).secrets[0]
    assert (secret.name, secret.injection) == ("search.key", res.SECRET_INJECTION_HEADER)
    assert (secret.set, secret.allowed) == (False, False)
    assert inspection(servers.inspect("time")).config == ""


def test_inspect_needs_a_known_name(servers: Servers) -> None:
    with pytest.raises(InvalidArgument):
        servers.inspect("")
    with pytest.raises(NotFound):
        servers.inspect("nobody")


BAD_CONFIG = [
    ("tuned", "level: high", "tuned.level: 'high' is not of type 'integer'"),
    ("tuned", "level: true", "tuned.level: True is not of type 'integer'"),
    ("tuned", "level: 9", "tuned.level: 9 is greater than the maximum of 5"),
    ("tuned", "mode: fast", "tuned: 'level' is a required property"),
    ("tuned", "{level: 1, mode: warp}", "tuned.mode: 'warp' is not one of ['fast', 'slow']"),
    ("tuned", "{level: 1, paths: [a, 2]}", "tuned.paths[1]: 2 is not of type 'string'"),
    (
        "tuned",
        "{level: 1, colour: red}",
        "tuned: Additional properties are not allowed ('colour' was unexpected)",
    ),
    ("tuned", "- level", "tuned: expected an object of config properties, got a list"),
    ("time", "zone: UTC", "time: the server takes no config"),
    ("", "nobody: {}", "nobody: no server 'nobody' in any catalog"),
    ("", "[1]", "expected an object keyed by server name, got a list"),
    (
        "filesystem",
        "root: /srv\n- x\n",
        "line 2, column 1: invalid YAML: expected <block end>, but found '-'",
    ),
    ("filesystem", "  ", "give the config as a YAML or JSON document"),
    ("filesystem", "root: !!binary aGk=", "filesystem.root: not a JSON value (bytes)"),
]


# -- config -----------------------------------------------------------------------------


def test_config_round_trip_in_yaml_and_json(servers: Servers) -> None:
    stored = servers.write_config("tuned", '{"level": 3, "mode": "fast"}')
    assert stored == "level: 3\nmode: fast\n"
    servers.write_config("filesystem", "root: /srv")
    assert json.loads(servers.read_config("tuned", ConfigFormat.JSON)) == {
        "level": 3,
        "mode": "fast",
    }
    whole = servers.read_config("", ConfigFormat.YAML)
    assert whole == "tuned:\n  level: 3\n  mode: fast\nfilesystem:\n  root: /srv\n"
    servers.reset_config("tuned")
    assert servers.read_config("tuned", ConfigFormat.YAML) == "{}\n"
    assert json.loads(servers.read_config("", ConfigFormat.JSON)) == {
        "filesystem": {"root": "/srv"}
    }
    servers.reset_config("")
    assert servers.read_config("", ConfigFormat.JSON) == "{}\n"


def test_writing_all_replaces_the_whole_config(servers: Servers) -> None:
    servers.write_config("tuned", "level: 1")
    servers.write_config("", "filesystem: {root: /a}\ntime: {}\n")
    assert json.loads(servers.read_config("", ConfigFormat.JSON)) == {"filesystem": {"root": "/a"}}


@pytest.mark.parametrize(("server", "content", "expected"), BAD_CONFIG)
def test_bad_config_is_refused_with_its_path_and_nothing_is_written(
    servers: Servers, tmp_path: Path, server: str, content: str, expected: str
) -> None:
    servers.write_config("tuned", "level: 2")
    before = (tmp_path / "config.yaml").read_text()
    with pytest.raises(InvalidArgument) as raised:
        servers.write_config(server, content)
    assert raised.value.reason == "INVALID_CONFIG"
    assert content_violations(raised) == [expected]
    assert (tmp_path / "config.yaml").read_text() == before


def test_config_of_an_unknown_server_is_not_found(servers: Servers) -> None:
    calls = [
        lambda: servers.write_config("nobody", "a: 1"),
        lambda: servers.read_config("nobody", ConfigFormat.YAML),
        lambda: servers.reset_config("nobody"),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            call()


def test_dates_stay_strings(servers: Servers) -> None:
    servers.write_config("filesystem", "root: /srv\nsince: 2024-01-01\n")
    text = servers.read_config("filesystem", ConfigFormat.JSON)
    assert json.loads(text)["since"] == "2024-01-01"


# -- the schema ------------------------------------------------------------------


def test_schema_checks_nest_and_accept_what_they_should() -> None:
    schema = {
        "type": "object",
        "properties": {
            "ratio": {"type": "number"},
            "tags": {"type": ["array", "null"], "items": {"minLength": 2, "pattern": "^[a-z]+$"}},
            "inner": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
    }
    assert json_schema.problems({"ratio": 1, "tags": None, "inner": {"a": True}}, schema) == []
    assert json_schema.problems({"ratio": 0.5, "tags": ["ab"]}, schema) == []
    found = json_schema.problems({"tags": ["a", "B1"], "inner": {"x": 1}}, schema, "s")
    assert found == [
        "s.inner.x: 1 is not of type 'boolean'",
        "s.tags[0]: 'a' is too short",
        "s.tags[1]: 'B1' does not match '^[a-z]+$'",
    ]
