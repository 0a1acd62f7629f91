"""The secret store on real files with real AES-GCM: no plaintext on disk, wrong or missing
keys named, tampering detected, rotation, and no update lost to threads or processes."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import keyring.backends.null
import pytest

from berth.common.errors import FailedPrecondition, NotFound
from berth.mcp.adapters.secret_key import (
    ENV_KEY,
    ENV_PREVIOUS,
    KEY_FILE,
    KEYRING_SERVICE,
    KeyConfigError,
    KeySources,
    encode_key,
    key_id,
    keyring_backend,
    new_key,
)
from berth.mcp.adapters.secret_store import (
    LOCK_FILE,
    STORE_FILE,
    FileSecretVault,
    StoreDamaged,
    open_vault,
)

VALUE = "correct horse battery staple 7f3a9c"
CREDSTORE = "credstore"


def vault_at(
    state: Path, environ: dict[str, str] | None = None, **kwargs: object
) -> FileSecretVault:
    return FileSecretVault(state, KeySources(state, None, environ or {}, **kwargs))  # type: ignore[arg-type]


def env_key(material: bytes) -> dict[str, str]:
    return {ENV_KEY: encode_key(material)}


def stored(state: Path) -> dict[str, object]:
    return json.loads((state / STORE_FILE).read_text())


def every_file_bytes(state: Path) -> bytes:
    return b"".join(path.read_bytes() for path in state.rglob("*") if path.is_file())


class MemoryKeyring:
    """A keyring backend's methods over a dict: there is no OS keyring on this machine. (Not
    a KeyringBackend subclass: defining one would make it the process's active keyring.)"""

    def __init__(self) -> None:
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.passwords[(service, username)]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"


# -- round trip, no plaintext -----------------------------------------------------------


def test_values_round_trip_and_never_reach_the_disk_in_clear(state: Path) -> None:
    vault = vault_at(state)
    info = vault.put("POSTGRES_PASSWORD", VALUE, CREDSTORE)
    vault.put("github.personal_access_token", "ghp-" + VALUE[::-1], "credstore")
    assert (info.name, info.provider) == ("POSTGRES_PASSWORD", CREDSTORE)
    assert info.create_time == info.update_time
    assert [i.name for i in vault.list()] == ["POSTGRES_PASSWORD", "github.personal_access_token"]
    assert vault.reveal(["POSTGRES_PASSWORD", "unknown"]) == {"POSTGRES_PASSWORD": VALUE}

    on_disk = every_file_bytes(state)
    for secret in (VALUE, VALUE[::-1]):
        assert secret.encode() not in on_disk
        assert base64.b64encode(secret.encode()) not in on_disk
    assert b"POSTGRES_PASSWORD" in on_disk  # names are not secret
    for name in (STORE_FILE, KEY_FILE, LOCK_FILE):
        assert os.stat(state / name).st_mode & 0o777 == 0o600, name


def test_a_fresh_nonce_for_every_write_and_the_create_time_kept(state: Path) -> None:
    vault = vault_at(state)
    first = vault.put("A", VALUE, CREDSTORE)
    before = stored(state)["secrets"]["A"]  # type: ignore[index]
    second = vault.put("A", VALUE, CREDSTORE)
    after = stored(state)["secrets"]["A"]  # type: ignore[index]
    assert before["nonce"] != after["nonce"] and before["ciphertext"] != after["ciphertext"]
    assert second.create_time == first.create_time and second.update_time > first.update_time
    assert vault.reveal(["A"]) == {"A": VALUE}


def test_a_new_vault_reads_what_another_wrote(state: Path) -> None:
    vault_at(state).put("A", VALUE, CREDSTORE)
    assert vault_at(state).reveal(["A"]) == {"A": VALUE}


