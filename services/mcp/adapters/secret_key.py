"""Where the secret store's key comes from: the environment, a key file or the OS keyring.

The key is 32 random bytes (AES-256-GCM), written as base64 wherever a person may handle it.
The first of these that exists is used:

1. `BERTH_SECRET_KEY` in berth-mcpd's environment (base64 of exactly 32 bytes; anything
   else stops berth-mcpd at start with a message saying so);
2. the file of the `secret_key_file` setting (`--secret-key-file`), when given;
3. the OS keyring (the `keyring` package; service "berth-mcpd", user = the state directory),
   only when its active backend is a real one (not the `fail` or `null` backends);
4. the key file STATE_DIR/secret.key.

When none exists yet, the first write makes one: in the `secret_key_file` file when the
setting is given, else in the OS keyring when it is usable, else in STATE_DIR/secret.key
(mode 0600). `BERTH_SECRET_KEY_PREVIOUS` (same format) names the key a store may still be
written with (rotation, see berth.mcp.adapters.secret_store).

A key is known by its id, the first 8 bytes of HMAC-SHA256(key, "berth secret key id") in
hex: it names the key in messages and in the store file without revealing it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import structlog

ENV_KEY = "BERTH_SECRET_KEY"
ENV_PREVIOUS = "BERTH_SECRET_KEY_PREVIOUS"
KEY_FILE = "secret.key"
KEYRING_SERVICE = "berth-mcpd"
KEY_BYTES = 32
KEY_ID_LABEL = b"berth secret key id"
# Backends that keep nothing: the keyring package's stand-ins when there is no OS keyring.
NOT_KEYRINGS = ("keyring.backends.fail", "keyring.backends.null")

log = structlog.get_logger("berth.mcp.secret_key")


class KeyConfigError(Exception):
    """A key that is configured but unusable (not base64 of 32 bytes). Never quotes it."""


@dataclass(frozen=True)
class SecretKey:
    """One key and where it came from (`source`, for messages)."""

    material: bytes = field(repr=False)
    source: str

    @property
    def key_id(self) -> str:
        return key_id(self.material)


def key_id(material: bytes) -> str:
    return hmac.new(material, KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


def encode_key(material: bytes) -> str:
    return base64.b64encode(material).decode("ascii")


def decode_key(text: str, where: str) -> bytes:
    """The 32 bytes that `text` (base64) holds, or KeyConfigError naming `where`."""
    try:
        material = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        material = b""
    if len(material) != KEY_BYTES:
        raise KeyConfigError(
            f"{where} must hold the base64 of exactly {KEY_BYTES} bytes "
            f"(make one with `head -c {KEY_BYTES} /dev/urandom | base64`); it does not"
        )
    return material


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def write_key_file(path: Path, material: bytes) -> bool:
    """Writes a new key file (0600) unless one exists; False when one did (another replica
    made it first: that one is the key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(encode_key(material) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)  # unlike a rename, never replaces a key that exists
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)


def keyring_backend() -> keyring.backend.KeyringBackend | None:
    """The active OS keyring when it is a real one, else None."""
    try:
        backend = keyring.get_keyring()
        usable = type(backend).__module__ not in NOT_KEYRINGS and backend.priority > 0
    except Exception:  # a backend that cannot even say its priority is no keyring
        return None
    return backend if usable else None


class KeySources:
    """Finds the store's key, or makes one, in the order of the module docstring."""

    def __init__(
        self,
        state_dir: Path,
        key_file: Path | None,
        environ: Mapping[str, str],
        backend: keyring.backend.KeyringBackend | None = None,
    ) -> None:
        """Raises KeyConfigError when BERTH_SECRET_KEY or BERTH_SECRET_KEY_PREVIOUS is set
        but is not a key. `backend`: the keyring to use (default: the active one, if real)."""
        self.state_dir = state_dir
        self.key_file = key_file
        self.default_file = state_dir / KEY_FILE
        self.backend = backend if backend is not None else keyring_backend()
        self.keyring_user = str(state_dir.absolute())
        self.environment = self._from_env(environ, ENV_KEY)
        self.previous = self._from_env(environ, ENV_PREVIOUS)
        # Why the keyring could not be read, for the SECRET_KEY_MISSING message.
        self.keyring_problem = ""

    @staticmethod
    def _from_env(environ: Mapping[str, str], name: str) -> SecretKey | None:
        text = environ.get(name)
        if text is None:
            return None
        return SecretKey(decode_key(text, f"the environment variable {name}"), name)

    def keyring_label(self) -> str:
        assert self.backend is not None
        return f"the OS keyring ({type(self.backend).__module__}, service {KEYRING_SERVICE})"

    def find(self) -> SecretKey | None:
        """The first key that exists; raises KeyConfigError for a key file that holds none."""
        if self.environment is not None:
            return self.environment
        if self.key_file is not None and self.key_file.exists():
            return self._read_file(self.key_file)
        found = self._from_keyring()
        if found is not None:
            return found
        if self.default_file.exists():
            return self._read_file(self.default_file)
        return None

    def create(self) -> SecretKey:
        """Makes the key where the module docstring says; returns the one that exists when
        another process made it first. Call under the store's lock."""
        if self.key_file is None and self.backend is not None:
            material = new_key()
            try:
                self.backend.set_password(KEYRING_SERVICE, self.keyring_user, encode_key(material))
            except keyring.errors.KeyringError as error:
                log.warning("OS keyring refused the secret key", error=type(error).__name__)
            else:
                log.info("secret key created", where=self.keyring_label(), key_id=key_id(material))
                return SecretKey(material, self.keyring_label())
        path = self.key_file or self.default_file
        if write_key_file(path, new_key()):
            log.info("secret key created", where=str(path))
        return self._read_file(path)

    def _from_keyring(self) -> SecretKey | None:
        if self.backend is None:
            return None
        try:
            text = self.backend.get_password(KEYRING_SERVICE, self.keyring_user)
        except keyring.errors.KeyringError as error:
            self.keyring_problem = f"the OS keyring could not be read ({type(error).__name__})"
            return None
        if text is None:
            return None
        return SecretKey(decode_key(text, self.keyring_label()), self.keyring_label())

    def _read_file(self, path: Path) -> SecretKey:
        where = f"the key file {path}"
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "secret key file readable by others", path=str(path), mode=oct(mode & 0o777)
            )
        return SecretKey(
            decode_key(path.read_text(encoding="ascii", errors="replace"), where), where
        )

    def places(self) -> str:
        """Where keys were looked for, for the SECRET_KEY_MISSING message."""
        found = [f"${ENV_KEY}"]
        if self.key_file is not None:
            found.append(str(self.key_file))
        if self.backend is not None:
            found.append(self.keyring_label())
        found.append(str(self.default_file))
        return ", ".join(found)
