"""A cluster's certificates for TLS listeners in tests, made as `berth certs init` makes them,
and the checks a TLS peer makes on them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store

from berth.common import pki


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path  # server certificate: localhost, 127.0.0.1, ::1
    key: Path
    client_cert: Path  # client certificate signed by the same CA (for mTLS)
    client_key: Path


def make_tls(folder: Path) -> TlsFiles:
    """A fresh CA, server and client certificate in `folder` (replacing any made before)."""
    paths = pki.init_cluster(folder, force=True)
    return TlsFiles(
        ca=paths["ca"],
        cert=paths["server"],
        key=paths["server-key"],
        client_cert=paths["client"],
        client_key=paths["client-key"],
    )


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def verify_server(ca: Path, cert: Path, name: str) -> None:
    """What a TLS client checks when it dials `name`; raises VerificationError on refusal."""
    try:
        subject: DNSName | IPAddress = IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = DNSName(name)
    verifier = PolicyBuilder().store(_store(ca)).build_server_verifier(subject)
    verifier.verify(load_cert(cert), [])


def verify_client(ca: Path, cert: Path) -> list[str]:
    """What a server requiring client certificates checks; the client's names on success."""
    verified = PolicyBuilder().store(_store(ca)).build_client_verifier().verify(load_cert(cert), [])
    return [str(name.value) for name in verified.subjects or []]


def _store(ca: Path) -> Store:
    return Store(x509.load_pem_x509_certificates(ca.read_bytes()))
