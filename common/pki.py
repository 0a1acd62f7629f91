"""A private certificate authority for one cluster: a CA, server and client certificates.

For people with no PKI of their own (`berth certs init` / `berth certs issue`). ECDSA P-256
keys, SHA-256 signatures. Server certificates are for TLS servers only (serverAuth) and client
certificates for TLS clients only (clientAuth), so a daemon's certificate cannot be used to
call another daemon. Files are written atomically, keys created 0600 and never readable by
others, and a run that fails writes nothing.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825
MAX_DAYS = 36500
CLOCK_SKEW = datetime.timedelta(minutes=5)
DIRECTORY_MODE = 0o700
CERT_MODE = 0o644
KEY_MODE = 0o600
# Every server certificate is valid for the machine it runs on, so local checks work.
LOCAL_HOSTS = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")
# The files `init_cluster` writes, by role.
CLUSTER_FILES = {
    "ca": "ca.pem",
    "ca-key": "ca-key.pem",
    "server": "server.pem",
    "server-key": "server-key.pem",
    "client": "client.pem",
    "client-key": "client-key.pem",
}
# Certificate names whose files would replace the CA's.
RESERVED_NAMES = {"ca", "ca-key"}

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# A CA made elsewhere may have an RSA key; berth's own are ECDSA P-256.
CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CertificateError(ValueError):
    """Bad input or an unusable CA: nothing was written."""


class ExistingFilesError(CertificateError):
    """Some target files exist and replacing them was not asked for."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        listed = ", ".join(str(p) for p in self.paths)
        super().__init__(f"refusing to overwrite existing files: {listed}")


@dataclass(frozen=True)
class CertificateInfo:
    """What a user wants to know about a certificate file."""

    path: Path
    subject: str
    usage: str  # "CA", "server" or "client"
    names: tuple[str, ...]  # subject alternative names
    not_after: datetime.datetime


def init_cluster(
    directory: Path,
    hosts: Sequence[str] = (),
    ips: Sequence[str] = (),
    days: int = LEAF_DAYS,
    force: bool = False,
) -> dict[str, Path]:
    """A new CA plus a server and a client certificate signed by it, in `directory`.

    The server certificate is valid for localhost, 127.0.0.1, ::1 and every host and IP given.
    The CA outlives the leaves (at least CA_DAYS). Returns the written paths by role.
    """
    dns_names, addresses = _server_names(hosts, ips)
    _check_days(days)
    paths = {role: directory / name for role, name in CLUSTER_FILES.items()}
    _refuse_existing(paths.values(), force)
    now = _now()
    ca_cert, ca_key = _new_ca(max(days, CA_DAYS), now)
    server = _new_leaf(ca_cert, ca_key, "server", dns_names, addresses, False, days, now)
    client = _new_leaf(ca_cert, ca_key, "client", ["client"], [], True, days, now)
    _write_all(
        directory,
        {
            paths["ca"]: (_cert_pem(ca_cert), CERT_MODE),
            paths["ca-key"]: (_key_pem(ca_key), KEY_MODE),
            paths["server"]: (_cert_pem(server[0]), CERT_MODE),
            paths["server-key"]: (_key_pem(server[1]), KEY_MODE),
            paths["client"]: (_cert_pem(client[0]), CERT_MODE),
            paths["client-key"]: (_key_pem(client[1]), KEY_MODE),
        },
        force,
    )
    return paths


def issue(
    directory: Path,
    name: str,
    hosts: Sequence[str] = (),
    ips: Sequence[str] = (),
    client: bool = False,
    days: int = LEAF_DAYS,
    force: bool = False,
) -> tuple[Path, Path]:
    """Signs `directory`/NAME.pem and NAME-key.pem with the CA in `directory`.

    A server certificate (valid for localhost, the loopback addresses and every host and IP
    given) unless `client`; a client certificate names NAME as its DNS name, plus any given.
    Its expiry never passes the CA's.
    """
    _check_name(name)
    if client:
        _check_client_name(name)
        dns_names = _dns_names([name, *hosts])
        addresses = _ip_addresses(ips)
    else:
        dns_names, addresses = _server_names(hosts, ips)
    _check_days(days)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    ca_cert, ca_key = load_ca(directory)
    _refuse_existing([cert_path, key_path], force)
    cert, key = _new_leaf(ca_cert, ca_key, name, dns_names, addresses, client, days, _now())
    files = {cert_path: (_cert_pem(cert), CERT_MODE), key_path: (_key_pem(key), KEY_MODE)}
    _write_all(directory, files, force)
    return cert_path, key_path


