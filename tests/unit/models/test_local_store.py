"""The local model store: commit, ls, inspect, tag, rm and purge over real files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from berth.common.errors import FailedPrecondition
from berth.models.adapters.content_store import ContentStore
from berth.models.domain import media_types
from berth.models.domain.artifact import assemble, file_layer
from berth.models.domain.catalog import ModelNotFound, Removal
from berth.models.domain.model_config import ModelConfig
from berth.models.store.local import ModelStore

SHARED_LICENSE = b"Apache-2.0 license text"


class _Model:
    """A small synthetic model whose blobs are in the store but that is not committed."""

    def __init__(self, content: ContentStore, weights: bytes, created: datetime) -> None:
        layers = []
        self.blobs: list[str] = []
        for media_type, data, name in (
            (media_types.GGUF, weights, "model.gguf"),
            (media_types.LICENSE, SHARED_LICENSE, "LICENSE"),
        ):
            digest = content.write_blob(data)
            layers.append(file_layer(media_type, digest, len(data), name))
            self.blobs.append(digest)
        config = ModelConfig(format="gguf", quantization="Q4_1", parameters="1K", size="1KiB")
        config_body, manifest = assemble(config, layers, created)
        self.config_digest = content.write_blob(config_body)
        self.blobs.append(self.config_digest)
        self.weights = self.blobs[0]
        self.manifest = manifest
        self.body = manifest.to_bytes()
        self.created = created
        self.size = len(weights) + len(SHARED_LICENSE)


def _created(day: int) -> datetime:
    return datetime(2025, 4, day, 12, 0, tzinfo=UTC)


@pytest.fixture
def content(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "models")


@pytest.fixture
def store(content: ContentStore) -> ModelStore:
    return ModelStore(content)


def _blob_files(content: ContentStore) -> set[str]:
    return set(content.blobs())


async def test_commit_makes_the_model_visible_under_its_tag(
    content: ContentStore, store: ModelStore
) -> None:
    model = _Model(content, b"weights one", _created(1))
    view = await store.commit("ai/smollm2:latest", model.body)
    assert view.name == "ai/smollm2:latest"
    assert view.tags == ["ai/smollm2:latest"]
    assert view.manifest == model.manifest
    assert view.created == model.created
    assert view.config.quantization == "Q4_1"
    assert view.size_bytes == model.size
    assert view.manifest_size == len(model.body)
    assert content.read_blob(view.id) == model.body
    assert store.id_of_tag("ai/smollm2:latest") == view.id
    # A fresh store over the same directory sees it too: the catalog was saved.
    again = ModelStore(ContentStore(content.root))
    assert again.inspect("smollm2").id == view.id


async def test_commit_with_a_missing_blob_fails_and_changes_nothing(
    content: ContentStore, store: ModelStore
) -> None:
    kept = _Model(content, b"weights one", _created(1))
    await store.commit("ai/kept:latest", kept.body)
    index = (content.root / "index.json").read_bytes()
    model = _Model(content, b"weights two", _created(2))
    content.remove_blob(model.weights)
    blobs = _blob_files(content)
    with pytest.raises(FailedPrecondition) as caught:
        await store.commit("ai/broken:latest", model.body)
    assert model.weights in caught.value.message
    assert _blob_files(content) == blobs  # the manifest was not stored either
    assert (content.root / "index.json").read_bytes() == index
    assert [v.name for v in store.list_models()] == ["ai/kept:latest"]
    with pytest.raises(ModelNotFound):
        store.inspect("ai/broken")


async def test_list_shows_the_newest_model_first(content: ContentStore, store: ModelStore) -> None:
    middle = _Model(content, b"middle", _created(2))
    oldest = _Model(content, b"oldest", _created(1))
    newest = _Model(content, b"newest", _created(3))
    await store.commit("ai/middle:latest", middle.body)
    await store.commit("ai/oldest:latest", oldest.body)
    await store.commit("ai/newest:latest", newest.body)
    views = store.list_models()
    assert [v.name for v in views] == ["ai/newest:latest", "ai/middle:latest", "ai/oldest:latest"]
    assert [v.created for v in views] == [_created(3), _created(2), _created(1)]


async def test_inspect_by_tag_id_and_prefix(content: ContentStore, store: ModelStore) -> None:
    model = _Model(content, b"weights", _created(1))
    committed = await store.commit("ai/smollm2:latest", model.body)
    await store.tag("ai/smollm2:latest", "127.0.0.1:5000/team/llm:v1")
    by_tag = store.inspect("127.0.0.1:5000/team/llm:v1")
    assert by_tag.id == committed.id
    assert by_tag.name == "127.0.0.1:5000/team/llm:v1"
    assert by_tag.tags == ["ai/smollm2:latest", "127.0.0.1:5000/team/llm:v1"]
    by_short_name = store.inspect("smollm2")
    assert by_short_name.name == "ai/smollm2:latest"
    by_id = store.inspect(committed.id)
    assert by_id.id == committed.id
    assert by_id.name == "ai/smollm2:latest"
    hex_id = committed.id.removeprefix("sha256:")
    assert store.inspect(hex_id[:12]).id == committed.id
    with pytest.raises(ModelNotFound):
        store.inspect("ai/smollm2:v2")


async def test_tag_moves_a_tag_to_another_model(content: ContentStore, store: ModelStore) -> None:
    first = await store.commit("ai/llm:latest", _Model(content, b"one", _created(1)).body)
    await store.tag("ai/llm:latest", "ai/llm:stable")
    second = await store.commit("ai/llm:v2", _Model(content, b"two", _created(2)).body)
    view = await store.tag("ai/llm:v2", "llm:stable")
    assert view.id == second.id
    assert view.name == "ai/llm:stable"
    assert store.inspect("ai/llm:stable").id == second.id
    assert store.inspect(first.id).tags == ["ai/llm:latest"]
    assert sorted(store.inspect(second.id).tags) == ["ai/llm:stable", "ai/llm:v2"]


async def test_tag_of_an_unknown_model_is_not_found(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound):
        await store.tag("ai/missing", "ai/other")


async def test_remove_deletes_unused_blobs_but_keeps_shared_ones(
    content: ContentStore, store: ModelStore
) -> None:
    first = _Model(content, b"first weights", _created(1))
    second = _Model(content, b"second weights", _created(2))
    first_view = await store.commit("ai/first:latest", first.body)
    second_view = await store.commit("ai/second:latest", second.body)
    removal = await store.remove(["ai/first"], force=False)
    assert removal == Removal(untagged=["ai/first:latest"], deleted=[first_view.id])
    left = _blob_files(content)
    assert first_view.id not in left
    assert first.weights not in left
    assert first.config_digest not in left
    # The license layer is the same blob in both models.
    assert set(second.blobs) | {second_view.id} == left
    assert store.inspect("ai/second").manifest == second.manifest
    assert [v.name for v in store.list_models()] == ["ai/second:latest"]


async def test_removing_one_of_two_tags_keeps_the_model_and_its_blobs(
    content: ContentStore, store: ModelStore
) -> None:
    model = _Model(content, b"weights", _created(1))
    view = await store.commit("ai/llm:latest", model.body)
    await store.tag("ai/llm", "ai/llm:v1")
    blobs = _blob_files(content)
    removal = await store.remove(["ai/llm:v1"], force=False)
    assert removal == Removal(untagged=["ai/llm:v1"], deleted=[])
    assert _blob_files(content) == blobs
    assert store.inspect(view.id).tags == ["ai/llm:latest"]


async def test_remove_with_an_unknown_target_removes_nothing(
    content: ContentStore, store: ModelStore
) -> None:
    await store.commit("ai/llm:latest", _Model(content, b"weights", _created(1)).body)
    blobs = _blob_files(content)
    with pytest.raises(ModelNotFound):
        await store.remove(["ai/llm", "ai/missing"], force=True)
    assert _blob_files(content) == blobs
    assert store.inspect("ai/llm").name == "ai/llm:latest"


async def test_pinned_blobs_survive_remove(content: ContentStore, store: ModelStore) -> None:
    await store.commit("ai/old:latest", _Model(content, b"old", _created(1)).body)
    pulling = _Model(content, b"being pulled", _created(2))  # stored, not yet committed
    stray = content.write_blob(b"no model needs this")
    with store.pinned(pulling.blobs):
        await store.remove(["ai/old"], force=False)
        assert set(pulling.blobs) <= _blob_files(content)
        assert stray not in _blob_files(content)
        view = await store.commit("ai/new:latest", pulling.body)
    assert store.inspect("ai/new").id == view.id


async def test_pinned_blobs_survive_purge_and_go_once_unpinned(
    content: ContentStore, store: ModelStore
) -> None:
    await store.commit("ai/old:latest", _Model(content, b"old", _created(1)).body)
    pulling = _Model(content, b"being pulled", _created(2))
    partial = content.ingest_path(pulling.weights)
    partial.write_bytes(b"resumable")
    with store.pinned(pulling.blobs), store.pinned([pulling.weights]):
        await store.purge(force=False)
        assert _blob_files(content) == set(pulling.blobs)
        assert partial.exists()  # a pull under way keeps its partial downloads
    await store.purge(force=False)
    assert _blob_files(content) == set()
    assert not partial.exists()


async def test_purge_removes_everything_and_reports_the_bytes(
    content: ContentStore, store: ModelStore
) -> None:
    first = await store.commit("ai/first:latest", _Model(content, b"1" * 1000, _created(1)).body)
    second = await store.commit("ai/second:v1", _Model(content, b"2" * 3000, _created(2)).body)
    await store.tag("ai/second:v1", "ai/second:latest")
    content.write_blob(b"a stray blob")
    content.ingest_path(first.id).write_bytes(b"partial download")
    expected = sum(content.blob_size(d) for d in content.blobs()) + len(b"partial download")
    purge = await store.purge(force=False)
    assert purge.reclaimed_bytes == expected
    assert sorted(purge.removal.deleted) == sorted([first.id, second.id])
    assert sorted(purge.removal.untagged) == [
        "ai/first:latest",
        "ai/second:latest",
        "ai/second:v1",
    ]
    assert _blob_files(content) == set()
    assert list((content.root / "ingest").iterdir()) == []
    assert store.list_models() == []
    assert json.loads((content.root / "index.json").read_text()) == {"models": []}


async def test_purge_of_an_empty_store_frees_nothing(store: ModelStore) -> None:
    purge = await store.purge(force=False)
    assert purge.reclaimed_bytes == 0
    assert purge.removal == Removal([], [])


async def test_a_loaded_model_is_not_removed_without_force(
    content: ContentStore, store: ModelStore
) -> None:
    loaded = await store.commit("ai/loaded:latest", _Model(content, b"in use", _created(1)).body)
    await store.tag("ai/loaded", "ai/loaded:v1")
    store.in_use = lambda model_id: model_id == loaded.id
    blobs = _blob_files(content)
    with pytest.raises(FailedPrecondition) as caught:
        await store.remove([loaded.id], force=False)
    assert caught.value.reason == "MODEL_HAS_TAGS"
    with pytest.raises(FailedPrecondition) as caught:
        await store.remove(["ai/loaded:v1", "ai/loaded:latest"], force=False)
    assert caught.value.reason == "MODEL_IN_USE"
    assert caught.value.metadata == {"model": loaded.id}
    assert _blob_files(content) == blobs
    assert sorted(store.inspect(loaded.id).tags) == ["ai/loaded:latest", "ai/loaded:v1"]
    # Untagging while another tag keeps it is fine.
    assert (await store.remove(["ai/loaded:v1"], force=False)).deleted == []
    removal = await store.remove(["ai/loaded"], force=True)
    assert removal.deleted == [loaded.id]
    assert _blob_files(content) == set()


async def test_purge_refuses_while_a_model_is_loaded_unless_forced(
    content: ContentStore, store: ModelStore
) -> None:
    loaded = await store.commit("ai/loaded:latest", _Model(content, b"in use", _created(1)).body)
    await store.commit("ai/idle:latest", _Model(content, b"idle", _created(2)).body)
    store.in_use = lambda model_id: model_id == loaded.id
    blobs = _blob_files(content)
    with pytest.raises(FailedPrecondition) as caught:
        await store.purge(force=False)
    assert caught.value.reason == "MODEL_IN_USE"
    assert _blob_files(content) == blobs
    assert len(store.list_models()) == 2
    purge = await store.purge(force=True)
    assert loaded.id in purge.removal.deleted
    assert store.list_models() == []
