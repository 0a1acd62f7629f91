"""TLS on every TCP listener and mTLS from the gateway to the daemons, with certificates made
by `berth certs init` / `berth certs issue` as a user makes them.

Daemons are real processes on 127.0.0.1 with free ports; handshakes are real (grpc, Python's
ssl module, an HTTP client). No root needed: mcpd, modeld and the gateway serve every case.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx2
import pytest
from cryptography import x509
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from berth.api.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from berth.api.mcp.v1 import system_service_pb2 as mcp_system
from berth.api.mcp.v1 import system_service_pb2_grpc as mcp_system_grpc
from berth.api.models.v1 import runner_service_pb2 as runner_pb
from berth.api.models.v1 import runner_service_pb2_grpc as runner_grpc
from berth.gateway.auth import add_token
from tests.support.mcp import AUTHORIZATION, MCP_GATEWAY_TOKEN, endpoint_url
from tests.support.processes import BIN, DaemonProcess, free_port, poll, run_berth, start

NOWHERE = "unix:///nonexistent/berth-tls-test.sock"


@dataclass(frozen=True)
class Certs:
    """The files `berth certs init --dir DIR` writes."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def server(self) -> tuple[Path, Path]:
        return self.dir / "server.pem", self.dir / "server-key.pem"

    @property
    def client(self) -> tuple[Path, Path]:
        return self.dir / "client.pem", self.dir / "client-key.pem"

    def server_args(self, mtls: bool = False) -> list[str]:
        cert, key = self.server
        ca = ["--tls-client-ca", str(self.ca)] if mtls else []
        return ["--tls-cert", str(cert), "--tls-key", str(key), *ca]

    def upstream_args(self) -> list[str]:
        cert, key = self.client
        return [
            *("--upstream-tls-ca", str(self.ca)),
            *("--upstream-tls-cert", str(cert), "--upstream-tls-key", str(key)),
        ]

    def credentials(self, client: Certs | None = None) -> grpc.ChannelCredentials:
        """Trusting this CA, showing `client`'s client certificate (none when None)."""
        if client is None:
            return grpc.ssl_channel_credentials(self.ca.read_bytes())
        cert, key = client.client
        return grpc.ssl_channel_credentials(
            self.ca.read_bytes(), key.read_bytes(), cert.read_bytes()
        )

    def ssl_context(self, client: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if client:
            context.load_cert_chain(*self.client)
        return context


def berth_ok(*args: str) -> str:
    result = run_berth(NOWHERE, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def certs_init(folder: Path) -> Certs:
    berth_ok("certs", "init", "--dir", str(folder))
    return Certs(folder)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return certs_init(tmp_path / "certs")


@pytest.fixture
def other(tmp_path: Path) -> Certs:
    """Another cluster's CA and certificates: nothing of ours trusts them."""
    return certs_init(tmp_path / "other-certs")


@pytest.fixture
def processes() -> Iterator[list[DaemonProcess]]:
    running: list[DaemonProcess] = []
    yield running
    for daemon in reversed(running):
        daemon.stop()


def start_mcpd(
    root: Path, running: list[DaemonProcess], *args: str, name: str = "mcpd"
) -> tuple[DaemonProcess, int]:
    """berth-mcpd on its unix socket and 127.0.0.1:<free port> (gRPC); its MCP endpoint on a
    free port too."""
    port = free_port()
    daemon = start(
        name,
        "berth.mcp.main",
        root / f"{name}.sock",
        [
            *("--state-dir", str(root / name), "--runtime-dir", str(root / f"{name}-run")),
            *("--listen", f"127.0.0.1:{port}", "--gateway-port", "0"),
            *("--gateway-token", MCP_GATEWAY_TOKEN),
            *args,
        ],
        root,
    )
    running.append(daemon)
    return daemon, port


def start_gateway(
    root: Path, running: list[DaemonProcess], *args: str, name: str = "gateway"
) -> DaemonProcess:
    daemon = start(
        name,
        "berth.gateway.main",
        root / f"{name}.sock",
        [
            *("--state-dir", str(root / name), "--host-name", "here"),
            *("--network-address", NOWHERE, "--models-address", NOWHERE),
            *args,
        ],
        root,
    )
    running.append(daemon)
    return daemon


def mcp_version(channel: grpc.Channel, **kwargs: object) -> str:
    reply = mcp_system_grpc.SystemServiceStub(channel).GetVersion(
        mcp_system.GetVersionRequest(), timeout=10, **kwargs
    )
    return reply.version.version


def refused(channel: grpc.Channel) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        mcp_version(channel)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    return raised.value


def peer_serial(port: int, context: ssl.SSLContext, alpn: str | None = None) -> int:
    """The serial number of the certificate a NEW connection to 127.0.0.1:port is shown."""
    if alpn:
        context.set_alpn_protocols([alpn])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def file_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def logged(daemon: DaemonProcess, event: str) -> list[dict[str, object]]:
    return [line for line in daemon.log_lines() if str(line.get("event", "")).startswith(event)]


# ---- the gateway's own TCP listener --------------------------------------------------------


def test_a_tls_gateway_serves_clients_that_trust_its_ca_and_refuses_the_rest(
    tmp_path: Path, certs: Certs, other: Certs, processes: list[DaemonProcess]
) -> None:
    tokens = tmp_path / "tokens.json"
    token = add_token(tokens, "reader", ["admin"])
    port = free_port()
    start_gateway(
        tmp_path,
        processes,
        *("--listen", f"127.0.0.1:{port}", "--tokens-file", str(tokens), "--mcp-address", NOWHERE),
        *certs.server_args(),
    )
    bearer = [("authorization", f"Bearer {token}")]
    request = gateway_service_pb2.ListHostsRequest()

    with grpc.secure_channel(f"localhost:{port}", certs.credentials()) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        assert [h.name for h in stub.ListHosts(request, metadata=bearer, timeout=10).hosts] == [
            "here"
        ]

    for credentials in (other.credentials(), grpc.ssl_channel_credentials()):  # system roots
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.ListHosts(request, metadata=bearer, timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "handshake" in (raised.value.details() or "").lower()

    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        gateway_service_pb2_grpc.GatewayServiceStub(channel).ListHosts(
            request, metadata=bearer, timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


# ---- a daemon with mTLS ------------------------------------------------------------------


def test_an_mtls_daemon_takes_only_clients_with_a_certificate_from_its_ca(
    tmp_path: Path, certs: Certs, other: Certs, processes: list[DaemonProcess]
) -> None:
    mcpd, port = start_mcpd(tmp_path, processes, *certs.server_args(mtls=True))
    address = f"localhost:{port}"

    with grpc.secure_channel(address, certs.credentials(client=certs)) as channel:
        assert mcp_version(channel)
    with grpc.secure_channel(address, certs.credentials()) as channel:
        refused(channel)  # no client certificate
    with grpc.secure_channel(address, certs.credentials(client=other)) as channel:
        refused(channel)  # a client certificate from another CA
    with grpc.secure_channel(address, other.credentials(client=other)) as channel:
        error = refused(channel)  # the daemon's certificate is not from the CA we trust
        assert "handshake" in (error.details() or "").lower()
    assert any("mtls" in str(item) for item in logged(mcpd, "serving")[0]["listen"])  # type: ignore[union-attr]


def test_a_daemon_refuses_to_start_with_a_key_that_does_not_match(
    tmp_path: Path, certs: Certs
) -> None:
    cert, _ = certs.server
    _, wrong_key = certs.client
    result = subprocess.run(
        [
            str(BIN / "berth-mcpd"),
            *("--state-dir", str(tmp_path / "mcpd"), "--runtime-dir", str(tmp_path / "run")),
            *("--listen", f"127.0.0.1:{free_port()}", "--gateway-port", "-1"),
            *("--tls-cert", str(cert), "--tls-key", str(wrong_key)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"the private key {wrong_key} does not match the certificate {cert}" in result.stderr
    assert "Traceback" not in result.stderr


def test_daemon_flags_that_cannot_work_are_refused_before_it_starts(
    tmp_path: Path, certs: Certs
) -> None:
    base = [str(BIN / "berth-mcpd"), "--state-dir", str(tmp_path / "mcpd")]
    cases = {
        ("--tls-client-ca", str(certs.ca)): "--tls-client-ca needs --tls-cert and --tls-key",
        ("--tls-cert", str(certs.server[0]), "--tls-key", str(tmp_path / "gone.pem")): (
            f"--tls-key {tmp_path / 'gone.pem'}: no such file"
        ),
    }
    for args, message in cases.items():
        result = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert message in result.stderr


# ---- the gateway dialing its daemons over mTLS -------------------------------------------


def test_the_gateway_reaches_an_mtls_daemon_with_its_client_certificate(
    tmp_path: Path, certs: Certs, other: Certs, processes: list[DaemonProcess]
) -> None:
    _, port = start_mcpd(tmp_path, processes, *certs.server_args(mtls=True))
    mcp_address = ["--mcp-address", f"127.0.0.1:{port}"]
    gateway = start_gateway(tmp_path, processes, *mcp_address, *certs.upstream_args())
    with grpc.insecure_channel(gateway.target) as channel:
        assert mcp_version(channel, wait_for_ready=True)

    wrong = start_gateway(
        tmp_path,
        processes,
        *mcp_address,
        *("--upstream-tls-ca", str(certs.ca)),
        *("--upstream-tls-cert", str(other.client[0]), "--upstream-tls-key", str(other.client[1])),
        name="wrong-gateway",
    )
    with grpc.insecure_channel(wrong.target) as channel:
        error = refused(channel)
    details = error.details() or ""
    assert f"the mcp daemon on host 'here' (127.0.0.1:{port}) is unavailable" in details
    assert "dialed with TLS" in details
    assert "--upstream-tls-cert" in details


# ---- certificates replaced on disk -------------------------------------------------------


def test_the_gateway_dials_with_its_new_client_certificate_once_the_files_change(
    tmp_path: Path, certs: Certs, other: Certs, processes: list[DaemonProcess]
) -> None:
    _, port = start_mcpd(tmp_path, processes, *certs.server_args(mtls=True))
    mine = tmp_path / "gateway-tls"
    mine.mkdir()
    for name in ("client.pem", "client-key.pem"):  # another cluster's: the daemon refuses it
        shutil.copyfile(other.dir / name, mine / name)
    gateway = start_gateway(
        tmp_path,
        processes,
        *("--mcp-address", f"127.0.0.1:{port}", "--upstream-tls-ca", str(certs.ca)),
        *("--upstream-tls-cert", str(mine / "client.pem")),
        *("--upstream-tls-key", str(mine / "client-key.pem")),
    )
    with grpc.insecure_channel(gateway.target) as channel:
        refused(channel)
        for name in ("client.pem", "client-key.pem"):
            shutil.copyfile(certs.dir / name, mine / name)

        def answers() -> bool:
            try:
                return bool(mcp_version(channel))
            except grpc.RpcError:
                return False

        poll(answers, 15, "the gateway to dial with the new client certificate")
    assert gateway.process.poll() is None
    assert logged(gateway, "upstream tls files changed")


def metrics_port(daemon: DaemonProcess) -> int:
    line = poll(lambda: logged(daemon, "metrics"), 10, "the metrics log line")[0]
    return int(str(line["address"]).rpartition(":")[2])


def test_replaced_certificates_reach_new_connections_without_a_restart(
    tmp_path: Path, certs: Certs, processes: list[DaemonProcess]
) -> None:
    mcpd, port = start_mcpd(
        tmp_path,
        processes,
        *certs.server_args(mtls=True),
        *("--metrics-address", "127.0.0.1:0"),
    )
    with grpc.insecure_channel(mcpd.target) as channel:
        https_port = int(endpoint_url(channel).rpartition(":")[2].split("/")[0])
    listeners = {
        "grpc": lambda: peer_serial(port, certs.ssl_context(), alpn="h2"),
        "mcp https": lambda: peer_serial(https_port, certs.ssl_context(client=False)),
        "metrics https": lambda: peer_serial(metrics_port(mcpd), certs.ssl_context(client=False)),
    }
    first = file_serial(certs.server[0])
    assert {name: serial() for name, serial in listeners.items()} == dict.fromkeys(listeners, first)

    berth_ok("certs", "issue", "server", "--dir", str(certs.dir), "--force")
    second = file_serial(certs.server[0])
    assert second != first
    for name, serial in listeners.items():
        poll(lambda serial=serial: serial() == second, 15, f"the new certificate on {name}")

    # A broken replacement (a key of another certificate) is refused: the last good one serves.
    shutil.copyfile(certs.client[1], certs.server[1])
    poll(
        lambda: (
            all(serial() == second for serial in listeners.values())
            and len(logged(mcpd, "tls files changed but cannot be used")) >= len(listeners)
        ),
        15,
        "every listener to notice the broken key",
    )
    assert mcpd.process.poll() is None  # the same process all along
    with grpc.secure_channel(f"localhost:{port}", certs.credentials(client=certs)) as channel:
        assert mcp_version(channel)


# ---- HTTPS endpoints -----------------------------------------------------------------------


async def test_the_mcp_endpoint_answers_over_https_and_not_over_http(
    tmp_path: Path, certs: Certs, processes: list[DaemonProcess]
) -> None:
    mcpd, _ = start_mcpd(tmp_path, processes, *certs.server_args())
    with grpc.insecure_channel(mcpd.target) as channel:
        url = endpoint_url(channel)
    assert url.startswith("https://127.0.0.1:")

    async with (
        httpx2.AsyncClient(headers=AUTHORIZATION, verify=certs.ssl_context(client=False)) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        initialized = await session.initialize()
    assert initialized.server_info.name

    with pytest.raises(httpx2.HTTPError):
        httpx2.get(url.replace("https://", "http://"), headers=AUTHORIZATION, timeout=10)
    with pytest.raises(httpx2.HTTPError):  # a client that does not trust the CA
        httpx2.get(url, headers=AUTHORIZATION, timeout=10)


def test_the_openai_endpoint_answers_over_https_and_not_over_http(
    tmp_path: Path, certs: Certs, processes: list[DaemonProcess]
) -> None:
    modeld = start(
        "modeld",
        "berth.models.main",
        tmp_path / "modeld.sock",
        ["--state-dir", str(tmp_path / "models"), "--openai-port", "0", *certs.server_args()],
        tmp_path,
    )
    processes.append(modeld)
    with grpc.insecure_channel(modeld.target) as channel:
        stub = runner_grpc.RunnerServiceStub(channel)
        status = stub.GetStatus(runner_pb.GetStatusRequest(), timeout=10).status
        if not status.running:
            stub.StartRunner(runner_pb.StartRunnerRequest(), timeout=30)
            status = stub.GetStatus(runner_pb.GetStatusRequest(), timeout=10).status
    assert status.endpoint.startswith("https://127.0.0.1:")

    reply = httpx2.get(
        f"{status.endpoint}/v1/models", verify=certs.ssl_context(client=False), timeout=10
    )
    assert reply.status_code == 200
    assert reply.json()["object"] == "list"
    with pytest.raises(httpx2.HTTPError):
        httpx2.get(status.endpoint.replace("https://", "http://") + "/v1/models", timeout=10)


# ---- the CLI with a client certificate -----------------------------------------------------


def test_the_cli_shows_its_client_certificate_to_a_gateway_that_wants_one(
    tmp_path: Path, certs: Certs, processes: list[DaemonProcess]
) -> None:
    tokens = tmp_path / "tokens.json"
    token = add_token(tokens, "cli", ["admin"])
    port = free_port()
    start_gateway(
        tmp_path,
        processes,
        *("--listen", f"127.0.0.1:{port}", "--tokens-file", str(tokens), "--mcp-address", NOWHERE),
        *certs.server_args(mtls=True),
    )
    cert, key = certs.client
    trusted = ["--host", f"tcp://127.0.0.1:{port}", "--tls-ca", str(certs.ca), "--token", token]

    shown = run_berth(NOWHERE, *trusted, "--tls-cert", str(cert), "--tls-key", str(key), "version")
    assert shown.returncode == 0, shown.stderr
    assert "Server: berth-gateway" in shown.stdout

    missing = run_berth(NOWHERE, *trusted, "version")
    assert missing.returncode == 1
    assert f"cannot reach berth at tcp://127.0.0.1:{port}" in missing.stderr
    assert "Traceback" not in missing.stderr

    by_env = subprocess.run(
        [str(BIN / "berth"), *trusted, "version"],
        capture_output=True,
        text=True,
        env={**os.environ, "BERTH_TLS_CERT": str(cert), "BERTH_TLS_KEY": str(key)},
        timeout=60,
    )
    assert by_env.returncode == 0, by_env.stderr

    half = run_berth(NOWHERE, *trusted, "--tls-cert", str(cert), "version")
    assert half.returncode == 1
    assert "--tls-cert and --tls-key come together" in half.stderr
