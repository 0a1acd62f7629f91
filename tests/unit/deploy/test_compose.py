"""deploy/compose.yaml: valid against the compose specification's JSON schema, and every
service runs a daemon of ours with settings it accepts, builds a target that exists, and is
health-checked by berth-healthcheck on the socket the daemon listens on."""

from __future__ import annotations

import copy
import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from berth.common.settings import DaemonSettings
from berth.mcp.settings import McpdSettings
from tests.support.deploy import (
    DAEMONS,
    DOCKERFILE,
    EXTRA_ENV,
    REPO,
    accepted_env,
    parse_stages,
    settings_from_env,
    unknown_flags,
)

COMPOSE = REPO / "deploy" / "compose.yaml"
VERSION = "0.1.0"
# Build targets that are not named after their daemon.
TARGET_DAEMON = {"modeld-vllm": "modeld"}


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def schema_errors(document: object) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return sorted(
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    )


def load() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def berth_services(compose: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Services built from our Dockerfile: name -> (daemon, service)."""
    found = {}
    for name, service in compose["services"].items():
        if "build" in service:
            target = service["build"]["target"]
            found[name] = (TARGET_DAEMON.get(target, target), service)
    return found


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return {k: (v if sep else None) for k, sep, v in (i.partition("=") for i in env)}
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(load()) == []


def test_a_broken_compose_file_fails_the_same_validation() -> None:
    broken = copy.deepcopy(load())
    broken["services"]["gateway"]["restart"] = ["unless-stopped"]
    broken["services"]["networkd"]["netwrk_mode"] = "host"
    errors = schema_errors(broken)
    assert any(e.startswith("services/gateway/restart:") for e in errors), errors
    assert any("netwrk_mode" in e for e in errors), errors


def test_every_daemon_has_a_service_and_each_builds_an_existing_target() -> None:
    compose = load()
    services = berth_services(compose)
    assert set(DAEMONS) <= {daemon for daemon, _ in services.values()}
    _, stages = parse_stages(DOCKERFILE.read_text())
    targets = {stage.name for stage in stages}
    for name, (_, service) in services.items():
        build = service["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert build["target"] in targets, name
        assert service["image"] == f"berth-{build['target']}:{VERSION}", name


@pytest.mark.parametrize("name", ["gateway", "networkd", "mcpd", "modeld", "modeld-gpu"])
def test_each_service_sets_only_what_its_daemon_accepts_and_is_checked_on_its_socket(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, service = berth_services(load())[name]
    env = environment(service)
    assert sorted(set(env) - accepted_env(daemon)) == []
    command = service.get("command", [])
    assert unknown_flags(daemon, command if isinstance(command, list) else command.split()) == []
    assert "entrypoint" not in service  # the image's entry point is the daemon
    given = {k: v for k, v in env.items() if v and k not in EXTRA_ENV.get(daemon, set())}
    settings = settings_from_env(daemon, given, tmp_path, monkeypatch)
    assert isinstance(settings, DaemonSettings)
    test = service["healthcheck"]["test"]
    assert test[:2] == ["CMD", "berth-healthcheck"]
    assert test[2] in settings.listen
    socket_folder = settings.addresses[0].socket_path
    assert socket_folder is not None
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"] if isinstance(v, str)}
    assert mounts.get(str(socket_folder.parent)) == "berth-run"


def test_the_network_agent_has_the_hosts_network_capabilities_and_namespaces() -> None:
    _, service = berth_services(load())["networkd"]
    assert service["network_mode"] == "host"
    assert service["cap_drop"] == ["ALL"]
    assert {"NET_ADMIN", "SYS_ADMIN", "NET_RAW"} <= set(service["cap_add"])
    assert "privileged" not in service
    netns = next(v for v in service["volumes"] if isinstance(v, dict))
    assert (netns["type"], netns["source"], netns["target"]) == ("bind", "/run/netns", "/run/netns")
    assert netns["bind"]["propagation"] == "rshared"


def test_mcpd_keeps_injected_secrets_in_memory_at_its_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, service = berth_services(load())["mcpd"]
    settings = settings_from_env("mcpd", {}, tmp_path, monkeypatch)
    assert isinstance(settings, McpdSettings)
    tmpfs = [entry.split(":")[0] for entry in service["tmpfs"]]
    assert str(settings.runtime_dir) in tmpfs


def test_the_gpu_runner_reserves_nvidia_gpus_and_the_cpu_one_does_not() -> None:
    services = berth_services(load())
    gpu = services["modeld-gpu"][1]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    cpu = services["modeld"][1]
    assert "deploy" not in cpu
    # Both listen on the one runner socket: never started together by default.
    assert cpu["profiles"] != gpu["profiles"]


def test_redis_is_optional_and_names_no_registry_host() -> None:
    redis = load()["services"]["redis"]
    assert redis["profiles"] == ["cluster"]
    first = redis["image"].split("/")[0]
    assert "/" not in redis["image"] or not ("." in first or ":" in first)
