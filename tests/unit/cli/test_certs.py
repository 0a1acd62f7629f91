"""`berth certs init` and `berth certs issue`, run as a user runs them, with no berth running;
their certificates then carry a real gRPC mTLS handshake."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.x509.verification import VerificationError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from berth.cli.main import app
from tests.support.processes import run_berth
from tests.support.tls import verify_client, verify_server

# Nothing listens here: the certs commands must not need a gateway.
NO_GATEWAY = "unix:///nonexistent/berth.sock"
SIX_FILES = ["ca-key.pem", "ca.pem", "client-key.pem", "client.pem", "server-key.pem", "server.pem"]


def berth(*args: str):
    return run_berth(NO_GATEWAY, "certs", *args)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    folder = tmp_path / "certs"
    result = berth("init", "--dir", str(folder), "--host", "node1.example.com", "--ip", "10.0.0.7")
    assert result.returncode == 0, result.stderr
    return folder


def test_init_writes_a_cluster_and_says_what_and_how_to_use_it(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    result = berth("init", "--dir", str(folder), "--host", "node1.example.com", "--ip", "10.0.0.7")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == SIX_FILES
    for name in SIX_FILES:
        assert f"wrote {folder / name}" in result.stdout
    assert "localhost, node1.example.com, 127.0.0.1, ::1, 10.0.0.7" in result.stdout
    assert "expires" in result.stdout
    assert (
        f"--tls-cert {folder}/server.pem --tls-key {folder}/server-key.pem"
        f" --tls-client-ca {folder}/ca.pem" in result.stdout
    )
    assert f"--upstream-tls-ca {folder}/ca.pem" in result.stdout
    assert f"BERTH_TLS_CA={folder}/ca.pem" in result.stdout
    assert {name: mode(folder / name) for name in SIX_FILES if name.endswith("-key.pem")} == {
        "ca-key.pem": 0o600,
        "client-key.pem": 0o600,
        "server-key.pem": 0o600,
    }


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "::1", "node1.example.com", "10.0.0.7"])
def test_the_server_certificate_verifies_for_each_name_asked(certs: Path, name: str) -> None:
    verify_server(certs / "ca.pem", certs / "server.pem", name)


def test_the_server_certificate_does_not_verify_for_other_names(certs: Path) -> None:
    with pytest.raises(VerificationError):
        verify_server(certs / "ca.pem", certs / "server.pem", "node2.example.com")
    assert verify_client(certs / "ca.pem", certs / "client.pem") == ["client"]


def test_init_writes_to_berth_certs_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["-H", NO_GATEWAY, "certs", "init"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "berth-certs").iterdir()) == SIX_FILES
    assert mode(tmp_path / "berth-certs") == 0o700


def test_init_again_is_refused_and_changes_nothing(certs: Path) -> None:
    before = contents(certs)
    result = berth("init", "--dir", str(certs))
    assert result.returncode == 1
    assert "refusing to overwrite existing files" in result.stderr
    assert "--force" in result.stderr and "berth certs issue" in result.stderr
    assert contents(certs) == before


def test_init_with_force_makes_a_new_ca(certs: Path) -> None:
    before = contents(certs)
    result = berth("init", "--dir", str(certs), "--force")
    assert result.returncode == 0, result.stderr
    assert contents(certs)["ca.pem"] != before["ca.pem"]
    verify_server(certs / "ca.pem", certs / "server.pem", "localhost")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ip", "10.0.0.300"], "invalid IP address '10.0.0.300'"),
        (["--host", "node_1"], "invalid host name 'node_1'"),
        (["--days", "0"], "invalid validity 0 days"),
    ],
)
def test_bad_input_is_refused_with_nothing_written(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    result = berth("init", "--dir", str(tmp_path / "certs"), *flags)
    assert result.returncode == 1
    assert f"berth: {message}" in result.stderr
    assert not (tmp_path / "certs").exists()


def test_issue_without_a_ca_is_a_clear_error(tmp_path: Path) -> None:
    result = berth("issue", "node2", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert f"berth: no CA in {tmp_path}" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_issue_client_signs_a_client_certificate(certs: Path) -> None:
    result = berth("issue", "ops", "--client", "--dir", str(certs))
    assert result.returncode == 0, result.stderr
    assert "client certificate 'ops' for ops" in result.stdout
    assert verify_client(certs / "ca.pem", certs / "ops.pem") == ["ops"]
    assert mode(certs / "ops-key.pem") == 0o600


def test_issue_server_signs_for_the_hosts_given(certs: Path) -> None:
    result = berth("issue", "node2", "--dir", str(certs), "--host", "node2.example.com")
    assert result.returncode == 0, result.stderr
    verify_server(certs / "ca.pem", certs / "node2.pem", "node2.example.com")
    with pytest.raises(VerificationError):
        verify_server(certs / "ca.pem", certs / "node2.pem", "node1.example.com")


def test_issue_again_is_refused_unless_forced(certs: Path) -> None:
    assert berth("issue", "node2", "--dir", str(certs)).returncode == 0
    before = contents(certs)
    again = berth("issue", "node2", "--dir", str(certs))
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    assert contents(certs) == before
    assert berth("issue", "node2", "--dir", str(certs), "--force").returncode == 0
    assert contents(certs)["node2.pem"] != before["node2.pem"]


# --------------------------------------------------------------------------------------
# The certificates in a real gRPC mTLS handshake
# --------------------------------------------------------------------------------------


@dataclass
class MtlsServer:
    port: int
    certs: Path


def server_credentials(certs: Path) -> grpc.ServerCredentials:
    """The cluster's server certificate, requiring client certificates signed by its CA."""
    return grpc.ssl_server_credentials(
        [((certs / "server-key.pem").read_bytes(), (certs / "server.pem").read_bytes())],
        root_certificates=(certs / "ca.pem").read_bytes(),
        require_client_auth=True,
    )


