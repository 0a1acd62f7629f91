"""A loaded model's files as engines expect them: hard links to the blobs, archives unpacked."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from berth.common.errors import FailedPrecondition
from berth.models.adapters.content_store import ContentStore
from berth.models.domain import media_types
from berth.models.domain.artifact import Descriptor, Manifest, file_layer
from berth.models.runner.bundles import make_bundle, remove_bundle

MODEL_ID = "sha256:" + "ab" * 32


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def layer(store: ContentStore, media_type: str, data: bytes, name: str) -> Descriptor:
    return file_layer(media_type, store.write_blob(data), len(data), name)


def manifest(*layers: Descriptor) -> Manifest:
    config = Descriptor(media_types.MODEL_CONFIG, "sha256:" + "0" * 64, 2)
    return Manifest(config=config, layers=list(layers))


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store")


def test_a_safetensors_model_becomes_a_directory_vllm_can_serve(
    store: ContentStore, tmp_path: Path
) -> None:
    weights = layer(store, media_types.SAFETENSORS, b"weights", "model.safetensors")
    configs = tar_of({"config.json": b"{}", "tokenizer.json": b"{}"})
    archive = layer(store, media_types.VLLM_CONFIG_TAR, configs, "config.tar")
    template = layer(store, media_types.CHAT_TEMPLATE, b"{{ messages }}", "template.jinja")

    bundle = make_bundle(
        store, tmp_path / "bundles", MODEL_ID, manifest(weights, archive, template)
    )

    assert {p.name for p in bundle.directory.iterdir() if not p.name.startswith(".")} == {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "template.jinja",
    }
    assert bundle.weights == [bundle.directory / "model.safetensors"]
    assert bundle.weights[0].samefile(store.blob_path(weights.digest)), "a link, not a copy"
    assert bundle.chat_template == bundle.directory / "template.jinja"
    # Made again while loaded (a second engine of the model): the same files.
    again = make_bundle(store, tmp_path / "bundles", MODEL_ID, manifest(weights, archive, template))
    assert again == bundle
    remove_bundle(tmp_path / "bundles", MODEL_ID)
    assert not bundle.directory.exists()


def test_an_archive_reaching_out_of_the_bundle_is_refused(
    store: ContentStore, tmp_path: Path
) -> None:
    evil = layer(store, media_types.DIR_TAR, tar_of({"../escaped": b"x"}), "dir.tar")

    with pytest.raises(FailedPrecondition) as failure:
        make_bundle(store, tmp_path / "bundles", MODEL_ID, manifest(evil))

    assert failure.value.reason == "UNSAFE_ARCHIVE"
    assert not (tmp_path / "bundles" / "escaped").exists()
