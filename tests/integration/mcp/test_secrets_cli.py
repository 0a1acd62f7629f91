"""`berth mcp secret` and `berth mcp policy` against the shared stack's real berth-mcpd.

Every test uses names of its own, removes what it made and puts the stack's policy back;
each checks that the values it set are nowhere in the mcpd state directory or the logs.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from berth.api.mcp.v1 import catalog_service_pb2 as catalog_pb
from berth.api.mcp.v1 import catalog_service_pb2_grpc as catalog_rpc
from berth.api.mcp.v1 import policy_service_pb2 as policy_pb
from berth.api.mcp.v1 import policy_service_pb2_grpc as policy_rpc
from tests.integration.mcp.test_catalog_service import berth
from tests.support.processes import BIN, run_berth
from tests.support.stack import Stack


def run(stack: Stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_berth(f"unix://{stack.socket}", *args, stdin=stdin)


def ok(stack: Stack, *args: str, stdin: str | None = None) -> str:
    result = run(stack, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(stack: Stack, *args: str, stdin: str | None = None) -> str:
    result = run(stack, *args, stdin=stdin)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    return result.stderr


def value() -> str:
    """A value unlike anything else in the files it is looked for in."""
    return f"v4lue-{secrets.token_urlsafe(18)}"


def assert_nowhere(stack: Stack, values: list[str]) -> None:
    """None of `values` is in the mcpd state directory (any file) or the daemons' logs."""
    places = [p for p in (stack.root / "mcp").rglob("*") if p.is_file()]
    places += [stack.daemons["mcp"].log_path, stack.gateway.log_path]
    for path in places:
        content = path.read_bytes()
        for secret in values:
            assert secret.encode() not in content, f"a secret value is in {path}"


@contextmanager
def catalog(stack: Stack, servers: dict[str, list[str]]) -> Iterator[dict[str, str]]:
    """A catalog of stdio servers (never run) declaring secrets; yields their unique names."""
    tag = secrets.token_hex(3)
    names = {server: f"{server}-{tag}" for server in servers}
    lines = [f"name: secrets-{tag}", "servers:"]
    for server, declared in servers.items():
        lines += [f"  {names[server]}:", "    command: never-run"]
        if declared:
            lines.append("    secrets:")
            lines += [f"      - {{name: {n}, env: {n.replace('.', '_')}}}" for n in declared]
    with stack.channel() as channel:
        stub = catalog_rpc.CatalogServiceStub(channel)
        stub.ImportCatalog(catalog_pb.ImportCatalogRequest(content="\n".join(lines) + "\n"))
        try:
            yield names
        finally:
            stub.RemoveCatalog(catalog_pb.RemoveCatalogRequest(name=f"secrets-{tag}"))


@contextmanager
def policy_restored(stack: Stack) -> Iterator[str]:
    """Yields the stack's policy text, and sets it back however the test ends."""
    with stack.channel() as channel:
        stub = policy_rpc.PolicyServiceStub(channel)
        before = stub.DumpPolicy(policy_pb.DumpPolicyRequest()).content
        try:
            yield before
        finally:
            stub.SetPolicy(policy_pb.SetPolicyRequest(content=before))


@contextmanager
def removed_after(stack: Stack, names: list[str]) -> Iterator[list[str]]:
    try:
        yield names
    finally:
        present = {s["name"] for s in json.loads(ok(stack, "mcp", "secret", "ls", "--json"))}
        leftovers = [name for name in names if name in present]
        if leftovers:
            ok(stack, "mcp", "secret", "rm", *leftovers)


def unique_names(*stems: str) -> list[str]:
    tag = secrets.token_hex(3)
    return [f"{stem}_{tag}" for stem in stems]


# -- set, ls, rm ------------------------------------------------------------------------


def test_set_from_the_argument_and_stdin_then_ls_shows_metadata_only(stack: Stack) -> None:
    first_value, second_value = value(), value()
    with removed_after(stack, unique_names("PASSWORD", "github.token")) as (first, second):
        assert ok(stack, "mcp", "secret", "set", f"{first}={first_value}") == (
            f"Set secret {first} (credstore)\n"
        )
        # `cat pwd.txt | berth mcp secret set NAME`: the final newline is not part of it
        ok(stack, "mcp", "secret", "set", second, stdin=second_value + "\n")

        table = ok(stack, "mcp", "secret", "ls")
        rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
        assert table.splitlines()[0].split() == ["NAME", "PROVIDER", "SERVERS", "UPDATED"]
        assert rows[first][1:3] == ["credstore", "-"] and second in rows
        listed = {s["name"]: s for s in json.loads(ok(stack, "mcp", "secret", "ls", "--json"))}
        assert set(listed[first]) == {"name", "provider", "create_time", "update_time", "servers"}
        for output in (table, json.dumps(listed)):
            assert first_value not in output and second_value not in output

        with policy_restored(stack), catalog(stack, {"db": [first, second]}) as servers:
            ok(stack, "mcp", "policy", "set", "* allows *")
            exported = ok(stack, "mcp", "secret", "export", servers["db"])
            assert sorted(exported.splitlines()) == sorted(
                [f"{first}={first_value}", f"{second}={second_value}"]
            )
            listed = {s["name"]: s for s in json.loads(ok(stack, "mcp", "secret", "ls", "--json"))}
            assert listed[first]["servers"] == [servers["db"]]

        assert ok(stack, "mcp", "secret", "rm", first, second) == f"Removed {first}, {second}\n"
        assert first not in ok(stack, "mcp", "secret", "ls")
    assert_nowhere(stack, [first_value, second_value])


