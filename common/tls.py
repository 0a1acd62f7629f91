"""TLS credentials from PEM files, for every listener and for the gateway's upstream channels.

The one place that turns certificate, key and CA files into gRPC credentials or an
ssl.SSLContext, and re-reads them when they change on disk: a rotated certificate reaches
new connections without a restart; connections already open keep the one they shook hands
with. Files are checked at most once a second (their mtime, size and inode), on new
handshakes only. A replacement that cannot be used (unreadable PEM, a key that does not
match its certificate, a half-written pair) is logged once and the old material keeps
serving; at start the same faults are an error naming the file.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import grpc
import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

log = structlog.get_logger("berth.tls")

CHECK_INTERVAL_S = 1.0
T = TypeVar("T")
Stamp = tuple[tuple[int, int, int] | None, ...]


class TlsConfigError(ValueError):
    """TLS files that cannot be used; the message names the file and says why."""


@dataclass(frozen=True)
class ServerTlsFiles:
    """A listener's certificate chain and key, and the CA its clients must be signed by."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key, *([self.client_ca] if self.client_ca else []))


@dataclass(frozen=True)
class ClientTlsFiles:
    """What a client trusts (ca) and, for mTLS, the certificate it shows (cert, key)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.ca, self.cert, self.key) if p is not None)


@dataclass(frozen=True)
class ServerMaterial:
    cert: bytes
    key: bytes
    client_ca: bytes | None


@dataclass(frozen=True)
class ClientMaterial:
    ca: bytes | None
    cert: bytes | None
    key: bytes | None


# ---- reading and checking PEM files --------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsConfigError(f"cannot read the {what} {path}: {error.strerror or error}") from error


def _certificates(data: bytes, path: Path, what: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(data)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise TlsConfigError(f"{path} is not a PEM {what}: {error}") from error
    return found


def _check_pair(cert: bytes, key: bytes, cert_path: Path, key_path: Path) -> None:
    """The key must be a PEM private key whose public half is the certificate's."""
    leaf = _certificates(cert, cert_path, "certificate")[0]
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise TlsConfigError(f"{key_path} is not an unencrypted PEM private key") from error
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    ours = private.public_key().public_bytes(serialization.Encoding.PEM, raw)
    theirs = leaf.public_key().public_bytes(serialization.Encoding.PEM, raw)
    if ours != theirs:
        raise TlsConfigError(
            f"the private key {key_path} does not match the certificate {cert_path}"
        )


def load_server_material(files: ServerTlsFiles) -> ServerMaterial:
    cert = _read(files.cert, "certificate")
    key = _read(files.key, "private key")
    _check_pair(cert, key, files.cert, files.key)
    client_ca = None
    if files.client_ca is not None:
        client_ca = _read(files.client_ca, "client CA")
        _certificates(client_ca, files.client_ca, "CA certificate")
    return ServerMaterial(cert, key, client_ca)


def load_client_material(files: ClientTlsFiles) -> ClientMaterial:
    if (files.cert is None) != (files.key is None):
        raise TlsConfigError("a client certificate and its key come together")
    ca = None
    if files.ca is not None:
        ca = _read(files.ca, "CA certificate")
        _certificates(ca, files.ca, "CA certificate")
    cert = key = None
    if files.cert is not None and files.key is not None:
        cert = _read(files.cert, "certificate")
        key = _read(files.key, "private key")
        _check_pair(cert, key, files.cert, files.key)
    return ClientMaterial(ca, cert, key)


# ---- noticing changes ------------------------------------------------------------------------


def stamp(paths: Sequence[Path]) -> Stamp:
    """What tells a file changed: (mtime_ns, size, inode) each, None for one that is missing."""
    found: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            found.append(None)
            continue
        found.append((info.st_mtime_ns, info.st_size, info.st_ino))
    return tuple(found)


