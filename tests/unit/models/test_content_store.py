"""The content store on disk: blobs by digest, downloads in progress, and index.json."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from berth.common.errors import Code
from berth.models.adapters.content_store import ContentStore, file_digest
from berth.models.domain.catalog import Catalog, ModelEntry
from berth.models.domain.digests import DigestMismatch, sha256_digest

ID = "sha256:" + "a" * 64


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_a_new_store_lays_out_its_directories(tmp_path: Path) -> None:
    ContentStore(tmp_path / "store")
    root = tmp_path / "store"
    assert (root / "blobs" / "sha256").is_dir()
    assert (root / "ingest").is_dir()
    assert (root / "tmp").is_dir()
    assert _files(root) == []


def test_a_blob_is_stored_under_its_digest(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = store.write_blob(b"hello")
    assert digest == sha256_digest(b"hello")
    assert store.has_blob(digest)
    assert store.read_blob(digest) == b"hello"
    assert store.blob_size(digest) == 5
    assert store.blob_path(digest) == tmp_path / "blobs" / "sha256" / digest.removeprefix("sha256:")
    assert list(store.blobs()) == [digest]
    assert _files(tmp_path / "tmp") == []


def test_identical_blobs_are_stored_once(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    first = store.write_blob(b"same bytes")
    second = store.write_blob(b"same bytes", expected=first)
    assert first == second
    assert list(store.blobs()) == [first]
    assert _files(tmp_path / "tmp") == []


def test_a_blob_that_does_not_match_its_digest_is_not_stored(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    expected = sha256_digest(b"what the manifest said")
    with pytest.raises(DigestMismatch) as caught:
        store.write_blob(b"what arrived", expected=expected)
    assert caught.value.code is Code.DATA_LOSS
    assert caught.value.reason == "DIGEST_MISMATCH"
    assert caught.value.metadata == {
        "expected": expected,
        "actual": sha256_digest(b"what arrived"),
    }
    assert list(store.blobs()) == []
    assert _files(tmp_path / "blobs") == []
    assert _files(tmp_path / "tmp") == []


def test_a_file_is_imported_with_its_digest_size_and_progress(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    source = tmp_path / "model.gguf"
    data = os.urandom((1 << 20) * 2 + 12345)  # more than one read
    source.write_bytes(data)
    progress: list[int] = []
    digest, size = store.import_file(source, progress.append)
    assert digest == sha256_digest(data)
    assert size == len(data)
    assert store.read_blob(digest) == data
    assert progress == sorted(progress)
    assert len(progress) >= 3
    assert progress[-1] == len(data)
    assert source.read_bytes() == data  # copied, not moved
    assert _files(tmp_path / "store" / "tmp") == []


def test_importing_a_file_already_stored_keeps_one_copy(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    source = tmp_path / "LICENSE"
    source.write_bytes(b"Apache-2.0")
    first = store.import_file(source, lambda done: None)
    second = store.import_file(source, lambda done: None)
    assert first == second == (sha256_digest(b"Apache-2.0"), 10)
    assert list(store.blobs()) == [first[0]]
    assert _files(tmp_path / "store" / "tmp") == []


def test_an_empty_file_is_imported(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    source = tmp_path / "empty"
    source.write_bytes(b"")
    assert store.import_file(source, lambda done: None) == (sha256_digest(b""), 0)
    assert store.has_blob(sha256_digest(b""))


def test_a_finished_download_is_committed(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = b"layer bytes" * 1000
    digest = sha256_digest(data)
    partial = store.ingest_path(digest)
    with partial.open("ab") as handle:
        handle.write(data[:5000])
    with partial.open("ab") as handle:  # resumed
        handle.write(data[5000:])
    assert store.commit_ingest(digest) == len(data)
    assert store.read_blob(digest) == data
    assert not partial.exists()
    assert _files(tmp_path / "ingest") == []


def test_a_download_that_does_not_match_is_deleted(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = sha256_digest(b"the real layer")
    partial = store.ingest_path(digest)
    partial.write_bytes(b"a corrupted layer")
    with pytest.raises(DigestMismatch) as caught:
        store.commit_ingest(digest)
    assert caught.value.reason == "DIGEST_MISMATCH"
    assert caught.value.metadata["actual"] == sha256_digest(b"a corrupted layer")
    assert not partial.exists()
    assert not store.has_blob(digest)
    assert list(store.blobs()) == []


def test_a_download_from_a_work_dir_is_committed(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    work = store.ingest_work_dir("hf-org-repo")
    assert work.is_dir()
    source = work / "model.safetensors"
    source.write_bytes(b"tensors")
    digest = sha256_digest(b"tensors")
    assert store.commit_ingest(digest, source) == 7
    assert store.read_blob(digest) == b"tensors"
    assert not source.exists()
    assert file_digest(store.blob_path(digest)) == digest


def test_discard_ingest_removes_a_partial_download(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = sha256_digest(b"x")
    store.ingest_path(digest).write_bytes(b"partial")
    store.discard_ingest(digest)
    store.discard_ingest(digest)  # twice is fine
    assert not store.ingest_path(digest).exists()


def test_clear_ingest_removes_every_partial_download(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.ingest_path(sha256_digest(b"1")).write_bytes(b"12345")
    (store.ingest_work_dir("hf") / "nested.bin").write_bytes(b"123")
    kept = store.write_blob(b"complete")
    assert store.clear_ingest() == 8
    assert (tmp_path / "ingest").is_dir()
    assert _files(tmp_path / "ingest") == []
    assert list(store.blobs()) == [kept]
    assert store.clear_ingest() == 0


def test_leftovers_of_interrupted_writes_are_removed_on_start(tmp_path: Path) -> None:
    ContentStore(tmp_path)
    (tmp_path / "tmp" / "tmpab12cd").write_bytes(b"half a blob")
    (tmp_path / "tmp" / "tmpef34gh").write_bytes(b"half an index")
    partial = tmp_path / "ingest" / ("b" * 64)
    partial.write_bytes(b"a resumable download")
    ContentStore(tmp_path)
    assert _files(tmp_path / "tmp") == []
    assert partial.read_bytes() == b"a resumable download"


def test_remove_blob_returns_the_bytes_freed(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = store.write_blob(b"12345678")
    other = store.write_blob(b"other")
    assert store.remove_blob(digest) == 8
    assert not store.has_blob(digest)
    assert store.remove_blob(digest) == 0
    assert list(store.blobs()) == [other]


def test_blobs_ignores_files_that_are_not_digests(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = store.write_blob(b"x")
    (tmp_path / "blobs" / "sha256" / "not-a-digest").write_bytes(b"?")
    assert list(store.blobs()) == [digest]


def _catalog() -> Catalog:
    return Catalog(
        [
            ModelEntry(
                ID, ["ai/smollm2:latest", "ai/smollm2:v1"], datetime(2025, 4, 1, tzinfo=UTC)
            ),
            ModelEntry("sha256:" + "b" * 64, [], None),
        ]
    )


def test_an_empty_store_has_an_empty_catalog(tmp_path: Path) -> None:
    assert len(ContentStore(tmp_path).load_catalog()) == 0


def test_the_catalog_survives_a_restart(tmp_path: Path) -> None:
    ContentStore(tmp_path).save_catalog(_catalog())
    loaded = ContentStore(tmp_path).load_catalog()
    assert loaded.entries() == _catalog().entries()
    assert loaded.resolve("smollm2:v1") == ID
    assert json.loads((tmp_path / "index.json").read_text()) == _catalog().to_json()


def test_index_json_is_replaced_without_leaving_files_behind(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.save_catalog(Catalog())
    store.save_catalog(_catalog())
    store.save_catalog(_catalog())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "index.json", "ingest", "tmp"]
    assert _files(tmp_path / "tmp") == []
    assert store.load_catalog().entries() == _catalog().entries()


def test_a_save_that_fails_leaves_the_previous_index(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.save_catalog(_catalog())
    before = (tmp_path / "index.json").read_bytes()
    broken = Catalog([ModelEntry(ID, [object()])])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.save_catalog(broken)
    assert (tmp_path / "index.json").read_bytes() == before
    assert _files(tmp_path / "tmp") == []
