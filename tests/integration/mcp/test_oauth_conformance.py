"""berth's OAuth client against the MCP conformance suite's `auth/*` client scenarios.

`@modelcontextprotocol/conformance` (package.json; it needs the Node 22 that package.json
also installs) starts, for each scenario, an MCP server and an authorization server that
each behave in one particular way, runs tests/conformance/oauth_client.py (berth's OAuth
client under the SDK's ClientSession) against them and checks what the client did. Every
`auth/*` scenario the suite lists is run: the suites `auth`, `backcompat`, `draft` and
`extensions` together hold them all, each suite's scenarios in parallel. The few berth
does not support on purpose are listed below with the reason; the suite's own baseline
check fails should one of them start passing (then take it off the list).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mcp import NODE_BIN, REPO

RUNNER = REPO / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
NODE = NODE_BIN / "node"  # Node 22, from package.json: the suite does not run on Node 20
CLIENT = REPO / "tests" / "conformance" / "oauth_client.py"
SUITES = ("auth", "backcompat", "draft", "extensions")
SUITE_TIMEOUT_S = 240

NOT_SUPPORTED = {
    "auth/basic-cimd": (
        "berth registers its client dynamically (RFC 7591) or uses the catalog's clientId; it "
        "publishes no client ID metadata document (SEP-991), so the scenario warns that the "
        "authorization server's support for one went unused"
    ),
    "auth/2025-03-26-oauth-metadata-backcompat": (
        "the scenario's authorization server metadata, found at the origin's well-known URL, "
        "names another issuer (.../oauth); berth, through the SDK, refuses metadata whose "
        "issuer is not the one it was looked up for (RFC 8414 section 3.3)"
    ),
    "auth/client-credentials-jwt": (
        "an extension for machine clients (client_credentials with private_key_jwt): berth "
        "authorizes on behalf of a person, with authorization code and PKCE"
    ),
    "auth/client-credentials-basic": (
        "an extension for machine clients (client_credentials with client_secret_basic): "
        "berth authorizes on behalf of a person, with authorization code and PKCE"
    ),
    "auth/cross-app-access-complete-flow": (
        "an extension for enterprise identity providers (SEP-990 token exchange and JWT "
        "bearer grant): not implemented by berth"
    ),
}


@dataclass(frozen=True)
class Results:
    exit_codes: dict[str, int]
    output: dict[str, str]
    checks: dict[str, list[dict]]  # scenario -> the suite's checks of berth's client


def runner_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def listed_scenarios() -> list[str]:
    listed = subprocess.run(
        [str(NODE), str(RUNNER), "list", "--client"],
        capture_output=True,
        text=True,
        env=runner_env(),
        timeout=60,
        check=True,
    )
    return re.findall(r"^\s*- (auth/\S+)", listed.stdout, re.MULTILINE)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    out = tmp_path_factory.mktemp("conformance")
    baseline = out / "baseline.yml"
    baseline.write_text("client:\n" + "".join(f"  - {name}\n" for name in NOT_SUPPORTED))
    command = f"{sys.executable} {CLIENT}"
    base = [str(NODE), str(RUNNER), "client", "--command", command]
    runs = {
        suite: subprocess.Popen(
            [*base, "--suite", suite, "--expected-failures", str(baseline), "-o", str(out / suite)],
            cwd=out,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=runner_env(),
        )
        for suite in SUITES
    }
    output = {}
    try:
        for suite, run in runs.items():
            output[suite], _ = run.communicate(timeout=SUITE_TIMEOUT_S)
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.wait()
    yield Results({s: r.returncode for s, r in runs.items()}, output, scenario_checks(out))


def scenario_checks(out: Path) -> dict[str, list[dict]]:
    """Scenario -> its checks, from `<suite>/auth/<name>-<timestamp>/checks.json`."""
    found = {}
    for path in out.glob("*/auth/*/checks.json"):
        name = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", path.parent.name)
        found[f"auth/{name}"] = json.loads(path.read_text())
    return found


def test_every_auth_scenario_the_suite_lists_is_run(results: Results) -> None:
    listed = listed_scenarios()
    assert len(listed) >= 20
    assert sorted(results.checks) == sorted(listed)
    assert set(NOT_SUPPORTED) <= set(listed), "a scenario berth skips is no longer listed"


def test_berths_oauth_client_passes_every_scenario_it_supports(results: Results) -> None:
    problems = {
        scenario: [
            f"{check['status']} {check['id']}: {check.get('errorMessage', check['description'])}"
            for check in checks
            if check["status"] in ("FAILURE", "WARNING")
        ]
        for scenario, checks in sorted(results.checks.items())
        if scenario not in NOT_SUPPORTED
    }
    failing = {scenario: found for scenario, found in problems.items() if found}
    assert not failing, json.dumps(failing, indent=2)
    passed = [s for s in results.checks if s not in NOT_SUPPORTED]
    assert len(passed) >= 15 and all(results.checks[s] for s in passed)


def test_the_unsupported_scenarios_are_the_only_failures(results: Results) -> None:
    # The suite's baseline check: every failure is a listed one, and each listed one still
    # fails (exit 1 otherwise, naming it).
    for suite, code in results.exit_codes.items():
        assert code == 0, f"suite {suite}:\n{results.output[suite][-4000:]}"
