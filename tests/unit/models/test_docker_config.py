"""Registry credentials from Docker's config.json: auths, credential helpers, DOCKER_CONFIG."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from berth.common.docker_config import (
    DOCKER_HUB,
    RegistryCredentials,
    credentials_for,
    server_key,
)


def _write_config(folder: Path, config: dict[str, object]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))


def _install_helper(bin_dir: Path, name: str, answers: dict[str, dict[str, str]]) -> Path:
    """A real `docker-credential-NAME` program answering `get` from a table; it records
    the server it was asked for, so tests can see what Docker's protocol sent."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    asked = bin_dir / f"{name}.asked"
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 2\n'
        f"read -r server; printf '%s' \"$server\" > '{asked}'\n"
        'case "$server" in\n'
        + "".join(
            f"  '{server}') printf '%s' '{json.dumps(answer)}';;\n"
            for server, answer in answers.items()
        )
        + "  *) echo 'credentials not found in native keychain'; exit 1;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return asked


def test_inline_auths_give_user_and_password(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"alice:s3:cret").decode()
    _write_config(tmp_path, {"auths": {"http://127.0.0.1:5000/v2/": {"auth": encoded}}})
    found = credentials_for("127.0.0.1:5000", tmp_path)
    assert found == RegistryCredentials(username="alice", password="s3:cret")
    assert credentials_for("127.0.0.1:5001", tmp_path) is None


def test_hub_is_found_under_any_of_its_names(tmp_path: Path) -> None:
    _write_config(tmp_path, {"auths": {DOCKER_HUB: {"username": "bob", "password": "pw"}}})
    for host in ("index.docker.io", "docker.io", "registry-1.docker.io", DOCKER_HUB):
        assert credentials_for(host, tmp_path) == RegistryCredentials("bob", "pw")
    assert server_key("registry-1.docker.io") == DOCKER_HUB


def test_tokens_in_auths_are_kept_and_an_entry_without_secret_is_none(tmp_path: Path) -> None:
    _write_config(
        tmp_path,
        {
            "auths": {
                "a.example": {"identitytoken": "refresh-me"},
                "b.example": {"registrytoken": "bearer-me"},
                "c.example": {"username": "only-a-name"},
            }
        },
    )
    assert credentials_for("a.example", tmp_path) == RegistryCredentials(
        identity_token="refresh-me"
    )
    assert credentials_for("b.example", tmp_path) == RegistryCredentials(registry_token="bearer-me")
    assert credentials_for("c.example", tmp_path) is None


def test_credential_helper_per_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    asked = _install_helper(
        bin_dir, "berthtest", {"reg.example:5000": {"Username": "carol", "Secret": "helper-pw"}}
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    _write_config(tmp_path / "cfg", {"credHelpers": {"reg.example:5000": "berthtest"}})
    found = credentials_for("reg.example:5000", tmp_path / "cfg")
    assert found == RegistryCredentials(username="carol", password="helper-pw")
    assert asked.read_text() == "reg.example:5000"


def test_creds_store_for_hub_asks_with_hubs_url_and_reads_identity_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    asked = _install_helper(
        bin_dir, "berthstore", {DOCKER_HUB: {"Username": "<token>", "Secret": "refresh"}}
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    _write_config(tmp_path / "cfg", {"credsStore": "berthstore"})
    assert credentials_for("index.docker.io", tmp_path / "cfg") == RegistryCredentials(
        identity_token="refresh"
    )
    assert asked.read_text() == DOCKER_HUB
    assert credentials_for("other.example", tmp_path / "cfg") is None


def test_missing_helper_falls_back_to_auths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    encoded = base64.b64encode(b"dave:pw").decode()
    _write_config(tmp_path, {"credsStore": "absent", "auths": {"r.example": {"auth": encoded}}})
    assert credentials_for("r.example", tmp_path) == RegistryCredentials("dave", "pw")


def test_docker_config_variable_and_broken_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_config(tmp_path / "env", {"auths": {"r.example": {"username": "e", "password": "p"}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "env"))
    assert credentials_for("r.example") == RegistryCredentials("e", "p")
    (tmp_path / "env" / "config.json").write_text("{not json")
    assert credentials_for("r.example") is None
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nowhere"))
    assert credentials_for("r.example") is None


def test_repr_hides_secrets() -> None:
    text = repr(RegistryCredentials("eve", "pw-secret", "id-secret", "tok-secret"))
    assert "eve" in text
    assert not any(secret in text for secret in ("pw-secret", "id-secret", "tok-secret"))