class Reloader(Generic[T]):
    """The material made from some files, made again when they change.

    `load` raises TlsConfigError for files it cannot use. Thread-safe: grpc calls the
    server fetcher from its own threads.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        load: Callable[[], T],
        what: str,
        interval: float = CHECK_INTERVAL_S,
    ) -> None:
        self.paths = tuple(paths)
        self.what = what
        self.interval = interval
        self._load = load
        self._lock = threading.Lock()
        self._stamp = stamp(self.paths)  # before reading: a change while reading shows later
        self.current = load()
        self._rejected: Stamp | None = None
        self._checked = time.monotonic()

    def poll(self) -> T | None:
        """New material when the files changed into something usable; else None."""
        now = time.monotonic()
        if now - self._checked < self.interval:
            return None
        with self._lock:
            self._checked = now
            seen = stamp(self.paths)
            if seen == self._stamp or seen == self._rejected:
                return None
            try:
                material = self._load()
            except TlsConfigError as error:
                self._rejected = seen
                log.warning(
                    "tls files changed but cannot be used; still serving the previous ones",
                    what=self.what,
                    error=str(error),
                )
                return None
            self._stamp, self._rejected, self.current = seen, None, material
            log.info("tls files reloaded", what=self.what, files=[str(p) for p in self.paths])
            return material


# ---- gRPC servers ----------------------------------------------------------------------------


def _server_configuration(material: ServerMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert)], root_certificates=material.client_ca
    )


def server_credentials(files: ServerTlsFiles) -> grpc.ServerCredentials:
    """gRPC server credentials that follow the files; mTLS when files.client_ca is set."""
    reloader = Reloader(
        files.paths, lambda: load_server_material(files), f"grpc server {files.cert}"
    )

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        fresh = reloader.poll()
        return None if fresh is None else _server_configuration(fresh)

    return grpc.dynamic_ssl_server_credentials(
        _server_configuration(reloader.current),
        fetch,
        require_client_authentication=files.client_ca is not None,
    )


# ---- HTTP servers (ssl module) ---------------------------------------------------------------


def _server_context(files: ServerTlsFiles, require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as error:
        load_server_material(files)  # names the file at fault, when it can tell
        raise TlsConfigError(f"cannot use {files.cert} with {files.key}: {error}") from error
    if files.client_ca is not None:
        try:
            context.load_verify_locations(cafile=files.client_ca)
        except (OSError, ssl.SSLError) as error:
            raise TlsConfigError(f"cannot use the client CA {files.client_ca}: {error}") from error
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


class ReloadingServerContext:
    """An ssl.SSLContext for servers whose certificate follows the files.

    Hand `context` to the server. Every handshake passes through its SNI callback (called
    with or without a server name), which swaps in a context made from the files when they
    changed; connections already open keep theirs.
    """

    def __init__(self, files: ServerTlsFiles, require_client_cert: bool = False) -> None:
        self.files = files
        self._reloader = Reloader(
            files.paths,
            lambda: _server_context(files, require_client_cert),
            f"https server {files.cert}",
        )
        self.context = self._reloader.current
        self.context.sni_callback = self._choose

    def _choose(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _base: ssl.SSLContext
    ) -> None:
        self._reloader.poll()
        current = self._reloader.current
        if connection.context is not current:
            connection.context = current


def https_context(files: ServerTlsFiles | None) -> ssl.SSLContext | None:
    """The SSLContext of an HTTP listener (no client certificate asked), None without TLS."""
    return ReloadingServerContext(files).context if files is not None else None


# ---- gRPC clients ----------------------------------------------------------------------------


class ClientTls:
    """Channel credentials from files, and whether the files changed since (`refresh`).

    server_name, when set, is the name daemon certificates are checked against instead of
    the host dialed (agents dialed by IP address, certificates issued for a name).
    """

    def __init__(self, files: ClientTlsFiles, server_name: str | None = None) -> None:
        self.files = files
        self.server_name = server_name
        self._reloader = Reloader(files.paths, lambda: load_client_material(files), "grpc client")
        self._credentials = _channel_credentials(self._reloader.current)

    def credentials(self) -> grpc.ChannelCredentials:
        return self._credentials

    def options(self) -> list[tuple[str, str]]:
        """Channel options that go with the credentials."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def refresh(self) -> bool:
        """Re-read changed files; True when new credentials were made from them."""
        fresh = self._reloader.poll()
        if fresh is None:
            return False
        self._credentials = _channel_credentials(fresh)
        return True


def flag_credentials(
    ca: Path | None, cert: Path | None, key: Path | None
) -> grpc.ChannelCredentials:
    """A command's channel credentials from its --tls-ca, --tls-cert and --tls-key files;
    TlsConfigError names the flag at fault."""
    if (cert is None) != (key is None):
        raise TlsConfigError("--tls-cert and --tls-key come together: give both or neither")
    return grpc.ssl_channel_credentials(
        _flag_file(ca, "--tls-ca"), _flag_file(key, "--tls-key"), _flag_file(cert, "--tls-cert")
    )


def _flag_file(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsConfigError(f"{flag} {path}: {error.strerror or error}") from error


def _channel_credentials(material: ClientMaterial) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(material.ca, material.key, material.cert)
