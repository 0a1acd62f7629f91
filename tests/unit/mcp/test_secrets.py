"""The Secrets rules: validation, and who gets what (declared AND allowed AND set)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from berth.common.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.mcp.adapters.catalog_store import FileCatalogStore
from berth.mcp.adapters.server_store import FileServerStore
from berth.mcp.domain.catalogs import Catalogs, load_builtin
from berth.mcp.domain.policy import Policies
from berth.mcp.domain.secrets import CREDSTORE, SecretInfo, Secrets
from berth.mcp.domain.servers import Requirement, Servers

NONE, DONE, PARTIAL, REQUIRED = (
    Requirement.NONE,
    Requirement.DONE,
    Requirement.PARTIAL,
    Requirement.REQUIRED,
)
TEAM = textwrap.dedent(
    """\
    servers:
      db:
        command: db-mcp
        secrets:
          - {name: POSTGRES_PASSWORD, env: PGPASSWORD}
          - {name: db.user, env: PGUSER}
      db-replica:
        command: db-mcp
        secrets: [{name: POSTGRES_PASSWORD, injection: file, env: PGPASSFILE}]
      search:
        remote: {url: "https://example.com/mcp"}
        secrets: [{name: search.key, header: X-API-Key}]
      plain:
        command: plain-mcp
    """
)
VALUE = "s3cr3t-value-that-must-not-leak"


class MemoryVault:
    """A SecretVault in a dict (the real one is tested in test_secret_store.py)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, str]] = {}
        self.broken: FailedPrecondition | None = None

    def _check(self) -> None:
        if self.broken is not None:
            raise self.broken

    def list(self) -> list[SecretInfo]:
        self._check()
        now = datetime.now(UTC)
        return [SecretInfo(n, self.values[n][1], now, now) for n in sorted(self.values)]

    def reveal(self, names: Iterable[str]) -> dict[str, str]:
        self._check()
        return {n: self.values[n][0] for n in names if n in self.values}

    def put(self, name: str, value: str, provider: str) -> SecretInfo:
        self._check()
        self.values[name] = (value, provider)
        now = datetime.now(UTC)
        return SecretInfo(name, provider, now, now)

    def remove(self, names: Sequence[str] | None) -> list[str]:
        self._check()
        chosen = sorted(self.values) if names is None else list(names)
        missing = [n for n in chosen if n not in self.values]
        if missing:
            raise NotFound(f"no secret {missing[0]!r}", reason="SECRET_NOT_FOUND")
        for name in chosen:
            del self.values[name]
        return chosen

    def update(
        self, name: str, provider: str, change: Callable[[str | None], str | None]
    ) -> str | None:
        raise NotImplementedError


class MemoryPolicyStore:
    def __init__(self) -> None:
        self.stored: tuple[str, datetime] | None = None

    def load(self) -> tuple[str, datetime] | None:
        return self.stored

    def save(self, text: str) -> None:
        self.stored = (text, datetime.now(UTC))


@pytest.fixture
def vault() -> MemoryVault:
    return MemoryVault()


@pytest.fixture
def secrets(tmp_path: Path, vault: MemoryVault) -> Secrets:
    catalogs = Catalogs(load_builtin(), FileCatalogStore(tmp_path / "catalogs"))
    catalogs.import_("team", TEAM, "", dry_run=False)
    servers = Servers(catalogs, FileServerStore(tmp_path))
    return Secrets(vault, servers, Policies(MemoryPolicyStore()))


def entry(secrets: Secrets, server: str) -> dict[str, object]:
    return secrets.servers.find(server)[1]


def set_all(secrets: Secrets) -> None:
    for name in ("POSTGRES_PASSWORD", "db.user", "search.key", "UNDECLARED"):
        secrets.set(name, f"{name}-{VALUE}", "")


# -- set --------------------------------------------------------------------------------


