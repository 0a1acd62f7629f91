"""The catalog: what a name or ID resolves to, and Docker's rules for tag and rm."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from berth.common.errors import Code, FailedPrecondition, InvalidArgument
from berth.models.domain.catalog import Catalog, ModelEntry, ModelNotFound, Removal

ADDED = datetime(2025, 4, 1, 12, 0, tzinfo=UTC)
# Two IDs sharing their first 12 hex digits, and a third unlike them.
ID_A = "sha256:abcdef123456" + "a" * 52
ID_B = "sha256:abcdef123456" + "b" * 52
ID_C = "sha256:" + "c" * 64


def _catalog() -> Catalog:
    catalog = Catalog()
    catalog.add(ID_A, "ai/smollm2:latest", ADDED)
    catalog.add(ID_A, "ai/smollm2:v1", ADDED)
    catalog.add(ID_B, "127.0.0.1:5000/team/llm:v1", ADDED)
    catalog.add(ID_C, "ai/other:latest", ADDED)
    return catalog


def _state(catalog: Catalog) -> dict[str, list[str]]:
    return {entry.id: list(entry.tags) for entry in catalog.entries()}


@pytest.mark.parametrize(
    ("text", "model_id"),
    [
        ("smollm2", ID_A),
        ("ai/smollm2", ID_A),
        ("ai/smollm2:v1", ID_A),
        ("docker.io/ai/smollm2:v1", ID_A),
        ("127.0.0.1:5000/team/llm:v1", ID_B),
        ("other", ID_C),
    ],
)
def test_a_reference_resolves_to_the_model_its_tag_points_at(text: str, model_id: str) -> None:
    assert _catalog().resolve(text) == model_id


@pytest.mark.parametrize(
    ("text", "model_id"),
    [
        (ID_A, ID_A),
        (ID_B.removeprefix("sha256:"), ID_B),
        ("abcdef123456a", ID_A),
        ("sha256:abcdef123456b", ID_B),
        ("cccccccccccc", ID_C),
    ],
)
def test_an_id_or_a_unique_prefix_of_12_or_more_hex_digits_resolves(
    text: str, model_id: str
) -> None:
    assert _catalog().resolve(text) == model_id


def test_a_prefix_matching_several_models_is_ambiguous() -> None:
    with pytest.raises(InvalidArgument) as caught:
        _catalog().resolve("abcdef123456", "source")
    assert caught.value.reason == "AMBIGUOUS_MODEL_ID"
    assert [v.field for v in caught.value.violations] == ["source"]


@pytest.mark.parametrize(
    "text",
    ["ai/smollm2:v2", "unknown", "hf.co/org/repo:Q4_0", "ccccccccccc", "sha256:" + "d" * 64],
)
def test_an_unknown_model_is_not_found(text: str) -> None:
    with pytest.raises(ModelNotFound) as caught:
        _catalog().resolve(text)
    assert caught.value.code is Code.NOT_FOUND
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert caught.value.metadata == {"model": text}


def test_a_malformed_reference_is_an_invalid_argument_on_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        _catalog().resolve("Not A Model", "models[2]")
    assert caught.value.reason == "INVALID_REFERENCE"
    assert [v.field for v in caught.value.violations] == ["models[2]"]


def test_tag_adds_a_second_name_to_a_model() -> None:
    catalog = _catalog()
    assert catalog.tag(ID_C, "ai/other:v2") == []
    assert catalog.get(ID_C) == ModelEntry(ID_C, ["ai/other:latest", "ai/other:v2"], ADDED)
    assert catalog.resolve("ai/other:v2") == ID_C


def test_tag_moves_a_tag_from_another_model() -> None:
    catalog = _catalog()
    assert catalog.tag(ID_C, "ai/smollm2:v1") == []
    assert catalog.owner_of("ai/smollm2:v1") == ID_C
    assert _state(catalog)[ID_A] == ["ai/smollm2:latest"]


def test_moving_the_last_tag_leaves_the_model_untagged_and_says_so() -> None:
    catalog = _catalog()
    assert catalog.tag(ID_C, "127.0.0.1:5000/team/llm:v1") == [ID_B]
    assert _state(catalog)[ID_B] == []
    assert catalog.resolve(ID_B) == ID_B


def test_tagging_twice_keeps_one_tag() -> None:
    catalog = _catalog()
    catalog.tag(ID_C, "ai/other:latest")
    assert _state(catalog)[ID_C] == ["ai/other:latest"]


def test_add_of_a_tag_already_elsewhere_moves_it() -> None:
    catalog = _catalog()
    orphans = catalog.add(ID_C.replace("c", "e"), "ai/other:latest", ADDED)
    assert orphans == [ID_C]
    assert catalog.resolve("ai/other") == ID_C.replace("c", "e")


def test_removing_one_of_several_tags_only_untags() -> None:
    catalog = _catalog()
    removal = catalog.plan_removal(["ai/smollm2:v1"], force=False)
    assert removal == Removal(untagged=["ai/smollm2:v1"], deleted=[])
    catalog.apply(removal)
    assert _state(catalog)[ID_A] == ["ai/smollm2:latest"]


def test_removing_the_last_tag_deletes_the_model() -> None:
    catalog = _catalog()
    removal = catalog.plan_removal(["ai/smollm2:v1", "smollm2"], force=False)
    assert removal == Removal(untagged=["ai/smollm2:v1", "ai/smollm2:latest"], deleted=[ID_A])
    catalog.apply(removal)
    assert catalog.get(ID_A) is None
    with pytest.raises(ModelNotFound):
        catalog.resolve("ai/smollm2:latest")


def test_removing_by_id_deletes_a_model_with_one_tag() -> None:
    catalog = _catalog()
    removal = catalog.plan_removal(["cccccccccccc"], force=False)
    assert removal == Removal(untagged=["ai/other:latest"], deleted=[ID_C])


def test_removing_by_id_a_model_with_several_tags_needs_force() -> None:
    catalog = _catalog()
    before = _state(catalog)
    with pytest.raises(FailedPrecondition) as caught:
        catalog.plan_removal([ID_A], force=False)
    assert caught.value.reason == "MODEL_HAS_TAGS"
    assert caught.value.metadata == {"model": ID_A}
    assert _state(catalog) == before


def test_removing_by_id_with_force_deletes_the_model_and_all_its_tags() -> None:
    catalog = _catalog()
    removal = catalog.plan_removal([ID_A], force=True)
    assert removal == Removal(untagged=["ai/smollm2:latest", "ai/smollm2:v1"], deleted=[ID_A])
    catalog.apply(removal)
    assert catalog.get(ID_A) is None
    assert catalog.owner_of("ai/smollm2:v1") is None
    assert len(catalog) == 2


def test_an_untagged_model_is_removed_by_id() -> None:
    catalog = _catalog()
    catalog.tag(ID_C, "127.0.0.1:5000/team/llm:v1")
    removal = catalog.plan_removal([ID_B], force=False)
    assert removal == Removal(untagged=[], deleted=[ID_B])


def test_one_unknown_target_plans_nothing() -> None:
    catalog = _catalog()
    before = _state(catalog)
    with pytest.raises(ModelNotFound) as caught:
        catalog.plan_removal(["ai/other", "ai/missing:v1"], force=True)
    assert caught.value.metadata == {"model": "ai/missing:v1"}
    assert _state(catalog) == before


def test_planning_alone_changes_nothing() -> None:
    catalog = _catalog()
    before = _state(catalog)
    catalog.plan_removal(["ai/smollm2:v1", ID_C], force=False)
    assert _state(catalog) == before


def test_a_reference_then_the_id_of_the_same_model_removes_it_once() -> None:
    catalog = _catalog()
    removal = catalog.plan_removal(["ai/smollm2:v1", ID_A], force=False)
    # After the untag only one tag is left, so the ID no longer needs force.
    assert removal == Removal(untagged=["ai/smollm2:v1", "ai/smollm2:latest"], deleted=[ID_A])


def test_the_id_then_a_reference_of_the_same_model_removes_it_once() -> None:
    catalog = _catalog()
    removal = catalog.plan_removal([ID_C, "ai/other"], force=False)
    assert removal == Removal(untagged=["ai/other:latest"], deleted=[ID_C])


def test_the_same_reference_twice_is_removed_once() -> None:
    catalog = _catalog()
    removal = catalog.plan_removal(["ai/smollm2:v1", "ai/smollm2:v1"], force=False)
    assert removal == Removal(untagged=["ai/smollm2:v1"], deleted=[])


def test_catalog_survives_a_json_round_trip() -> None:
    catalog = _catalog()
    catalog.add(ID_C.replace("c", "f"), None, datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    again = Catalog.from_json(catalog.to_json())
    assert again.entries() == catalog.entries()
    assert again.resolve("ai/smollm2:v1") == ID_A
    assert again.get(ID_C.replace("c", "f")) == ModelEntry(
        ID_C.replace("c", "f"), [], datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    )


def test_an_entry_without_a_time_survives_a_json_round_trip() -> None:
    catalog = Catalog([ModelEntry(ID_A, ["ai/smollm2:latest"])])
    assert Catalog.from_json(catalog.to_json()).entries() == [
        ModelEntry(ID_A, ["ai/smollm2:latest"], None)
    ]


def test_an_empty_document_is_an_empty_catalog() -> None:
    assert len(Catalog.from_json({})) == 0
