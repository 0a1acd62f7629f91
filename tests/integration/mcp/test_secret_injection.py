"""Secrets reach a real stdio server as the catalog says (environment, 0600 file), only when
the policy allows them, and nowhere else: not on command lines, not in the state directory,
not in berth-mcpd's log, not in the error a dying server leaves."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mcp import private_mcpd
from tests.support.processes import DaemonProcess, poll, run_berth

PROBE = Path(__file__).resolve().parents[2] / "fixtures" / "probe_server.py"
SERVER = "probe"
CATALOG = f"""\
name: probe-servers
servers:
  {SERVER}:
    description: tells what it was started with
    command: {sys.executable}
    args: ["{PROBE}"]
    secrets:
      - {{name: probe.token, env: PROBE_TOKEN}}
      - {{name: probe.cert, injection: file, env: PROBE_CERT_FILE, path: cert.pem}}
      - {{name: probe.denied, env: PROBE_DENIED}}
      - {{name: probe.unset, env: PROBE_UNSET}}
"""
POLICY = """\
# the probe gets its token and its certificate, not probe.denied
probe.token allows probe
probe.cert allows probe
"""


class Probe:
    """A private berth-mcpd with the probe server enabled and its secrets set."""

    def __init__(self, root: Path, daemon: DaemonProcess) -> None:
        self.root = root
        self.daemon = daemon
        self.state = root / "state"
        self.values = {name: f"{name}-{uuid.uuid4().hex}" for name in SECRET_NAMES}

    def berth(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_berth(self.daemon.target, *args, stdin=stdin)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.berth(*args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def call(self, tool: str, **arguments: str) -> dict[str, object]:
        args = [f"{key}={value}" for key, value in arguments.items()]
        out = self.ok("mcp", "tools", "call", tool, *args, "--format", "json")
        return json.loads(out)["structured_content"]


SECRET_NAMES = ("probe.token", "probe.cert", "probe.denied")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[Probe]:
    daemon = private_mcpd(tmp_path / "state", "--gateway-port", "-1")
    probe = Probe(tmp_path, daemon)
    try:
        catalog = tmp_path / "probe.yaml"
        catalog.write_text(CATALOG)
        probe.ok("mcp", "catalog", "import", str(catalog))
        probe.ok("mcp", "server", "enable", SERVER)
        for name, value in probe.values.items():
            probe.ok("mcp", "secret", "set", name, stdin=value + "\n")
        probe.ok("mcp", "policy", "set", stdin=POLICY)
        yield probe
    finally:
        daemon.stop()


def test_allowed_secrets_arrive_as_environment_and_file(probe: Probe) -> None:
    token = probe.call("env_digest", variable="PROBE_TOKEN")
    assert token == {"set": True, "sha256": sha256(probe.values["probe.token"])}

    cert = probe.call("file_from_env", variable="PROBE_CERT_FILE")
    assert cert["exists"] and cert["mode"] == "0o600"
    assert cert["sha256"] == sha256(probe.values["probe.cert"])
    path = Path(str(cert["path"]))
    assert path.name == "cert.pem"
    assert not path.is_relative_to(probe.state), "a secret file in the state directory"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_secret_the_policy_does_not_allow_or_nobody_set_is_left_out(probe: Probe) -> None:
    assert probe.call("env_digest", variable="PROBE_DENIED") == {"set": False, "sha256": ""}
    assert probe.call("env_digest", variable="PROBE_UNSET") == {"set": False, "sha256": ""}
    # ... and `secret export` agrees with what the server got.
    exported = probe.ok("mcp", "secret", "export", SERVER).splitlines()
    assert sorted(exported) == sorted(
        f"{name}={probe.values[name]}" for name in ("probe.token", "probe.cert")
    )


def test_server_ls_shows_what_is_missing(probe: Probe) -> None:
    rows = json.loads(probe.ok("mcp", "server", "ls", "--json"))
    row = next(row for row in rows if row["name"] == SERVER)
    # probe.unset is not set; probe.denied is not allowed.
    assert row["secrets_status"] == "REQUIREMENT_STATUS_PARTIAL"
    assert row["policy_status"] == "REQUIREMENT_STATUS_PARTIAL"


def test_values_are_nowhere_but_in_the_server(probe: Probe) -> None:
    probe.call("env_digest", variable="PROBE_TOKEN")  # the server runs
    command_lines = subprocess.run(
        ["ps", "-eww", "-o", "args="], capture_output=True, text=True, check=True
    ).stdout
    assert "probe.py" in command_lines or str(PROBE) in command_lines
    for value in probe.values.values():
        assert value not in command_lines
        for file in probe.state.rglob("*"):
            if file.is_file():
                assert value.encode() not in file.read_bytes(), f"{value} in {file}"
        assert value not in probe.daemon.log_path.read_text()
    assert probe.values["probe.token"] not in probe.ok("mcp", "secret", "ls", "--json")


def test_secret_files_go_when_the_server_stops(probe: Probe) -> None:
    path = Path(str(probe.call("file_from_env", variable="PROBE_CERT_FILE")["path"]))
    assert path.exists()
    probe.ok("mcp", "server", "disable", SERVER)
    poll(lambda: not path.parent.exists(), 20, "the secret files removed")


def test_a_dying_server_does_not_repeat_its_secret_in_the_error(probe: Probe) -> None:
    token = probe.values["probe.token"]
    died = probe.berth("mcp", "tools", "call", "say", f"words=leaking {token} now")
    assert died.returncode != 0
    assert token not in died.stderr + died.stdout


def test_a_result_carrying_a_secret_the_server_was_given_is_refused(probe: Probe) -> None:
    token = probe.values["probe.token"]
    leaked = probe.berth("mcp", "tools", "call", "reveal_env", "variable=PROBE_TOKEN")
    assert leaked.returncode != 0
    assert "a secret berth gave this server" in leaked.stderr
    assert token not in leaked.stderr + leaked.stdout
