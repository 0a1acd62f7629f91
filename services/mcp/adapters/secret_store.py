"""berth-mcpd's secret store: STATE_DIR/secrets.json, every value encrypted with AES-256-GCM.

The file (mode 0600) keeps names and metadata in clear (they are not secret) and each value
encrypted on its own::

    {"version": 1,
     "key_id": "3f1c...",            # the id of the key every value is encrypted with
     "secrets": {"POSTGRES_PASSWORD": {
         "provider": "credstore", "create_time": "2026-...", "update_time": "2026-...",
         "nonce": "<base64, 12 random bytes, new at every write>",
         "ciphertext": "<base64, the value's UTF-8 and GCM's 16-byte tag>"}}}

The secret's name is the associated data, so a value cannot be moved to another name, and
GCM's tag makes an altered or damaged value an error (DATA_LOSS, SECRET_DAMAGED), never
garbage. The key id in the file lets a wrong key be named at once: every operation then
fails with FAILED_PRECONDITION, reason SECRET_KEY_MISMATCH (the store's key id, the key's
id and where it came from, and what to do) or SECRET_KEY_MISSING (the store has secrets and
no key was found). The one thing a wrong key still allows is `secret rm --all`, which
discards the unreadable secrets so the store starts afresh with the key at hand.

Writes read, change and replace the file (temporary file in the same directory, fsync,
rename) under a threading lock and an fcntl.flock on STATE_DIR/secrets.lock, so threads and
processes sharing the store (replicas) never lose an update; reads take no lock (a rename
is atomic).

Rotation: with BERTH_SECRET_KEY_PREVIOUS set, a store still written with that key is
re-encrypted with the current key at start, in one atomic write; from then on the previous
key is not needed. When no current key exists yet, one is made first (see
berth.mcp.adapters.secret_key).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from berth.common.errors import BerthError, Code, FailedPrecondition, NotFound
from berth.common.jsonfile import write_json
from berth.mcp.adapters.secret_key import ENV_PREVIOUS, KeyConfigError, KeySources, SecretKey
from berth.mcp.domain.secrets import SecretInfo

STORE_FILE = "secrets.json"
LOCK_FILE = "secrets.lock"
VERSION = 1
NONCE_BYTES = 12

log = structlog.get_logger("berth.mcp.secrets")


class StoreDamaged(BerthError):
    """The store file, or one value in it, cannot be read back (it was altered or damaged)."""

    code = Code.DATA_LOSS
    default_reason = "SECRET_DAMAGED"


@dataclass(frozen=True)
class _Entry:
    provider: str
    create_time: datetime
    update_time: datetime
    nonce: bytes
    ciphertext: bytes

    def info(self, name: str) -> SecretInfo:
        return SecretInfo(name, self.provider, self.create_time, self.update_time)


@dataclass
class _Store:
    key_id: str | None
    entries: dict[str, _Entry]


# -- the file format --------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _document(store: _Store) -> dict[str, Any]:
    return {
        "version": VERSION,
        "key_id": store.key_id,
        "secrets": {
            name: {
                "provider": entry.provider,
                "create_time": entry.create_time.isoformat(),
                "update_time": entry.update_time.isoformat(),
                "nonce": _b64(entry.nonce),
                "ciphertext": _b64(entry.ciphertext),
            }
            for name, entry in store.entries.items()
        },
    }


def _parse(raw: bytes, path: Path) -> _Store:
    try:
        data = json.loads(raw)
        if data.get("version") != VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        entries = {str(name): _entry(item) for name, item in data["secrets"].items()}
        key_id = data.get("key_id")
        if entries and not isinstance(key_id, str):
            raise ValueError("no key id")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
        # json's messages give positions, never the text
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise StoreDamaged(
            f"the secret store {path} cannot be read ({type(error).__name__}: {reason}); "
            "restore it from a backup, or move it away to start with an empty store",
            reason="SECRET_STORE_DAMAGED",
            metadata={"store": str(path)},
        ) from None
    return _Store(key_id if entries else None, entries)


def _entry(item: dict[str, Any]) -> _Entry:
    return _Entry(
        provider=str(item["provider"]),
        create_time=datetime.fromisoformat(item["create_time"]),
        update_time=datetime.fromisoformat(item["update_time"]),
        nonce=base64.b64decode(item["nonce"], validate=True),
        ciphertext=base64.b64decode(item["ciphertext"], validate=True),
    )


# -- the vault --------------------------------------------------------------------------


class FileSecretVault:
    """The SecretVault of berth-mcpd (berth.mcp.domain.secrets), over STATE_DIR/secrets.json."""

    def __init__(self, directory: Path, keys: KeySources) -> None:
        self.path = directory / STORE_FILE
        self.lock_path = directory / LOCK_FILE
        self.keys = keys
        self._key: SecretKey | None = None
        self._thread_lock = threading.Lock()
        self._cache: tuple[bytes, _Store] | None = None

    # -- SecretVault --------------------------------------------------------------------

    def list(self) -> list[SecretInfo]:
        store = self._load()
        self._reading_key(store)
        return [store.entries[name].info(name) for name in sorted(store.entries)]

    def reveal(self, names: Iterable[str]) -> dict[str, str]:
        store = self._load()
        key = self._reading_key(store)
        if key is None:
            return {}
        wanted = [name for name in dict.fromkeys(names) if name in store.entries]
        return {name: _decrypt(key, name, store.entries[name]) for name in wanted}

    def put(self, name: str, value: str, provider: str) -> SecretInfo:
        with self._locked():
            store = self._load()
            key = self._writing_key(store)
            entry = _encrypt(key, name, value, provider, store.entries.get(name))
            store.entries[name] = entry
            self._save(store, key)
        log.info("secret set", name=name, provider=provider)
        return entry.info(name)

    def remove(self, names: Sequence[str] | None) -> list[str]:
        with self._locked():
            store = self._load()
            if names is None:
                removed = sorted(store.entries)  # needs no key: the way out of a lost one
            else:
                self._reading_key(store)
                removed = list(dict.fromkeys(names))
                unknown = [name for name in removed if name not in store.entries]
                if unknown:
                    raise NotFound(
                        f"no secret {unknown[0]!r} (see `berth mcp secret ls`); nothing removed",
                        reason="SECRET_NOT_FOUND",
                        metadata={"name": unknown[0]},
                    )
            if removed:
                for name in removed:
                    del store.entries[name]
                self._save(store, None)
        if removed:
            log.info("secrets removed", names=removed)
        return removed

    def update(
        self, name: str, provider: str, change: Callable[[str | None], str | None]
    ) -> str | None:
        with self._locked():
            store = self._load()
            key = self._reading_key(store)  # before `change`: a wrong key is not "no value"
            old_entry = store.entries.get(name)
            old = None if key is None or old_entry is None else _decrypt(key, name, old_entry)
            new = change(old)
            if new is None:
                if old_entry is not None:
                    del store.entries[name]
                    self._save(store, None)
                    log.info("secrets removed", names=[name])
                return None
            if new != old or old_entry is None or old_entry.provider != provider:
                key = self._writing_key(store)
                store.entries[name] = _encrypt(key, name, new, provider, old_entry)
                self._save(store, key)
                log.info("secret set", name=name, provider=provider)
            return new

    # -- start: rotation and the check --------------------------------------------------

    def rotate(self) -> int:
        """Re-encrypts a store written with BERTH_SECRET_KEY_PREVIOUS with the current key;
        how many secrets were."""
        previous = self.keys.previous
        if previous is None:
            return 0
        with self._locked():
            store = self._load()
            current = self._existing_key()
            if not store.entries or store.key_id != previous.key_id:
                if current is not None and store.key_id == current.key_id:
                    log.info(f"{ENV_PREVIOUS} is no longer needed: the store uses the current key")
                return 0
            if current is None:
                current = self._create_key()
            if current.key_id == previous.key_id:
                return 0
            entries = {
                name: _encrypt(
                    current, name, _decrypt(previous, name, entry), entry.provider, entry, True
                )
                for name, entry in store.entries.items()
            }
            self._save(_Store(current.key_id, entries), current)
        log.info(
            "secret store re-encrypted with the current key",
            count=len(entries),
            previous_key_id=previous.key_id,
            key_id=current.key_id,
            key_source=current.source,
        )
        return len(entries)

    def check(self) -> BerthError | None:
        """What keeps the store from being used, if anything (for the line logged at start)."""
        try:
            self._reading_key(self._load())
        except BerthError as error:
            return error
        return None

    # -- keys ---------------------------------------------------------------------------

    def _existing_key(self) -> SecretKey | None:
        if self._key is None:
            try:
                self._key = self.keys.find()
            except (KeyConfigError, OSError) as error:  # OSError: a key file it cannot read
                raise FailedPrecondition(str(error), reason="SECRET_KEY_INVALID") from None
        return self._key

    def _create_key(self) -> SecretKey:
        try:
            self._key = self.keys.create()
        except (KeyConfigError, OSError) as error:
            raise FailedPrecondition(
                f"no secret key could be made: {error}", reason="SECRET_KEY_MISSING"
            ) from None
        return self._key

    def _reading_key(self, store: _Store) -> SecretKey | None:
        """The key of a store that has secrets (None when it has none), or the error."""
        if not store.entries:
            return None
        key = self._existing_key()
        if key is None:
            raise self._missing(store)
        if key.key_id != store.key_id:
            raise self._mismatch(store, key)
        return key

    def _writing_key(self, store: _Store) -> SecretKey:
        """The key to write with; made on first need. Call under the lock."""
        key = self._reading_key(store)
        return key or self._existing_key() or self._create_key()

    def _missing(self, store: _Store) -> FailedPrecondition:
        problem = f"; {self.keys.keyring_problem}" if self.keys.keyring_problem else ""
        return FailedPrecondition(
            f"the secret store {self.path} holds {len(store.entries)} secrets encrypted with "
            f"the key {store.key_id}, and no key was found (looked in {self.keys.places()}"
            f"{problem}): give berth-mcpd that key, or discard the secrets with "
            "`berth mcp secret rm --all`",
            reason="SECRET_KEY_MISSING",
            metadata={"store": str(self.path), "store_key_id": store.key_id or ""},
        )

    def _mismatch(self, store: _Store, key: SecretKey) -> FailedPrecondition:
        return FailedPrecondition(
            f"the secret store {self.path} was written with the key {store.key_id}, but the "
            f"key from {key.source} is {key.key_id}: start berth-mcpd with the key the store "
            f"was written with; or, to move the store to this key, start it with this key and "
            f"{ENV_PREVIOUS} set to the old one; or discard its secrets with "
            "`berth mcp secret rm --all`",
            reason="SECRET_KEY_MISMATCH",
            metadata={
                "store": str(self.path),
                "store_key_id": store.key_id or "",
                "key_id": key.key_id,
                "key_source": key.source,
            },
        )

    # -- the file -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _load(self) -> _Store:
        """The store as it is on disk (a copy the caller may change)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _Store(None, {})
        # Parsed again only when the bytes changed (file times are too coarse to tell).
        cached = self._cache
        if cached is None or cached[0] != raw:
            cached = (raw, _parse(raw, self.path))
            self._cache = cached
        return _Store(cached[1].key_id, dict(cached[1].entries))

    def _save(self, store: _Store, key: SecretKey | None) -> None:
        """Writes the store; `key`: what its values are now encrypted with (None: unchanged)."""
        key_id = key.key_id if key is not None else store.key_id
        write_json(self.path, _document(_Store(key_id if store.entries else None, store.entries)))