def client_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


@pytest.fixture
async def mtls_server(certs: Path) -> AsyncIterator[MtlsServer]:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(certs))
    await server.start()
    try:
        yield MtlsServer(port, certs)
    finally:
        await server.stop(None)


async def health_check(port: int, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    """The status of a health check over TLS: OK, or how the handshake failed."""
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_a_client_with_the_clusters_client_certificate_is_accepted(
    mtls_server: MtlsServer,
) -> None:
    certs = mtls_server.certs
    credentials = client_credentials(
        certs / "ca.pem", certs / "client.pem", certs / "client-key.pem"
    )
    assert await health_check(mtls_server.port, credentials) == grpc.StatusCode.OK


async def test_an_issued_client_certificate_is_accepted(mtls_server: MtlsServer) -> None:
    certs = mtls_server.certs
    assert berth("issue", "ops", "--client", "--dir", str(certs)).returncode == 0
    credentials = client_credentials(certs / "ca.pem", certs / "ops.pem", certs / "ops-key.pem")
    assert await health_check(mtls_server.port, credentials) == grpc.StatusCode.OK


async def test_a_client_without_a_certificate_is_refused(mtls_server: MtlsServer) -> None:
    credentials = client_credentials(mtls_server.certs / "ca.pem")
    assert await health_check(mtls_server.port, credentials) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_certificate_from_another_ca_is_refused(
    mtls_server: MtlsServer, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    assert berth("init", "--dir", str(other)).returncode == 0
    credentials = client_credentials(
        mtls_server.certs / "ca.pem", other / "client.pem", other / "client-key.pem"
    )
    assert await health_check(mtls_server.port, credentials) == grpc.StatusCode.UNAVAILABLE


async def test_a_server_certificate_cannot_be_used_as_a_client_certificate(
    mtls_server: MtlsServer,
) -> None:
    certs = mtls_server.certs
    credentials = client_credentials(
        certs / "ca.pem", certs / "server.pem", certs / "server-key.pem"
    )
    assert await health_check(mtls_server.port, credentials) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_trusting_another_ca_refuses_the_server(
    mtls_server: MtlsServer, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    assert berth("init", "--dir", str(other)).returncode == 0
    certs = mtls_server.certs
    credentials = client_credentials(
        other / "ca.pem", certs / "client.pem", certs / "client-key.pem"
    )
    assert await health_check(mtls_server.port, credentials) == grpc.StatusCode.UNAVAILABLE