def test_rm_of_an_unknown_name_removes_nothing(stack: Stack) -> None:
    with removed_after(stack, unique_names("KEEP", "MISSING")) as (keep, missing):
        ok(stack, "mcp", "secret", "set", f"{keep}={value()}")
        error = refused(stack, "mcp", "secret", "rm", keep, missing)
        assert f"no secret '{missing}'" in error
        assert keep in ok(stack, "mcp", "secret", "ls")


def test_bad_names_providers_and_values_are_refused_without_echoing_them(stack: Stack) -> None:
    secret_value = value()
    name = unique_names("X")[0]
    assert "not a valid secret name" in refused(
        stack, "mcp", "secret", "set", f"{name}!={secret_value}"
    )
    error = refused(
        stack, "mcp", "secret", "set", f"{name}={secret_value}", "--provider", "oauth/github"
    )
    assert "oauth.github" in error and secret_value not in error
    assert "unsupported provider" in refused(
        stack, "mcp", "secret", "set", f"{name}=x", "--provider", "vault"
    )
    assert "empty value" in refused(stack, "mcp", "secret", "set", name, stdin="")
    assert name not in ok(stack, "mcp", "secret", "ls")
    assert_nowhere(stack, [secret_value])


# -- export and the policy --------------------------------------------------------------


def test_export_prints_exactly_the_declared_and_allowed_secrets(stack: Stack) -> None:
    names = unique_names("DB_PASSWORD", "db.user", "search.key", "UNDECLARED")
    password, user, search_key, _ = names
    values = {name: value() for name in names}
    declared = {"db": [password, user], "replica": [password], "search": [search_key]}
    with (
        removed_after(stack, names),
        policy_restored(stack),
        catalog(stack, {**declared, "plain": []}) as servers,
    ):
        for name in names:
            ok(stack, "mcp", "secret", "set", name, stdin=values[name])
        db, replica, search, plain = (servers[s] for s in ("db", "replica", "search", "plain"))

        ok(stack, "mcp", "policy", "set", "* allows *")
        every = ok(stack, "mcp", "secret", "export", db, replica, search, plain)
        assert sorted(every.splitlines()) == sorted(
            f"{n}={values[n]}" for n in (password, user, search_key)
        )
        assert ok(stack, "mcp", "secret", "export", plain) == ""

        tag = password.rsplit("_", 1)[1]
        narrow = (
            "# the database gets this test's secrets, the replica none\n"
            f"*_{tag} allows db-*\n"
            f"{password} allows {replica}, {search}   # ... but a deny wins:\n"
            f"{password} denies replica-*\n"
        )
        ok(stack, "mcp", "policy", "set", stdin=narrow)
        assert ok(stack, "mcp", "secret", "export", db, replica, search).splitlines() == [
            f"{password}={values[password]}",
            f"{user}={values[user]}",
        ]
        assert ok(stack, "mcp", "secret", "export", replica) == ""
        assert "no server" in refused(stack, "mcp", "secret", "export", f"{db}-nope")
    assert_nowhere(stack, list(values.values()))


def test_policy_set_and_dump_round_trip_and_a_bad_policy_keeps_the_old_one(
    stack: Stack, tmp_path: Path
) -> None:
    with policy_restored(stack):
        text = "# backup me\nPOSTGRES_PASSWORD allows postgres\n\ngithub.* allows git*, ci   # ok\n"
        assert ok(stack, "mcp", "policy", "set", stdin=text) == "Policy set: 2 rules\n"
        backup = tmp_path / "policy.conf"
        backup.write_text(ok(stack, "mcp", "policy", "dump"))
        assert backup.read_text() == text

        error = refused(stack, "mcp", "policy", "set", stdin="a allows b\nc allow d\n")
        assert "line 2, column 3" in error and "`allows` or `denies`" in error
        error = refused(stack, "mcp", "policy", "set", "POSTGRES_PASSWORD allows Postgres")
        assert "line 1, column 26" in error
        assert ok(stack, "mcp", "policy", "dump") == text

        ok(stack, "mcp", "policy", "set", "my-secret allows postgres")
        assert ok(stack, "mcp", "policy", "dump") == "my-secret allows postgres\n"
        # `cat policy.conf | berth mcp policy set` restores the backup
        assert ok(stack, "mcp", "policy", "set", stdin=backup.read_text()).startswith("Policy set")
        assert ok(stack, "mcp", "policy", "dump") == text
        assert ok(stack, "mcp", "policies", "dump") == text


# -- concurrency ------------------------------------------------------------------------


def test_fifty_concurrent_secret_set_commands_lose_nothing(stack: Stack) -> None:
    names = unique_names(*(f"PARALLEL{n}" for n in range(50)))
    values = {name: value() for name in names}
    env = {**os.environ, "BERTH_HOST": f"unix://{stack.socket}"}
    with (
        removed_after(stack, names),
        policy_restored(stack),
        catalog(stack, {"many": names}) as servers,
    ):
        ok(stack, "mcp", "policy", "set", "* allows *")
        commands = [
            subprocess.Popen(
                [str(BIN / "berth"), "mcp", "secret", "set", name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for name in names
        ]
        for command, name in zip(commands, names, strict=True):
            _, stderr = command.communicate(values[name], timeout=180)
            assert command.returncode == 0, stderr
        exported = ok(stack, "mcp", "secret", "export", servers["many"]).splitlines()
        assert sorted(exported) == sorted(f"{n}={values[n]}" for n in names)
    assert_nowhere(stack, list(values.values()))


@pytest.mark.parametrize("command", [["secret", "ls"], ["policy", "dump"]])
def test_the_read_commands_answer(stack: Stack, command: list[str]) -> None:
    assert berth(stack, "mcp", *command).returncode == 0
