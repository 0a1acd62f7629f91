"""berth.mcp.domain.features: `berth mcp feature enable|disable|ls`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from berth.common.errors import Code, InvalidArgument
from berth.common.jsonfile import read_json, write_json
from berth.mcp.domain.features import Feature, FeatureFlags

DEFAULTS = {"tool-name-prefix": False, "block-secrets": True, "oauth-dcr": True}


def flags_on(path: Path) -> FeatureFlags:
    return FeatureFlags(lambda: read_json(path, {}), lambda data: write_json(path, data))


def states(flags: FeatureFlags) -> dict[str, bool]:
    return {f.name: f.enabled for f in flags.list()}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "mcp" / "features.json"


def test_defaults_without_a_file(path: Path) -> None:
    flags = flags_on(path)

    assert states(flags) == DEFAULTS
    assert all(f.description for f in flags.list())
    assert not path.exists()


def test_enable_persists(path: Path) -> None:
    feature = flags_on(path).set("tool-name-prefix", True)

    assert feature.name == "tool-name-prefix"
    assert feature.enabled is True
    assert "Prefix" in feature.description
    assert json.loads(path.read_text()) == {"tool-name-prefix": True}
    # A new instance (a restarted daemon) reads the same state.
    assert states(flags_on(path)) == {**DEFAULTS, "tool-name-prefix": True}


def test_disable_persists(path: Path) -> None:
    flags_on(path).set("block-secrets", False)

    assert states(flags_on(path)) == {**DEFAULTS, "block-secrets": False}


def test_changes_accumulate_and_can_be_undone(path: Path) -> None:
    flags = flags_on(path)
    flags.set("oauth-dcr", False)
    flags.set("tool-name-prefix", True)
    assert states(flags_on(path)) == {
        "tool-name-prefix": True,
        "block-secrets": True,
        "oauth-dcr": False,
    }

    flags.set("oauth-dcr", True)
    flags.set("tool-name-prefix", False)
    assert states(flags_on(path)) == DEFAULTS


def test_unknown_feature_is_refused(path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        flags_on(path).set("turbo", True)

    error = caught.value
    assert error.code is Code.INVALID_ARGUMENT
    assert error.reason == "UNKNOWN_FEATURE"
    assert error.metadata == {"name": "turbo"}
    [violation] = error.violations
    assert violation.field == "name"
    assert "'turbo'" in violation.description
    assert "block-secrets, oauth-dcr, tool-name-prefix" in violation.description
    assert not path.exists()


def test_failed_set_leaves_the_file_unchanged(path: Path) -> None:
    flags = flags_on(path)
    flags.set("tool-name-prefix", True)
    before = path.read_bytes()

    with pytest.raises(InvalidArgument):
        flags.set("Tool-Name-Prefix", False)

    assert path.read_bytes() == before
    assert states(flags)["tool-name-prefix"] is True


def test_failed_save_leaves_state_unchanged(path: Path) -> None:
    flags_on(path).set("oauth-dcr", False)
    before = path.read_bytes()

    def broken_save(data: dict[str, Any]) -> None:
        # write_json fails half-way (the data cannot be encoded): the old file must survive.
        write_json(path, {**data, "broken": object()})

    flags = FeatureFlags(lambda: read_json(path, {}), broken_save)
    with pytest.raises(TypeError):
        flags.set("tool-name-prefix", True)

    assert path.read_bytes() == before
    assert states(flags_on(path)) == {**DEFAULTS, "oauth-dcr": False}
    assert sorted(p.name for p in path.parent.iterdir()) == ["features.json"]


def test_unknown_keys_in_the_file_are_ignored(path: Path) -> None:
    write_json(path, {"retired-feature": True, "block-secrets": False})

    assert states(flags_on(path)) == {**DEFAULTS, "block-secrets": False}


def test_works_with_any_load_and_save() -> None:
    store: dict[str, Any] = {}
    saved: list[dict[str, Any]] = []

    def save(data: dict[str, Any]) -> None:
        saved.append(dict(data))
        store.clear()
        store.update(data)

    flags = FeatureFlags(lambda: dict(store), save)

    assert flags.set("block-secrets", False) == Feature(
        "block-secrets", "Refuse tool calls whose arguments or results contain secrets", False
    )
    assert saved == [{"block-secrets": False}]
    assert states(flags)["block-secrets"] is False
