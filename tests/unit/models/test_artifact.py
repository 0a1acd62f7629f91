"""Model manifests: assembling one, its bytes and ID, and refusing what is not a model."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from berth.common.errors import Code
from berth.models.domain import media_types
from berth.models.domain.artifact import (
    Descriptor,
    StoredManifest,
    UnsupportedArtifact,
    assemble,
    file_layer,
    parse_manifest,
)
from berth.models.domain.digests import sha256_digest
from berth.models.domain.model_config import ModelConfig, parse_config_blob

CREATED = datetime(2025, 4, 1, 12, 0, tzinfo=UTC)
GGUF_BYTES = b"GGUF fake weights"
LICENSE_BYTES = b"Apache-2.0"
CONFIG = ModelConfig(format="gguf", quantization="Q4_1", parameters="134.52M", size="92.10MiB")


def _layers() -> list[Descriptor]:
    return [
        file_layer(media_types.GGUF, sha256_digest(GGUF_BYTES), len(GGUF_BYTES), "model.gguf"),
        file_layer(
            media_types.LICENSE, sha256_digest(LICENSE_BYTES), len(LICENSE_BYTES), "LICENSE"
        ),
    ]


def _manifest_json() -> dict[str, Any]:
    _, manifest = assemble(CONFIG, _layers(), CREATED)
    return json.loads(manifest.to_bytes())


def test_an_assembled_manifest_survives_its_bytes() -> None:
    _, manifest = assemble(CONFIG, _layers(), CREATED)
    body = manifest.to_bytes()
    again = parse_manifest(body, "ai/smollm2")
    assert again == manifest
    assert again.to_bytes() == body


def test_the_model_id_is_the_sha256_of_the_manifest_bytes() -> None:
    _, manifest = assemble(CONFIG, _layers(), CREATED)
    body = manifest.to_bytes()
    stored = StoredManifest(manifest, body)
    assert stored.digest == "sha256:" + hashlib.sha256(body).hexdigest()


def test_the_same_model_always_gets_the_same_id() -> None:
    first = assemble(CONFIG, _layers(), CREATED)[1].to_bytes()
    second = assemble(CONFIG, _layers(), CREATED)[1].to_bytes()
    later = assemble(CONFIG, _layers(), datetime(2025, 4, 2, tzinfo=UTC))[1].to_bytes()
    assert first == second
    assert sha256_digest(later) != sha256_digest(first)


def test_the_manifest_is_an_oci_image_manifest_with_a_model_config() -> None:
    config_body, manifest = assemble(CONFIG, _layers(), CREATED)
    data = json.loads(manifest.to_bytes())
    assert data["schemaVersion"] == 2
    assert data["mediaType"] == media_types.OCI_MANIFEST
    assert data["config"] == {
        "mediaType": media_types.MODEL_CONFIG,
        "digest": sha256_digest(config_body),
        "size": len(config_body),
    }
    assert [layer["mediaType"] for layer in data["layers"]] == [
        media_types.GGUF,
        media_types.LICENSE,
    ]
    assert data["layers"][0]["digest"] == sha256_digest(GGUF_BYTES)
    assert data["layers"][0]["size"] == len(GGUF_BYTES)


def test_the_config_blob_records_the_model_and_its_layers() -> None:
    config_body, _ = assemble(CONFIG, _layers(), CREATED)
    config, created = parse_config_blob(config_body)
    assert config == CONFIG
    assert created == CREATED
    diff_ids = json.loads(config_body)["rootfs"]["diff_ids"]
    assert diff_ids == [sha256_digest(GGUF_BYTES), sha256_digest(LICENSE_BYTES)]


def test_blobs_lists_every_layer_then_the_config() -> None:
    _, manifest = assemble(CONFIG, _layers(), CREATED)
    assert [b.digest for b in manifest.blobs] == [
        sha256_digest(GGUF_BYTES),
        sha256_digest(LICENSE_BYTES),
        manifest.config.digest,
    ]
    assert manifest.layers_size == len(GGUF_BYTES) + len(LICENSE_BYTES)


def test_a_file_layer_carries_its_name_as_docker_annotates_it() -> None:
    layer = file_layer(media_types.GGUF, sha256_digest(b"x"), 1, "model.gguf")
    assert layer.annotations == {
        "org.opencontainers.image.title": "model.gguf",
        "org.cncf.model.filepath": "model.gguf",
    }
    assert layer.title == "model.gguf"
    assert layer.to_json()["annotations"] == dict(layer.annotations)


@pytest.mark.parametrize(
    ("annotations", "title"),
    [
        ({media_types.TITLE: "a.gguf", media_types.FILE_PATH: "dir/a.gguf"}, "a.gguf"),
        ({media_types.FILE_PATH: "dir/a.gguf"}, "dir/a.gguf"),
        ({}, ""),
    ],
)
def test_a_descriptor_title_prefers_the_oci_title(annotations: dict[str, str], title: str) -> None:
    assert Descriptor(media_types.GGUF, sha256_digest(b"x"), 1, annotations).title == title


def test_a_descriptor_without_annotations_writes_none() -> None:
    assert "annotations" not in Descriptor(media_types.GGUF, sha256_digest(b"x"), 1).to_json()


def test_a_docker_v2_manifest_of_a_model_is_accepted() -> None:
    data = _manifest_json()
    data["mediaType"] = media_types.DOCKER_MANIFEST_V2
    data["annotations"] = {"org.opencontainers.image.created": "2025-04-01"}
    manifest = parse_manifest(json.dumps(data).encode(), "ai/smollm2")
    assert manifest.media_type == media_types.DOCKER_MANIFEST_V2
    assert manifest.annotations == {"org.opencontainers.image.created": "2025-04-01"}
    assert [layer.title for layer in manifest.layers] == ["model.gguf", "LICENSE"]


def test_a_manifest_without_a_media_type_is_read_as_oci() -> None:
    data = _manifest_json()
    del data["mediaType"]
    manifest = parse_manifest(json.dumps(data).encode(), "ai/smollm2")
    assert manifest.media_type == media_types.OCI_MANIFEST


def _refused(data: object, what: str = "ai/smollm2") -> UnsupportedArtifact:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    with pytest.raises(UnsupportedArtifact) as caught:
        parse_manifest(body, what)
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert caught.value.reason == "UNSUPPORTED_FORMAT"
    return caught.value


@pytest.mark.parametrize("media_type", [media_types.OCI_INDEX, media_types.DOCKER_MANIFEST_LIST])
def test_an_image_index_is_refused(media_type: str) -> None:
    error = _refused({"schemaVersion": 2, "mediaType": media_type, "manifests": []})
    assert "image index" in error.message
    assert error.metadata == {"model": "ai/smollm2"}


def test_a_container_image_is_refused_as_not_a_model() -> None:
    data = _manifest_json()
    data["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json"
    error = _refused(data)
    assert "not a model" in error.message
    assert error.metadata["media_type"] == "application/vnd.oci.image.config.v1+json"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'"a string"',
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    _refused(body)


def test_an_unknown_manifest_type_is_refused() -> None:
    data = _manifest_json()
    data["mediaType"] = "application/vnd.docker.distribution.manifest.v1+json"
    _refused(data)


def test_a_schema_version_other_than_2_is_refused() -> None:
    data = _manifest_json()
    data["schemaVersion"] = 1
    _refused(data)


def test_a_manifest_without_layers_is_refused() -> None:
    data = _manifest_json()
    del data["layers"]
    _refused(data)


def test_a_manifest_with_an_empty_list_of_layers_is_refused() -> None:
    # A model is its files: a manifest naming none is no model, whatever else it says.
    data = _manifest_json()
    data["layers"] = []
    _refused(data)


def test_a_manifest_without_a_config_is_refused() -> None:
    data = _manifest_json()
    del data["config"]
    _refused(data)


@pytest.mark.parametrize(
    "digest",
    [
        None,
        42,
        "",
        "sha256:abc",
        "sha512:" + "a" * 128,
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 65,
        "a" * 64,
    ],
)
def test_a_layer_with_a_bad_digest_is_refused(digest: object) -> None:
    data = _manifest_json()
    data["layers"][0]["digest"] = digest
    _refused(data)


def test_a_config_with_a_bad_digest_is_refused() -> None:
    data = _manifest_json()
    data["config"]["digest"] = "sha256:nothex"
    _refused(data)


@pytest.mark.parametrize("size", [None, -1, "17", 1.5, True])
def test_a_layer_with_a_bad_size_is_refused(size: object) -> None:
    data = _manifest_json()
    data["layers"][0]["size"] = size
    _refused(data)


def test_a_layer_without_a_media_type_is_refused() -> None:
    data = _manifest_json()
    del data["layers"][1]["mediaType"]
    _refused(data)


def test_a_layer_that_is_not_an_object_is_refused() -> None:
    data = _manifest_json()
    data["layers"].append("sha256:" + "a" * 64)
    _refused(data)


def test_an_empty_layer_of_size_zero_is_accepted() -> None:
    data = _manifest_json()
    data["layers"][1]["size"] = 0
    manifest = parse_manifest(json.dumps(data).encode(), "ai/smollm2")
    assert manifest.layers[1].size == 0