def test_remove_names_all_and_unknown(state: Path) -> None:
    vault = vault_at(state)
    for name in ("A", "B", "C"):
        vault.put(name, VALUE, CREDSTORE)
    with pytest.raises(NotFound) as raised:
        vault.remove(["A", "nope"])
    assert raised.value.reason == "SECRET_NOT_FOUND" and "nope" in raised.value.message
    assert [i.name for i in vault.list()] == ["A", "B", "C"]  # nothing removed
    assert vault.remove(["B", "B"]) == ["B"]
    assert vault.remove(None) == ["A", "C"]
    assert vault.list() == [] and vault.remove(None) == []


def test_update_is_a_read_modify_write_and_none_deletes(state: Path) -> None:
    vault = vault_at(state)
    seen: list[str | None] = []

    def bump(old: str | None) -> str | None:
        seen.append(old)
        return str(int(old or "0") + 1)

    assert vault.update("oauth.github", "oauth/github", bump) == "1"
    assert vault.update("oauth.github", "oauth/github", bump) == "2"
    assert seen == [None, "1"]
    assert vault.list()[0].provider == "oauth/github"
    assert vault.update("oauth.github", "oauth/github", lambda old: None) is None
    assert vault.list() == []


# -- keys: sources, wrong, missing ------------------------------------------------------


def test_the_environment_key_is_used_and_no_key_file_is_made(state: Path) -> None:
    material = new_key()
    vault = vault_at(state, env_key(material))
    vault.put("A", VALUE, CREDSTORE)
    assert not (state / KEY_FILE).exists()
    assert stored(state)["key_id"] == key_id(material)


@pytest.mark.parametrize(
    "text", ["", "not base64!", encode_key(b"short"), encode_key(new_key() + b"x")]
)
def test_a_malformed_environment_key_is_refused_without_quoting_it(state: Path, text: str) -> None:
    with pytest.raises(KeyConfigError) as raised:
        KeySources(state, None, {ENV_KEY: text})
    assert ENV_KEY in str(raised.value) and "32 bytes" in str(raised.value)
    if text:
        assert text not in str(raised.value)
    with pytest.raises(SystemExit) as stopped:
        open_vault(state, None, {ENV_PREVIOUS: text or "x"})
    assert ENV_PREVIOUS in str(stopped.value.code)


def test_a_wrong_key_is_named_and_no_operation_gives_garbage(state: Path) -> None:
    old, new = new_key(), new_key()
    vault_at(state, env_key(old)).put("A", VALUE, CREDSTORE)
    wrong = vault_at(state, env_key(new))
    for operation in (
        wrong.list,
        lambda: wrong.reveal(["A"]),
        lambda: wrong.put("B", VALUE, CREDSTORE),
        lambda: wrong.remove(["A"]),
        lambda: wrong.update("A", CREDSTORE, lambda old: old),
    ):
        with pytest.raises(FailedPrecondition) as raised:
            operation()
        error = raised.value
        assert error.reason == "SECRET_KEY_MISMATCH"
        assert key_id(old) in error.message and key_id(new) in error.message
        assert ENV_KEY in error.message and ENV_PREVIOUS in error.message
        assert error.metadata["store_key_id"] == key_id(old)
        assert error.metadata["key_id"] == key_id(new)
    check = wrong.check()
    assert check is not None and check.reason == "SECRET_KEY_MISMATCH"
    assert vault_at(state, env_key(old)).reveal(["A"]) == {"A": VALUE}  # untouched


def test_rm_all_is_the_way_out_of_a_lost_key(state: Path) -> None:
    old, new = new_key(), new_key()
    vault_at(state, env_key(old)).put("A", VALUE, CREDSTORE)
    wrong = vault_at(state, env_key(new))
    assert wrong.remove(None) == ["A"]
    wrong.put("B", VALUE, CREDSTORE)
    assert stored(state)["key_id"] == key_id(new)
    assert wrong.reveal(["B"]) == {"B": VALUE}


