"""berth.common.pki: the private CA behind `berth certs`, checked as TLS peers check it."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import VerificationError

from berth.common import pki
from tests.support.tls import load_cert, verify_client, verify_server

SIX_FILES = sorted(pki.CLUSTER_FILES.values())
SIGNING_ONLY = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def cluster(tmp_path: Path) -> dict[str, Path]:
    return pki.init_cluster(
        tmp_path / "certs", ["node1.example.com", "*.berth.svc"], ["10.0.0.7", "fd00::7"]
    )


def test_init_writes_the_six_files_and_nothing_else(cluster: dict[str, Path]) -> None:
    folder = cluster["ca"].parent
    assert sorted(p.name for p in folder.iterdir()) == SIX_FILES
    assert {role: path.name for role, path in cluster.items()} == pki.CLUSTER_FILES


def test_keys_are_private_certificates_readable_and_the_new_folder_private(
    cluster: dict[str, Path],
) -> None:
    assert mode(cluster["ca"].parent) == 0o700
    assert {role: mode(path) for role, path in cluster.items()} == {
        "ca": 0o644,
        "ca-key": 0o600,
        "server": 0o644,
        "server-key": 0o600,
        "client": 0o644,
        "client-key": 0o600,
    }


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    pki.init_cluster(tmp_path)
    assert mode(tmp_path) == 0o755


@pytest.mark.parametrize(
    "name", ["localhost", "127.0.0.1", "::1", "node1.example.com", "mcpd.berth.svc", "10.0.0.7"]
)
def test_the_server_certificate_is_valid_for_loopback_and_every_name_given(
    cluster: dict[str, Path], name: str
) -> None:
    verify_server(cluster["ca"], cluster["server"], name)


@pytest.mark.parametrize("name", ["node2.example.com", "berth.svc", "10.0.0.8", "fd00::8"])
def test_the_server_certificate_is_refused_for_a_name_not_given(
    cluster: dict[str, Path], name: str
) -> None:
    with pytest.raises(VerificationError, match="subjectAltName"):
        verify_server(cluster["ca"], cluster["server"], name)


def test_the_client_certificate_is_accepted_by_a_server_requiring_one(
    cluster: dict[str, Path],
) -> None:
    assert verify_client(cluster["ca"], cluster["client"]) == ["client"]


def test_server_and_client_certificates_cannot_stand_in_for_each_other(
    cluster: dict[str, Path],
) -> None:
    with pytest.raises(VerificationError, match="EKU"):
        verify_client(cluster["ca"], cluster["server"])
    with pytest.raises(VerificationError, match="EKU"):
        verify_server(cluster["ca"], cluster["client"], "client")


def test_a_certificate_from_another_cluster_is_refused(
    cluster: dict[str, Path], tmp_path: Path
) -> None:
    other = pki.init_cluster(tmp_path / "other")
    with pytest.raises(VerificationError):
        verify_server(cluster["ca"], other["server"], "localhost")
    with pytest.raises(VerificationError):
        verify_client(cluster["ca"], other["client"])


def test_the_certificates_carry_the_usages_tls_libraries_check(cluster: dict[str, Path]) -> None:
    ca, server, client = (load_cert(cluster[r]) for r in ("ca", "server", "client"))
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    for leaf, purpose in [
        (server, ExtendedKeyUsageOID.SERVER_AUTH),
        (client, ExtendedKeyUsageOID.CLIENT_AUTH),
    ]:
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            purpose
        ]
        assert leaf.issuer == ca.subject
        assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
        assert leaf.public_key().curve.name == "secp256r1"
        assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    assert server.serial_number != client.serial_number


def test_validity_starts_before_now_for_clock_skew_and_the_ca_outlives_its_leaves(
    tmp_path: Path,
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    paths = pki.init_cluster(tmp_path, days=30)
    ca, server = load_cert(paths["ca"]), load_cert(paths["server"])
    assert server.not_valid_before_utc <= now - datetime.timedelta(minutes=4)
    assert 29 <= (server.not_valid_after_utc - now).days <= 30
    assert (ca.not_valid_after_utc - now).days >= pki.CA_DAYS - 1


def test_init_refuses_to_overwrite_and_leaves_every_file_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "server.pem").write_text("mine")
    with pytest.raises(pki.ExistingFilesError, match=r"server\.pem") as refused:
        pki.init_cluster(tmp_path)
    assert refused.value.paths == [tmp_path / "server.pem"]
    assert contents(tmp_path) == {"server.pem": b"mine"}


def test_init_with_force_replaces_the_whole_cluster(cluster: dict[str, Path]) -> None:
    folder = cluster["ca"].parent
    before = contents(folder)
    pki.init_cluster(folder, force=True)
    after = contents(folder)
    assert sorted(after) == SIX_FILES
    assert all(after[name] != before[name] for name in SIX_FILES)
    with pytest.raises(VerificationError):  # the old server certificate is no longer trusted
        verify_server(folder / "ca.pem", folder / "server.pem", "node1.example.com")


@pytest.mark.parametrize(
    ("hosts", "ips", "days", "message"),
    [
        ([], ["10.0.0.300"], 825, "invalid IP address '10.0.0.300'"),
        ([], ["node1"], 825, "invalid IP address 'node1'"),
        (["node_1"], [], 825, "invalid host name 'node_1'"),
        (["-node"], [], 825, "invalid host name '-node'"),
        (["a..b"], [], 825, "invalid host name 'a..b'"),
        (["*.*.example"], [], 825, "invalid host name"),
        (["x" * 64], [], 825, "invalid host name"),
        (["10.0.0.7"], [], 825, "is an IP address"),
        ([], [], 0, "invalid validity 0 days"),
        ([], [], pki.MAX_DAYS + 1, "invalid validity"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    tmp_path: Path, hosts: list[str], ips: list[str], days: int, message: str
) -> None:
    folder = tmp_path / "certs"
    with pytest.raises(pki.CertificateError, match=message.replace("*", r"\*")):
        pki.init_cluster(folder, hosts, ips, days)
    assert not folder.exists()


def test_a_file_where_the_folder_should_be_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "certs").write_text("")
    with pytest.raises(pki.CertificateError, match="not a directory"):
        pki.init_cluster(tmp_path / "certs")


def test_issue_signs_a_server_certificate_with_the_clusters_ca(cluster: dict[str, Path]) -> None:
    folder = cluster["ca"].parent
    cert, key = pki.issue(folder, "node2", hosts=["node2.example.com"], ips=["10.0.0.8"])
    assert (cert, key) == (folder / "node2.pem", folder / "node2-key.pem")
    assert (mode(cert), mode(key)) == (0o644, 0o600)
    for name in ["node2.example.com", "10.0.0.8", "localhost"]:
        verify_server(cluster["ca"], cert, name)
    with pytest.raises(VerificationError):
        verify_server(cluster["ca"], cert, "node1.example.com")
    subject = load_cert(cert).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert subject == "node2"
    _assert_key_matches(key, cert)


def test_issue_client_names_the_client_and_is_accepted_as_one(cluster: dict[str, Path]) -> None:
    folder = cluster["ca"].parent
    cert, key = pki.issue(folder, "ops.example.com", client=True)
    assert verify_client(cluster["ca"], cert) == ["ops.example.com"]
    with pytest.raises(VerificationError, match="EKU"):
        verify_server(cluster["ca"], cert, "ops.example.com")
    _assert_key_matches(key, cert)


@pytest.mark.parametrize("name", ["x_y", "10.0.0.9"])
def test_issue_client_refuses_a_name_that_is_not_a_dns_name(
    cluster: dict[str, Path], name: str
) -> None:
    with pytest.raises(pki.CertificateError, match="invalid client certificate name"):
        pki.issue(cluster["ca"].parent, name, client=True)
    assert not (cluster["ca"].parent / f"{name}.pem").exists()


def test_issue_without_a_ca_says_so_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(pki.CertificateError, match=r"no CA in .*ca\.pem, .*ca-key\.pem not found"):
        pki.issue(tmp_path, "node2")
    assert list(tmp_path.iterdir()) == []


def test_issue_refuses_to_overwrite_unless_forced(cluster: dict[str, Path]) -> None:
    folder = cluster["ca"].parent
    before = contents(folder)
    with pytest.raises(pki.ExistingFilesError, match=r"server\.pem"):
        pki.issue(folder, "server", hosts=["node9"])
    assert contents(folder) == before
    pki.issue(folder, "server", hosts=["node9"], force=True)
    verify_server(cluster["ca"], cluster["server"], "node9")


@pytest.mark.parametrize(
    "name", ["ca", "ca-key", "server-key", "../elsewhere", "a/b", ".hidden", "", "n" * 65]
)
def test_issue_refuses_names_that_are_not_plain_certificate_names(
    cluster: dict[str, Path], name: str
) -> None:
    folder = cluster["ca"].parent
    before = contents(folder)
    with pytest.raises(pki.CertificateError, match="invalid certificate name"):
        pki.issue(folder, name, force=True)
    assert contents(folder) == before


def test_an_issued_certificate_never_outlives_its_ca(cluster: dict[str, Path]) -> None:
    cert, _ = pki.issue(cluster["ca"].parent, "long", days=pki.MAX_DAYS)
    assert load_cert(cert).not_valid_after_utc == load_cert(cluster["ca"]).not_valid_after_utc


def test_issue_refuses_a_ca_key_that_does_not_match_the_ca(cluster: dict[str, Path]) -> None:
    other = pki.init_cluster(cluster["ca"].parent / "other")
    cluster["ca-key"].write_bytes(other["ca-key"].read_bytes())
    with pytest.raises(pki.CertificateError, match="is not the key of"):
        pki.issue(cluster["ca"].parent, "node2")
    assert not (cluster["ca"].parent / "node2.pem").exists()


def test_issue_signs_with_the_ca_of_its_key_in_a_rotation_bundle(
    cluster: dict[str, Path], tmp_path: Path
) -> None:
    old = pki.init_cluster(tmp_path / "old")
    folder = cluster["ca"].parent
    bundle = old["ca"].read_bytes() + cluster["ca"].read_bytes()
    cluster["ca"].write_bytes(bundle)
    cert, _ = pki.issue(folder, "node2", hosts=["node2.example.com"])
    verify_server(cluster["ca"], cert, "node2.example.com")
    with pytest.raises(VerificationError):
        verify_server(old["ca"], cert, "node2.example.com")


def test_issue_refuses_a_ca_file_that_is_not_pem(cluster: dict[str, Path]) -> None:
    cluster["ca"].write_text("not a certificate\n")
    with pytest.raises(pki.CertificateError, match=r"ca\.pem is not a PEM certificate"):
        pki.issue(cluster["ca"].parent, "node2")


def test_issue_refuses_a_ca_key_it_cannot_sign_with(cluster: dict[str, Path]) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    cluster["ca-key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(pki.CertificateError, match="unsupported key type"):
        pki.issue(cluster["ca"].parent, "node2")


def test_issue_refuses_a_leaf_certificate_as_ca(cluster: dict[str, Path]) -> None:
    folder = cluster["ca"].parent
    cluster["ca"].write_bytes(cluster["server"].read_bytes())
    cluster["ca-key"].write_bytes(cluster["server-key"].read_bytes())
    with pytest.raises(pki.CertificateError, match="not a CA certificate"):
        pki.issue(folder, "node2")


def test_issue_signs_with_an_rsa_ca_made_elsewhere(tmp_path: Path) -> None:
    """A site CA with RSA and without a subject key identifier still signs usable certificates."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(SIGNING_ONLY, critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert, _ = pki.issue(tmp_path, "node1", hosts=["node1.site"])
    verify_server(tmp_path / "ca.pem", cert, "node1.site")
    assert load_cert(cert).not_valid_after_utc == ca.not_valid_after_utc


def test_describe_tells_usage_names_and_expiry(cluster: dict[str, Path]) -> None:
    server = pki.describe(cluster["server"])
    assert server.usage == "server" and server.subject == "server"
    assert server.names == (
        "localhost",
        "node1.example.com",
        "*.berth.svc",
        "127.0.0.1",
        "::1",
        "10.0.0.7",
        "fd00::7",
    )
    assert server.not_after == load_cert(cluster["server"]).not_valid_after_utc
    assert pki.describe(cluster["client"]).usage == "client"
    assert pki.describe(cluster["ca"]).usage == "CA"


def _assert_key_matches(key: Path, cert: Path) -> None:
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert private.public_key() == load_cert(cert).public_key()
