"""common/tls.py with real certificates (berth.common.pki) and real handshakes in process:
startup checks that name the file at fault, reloading of changed files, and refusing a
replacement that cannot be used while the old material keeps serving."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from cryptography import x509

from berth.common import pki, tls
from berth.common.settings import DaemonSettings
from berth.gateway.settings import GatewaySettings
from berth.mcp.settings import McpdSettings


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    return pki.init_cluster(tmp_path / "certs")


def server_files(certs: dict[str, Path], client_ca: bool = False) -> tls.ServerTlsFiles:
    return tls.ServerTlsFiles(
        certs["server"], certs["server-key"], certs["ca"] if client_ca else None
    )


def serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def wait_for(check: Callable[[], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


# ---- settings --------------------------------------------------------------------------------


def test_tls_flags_that_cannot_work_are_refused_naming_the_flag(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    base = ["--state-dir", str(tmp_path)]
    cert, key, ca = (str(certs[n]) for n in ("server", "server-key", "ca"))
    cases = {
        ("--tls-client-ca", ca): "--tls-client-ca needs --tls-cert and --tls-key",
        ("--tls-cert", cert): "--tls-cert and --tls-key come together",
        ("--tls-cert", cert, "--tls-key", str(tmp_path / "nope.pem")): (
            f"--tls-key {tmp_path / 'nope.pem'}: no such file"
        ),
        ("--tls-cert", cert, "--tls-key", key, "--tls-client-ca", str(tmp_path / "ca.pem")): (
            "--tls-client-ca"
        ),
    }
    for args, message in cases.items():
        with pytest.raises(ValueError, match=message):
            McpdSettings.from_args([*base, *args])


def test_tls_flags_and_their_environment_variables_make_mtls_files(
    tmp_path: Path, certs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BERTH_MCPD_TLS_CLIENT_CA", str(certs["ca"]))
    settings = McpdSettings.from_args(
        [
            *("--state-dir", str(tmp_path), "--listen", "127.0.0.1:0"),
            *("--tls-cert", str(certs["server"]), "--tls-key", str(certs["server-key"])),
        ]
    )
    assert settings.tls_files == server_files(certs, client_ca=True)
    assert DaemonSettings.model_fields["tls_client_ca"].default is None


def test_gateway_upstream_flags_that_cannot_work_are_refused(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    base = ["--state-dir", str(tmp_path)]
    cases = {
        (
            "--upstream-tls-cert",
            str(certs["client"]),
            "--upstream-tls-key",
            str(certs["client-key"]),
        ): ("need --upstream-tls-ca"),
        ("--upstream-tls-server-name", "berth"): "need --upstream-tls-ca",
        ("--upstream-tls-ca", str(certs["ca"]), "--upstream-tls-cert", str(certs["client"])): (
            "come together"
        ),
        ("--upstream-tls-ca", str(tmp_path / "absent.pem")): "--upstream-tls-ca .*: no such file",
    }
    for args, message in cases.items():
        with pytest.raises(ValueError, match=message):
            GatewaySettings.from_args([*base, *args])
    settings = GatewaySettings.from_args([*base, "--upstream-tls-ca", str(certs["ca"])])
    assert settings.upstream_tls == tls.ClientTlsFiles(certs["ca"])


# ---- loading -------------------------------------------------------------------------------


def test_a_key_that_does_not_match_is_an_error_naming_both_files(certs: dict[str, Path]) -> None:
    files = tls.ServerTlsFiles(certs["server"], certs["client-key"])
    with pytest.raises(tls.TlsConfigError, match="does not match") as raised:
        tls.server_credentials(files)
    assert str(certs["client-key"]) in str(raised.value)
    assert str(certs["server"]) in str(raised.value)
    with pytest.raises(tls.TlsConfigError, match="does not match"):
        tls.https_context(files)


def test_unreadable_or_non_pem_files_are_errors_naming_the_file(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        (tls.ServerTlsFiles(tmp_path / "absent.pem", certs["server-key"]), "absent.pem"),
        (tls.ServerTlsFiles(junk, certs["server-key"]), f"{junk} is not a PEM certificate"),
        (tls.ServerTlsFiles(certs["server"], junk), f"{junk} is not an unencrypted PEM"),
        (tls.ServerTlsFiles(certs["server"], certs["server-key"], junk), f"{junk} is not a PEM"),
    ]
    for files, message in cases:
        with pytest.raises(tls.TlsConfigError, match=re.escape(message)):
            tls.load_server_material(files)
    with pytest.raises(tls.TlsConfigError, match=re.escape(str(junk))):
        tls.ClientTls(tls.ClientTlsFiles(junk))


# ---- reloading -----------------------------------------------------------------------------


def test_a_change_that_cannot_be_used_is_warned_once_and_a_later_good_one_is_taken(
    certs: dict[str, Path],
) -> None:
    files = server_files(certs)
    reloader = tls.Reloader(files.paths, lambda: tls.load_server_material(files), "t", 0.0)
    first = reloader.current
    assert reloader.poll() is None  # nothing changed

    shutil.copyfile(certs["client-key"], certs["server-key"])  # half a rotation
    with structlog.testing.capture_logs() as logs:
        assert [reloader.poll() for _ in range(5)] == [None] * 5
    assert [entry["log_level"] for entry in logs] == ["warning"]
    assert reloader.current is first

    pki.issue(certs["ca"].parent, "server", force=True)
    fresh = reloader.poll()
    assert fresh is not None and fresh is reloader.current
    assert fresh.cert == certs["server"].read_bytes()


def test_the_client_side_notices_new_files(certs: dict[str, Path]) -> None:
    client = tls.ClientTls(
        tls.ClientTlsFiles(certs["ca"], certs["client"], certs["client-key"]), "berth.internal"
    )
    assert client.options() == [("grpc.ssl_target_name_override", "berth.internal")]
    before = client.credentials()
    assert not client.refresh()
    pki.issue(certs["ca"].parent, "client", client=True, force=True)
    wait_for(client.refresh)
    assert client.credentials() is not before


async def test_an_https_context_serves_the_replaced_certificate_to_new_connections(
    certs: dict[str, Path],
) -> None:
    context = tls.https_context(server_files(certs))
    assert context is not None
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context(cafile=str(certs["ca"]))

    async def peer_serial() -> int:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=trusting, server_hostname="localhost"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number

    try:
        assert await peer_serial() == serial(certs["server"])
        pki.issue(certs["ca"].parent, "server", force=True)
        rotated = serial(certs["server"])
        deadline = time.monotonic() + 10
        while await peer_serial() != rotated:
            assert time.monotonic() < deadline, "the new certificate was never served"
            await asyncio.sleep(0.05)

        shutil.copyfile(certs["client-key"], certs["server-key"])  # broken: keep serving
        with structlog.testing.capture_logs() as logs:
            while not logs:  # each handshake may be the one that checks the files
                assert await peer_serial() == rotated
                assert time.monotonic() < deadline + 10, "the broken key was never noticed"
                await asyncio.sleep(0.05)
        assert "cannot be used" in logs[0]["event"]
        assert await peer_serial() == rotated
    finally:
        server.close()
        await server.wait_closed()
