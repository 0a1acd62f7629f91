"""deploy/systemd: the units run the real daemons with settings they accept, least privilege,
and pass systemd's own checks (systemd-analyze verify and security, sysusers, tmpfiles).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from berth.common.settings import DaemonSettings
from berth.mcp.settings import McpdSettings
from tests.support.deploy import (
    DAEMONS,
    EXTRA_ENV,
    REPO,
    accepted_env,
    console_scripts,
    settings_from_env,
    unknown_flags,
)

SYSTEMD = REPO / "deploy" / "systemd"
VENV_BIN = Path(sys.executable).parent
INSTALLED_BIN = "/opt/berth/bin/"
ASSIGNMENT = re.compile(r"^#?\s*(BERTH_[A-Z0-9_]+)=(.*)$")
Unit = dict[str, list[tuple[str, str]]]


def parse_unit(path: Path) -> Unit:
    """A unit file as its sections' (key, value) lines, in order; repeated keys kept."""
    sections: Unit = {}
    current: list[tuple[str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


def value(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert found, f"no {key}= in [{section}]"
    return found[-1]


def words(unit: Unit, section: str, key: str) -> set[str]:
    return {word for line in values(unit, section, key) for word in line.split()}


def unit_environment(unit: Unit) -> dict[str, str]:
    """Environment= assignments (several per line, shell-like quoting)."""
    env: dict[str, str] = {}
    for line in values(unit, "Service", "Environment"):
        for item in shlex.split(line):
            name, _, text = item.partition("=")
            env[name] = text
    return env


def env_file_assignments(path: Path) -> dict[str, str]:
    """Every BERTH_* variable an example env file sets or shows commented out."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match:
            parts = shlex.split(match.group(2))
            found[match.group(1)] = parts[0] if parts else ""
    return found


def unit_path(daemon: str) -> Path:
    return SYSTEMD / f"berth-{daemon}.service"


def units() -> Iterator[tuple[str, Unit]]:
    for daemon in DAEMONS:
        yield daemon, parse_unit(unit_path(daemon))


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


# --- what the units run and with which settings -------------------------------------------


@pytest.mark.parametrize("daemon", DAEMONS)
def test_execstart_runs_the_daemons_console_script_with_flags_it_accepts(daemon: str) -> None:
    unit = parse_unit(unit_path(daemon))
    binary, *args = shlex.split(value(unit, "Service", "ExecStart"))
    assert binary == f"{INSTALLED_BIN}berth-{daemon}"
    assert f"berth-{daemon}" in console_scripts()
    assert unknown_flags(daemon, args) == []
    assert value(unit, "Service", "Type") == "exec"
    assert value(unit, "Service", "Restart") == "on-failure"
    assert value(unit, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("daemon", DAEMONS)
def test_each_unit_reads_its_env_file_and_the_example_holds_only_accepted_variables(
    daemon: str,
) -> None:
    unit = parse_unit(unit_path(daemon))
    assert value(unit, "Service", "EnvironmentFile") == f"-/etc/berth/{daemon}.env"
    example = env_file_assignments(SYSTEMD / "env" / f"{daemon}.env")
    assert example, "the example documents no variable"
    assert sorted(set(example) - accepted_env(daemon)) == []
    in_unit = {name for name in unit_environment(unit) if name.startswith("BERTH_")}
    assert sorted(in_unit - accepted_env(daemon)) == []


@pytest.mark.parametrize("daemon", DAEMONS)
def test_the_example_configuration_builds_valid_settings(
    daemon: str, tls_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable of the example, uncommented at once, is a configuration the daemon
    starts with: JSON lists parse, TLS flags come with their files."""
    unit = parse_unit(unit_path(daemon))
    example = env_file_assignments(SYSTEMD / "env" / f"{daemon}.env")
    settings_env = {k: v for k, v in example.items() if k not in EXTRA_ENV.get(daemon, set())}
    settings = settings_from_env(
        daemon, unit_environment(unit) | settings_env, tls_dir, monkeypatch
    )
    assert isinstance(settings, DaemonSettings)
    sockets = [a.socket_path for a in settings.addresses if a.is_unix]
    assert sockets == [Path(f"/run/berth/{'berth' if daemon == 'gateway' else daemon}.sock")]
    assert [a for a in settings.addresses if not a.is_unix], "the example shows no TCP listener"
    assert settings.tls_files is not None and settings.tls_files.client_ca is not None


@pytest.mark.parametrize("daemon", DAEMONS)
def test_sockets_are_0660_group_berth_and_state_is_where_the_daemon_keeps_it(
    daemon: str, tls_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unit = parse_unit(unit_path(daemon))
    settings = settings_from_env(daemon, unit_environment(unit), tls_dir, monkeypatch)
    assert isinstance(settings, DaemonSettings)
    assert (settings.socket_mode, settings.socket_group) == (0o660, "berth")
    state = Path("/var/lib") / value(unit, "Service", "StateDirectory")
    assert state == settings.state_dir
    if daemon != "networkd":  # ProtectSystem=strict: /run/berth must be writable
        assert "/run/berth" in words(unit, "Service", "ReadWritePaths")


def test_mcpd_secret_files_live_in_its_runtime_directory_and_it_has_a_writable_home(
    tls_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unit = parse_unit(unit_path("mcpd"))
    settings = settings_from_env("mcpd", unit_environment(unit), tls_dir, monkeypatch)
    assert isinstance(settings, McpdSettings)
    assert Path("/run") / value(unit, "Service", "RuntimeDirectory") == settings.runtime_dir
    assert value(unit, "Service", "RuntimeDirectoryMode") == "0700"
    home = Path(unit_environment(unit)["HOME"])
    assert home == settings.state_dir  # StateDirectory: writable under ProtectSystem=strict


def test_the_gateway_starts_after_the_daemons_it_fronts() -> None:
    unit = parse_unit(unit_path("gateway"))
    daemons = {f"berth-{d}.service" for d in ("networkd", "modeld", "mcpd")}
    assert daemons <= words(unit, "Unit", "Wants")
    assert daemons <= words(unit, "Unit", "After")


# --- least privilege --------------------------------------------------------------------


def test_only_the_network_agent_is_root_and_it_has_only_its_capabilities() -> None:
    for daemon, unit in units():
        user = values(unit, "Service", "User")
        bounding = words(unit, "Service", "CapabilityBoundingSet")
        if daemon == "networkd":
            assert user == ["root"]
            needed = {"CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}
            assert bounding == needed
            assert words(unit, "Service", "AmbientCapabilities") == needed
        else:
            assert user == ["berth"], daemon
            assert values(unit, "Service", "CapabilityBoundingSet") == [""], daemon
        assert value(unit, "Service", "NoNewPrivileges") == "yes", daemon


def test_the_network_agent_shares_the_hosts_mount_namespace() -> None:
    """Options that give a service a mount namespace of its own would hide the network
    namespaces it mounts under /run/netns from the host and lose them at restart."""
    unit = dict(parse_unit(unit_path("networkd"))["Service"])
    own_namespace = {
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "RuntimeDirectory",
    }
    assert sorted(own_namespace & set(unit)) == []
    assert {"AF_NETLINK", "AF_PACKET"} <= set(unit["RestrictAddressFamilies"].split())
    assert set(unit["RestrictNamespaces"].split()) == {"net", "mnt"}


def test_the_unprivileged_daemons_see_a_read_only_system() -> None:
    for daemon, unit in units():
        if daemon == "networkd":
            continue
        service = dict(unit["Service"])
        assert service["ProtectSystem"] == "strict", daemon
        assert service["ProtectHome"] == "yes", daemon
        assert service["PrivateTmp"] == "yes", daemon
        assert service["RestrictNamespaces"] == "yes", daemon
        families = set(service["RestrictAddressFamilies"].split())
        assert (
            {"AF_UNIX", "AF_INET", "AF_INET6"}
            <= families
            <= {
                "AF_UNIX",
                "AF_INET",
                "AF_INET6",
                "AF_NETLINK",
            }
        )


def test_the_runner_reaches_the_gpu_and_nothing_else() -> None:
    service = parse_unit(unit_path("modeld"))
    assert value(service, "Service", "PrivateDevices") == "no"
    assert value(service, "Service", "DevicePolicy") == "closed"
    assert values(service, "Service", "DeviceAllow") == ["char-nvidia* rw"]
    assert {"video", "render"} <= words(service, "Service", "SupplementaryGroups")
    assert value(service, "Service", "LimitMEMLOCK") == "infinity"
    for daemon in ("gateway", "mcpd"):
        assert value(parse_unit(unit_path(daemon)), "Service", "PrivateDevices") == "yes"


# --- systemd's own checks -----------------------------------------------------------------


def installed_copies(folder: Path, edit: Mapping[str, str] | None = None) -> list[Path]:
    """The units as installed, with ExecStart on this venv's real console scripts (verify
    checks that the binary exists) and optional text replacements."""
    copies = []
    for daemon in DAEMONS:
        text = unit_path(daemon).read_text().replace(INSTALLED_BIN, f"{VENV_BIN}/")
        for old, new in (edit or {}).items():
            text = text.replace(old, new)
        copy = folder / unit_path(daemon).name
        copy.write_text(text)
        copies.append(copy)
    return copies


def systemd_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed here; the parsing tests above still ran")
    return found


def verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            systemd_tool("systemd-analyze"),
            "verify",
            "--man=no",
            "--recursive-errors=no",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_systemd_analyze_verify_accepts_the_units_and_catches_a_typo(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    result = verify(installed_copies(good))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

    broken = tmp_path / "broken"
    broken.mkdir()
    result = verify(installed_copies(broken, {"ProtectSystem=strict": "ProtectSytem=strict"}))
    assert result.returncode != 0
    assert "Unknown key 'ProtectSytem'" in result.stderr


@pytest.mark.parametrize(
    ("daemon", "most"), [("gateway", 20), ("mcpd", 20), ("modeld", 35), ("networkd", 65)]
)
def test_systemd_rates_each_units_exposure_low(daemon: str, most: int, tmp_path: Path) -> None:
    """`systemd-analyze security` scores what a compromised daemon could reach (0-100 here;
    it prints tenths): the root agent's score is its capabilities."""
    unit = next(p for p in installed_copies(tmp_path) if p.name == f"berth-{daemon}.service")
    result = subprocess.run(
        [
            systemd_tool("systemd-analyze"),
            "security",
            "--offline=yes",
            f"--threshold={most}",
            "--no-pager",
            str(unit),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_sysusers_and_tmpfiles_make_the_user_and_the_socket_directory(tmp_path: Path) -> None:
    sysusers, tmpfiles = systemd_tool("systemd-sysusers"), systemd_tool("systemd-tmpfiles")
    root = tmp_path / "root"
    for kind in ("sysusers.d", "tmpfiles.d"):
        (root / "usr/lib" / kind).mkdir(parents=True)
        shutil.copy(SYSTEMD / kind / "berth.conf", root / "usr/lib" / kind / "berth.conf")
    (root / "etc").mkdir()
    for command in ([sysusers, f"--root={root}"], [tmpfiles, f"--root={root}", "--create"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    group = next(
        line.split(":")
        for line in (root / "etc/group").read_text().splitlines()
        if line.startswith("berth:")
    )
    user = next(
        line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.startswith("berth:")
    )
    assert user[3] == group[2]  # the user's primary group is berth
    run = (root / "run/berth").stat()
    assert (oct(run.st_mode & 0o7777), run.st_uid, run.st_gid) == ("0o1770", 0, int(group[2]))
    tls = (root / "etc/berth/tls").stat()
    assert (oct(tls.st_mode & 0o7777), tls.st_gid) == ("0o750", int(group[2]))