def load_ca(directory: Path) -> tuple[x509.Certificate, CaKey]:
    """The CA certificate and key in `directory` (ca.pem, ca-key.pem), checked to match.

    ca.pem may be a bundle (old and new CA while rotating): the certificate of ca-key.pem signs.
    """
    cert_path, key_path = directory / CLUSTER_FILES["ca"], directory / CLUSTER_FILES["ca-key"]
    missing = [str(p) for p in (cert_path, key_path) if not p.is_file()]
    if missing:
        raise CertificateError(f"no CA in {directory}: {', '.join(missing)} not found")
    try:
        bundle = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except ValueError:
        raise CertificateError(f"{cert_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise CertificateError(f"{key_path} is not an unencrypted PEM private key") from None
    if not isinstance(key, CaKey):
        raise CertificateError(f"{key_path}: unsupported key type {type(key).__name__}")
    cert = next((c for c in bundle if c.public_key() == key.public_key()), None)
    if cert is None:
        raise CertificateError(f"{key_path} is not the key of {cert_path}")
    if not _is_ca(cert):
        raise CertificateError(f"{cert_path} is not a CA certificate")
    if cert.not_valid_after_utc <= _now():
        raise CertificateError(f"the CA {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return cert, key


def describe(path: Path) -> CertificateInfo:
    """Subject, usage, names and expiry of the certificate in `path`."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = str(common_names[0].value) if common_names else cert.subject.rfc4514_string()
    return CertificateInfo(path, subject, _usage(cert), _alt_names(cert), cert.not_valid_after_utc)


# --------------------------------------------------------------------------------------
# Checking input
# --------------------------------------------------------------------------------------


def _server_names(
    hosts: Iterable[str], ips: Iterable[str]
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    return _dns_names([*LOCAL_HOSTS, *hosts]), _ip_addresses([*LOCAL_IPS, *ips])


def _dns_names(values: Iterable[str]) -> list[str]:
    names: list[str] = []
    for value in values:
        name = value.lower()
        _check_dns_name(name)
        if name not in names:
            names.append(name)
    return names


def _check_dns_name(name: str) -> None:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise CertificateError(f"{name!r} is an IP address, not a host name: give it as an IP")
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 1:  # a wildcard stands for the leftmost label only
        labels = labels[1:]
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise CertificateError(
            f"invalid host name {name!r}: expected a DNS name such as node1.example.com"
            " (a wildcard only as the first label: *.berth.svc)"
        )


def _ip_addresses(values: Iterable[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for value in values:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise CertificateError(f"invalid IP address {value!r}") from None
        if address not in addresses:
            addresses.append(address)
    return addresses


def _check_name(name: str) -> None:
    if not _FILE_NAME.fullmatch(name) or len(name) > 64:
        raise CertificateError(
            f"invalid certificate name {name!r}: use letters, digits, '.', '_' and '-',"
            " starting with a letter or digit, at most 64 characters"
        )
    if name in RESERVED_NAMES or name.endswith("-key"):
        raise CertificateError(
            f"invalid certificate name {name!r}: its files would replace a key or the CA's"
        )


def _check_client_name(name: str) -> None:
    try:
        _check_dns_name(name.lower())
    except CertificateError:
        raise CertificateError(
            f"invalid client certificate name {name!r}: it is the client's DNS name,"
            " such as gateway or ops.example.com"
        ) from None


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise CertificateError(f"invalid validity {days} days: expected 1 to {MAX_DAYS}")


def _refuse_existing(paths: Iterable[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise ExistingFilesError(existing)


# --------------------------------------------------------------------------------------
# Building certificates
# --------------------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _new_ca(days: int, now: datetime.datetime) -> tuple[x509.Certificate, CaKey]:
    key = _new_key()
    name = _name(f"berth CA {secrets.token_hex(4)}")  # tells one cluster's CA from another's
    cert = (
        _builder(name, name, key.public_key(), now, now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_leaf(
    ca_cert: x509.Certificate,
    ca_key: CaKey,
    name: str,
    dns_names: Sequence[str],
    addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    client: bool,
    days: int,
    now: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    alt_names = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(a) for a in addresses]
    cert = (
        _builder(_name(name), ca_cert.subject, key.public_key(), now, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "berth"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:  # a CA from elsewhere without one
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _usage(cert: x509.Certificate) -> str:
    if _is_ca(cert):
        return "CA"
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "server"
    return "server" if ExtendedKeyUsageOID.SERVER_AUTH in usages else "client"


def _alt_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = names.get_values_for_type(x509.DNSName)
    return (*dns, *(str(a) for a in names.get_values_for_type(x509.IPAddress)))


# --------------------------------------------------------------------------------------
# Writing files
# --------------------------------------------------------------------------------------


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: CaKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_all(directory: Path, files: dict[Path, tuple[bytes, int]], force: bool) -> None:
    """Writes every file or none: all are staged beside their targets, then renamed in place."""
    _make_directory(directory)
    _refuse_existing(files, force)  # again: something may have appeared while we worked
    staged: list[tuple[str, Path]] = []
    try:
        for path, (data, mode) in files.items():
            staged.append((_stage(path, data, mode), path))
        for temporary, path in staged:
            os.replace(temporary, path)
    finally:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    except FileExistsError:
        raise CertificateError(f"{directory} exists and is not a directory") from None


def _stage(path: Path, data: bytes, mode: int) -> str:
    # mkstemp creates the file 0600: a key is never readable by others, not even briefly.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary
