"""deploy/docker/Dockerfile: every target of the contract exists, runs its daemon as the
right user with a health check, and every file it copies is in the build context (the
repository root less .dockerignore). No Docker engine needed: the file is parsed."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from berth.common.settings import DaemonSettings
from tests.support.deploy import DAEMONS, DOCKERFILE, REPO, Stage, console_scripts, parse_stages

DOCKERIGNORE = REPO / ".dockerignore"
BERTH_UID = "10001"
COPY_FLAGS = ("--from=", "--chown=", "--chmod=", "--link", "--parents", "--exclude=")


def chain(stages: list[Stage], target: str) -> list[Stage]:
    """The target stage and the stages it is built FROM, innermost first."""
    by_name = {stage.name: stage for stage in stages}
    found = [by_name[target]]
    while found[-1].parent in by_name:
        found.append(by_name[found[-1].parent])
    return found


def last(stages: list[Stage], target: str, instruction: str) -> str | None:
    """The instruction's value in effect for the target (USER, ENTRYPOINT... are inherited)."""
    for stage in chain(stages, target):
        values = [value for name, value in stage.instructions if name == instruction]
        if values:
            return values[-1]
    return None


def base_image(args: dict[str, str], stages: list[Stage], target: str) -> str:
    image = chain(stages, target)[-1].parent
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), image)


# --- .dockerignore, as Docker reads it ----------------------------------------------------


def ignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        patterns.append((negated, re.compile(glob_regex(pattern))))
    return patterns


def glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def is_ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """A path is out of the context when the last pattern that matches it, or one of its
    parent folders, is not a `!` exception."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in patterns:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


# --- COPY and ADD --------------------------------------------------------------------------


def copy_problems(text: str, context: Path, ignore_text: str) -> list[str]:
    """What `docker build` would fail on or silently miss: sources outside the context,
    missing, excluded by .dockerignore, or from a stage that is not defined before."""
    patterns = ignore_patterns(ignore_text)
    _, stages = parse_stages(text)
    problems = []
    for index, stage in enumerate(stages):
        earlier = {s.name for s in stages[:index]}
        for instruction, value in stage.instructions:
            if instruction not in ("COPY", "ADD"):
                continue
            words = shlex.split(value)
            source_stage = next((w[7:] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith(COPY_FLAGS)][:-1]
            if source_stage is not None:
                if source_stage not in earlier:
                    problems.append(f"{instruction} --from={source_stage}: no such earlier stage")
                continue
            for source in paths:
                found = source_problems(source, context, patterns)
                problems += [f"{instruction} {problem}" for problem in found]
    return problems


def source_problems(
    source: str, context: Path, patterns: list[tuple[bool, re.Pattern[str]]]
) -> list[str]:
    path = (context / source).resolve()
    if not path.is_relative_to(context):
        return [f"{source}: outside the build context"]
    if not path.exists():
        return [f"{source}: does not exist"]
    relative = path.relative_to(context).as_posix()
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    kept = [f for f in files if not is_ignored(f.relative_to(context).as_posix(), patterns)]
    if is_ignored(relative, patterns) and not kept:
        return [f"{source}: excluded by .dockerignore"]
    if not kept:
        return [f"{source}: nothing in it reaches the build context"]
    return []


# --- the tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_stages(DOCKERFILE.read_text())[1]


def test_every_copied_file_is_in_the_build_context() -> None:
    problems = copy_problems(DOCKERFILE.read_text(), REPO, DOCKERIGNORE.read_text())
    assert problems == []


def test_a_missing_or_ignored_source_is_reported() -> None:
    broken = (
        DOCKERFILE.read_text() + "\nCOPY tests tests\nCOPY no-such-dir x\nCOPY --from=nope a b\n"
    )
    problems = copy_problems(broken, REPO, DOCKERIGNORE.read_text())
    assert problems == [
        "COPY tests: excluded by .dockerignore",
        "COPY no-such-dir: does not exist",
        "COPY --from=nope: no such earlier stage",
    ]


def test_the_image_gets_every_package_berth_installs(stages: list[Stage]) -> None:
    """`pip install .` in the builder finds each package of pyproject's package-dir."""
    builder = next(stage for stage in stages if stage.name == "builder")
    copied = {
        shlex.split(value)[0].rstrip("/")
        for name, value in builder.instructions
        if name == "COPY" and "--from=" not in value
    }
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = pyproject["tool"]["setuptools"]["package-dir"].values()
    assert "pyproject.toml" in copied
    missing = [f for f in folders if not any(f == c or f.startswith(f"{c}/") for c in copied)]
    assert missing == []
    patterns = ignore_patterns(DOCKERIGNORE.read_text())
    assert not any(is_ignored(f"{folder}/__init__.py", patterns) for folder in folders)
    assert is_ignored(".venv/bin/python", patterns)
    assert is_ignored("api/__pycache__/x.cpython-311.pyc", patterns)


@pytest.mark.parametrize("daemon", DAEMONS)
def test_each_daemon_has_a_target_that_runs_it(daemon: str, stages: list[Stage]) -> None:
    assert daemon in {stage.name for stage in stages}
    entrypoint = last(stages, daemon, "ENTRYPOINT")
    assert entrypoint is not None
    assert json.loads(entrypoint) == [f"berth-{daemon}"]
    assert f"berth-{daemon}" in console_scripts()


@pytest.mark.parametrize("daemon", DAEMONS)
def test_only_the_network_agent_runs_as_root(daemon: str, stages: list[Stage]) -> None:
    user = last(stages, daemon, "USER")
    if daemon == "networkd":
        assert user in (None, "0", "0:0", "root")
    else:
        assert user in (BERTH_UID, f"{BERTH_UID}:{BERTH_UID}")


@pytest.mark.parametrize("daemon", DAEMONS)
def test_the_health_check_asks_the_daemon_on_its_socket(daemon: str, stages: list[Stage]) -> None:
    healthcheck = last(stages, daemon, "HEALTHCHECK")
    assert healthcheck is not None
    command = json.loads(healthcheck.split("CMD", 1)[1])
    settings: type[DaemonSettings] = DAEMONS[daemon]
    listen = settings.model_fields["listen"].get_default(call_default_factory=True)
    assert command[0] == "berth-healthcheck"
    assert command[1] in listen


def test_the_vllm_target_extends_the_runner(stages: list[Stage]) -> None:
    names = [stage.name for stage in chain(stages, "modeld-vllm")]
    assert names[:2] == ["modeld-vllm", "modeld"]
    assert last(stages, "modeld-vllm", "USER") == f"{BERTH_UID}:{BERTH_UID}"


def test_the_vllm_image_carries_the_vllm_the_tests_use() -> None:
    tested = re.search(r"vllm==([\w.]+)", (REPO / "tools" / "setup-vllm.sh").read_text())
    built = re.search(r"^ARG VLLM_VERSION=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert tested and built and built.group(1) == tested.group(1)


def test_base_images_name_no_registry_host() -> None:
    args, stages = parse_stages(DOCKERFILE.read_text())
    names = {stage.name for stage in stages}
    bases = {base_image(args, stages, s.name) for s in stages if s.parent not in names}
    assert bases == {"python:3.11-slim-bookworm"}
    for image in bases:
        first = image.split("/")[0]
        assert "/" not in image or not ("." in first or ":" in first), image