def test_set_stores_with_the_default_provider_and_names_the_declaring_servers(
    secrets: Secrets, vault: MemoryVault
) -> None:
    view = secrets.set("POSTGRES_PASSWORD", VALUE, "")
    assert (view.info.name, view.info.provider) == ("POSTGRES_PASSWORD", CREDSTORE)
    assert view.servers == ("db", "db-replica")
    assert vault.values["POSTGRES_PASSWORD"] == (VALUE, CREDSTORE)
    oauth = secrets.set("oauth.github", "gho_token", "oauth/github")
    assert (oauth.info.provider, oauth.servers) == ("oauth/github", ())


@pytest.mark.parametrize(
    ("name", "value", "provider", "field", "why"),
    [
        ("", VALUE, "", "name", "give the secret's name"),
        ("-leading-dash", VALUE, "", "name", "is not a valid secret name"),
        ("has space", VALUE, "", "name", "is not a valid secret name"),
        ("x" * 129, VALUE, "", "name", "is not a valid secret name"),
        ("A", "", "", "value", "an empty value is refused"),
        ("A", "x" * (64 * 1024 + 1), "", "value", "longer than 65536 characters"),
        ("A", "a\x00" + VALUE, "", "value", "NUL character"),
        ("A", VALUE, "vault", "provider", "unsupported provider 'vault'"),
        ("A", VALUE, "oauth/", "provider", "is not a valid OAuth app name"),
        ("A", VALUE, "oauth/github", "provider", "kept as the secret oauth.github"),
        ("oauth.github", VALUE, "credstore", "provider", "use --provider oauth/github"),
    ],
)
def test_set_refuses_bad_input_without_quoting_the_value(
    secrets: Secrets, vault: MemoryVault, name: str, value: str, provider: str, field: str, why: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        secrets.set(name, value, provider)
    found = {v.field: v.description for v in raised.value.violations}
    assert why in found[field], found
    assert raised.value.reason == "INVALID_SECRET"
    assert VALUE not in raised.value.message
    assert vault.values == {}


def test_secret_names_of_the_seed_examples_are_valid(secrets: Secrets) -> None:
    for name in ("POSTGRES_PASSWORD", "github.personal_access_token", "_x", "a-b.c_D9"):
        secrets.set(name, VALUE, CREDSTORE)


# -- list and remove --------------------------------------------------------------------


def test_list_shows_metadata_and_declaring_servers(secrets: Secrets) -> None:
    set_all(secrets)
    listed = {view.info.name: view.servers for view in secrets.list()}
    assert listed == {
        "POSTGRES_PASSWORD": ("db", "db-replica"),
        "UNDECLARED": (),
        "db.user": ("db",),
        "search.key": ("search",),
    }


def test_remove_by_name_or_all_but_not_both_nor_neither(
    secrets: Secrets, vault: MemoryVault
) -> None:
    set_all(secrets)
    for names, all_ in (([], False), (["db.user"], True)):
        with pytest.raises(InvalidArgument):
            secrets.remove(names, all_)
    with pytest.raises(InvalidArgument) as raised:
        secrets.remove(["ok", "bad name"], False)
    assert {v.field for v in raised.value.violations} == {"names[1]"}
    with pytest.raises(NotFound):
        secrets.remove(["db.user", "missing"], False)
    assert secrets.remove(["db.user", "db.user"], False) == ["db.user"]
    assert secrets.remove([], True) == ["POSTGRES_PASSWORD", "UNDECLARED", "search.key"]
    assert vault.values == {}


# -- export, granted, standing ----------------------------------------------------------


def test_export_gives_exactly_what_is_set_declared_and_allowed(secrets: Secrets) -> None:
    set_all(secrets)
    exported = secrets.export(["db", "search", "plain"])
    assert [(s.name, s.value, s.servers) for s in exported] == [
        ("POSTGRES_PASSWORD", f"POSTGRES_PASSWORD-{VALUE}", ("db",)),
        ("db.user", f"db.user-{VALUE}", ("db",)),
        ("search.key", f"search.key-{VALUE}", ("search",)),
    ]
    assert VALUE not in repr(exported)  # a stray log of the objects shows no value
    secrets.policies.set("POSTGRES_PASSWORD allows db*\n*.user allows *\ndb.user denies db\n")
    exported = secrets.export(["db", "db-replica", "search"])
    assert [(s.name, s.servers) for s in exported] == [("POSTGRES_PASSWORD", ("db", "db-replica"))]


def test_export_without_servers_means_every_enabled_server(secrets: Secrets) -> None:
    set_all(secrets)
    assert secrets.export([]) == []
    secrets.servers.enable(["search", "plain"])
    assert [s.name for s in secrets.export([])] == ["search.key"]


def test_export_of_an_unknown_or_empty_server_name_is_refused(secrets: Secrets) -> None:
    with pytest.raises(NotFound) as raised:
        secrets.export(["db", "nope"])
    assert raised.value.reason == "SERVER_NOT_FOUND"
    with pytest.raises(InvalidArgument) as invalid:
        secrets.export(["db", ""])
    assert {v.field for v in invalid.value.violations} == {"servers[1]"}


def test_export_skips_what_is_not_set(secrets: Secrets) -> None:
    secrets.set("db.user", VALUE, CREDSTORE)
    assert [s.name for s in secrets.export(["db"])] == ["db.user"]


def test_granted_is_declared_and_allowed_and_set(secrets: Secrets) -> None:
    set_all(secrets)
    assert secrets.granted("db", entry(secrets, "db")) == {
        "POSTGRES_PASSWORD": f"POSTGRES_PASSWORD-{VALUE}",
        "db.user": f"db.user-{VALUE}",
    }
    assert secrets.granted("plain", entry(secrets, "plain")) == {}
    secrets.policies.set("* allows *\nPOSTGRES_PASSWORD denies db\n")
    assert list(secrets.granted("db", entry(secrets, "db"))) == ["db.user"]
    secrets.policies.set("# nothing\n")
    assert secrets.granted("db", entry(secrets, "db")) == {}


def test_granted_and_export_fail_when_the_store_cannot_be_read(
    secrets: Secrets, vault: MemoryVault
) -> None:
    set_all(secrets)
    vault.broken = FailedPrecondition("wrong key", reason="SECRET_KEY_MISMATCH")
    for call in (
        lambda: secrets.granted("db", entry(secrets, "db")),
        lambda: secrets.export(["db"]),
        secrets.list,
    ):
        with pytest.raises(FailedPrecondition):
            call()


def test_standing_columns(secrets: Secrets) -> None:
    def standing(server: str) -> tuple[Requirement, Requirement]:
        return secrets.standing(server, entry(secrets, server))

    assert standing("plain") == (NONE, NONE)
    assert standing("db") == (REQUIRED, DONE)  # nothing set; the default policy allows all
    secrets.set("db.user", VALUE, CREDSTORE)
    assert standing("db") == (PARTIAL, DONE)
    secrets.set("POSTGRES_PASSWORD", VALUE, CREDSTORE)
    assert standing("db") == (DONE, DONE)
    secrets.policies.set("db.user allows db\n")
    assert standing("db") == (DONE, PARTIAL)
    assert standing("db-replica") == (DONE, REQUIRED)
    secrets.policies.set("* allows *\n* denies search\n")
    assert standing("search") == (REQUIRED, REQUIRED)


def test_standing_keeps_server_ls_working_when_the_store_cannot_be_read(
    secrets: Secrets, vault: MemoryVault
) -> None:
    set_all(secrets)
    vault.broken = FailedPrecondition("wrong key", reason="SECRET_KEY_MISMATCH")
    assert secrets.standing("db", entry(secrets, "db")) == (REQUIRED, DONE)
