"""berth-healthcheck against a real gateway: the exit codes and the one stderr line that
compose, Docker and Kubernetes probes act on."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import BIN, DaemonProcess, free_port, start
from tests.support.tls import TlsFiles, make_tls

NETWORK_SERVICE = "berth.network.v1.NetworkService"


@dataclass(frozen=True)
class Gateway:
    daemon: DaemonProcess
    tcp: str
    tls: TlsFiles


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway on a unix socket and a TLS TCP port whose daemons are all absent: it
    serves, while the services it fronts are NOT_SERVING."""
    root = tmp_path_factory.mktemp("healthcheck")
    tls = make_tls(root)
    tcp = f"127.0.0.1:{free_port()}"
    nowhere = f"unix://{root}/absent.sock"
    daemon = start(
        "gateway",
        "berth.gateway.main",
        root / "berth.sock",
        [
            "--state-dir",
            str(root / "gw"),
            "--listen",
            tcp,
            "--tls-cert",
            str(tls.cert),
            "--tls-key",
            str(tls.key),
            "--network-address",
            nowhere,
            "--models-address",
            nowhere,
            "--mcp-address",
            nowhere,
            "--host-name",
            "here",
        ],
        root,
    )
    try:
        yield Gateway(daemon, tcp, tls)
    finally:
        daemon.stop()


def healthcheck(*args: str) -> tuple[int, str]:
    """Run the real console script; its exit code and its one stderr line."""
    done = subprocess.run(
        [str(BIN / "berth-healthcheck"), *args], capture_output=True, text=True, timeout=30
    )
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stdout == ""
    return done.returncode, lines[0]


def test_a_serving_daemon_exits_0(gateway: Gateway) -> None:
    code, line = healthcheck(gateway.daemon.target)
    assert code == 0
    assert line == f"{gateway.daemon.target} (daemon): SERVING"


def test_a_service_that_is_not_serving_exits_1(gateway: Gateway) -> None:
    code, line = healthcheck(gateway.daemon.target, "--service", NETWORK_SERVICE)
    assert code == 1
    assert line.endswith(f"{NETWORK_SERVICE}: NOT_SERVING")


def test_a_service_the_daemon_does_not_know_exits_1(gateway: Gateway) -> None:
    code, line = healthcheck(gateway.daemon.target, "--service", "no.such.Service")
    assert code == 1
    assert line.endswith("no.such.Service: unknown service")


def test_a_socket_nobody_listens_on_exits_2(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        unix.bind(str(stale))  # the file of a crashed daemon: bound, never listening
    code, line = healthcheck(f"unix://{stale}", "--timeout", "5")
    assert code == 2
    assert "unreachable" in line
    assert str(stale) in line


def test_tls_with_the_ca_that_signs_the_server_exits_0(gateway: Gateway) -> None:
    code, line = healthcheck(gateway.tcp, "--tls-ca", str(gateway.tls.ca))
    assert (code, line) == (0, f"{gateway.tcp} (daemon): SERVING")


def test_tls_without_trusting_the_servers_ca_exits_2(gateway: Gateway) -> None:
    code, line = healthcheck(gateway.tcp, "--server-name", "localhost")
    assert code == 2
    assert "CERTIFICATE_VERIFY_FAILED" in line


def test_plaintext_to_a_tls_listener_exits_2(gateway: Gateway) -> None:
    code, line = healthcheck(gateway.tcp, "--timeout", "5")
    assert code == 2
    assert "unreachable" in line


def test_server_name_replaces_the_dialed_host_in_verification(gateway: Gateway) -> None:
    ca = str(gateway.tls.ca)
    assert healthcheck(gateway.tcp, "--tls-ca", ca, "--server-name", "localhost")[0] == 0
    code, line = healthcheck(gateway.tcp, "--tls-ca", ca, "--server-name", "elsewhere.example")
    assert code == 2
    assert "Hostname Verification" in line


def test_tls_flags_on_a_unix_socket_are_refused(gateway: Gateway) -> None:
    code, line = healthcheck(gateway.daemon.target, "--tls-ca", str(gateway.tls.ca))
    assert code == 2
    assert line == (
        "berth-healthcheck: unix sockets never use TLS: drop the --tls-* and --server-name flags"
    )


def test_a_missing_ca_file_is_named(gateway: Gateway, tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    code, line = healthcheck(gateway.tcp, "--tls-ca", str(missing))
    assert code == 2
    assert line == f"berth-healthcheck: --tls-ca {missing}: No such file or directory"
