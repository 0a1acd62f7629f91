"""berth.network.domain.events: docker-style event filters and time windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from berth.common.errors import InvalidArgument
from berth.network.domain.events import Event, EventFilter, check_window

WEB_CREATE = Event("network", "create", "net-id-1", {"name": "web", "driver": "bridge"})
WEB_DESTROY = Event("network", "destroy", "net-id-1", {"name": "web"})
DB_CREATE = Event("network", "create", "net-id-2", {"name": "db"})
SANDBOX_START = Event("sandbox", "start", "sb-id-1", {"name": "api"})
ENDPOINT_CONNECT = Event(
    "endpoint",
    "connect",
    "ep-id-1",
    {"network": "web", "network_id": "net-id-1", "sandbox": "api", "sandbox_id": "sb-id-1"},
)
ALL = [WEB_CREATE, WEB_DESTROY, DB_CREATE, SANDBOX_START, ENDPOINT_CONNECT]


def matching(*pairs: tuple[str, str]) -> list[Event]:
    wanted = EventFilter.parse(pairs)
    return [event for event in ALL if wanted.matches(event)]


# ---- parse -----------------------------------------------------------------------------


def test_parse_groups_values_by_key() -> None:
    parsed = EventFilter.parse(
        [("type", "network"), ("action", "create"), ("type", "sandbox"), ("network", "web")]
    )

    assert parsed.values == {
        "type": {"network", "sandbox"},
        "action": {"create"},
        "network": {"web"},
    }


def test_parse_unknown_key_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        EventFilter.parse([("type", "network"), ("colour", "red")])

    [violation] = caught.value.violations
    assert violation.field == "filters[1].key"
    assert "'colour'" in violation.description
    assert "action, network, sandbox, type" in violation.description


def test_parse_unknown_type_value_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        EventFilter.parse([("type", "container")])

    [violation] = caught.value.violations
    assert violation.field == "filters[0].value"
    assert "'container'" in violation.description
    assert "endpoint, network, sandbox" in violation.description


def test_parse_reports_every_bad_filter() -> None:
    with pytest.raises(InvalidArgument) as caught:
        EventFilter.parse([("nope", "x"), ("action", "create"), ("type", "volume")])

    assert [v.field for v in caught.value.violations] == ["filters[0].key", "filters[2].value"]


def test_parse_uses_the_given_field_name() -> None:
    with pytest.raises(InvalidArgument) as caught:
        EventFilter.parse([("label", "x")], field_name="request.filters")

    assert caught.value.violations[0].field == "request.filters[0].key"


def test_any_action_value_is_accepted() -> None:
    assert EventFilter.parse([("action", "whatever")]).values == {"action": {"whatever"}}


# ---- matches ---------------------------------------------------------------------------


def test_empty_filter_matches_everything() -> None:
    assert matching() == ALL


def test_values_of_one_key_are_or_ed() -> None:
    assert matching(("type", "sandbox"), ("type", "endpoint")) == [SANDBOX_START, ENDPOINT_CONNECT]
    assert matching(("action", "create"), ("action", "destroy")) == [
        WEB_CREATE,
        WEB_DESTROY,
        DB_CREATE,
    ]


def test_different_keys_are_and_ed() -> None:
    assert matching(("type", "network"), ("action", "create")) == [WEB_CREATE, DB_CREATE]
    assert matching(("type", "sandbox"), ("action", "create")) == []


def test_or_within_and_across() -> None:
    assert matching(
        ("type", "network"), ("type", "sandbox"), ("action", "start"), ("action", "destroy")
    ) == [WEB_DESTROY, SANDBOX_START]


def test_network_by_name_matches_network_and_endpoint_events() -> None:
    assert matching(("network", "web")) == [WEB_CREATE, WEB_DESTROY, ENDPOINT_CONNECT]


def test_network_by_id_matches_network_and_endpoint_events() -> None:
    assert matching(("network", "net-id-1")) == [WEB_CREATE, WEB_DESTROY, ENDPOINT_CONNECT]


def test_sandbox_by_name_or_id() -> None:
    assert matching(("sandbox", "api")) == [SANDBOX_START, ENDPOINT_CONNECT]
    assert matching(("sandbox", "sb-id-1")) == [SANDBOX_START, ENDPOINT_CONNECT]


def test_a_network_name_does_not_match_sandbox_events_of_the_same_name() -> None:
    # SANDBOX_START is named "api"; a network filter on "api" must not select it.
    assert matching(("network", "api")) == []


def test_unknown_names_match_nothing() -> None:
    assert matching(("network", "nope")) == []
    assert matching(("sandbox", "nope")) == []


def test_network_and_action_combined() -> None:
    assert matching(("network", "web"), ("action", "connect")) == [ENDPOINT_CONNECT]
    assert matching(("network", "web"), ("network", "db"), ("action", "create")) == [
        WEB_CREATE,
        DB_CREATE,
    ]


def test_event_defaults() -> None:
    before = datetime.now(UTC)
    event = Event("network", "create", "id")

    assert event.scope == "local"
    assert event.attributes == {}
    assert before <= event.time <= datetime.now(UTC)


# ---- window ----------------------------------------------------------------------------


def test_since_after_until_is_refused() -> None:
    now = datetime.now(UTC)

    with pytest.raises(InvalidArgument) as caught:
        check_window(now, now - timedelta(seconds=1))

    [violation] = caught.value.violations
    assert violation.field == "until"
    assert "since" in violation.description


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (None, None),
        (datetime(2024, 1, 1, tzinfo=UTC), None),
        (None, datetime(2024, 1, 1, tzinfo=UTC)),
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)),
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)),
    ],
)
def test_valid_windows(since: datetime | None, until: datetime | None) -> None:
    check_window(since, until)