def test_secrets_without_any_key_are_reported_missing(state: Path) -> None:
    vault_at(state).put("A", VALUE, CREDSTORE)
    (state / KEY_FILE).unlink()
    vault = vault_at(state)
    with pytest.raises(FailedPrecondition) as raised:
        vault.list()
    assert raised.value.reason == "SECRET_KEY_MISSING"
    assert str(state / KEY_FILE) in raised.value.message and ENV_KEY in raised.value.message
    with pytest.raises(FailedPrecondition):
        vault.put("B", VALUE, CREDSTORE)
    assert not (state / KEY_FILE).exists()  # no new key over secrets it cannot read


def test_a_key_file_that_holds_no_key_is_a_clear_error(state: Path) -> None:
    state.mkdir()
    (state / KEY_FILE).write_text("garbage\n")
    (state / KEY_FILE).chmod(0o600)
    vault = vault_at(state)
    with pytest.raises(FailedPrecondition) as raised:
        vault.put("A", VALUE, CREDSTORE)
    assert raised.value.reason == "SECRET_KEY_INVALID"
    assert str(state / KEY_FILE) in raised.value.message


def test_the_key_file_setting_is_where_the_key_is_made_and_read(tmp_path: Path) -> None:
    state, key_file = tmp_path / "state", tmp_path / "keys" / "berth.key"
    FileSecretVault(state, KeySources(state, key_file, {})).put("A", VALUE, CREDSTORE)
    assert key_file.exists() and not (state / KEY_FILE).exists()
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    material = base64.b64decode(key_file.read_text())
    assert stored(state)["key_id"] == key_id(material)
    assert FileSecretVault(state, KeySources(state, key_file, {})).reveal(["A"]) == {"A": VALUE}


def test_a_real_keyring_backend_holds_the_key_and_no_key_file_is_made(state: Path) -> None:
    ring = MemoryKeyring()
    vault = vault_at(state, backend=ring)
    vault.put("A", VALUE, CREDSTORE)
    assert not (state / KEY_FILE).exists()
    [(service, user)] = ring.passwords
    assert (service, user) == (KEYRING_SERVICE, str(state.absolute()))
    assert vault_at(state, backend=ring).reveal(["A"]) == {"A": VALUE}
    assert vault_at(state, backend=MemoryKeyring()).check() is not None  # another keyring


@pytest.mark.parametrize("stand_in", [keyring.backends.fail.Keyring, keyring.backends.null.Keyring])
def test_keyrings_stand_ins_are_not_keyrings(stand_in: type) -> None:
    active = keyring.get_keyring()
    keyring.set_keyring(stand_in())
    try:
        assert keyring_backend() is None
    finally:
        keyring.set_keyring(active)


# -- tampering --------------------------------------------------------------------------