def _encrypt(
    key: SecretKey,
    name: str,
    value: str,
    provider: str,
    old: _Entry | None,
    keep_time: bool = False,
) -> _Entry:
    now = datetime.now(UTC)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key.material).encrypt(nonce, value.encode("utf-8"), name.encode("utf-8"))
    return _Entry(
        provider=provider,
        create_time=old.create_time if old is not None else now,
        update_time=old.update_time if old is not None and keep_time else now,
        nonce=nonce,
        ciphertext=ciphertext,
    )


def _decrypt(key: SecretKey, name: str, entry: _Entry) -> str:
    try:
        plain = AESGCM(key.material).decrypt(entry.nonce, entry.ciphertext, name.encode("utf-8"))
    except (InvalidTag, ValueError):
        raise StoreDamaged(
            f"the secret {name} cannot be decrypted although the key is the right one: its "
            f"stored value was altered or damaged. Set it again with `berth mcp secret set "
            f"{name}`, or remove it",
            metadata={"name": name},
        ) from None
    return plain.decode("utf-8")


def open_vault(
    state_dir: Path, key_file: Path | None, environ: Mapping[str, str]
) -> FileSecretVault:
    """berth-mcpd's vault: keys found, a store written with the previous key re-encrypted, and
    one error line logged when the store cannot be used (berth-mcpd serves the rest anyway).
    A malformed BERTH_SECRET_KEY or BERTH_SECRET_KEY_PREVIOUS stops berth-mcpd (SystemExit)."""
    try:
        keys = KeySources(state_dir, key_file, environ)
    except KeyConfigError as error:
        raise SystemExit(f"berth-mcpd: {error}") from None
    vault = FileSecretVault(state_dir, keys)
    problem: BerthError | None = None
    try:
        vault.rotate()
    except BerthError as error:
        problem = error
    except OSError as error:
        problem = FailedPrecondition(f"the secret store could not be re-encrypted: {error}")
    problem = problem or vault.check()
    if problem is not None:
        log.error(
            "secret store unusable",
            reason=problem.reason,
            detail=problem.message,
            store=str(vault.path),
        )
    return vault
