"""The secret store's key with a private berth-mcpd: where it comes from, a wrong or missing
one, rotation, and a malformed one refused at start."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from berth.api.mcp.v1 import catalog_service_pb2 as catalog_pb
from berth.api.mcp.v1 import catalog_service_pb2_grpc as catalog_rpc
from berth.api.mcp.v1 import secret_service_pb2 as pb
from berth.api.mcp.v1 import secret_service_pb2_grpc as rpc
from berth.mcp.adapters.secret_key import ENV_KEY, ENV_PREVIOUS, key_id
from tests.integration.test_forwarding import error_info
from tests.support.processes import DaemonProcess, run_berth, start

SERVER = "vault-user"
CATALOG = f"""\
name: key-tests
servers:
  {SERVER}:
    command: never-run
    secrets: [{{name: API_TOKEN, env: API_TOKEN}}, {{name: DB_PASSWORD, env: DB_PASSWORD}}]
"""


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def id_of(key: str) -> str:
    return key_id(base64.b64decode(key))


def daemon_env(env: dict[str, str] | None) -> dict[str, str]:
    """The environment for private_mcpd: `env`, and neither key variable unless it says so."""
    base = {k: v for k, v in os.environ.items() if k not in (ENV_KEY, ENV_PREVIOUS)}
    return {**base, **(env or {})}


@contextmanager
def daemon_with(state: Path, env: dict[str, str] | None = None) -> Iterator[DaemonProcess]:
    """A private berth-mcpd as tests.support.mcp.private_mcpd starts one, but with only the
    key variables the test gives (not any of the caller's)."""
    root = state.parent
    daemon = start(
        "mcpd-private",
        "berth.mcp.main",
        root / "mcpd.sock",
        ["--state-dir", str(state), "--runtime-dir", str(root / "mcp-run"), "--gateway-port", "-1"],
        root,
        env=daemon_env(env),
    )
    try:
        yield daemon
    finally:
        daemon.stop(signal.SIGKILL)


def set_secrets(daemon: DaemonProcess, values: dict[str, str]) -> None:
    with grpc.insecure_channel(daemon.target) as channel:
        catalog_rpc.CatalogServiceStub(channel).ImportCatalog(
            catalog_pb.ImportCatalogRequest(content=CATALOG)
        )
        secret_stub = rpc.SecretServiceStub(channel)
        for name, value in values.items():
            secret_stub.SetSecret(pb.SetSecretRequest(name=name, value=value))


def exported(daemon: DaemonProcess) -> dict[str, str]:
    with grpc.insecure_channel(daemon.target) as channel:
        reply = rpc.SecretServiceStub(channel).ExportSecrets(
            pb.ExportSecretsRequest(servers=[SERVER]), timeout=10
        )
    return {secret.name: secret.value for secret in reply.secrets}


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_berth(daemon.target, "mcp", "secret", *args)


def values_nowhere(state: Path, daemon: DaemonProcess, values: list[str]) -> None:
    places = [p for p in state.rglob("*") if p.is_file()] + [daemon.log_path]
    for path in places:
        content = path.read_bytes()
        for value in values:
            assert value.encode() not in content, f"a secret value or key is in {path}"


def store_key_id(state: Path) -> str:
    return str(json.loads((state / "secrets.json").read_text())["key_id"])


VALUES = {"API_TOKEN": f"tok-{secrets.token_hex(12)}", "DB_PASSWORD": secrets.token_urlsafe(16)}


def test_a_wrong_key_is_refused_clearly_and_rotation_moves_the_store(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old, new = new_key(), new_key()
    with daemon_with(state, {ENV_KEY: old}) as daemon:
        set_secrets(daemon, VALUES)
        assert exported(daemon) == VALUES
    assert store_key_id(state) == id_of(old)
    assert not (state / "secret.key").exists()  # the environment's key is not written down

    with daemon_with(state, {ENV_KEY: new}) as daemon:
        with grpc.insecure_channel(daemon.target) as channel:
            secret_stub = rpc.SecretServiceStub(channel)
            for call in (
                lambda: secret_stub.ListSecrets(pb.ListSecretsRequest()),
                lambda: secret_stub.SetSecret(pb.SetSecretRequest(name="OTHER", value="x")),
                lambda: secret_stub.ExportSecrets(pb.ExportSecretsRequest(servers=[SERVER])),
            ):
                with pytest.raises(grpc.RpcError) as raised:
                    call()
                assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                info = error_info(raised.value)
                assert info.reason == "SECRET_KEY_MISMATCH"
                assert info.metadata["store_key_id"] == id_of(old)
                assert info.metadata["key_id"] == id_of(new)
                assert info.metadata["key_source"] == ENV_KEY
        listed = cli(daemon, "ls")
        assert listed.returncode == 1 and "Traceback" not in listed.stderr
        for words in (id_of(old), id_of(new), ENV_KEY, ENV_PREVIOUS, "secret rm --all"):
            assert words in listed.stderr
        errors = [line for line in daemon.log_lines() if line.get("level") == "error"]
        assert [line["event"] for line in errors] == ["secret store unusable"]
        assert errors[0]["reason"] == "SECRET_KEY_MISMATCH"
    assert store_key_id(state) == id_of(old)  # nothing written with the wrong key

    with daemon_with(state, {ENV_KEY: new, ENV_PREVIOUS: old}) as daemon:
        assert exported(daemon) == VALUES
        assert store_key_id(state) == id_of(new)
        rotated = [line for line in daemon.log_lines() if "re-encrypted" in line["event"]]
        assert rotated and rotated[0]["count"] == 2
    with daemon_with(state, {ENV_KEY: new}) as daemon:  # the previous key is not needed now
        assert exported(daemon) == VALUES
        values_nowhere(state, daemon, [*VALUES.values(), old, new])


def test_the_key_file_is_made_once_private_and_its_loss_is_named(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with daemon_with(state) as daemon:
        assert not (state / "secret.key").exists()  # made on first need
        set_secrets(daemon, VALUES)
        key_file = state / "secret.key"
        for path in (key_file, state / "secrets.json"):
            assert os.stat(path).st_mode & 0o777 == 0o600, path
        key = key_file.read_text().strip()
        assert store_key_id(state) == id_of(key)
    with daemon_with(state) as daemon:  # a restart reads the same key
        assert exported(daemon) == VALUES
        values_nowhere(state, daemon, list(VALUES.values()))

    key_file.unlink()
    with daemon_with(state) as daemon:
        listed = cli(daemon, "ls")
        assert listed.returncode == 1
        assert "no key was found" in listed.stderr and str(key_file) in listed.stderr
        assert not key_file.exists()  # no new key over secrets it cannot read
        # the way out: discard the unreadable secrets, and start afresh
        removed = cli(daemon, "rm", "--all")
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout == "Removed API_TOKEN, DB_PASSWORD\n"
        assert cli(daemon, "set", "FRESH=value").returncode == 0
        assert key_file.exists() and store_key_id(state) == id_of(key_file.read_text())


@pytest.mark.parametrize("variable", [ENV_KEY, ENV_PREVIOUS])
def test_a_malformed_key_in_the_environment_stops_berth_mcpd_at_start(
    tmp_path: Path, variable: str
) -> None:
    malformed = base64.b64encode(b"sixteen bytes!!!").decode()
    state = tmp_path / "state"
    daemon = start(
        "mcpd-bad-key",
        "berth.mcp.main",
        tmp_path / "mcpd.sock",
        ["--state-dir", str(state), "--gateway-port", "-1"],
        tmp_path,
        env=daemon_env({variable: malformed}),
        wait=False,
    )
    try:
        assert daemon.process.wait(30) != 0
    finally:
        daemon.stop(signal.SIGKILL)
    said = daemon.log_path.read_text()
    assert f"{variable} must hold the base64 of exactly 32 bytes" in said
    assert malformed not in said and "Traceback" not in said