def test_a_tampered_value_is_an_error_not_garbage(state: Path) -> None:
    vault = vault_at(state)
    vault.put("A", VALUE, CREDSTORE)
    document = stored(state)
    entry = document["secrets"]["A"]  # type: ignore[index]
    raw = bytearray(base64.b64decode(entry["ciphertext"]))
    raw[3] ^= 0x01
    entry["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    (state / STORE_FILE).write_text(json.dumps(document))
    with pytest.raises(StoreDamaged) as raised:
        vault.reveal(["A"])
    assert raised.value.reason == "SECRET_DAMAGED" and "altered or damaged" in raised.value.message


def test_a_value_moved_to_another_name_does_not_decrypt(state: Path) -> None:
    vault = vault_at(state)
    vault.put("A", VALUE, CREDSTORE)
    vault.put("B", "other", CREDSTORE)
    document = stored(state)
    secrets = document["secrets"]  # type: ignore[index]
    secrets["B"] = dict(secrets["A"])
    (state / STORE_FILE).write_text(json.dumps(document))
    assert vault.reveal(["A"]) == {"A": VALUE}
    with pytest.raises(StoreDamaged):
        vault.reveal(["B"])


def test_a_store_file_that_is_not_json_is_reported_damaged(state: Path) -> None:
    vault = vault_at(state)
    vault.put("A", VALUE, CREDSTORE)
    (state / STORE_FILE).write_text('{"version": 1, "secrets": ')
    with pytest.raises(StoreDamaged) as raised:
        vault.list()
    assert raised.value.reason == "SECRET_STORE_DAMAGED"
    assert str(state / STORE_FILE) in raised.value.message


# -- rotation ---------------------------------------------------------------------------


def test_rotation_re_encrypts_with_the_current_key_once(state: Path) -> None:
    old, new = new_key(), new_key()
    first = vault_at(state, env_key(old))
    first.put("A", VALUE, CREDSTORE)
    first.put("B", "b-value", "credstore")
    created = {i.name: i for i in first.list()}
    rotating = vault_at(state, {**env_key(new), ENV_PREVIOUS: encode_key(old)})
    assert rotating.rotate() == 2
    assert stored(state)["key_id"] == key_id(new)
    assert rotating.reveal(["A", "B"]) == {"A": VALUE, "B": "b-value"}
    assert {i.name: i for i in rotating.list()} == created  # times kept: the values did not change
    assert rotating.rotate() == 0  # done: the previous key is no longer needed
    assert vault_at(state, env_key(new)).reveal(["A"]) == {"A": VALUE}
    assert vault_at(state, env_key(old)).check() is not None


def test_rotation_away_from_a_key_file_makes_a_new_one(state: Path) -> None:
    vault_at(state).put("A", VALUE, CREDSTORE)
    old = (state / KEY_FILE).read_text()
    (state / KEY_FILE).unlink()
    assert open_vault(state, None, {ENV_PREVIOUS: old.strip()}).reveal(["A"]) == {"A": VALUE}
    assert (state / KEY_FILE).read_text() != old
    assert vault_at(state).reveal(["A"]) == {"A": VALUE}


def test_a_previous_key_that_is_not_the_stores_changes_nothing(state: Path) -> None:
    store_key, other, current = new_key(), new_key(), new_key()
    vault_at(state, env_key(store_key)).put("A", VALUE, CREDSTORE)
    vault = vault_at(state, {**env_key(current), ENV_PREVIOUS: encode_key(other)})
    assert vault.rotate() == 0
    assert stored(state)["key_id"] == key_id(store_key)


# -- concurrency ------------------------------------------------------------------------


def test_fifty_threads_writing_at_once_lose_nothing(state: Path) -> None:
    vault = vault_at(state)
    barrier = threading.Barrier(50)

    def write(number: int) -> None:
        barrier.wait()
        vault.put(f"S{number}", f"value-{number}", CREDSTORE)
        vault.update("COUNTER", CREDSTORE, lambda old: str(int(old or "0") + 1))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = vault_at(state).reveal([f"S{n}" for n in range(50)] + ["COUNTER"])
    assert values == {**{f"S{n}": f"value-{n}" for n in range(50)}, "COUNTER": "50"}


def _write_from_a_process(state: str, first: int, count: int) -> None:
    vault = vault_at(Path(state))
    for number in range(first, first + count):
        vault.put(f"S{number}", f"value-{number}", CREDSTORE)
        vault.update("COUNTER", CREDSTORE, lambda old: str(int(old or "0") + 1))


def _write_from_two_processes(state: Path, count: int) -> None:
    """Two processes at once, each writing `count` secrets (S0.. and S<count>..)."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_write_from_a_process, args=(str(state), first, count))
        for first in (0, count)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0


def test_two_processes_writing_at_once_lose_nothing(state: Path) -> None:
    vault_at(state).put("COUNTER", "0", CREDSTORE)  # both processes find the key made
    _write_from_two_processes(state, 25)
    values = vault_at(state).reveal([f"S{n}" for n in range(50)] + ["COUNTER"])
    assert values == {**{f"S{n}": f"value-{n}" for n in range(50)}, "COUNTER": "50"}


def test_two_processes_making_the_first_key_agree_on_it(state: Path) -> None:
    _write_from_two_processes(state, 10)
    assert len(vault_at(state).reveal([f"S{n}" for n in range(20)])) == 20
