"""berth.common.addresses and berth.common.settings (through berth-networkd's settings)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from berth.common.addresses import parse_address
from berth.network.settings import NetworkdSettings
from tests.support.tls import make_tls

# ---- addresses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "unix:///run/berth/networkd.sock",
        "unix:/run/berth/networkd.sock",
        "/run/berth/networkd.sock",
    ],
)
def test_unix_forms_resolve_to_the_same_socket(text: str) -> None:
    address = parse_address(text)

    assert address.is_unix
    assert address.socket_path == Path("/run/berth/networkd.sock")
    assert address.target == "unix:///run/berth/networkd.sock"
    assert str(address) == address.target


def test_relative_unix_path_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)

    address = parse_address("unix:rel.sock")

    assert address.socket_path == tmp_path / "rel.sock"
    assert address.target == f"unix://{tmp_path}/rel.sock"


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_address("  127.0.0.1:50051\n").target == "127.0.0.1:50051"


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("example.org:443", "example.org:443"),
        ("[::1]:7000", "[::1]:7000"),
        ("0.0.0.0:0", "0.0.0.0:0"),
        (":50051", "[::]:50051"),
        ("localhost:65535", "localhost:65535"),
    ],
)
def test_tcp_addresses(text: str, target: str) -> None:
    address = parse_address(text)

    assert address.target == target
    assert not address.is_unix
    assert address.socket_path is None


@pytest.mark.parametrize(
    "text",
    ["", "localhost", "host:", "host:http", "host:-1", "host:65536", "host:99999", "relative/path"],
)
def test_invalid_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an address"):
        parse_address(text)


# ---- daemon settings -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BERTH_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = NetworkdSettings.from_args([])

    assert settings.state_dir == Path("/var/lib/berth/network")
    assert settings.listen == ["unix:///run/berth/networkd.sock"]
    assert settings.socket_mode == 0o600
    assert settings.insecure_tcp is False
    assert settings.log_level == "info"
    assert [a.target for a in settings.addresses] == ["unix:///run/berth/networkd.sock"]


def test_flags(tmp_path: Path) -> None:
    settings = NetworkdSettings.from_args(
        [
            "--state-dir",
            str(tmp_path),
            "--listen",
            "unix:///tmp/a.sock",
            "--listen",
            "/tmp/b.sock",
            "--log-level",
            "debug",
            "--grace-period",
            "2.5",
            "--socket-group",
            "berth",
        ]
    )

    assert settings.state_dir == tmp_path
    assert [a.socket_path for a in settings.addresses] == [Path("/tmp/a.sock"), Path("/tmp/b.sock")]
    assert settings.log_level == "debug"
    assert settings.grace_period == 2.5
    assert settings.socket_group == "berth"


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BERTH_NETWORKD_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("BERTH_NETWORKD_LISTEN", '["unix:///tmp/env.sock"]')
    monkeypatch.setenv("BERTH_NETWORKD_LOG_LEVEL", "warning")
    monkeypatch.setenv("BERTH_NETWORKD_SOCKET_MODE", "432")

    settings = NetworkdSettings.from_args([])

    assert settings.state_dir == tmp_path
    assert settings.listen == ["unix:///tmp/env.sock"]
    assert settings.log_level == "warning"
    assert settings.socket_mode == 0o660


def test_other_daemons_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_MODELD_STATE_DIR", "/elsewhere")
    monkeypatch.setenv("BERTH_STATE_DIR", "/elsewhere")

    assert NetworkdSettings.from_args([]).state_dir == Path("/var/lib/berth/network")


def test_socket_mode_in_env_accepts_octal(monkeypatch: pytest.MonkeyPatch) -> None:
    # The field's own help says "octal in env: 0o600".
    monkeypatch.setenv("BERTH_NETWORKD_SOCKET_MODE", "0o660")

    assert NetworkdSettings.from_args([]).socket_mode == 0o660


def test_flags_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_NETWORKD_STATE_DIR", "/from/env")
    monkeypatch.setenv("BERTH_NETWORKD_LISTEN", '["unix:///from/env.sock"]')
    monkeypatch.setenv("BERTH_NETWORKD_LOG_LEVEL", "error")

    settings = NetworkdSettings.from_args(
        ["--state-dir", "/from/flag", "--listen", "unix:///from/flag.sock"]
    )

    assert settings.state_dir == Path("/from/flag")
    assert settings.listen == ["unix:///from/flag.sock"]
    assert settings.log_level == "error"  # not given as a flag: the environment still counts


@pytest.mark.parametrize(
    "argv",
    [
        ["--listen", "127.0.0.1:9000"],
        ["--listen", ":9000"],
        ["--listen", "unix:///tmp/ok.sock", "--listen", "0.0.0.0:9000"],
        ["--listen", "127.0.0.1:9000", "--tls-cert", "/etc/berth/cert.pem"],
        ["--listen", "127.0.0.1:9000", "--tls-key", "/etc/berth/key.pem"],
    ],
)
def test_tcp_without_tls_or_insecure_is_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError, match=r"TCP listeners need --tls-cert and --tls-key") as caught:
        NetworkdSettings.from_args(argv)
    assert "--insecure-tcp" in str(caught.value)


def test_tcp_from_environment_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_NETWORKD_LISTEN", '["0.0.0.0:9000"]')

    with pytest.raises(ValueError, match="--tls-cert and --tls-key"):
        NetworkdSettings.from_args([])


def test_tcp_with_tls_is_accepted(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    settings = NetworkdSettings.from_args(
        ["--listen", "127.0.0.1:9000", "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    )

    assert settings.tls_cert == tls.cert
    assert settings.tls_key == tls.key
    assert [a.target for a in settings.addresses] == ["127.0.0.1:9000"]


def test_tcp_with_insecure_flag_is_accepted() -> None:
    settings = NetworkdSettings.from_args(["--listen", ":9000", "--insecure-tcp"])

    assert settings.insecure_tcp is True
    assert [a.target for a in settings.addresses] == ["[::]:9000"]


def test_insecure_tcp_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_NETWORKD_INSECURE_TCP", "true")

    settings = NetworkdSettings.from_args(["--listen", ":9000"])

    assert settings.insecure_tcp is True


def test_invalid_listen_address_is_refused() -> None:
    with pytest.raises(ValueError, match="not an address: 'nonsense'"):
        NetworkdSettings.from_args(["--listen", "nonsense"])


def test_bad_log_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log_level"):
        NetworkdSettings.from_args(["--log-level", "chatty"])


def test_unknown_flag_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        NetworkdSettings.from_args(["--bogus", "1"])

    assert caught.value.code == 2
    assert "berth-networkd" in capsys.readouterr().err
