"""Exposed names of the aggregated endpoint: deterministic, never fatal on a clash."""

from __future__ import annotations

import pytest

from berth.common.errors import FailedPrecondition, NotFound
from berth.mcp.domain.tools import expose, find


def tools(*names: str) -> list[dict[str, str]]:
    return [{"name": name, "description": f"does {name}"} for name in names]


def test_unique_names_stay_bare_and_clashing_ones_get_their_server_prefix() -> None:
    exposed = expose(
        [("git", tools("git_log", "search")), ("web", tools("search", "fetch"))], False
    )
    assert [(t.server, t.name, t.exposed) for t in exposed] == [
        ("git", "git_log", "git_log"),
        ("git", "search", "git__search"),
        ("web", "search", "web__search"),
        ("web", "fetch", "fetch"),
    ]
    assert exposed[1].as_offered() == {"name": "git__search", "description": "does search"}


def test_the_prefix_feature_prefixes_every_name() -> None:
    exposed = expose([("time", tools("convert_time"))], True)
    assert [t.exposed for t in exposed] == ["time__convert_time"]


def test_disabled_tools_are_marked_not_dropped() -> None:
    exposed = expose([("time", tools("a", "b"))], False, {"time": {"b"}})
    assert [(t.name, t.enabled) for t in exposed] == [("a", True), ("b", False)]


def test_a_name_is_found_by_exposed_name_own_name_or_with_its_server() -> None:
    exposed = expose([("git", tools("log", "search")), ("web", tools("search"))], False)
    assert find(exposed, "log").server == "git"
    assert find(exposed, "web__search").server == "web"
    assert find(exposed, "search", server="git").exposed == "git__search"


def test_an_ambiguous_own_name_is_refused_naming_both_servers() -> None:
    exposed = expose([("git", tools("search")), ("web", tools("search"))], False)
    with pytest.raises(
        FailedPrecondition, match=r"several servers offer the tool 'search' \(git, web\)"
    ):
        find(exposed, "search")


def test_an_unknown_name_is_not_found() -> None:
    exposed = expose([("git", tools("log"))], False)
    with pytest.raises(NotFound, match="no enabled server offers the tool 'nope'"):
        find(exposed, "nope")
    with pytest.raises(NotFound, match="on server web"):
        find(exposed, "log", server="web")
