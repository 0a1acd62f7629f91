"""The OCI manifest of a model artifact: its descriptors, its bytes, and parsing it back.

A model is one OCI image manifest whose config blob is Docker's model config
(`application/vnd.docker.ai.model.config.*`) and whose layers are the model's files. The
manifest's sha256 is the model's ID everywhere: in the store, in `ls`, and in the registry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from berth.common.errors import FailedPrecondition
from berth.models.domain import media_types
from berth.models.domain.digests import is_digest, sha256_digest
from berth.models.domain.model_config import ModelConfig, config_blob


class UnsupportedArtifact(FailedPrecondition):
    default_reason = "UNSUPPORTED_FORMAT"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest}
        data["size"] = self.size
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data

    @property
    def title(self) -> str:
        return self.annotations.get(media_types.TITLE) or self.annotations.get(
            media_types.FILE_PATH, ""
        )


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: Sequence[Descriptor]
    media_type: str = media_types.OCI_MANIFEST
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The canonical bytes berth writes (their sha256 is the model ID)."""
        data: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return json.dumps(data, separators=(",", ":")).encode()

    @property
    def blobs(self) -> list[Descriptor]:
        """Every blob the manifest needs: the layers, then the config."""
        return [*self.layers, self.config]

    @property
    def layers_size(self) -> int:
        return sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class StoredManifest:
    """A manifest with the exact bytes it was read from (the ID is their digest)."""

    manifest: Manifest
    body: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.body)


def parse_manifest(body: bytes, what: str) -> Manifest:
    """Read a model manifest; UNSUPPORTED_FORMAT when `what` is not a model artifact."""
    try:
        data = json.loads(body)
    except ValueError:
        raise UnsupportedArtifact(f"{what}: the manifest is not JSON") from None
    if not isinstance(data, dict):
        raise UnsupportedArtifact(f"{what}: the manifest is not a JSON object")
    media_type = data.get("mediaType") or media_types.OCI_MANIFEST
    if media_type in (media_types.OCI_INDEX, media_types.DOCKER_MANIFEST_LIST):
        raise UnsupportedArtifact(
            f"{what} is an image index, not a model", metadata={"model": what}
        )
    if media_type not in media_types.MANIFESTS or data.get("schemaVersion") != 2:
        raise UnsupportedArtifact(f"{what}: unsupported manifest type {media_type!r}")
    config = _descriptor(data.get("config"), what)
    if not config.media_type.startswith(media_types.MODEL_CONFIG_PREFIX):
        raise UnsupportedArtifact(
            f"{what} is not a model (its config is {config.media_type!r})",
            metadata={"model": what, "media_type": config.media_type},
        )
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise UnsupportedArtifact(f"{what}: the manifest has no layers")
    return Manifest(
        config=config,
        layers=[_descriptor(layer, what) for layer in layers],
        media_type=media_type,
        annotations=_strings(data.get("annotations")),
    )


def _descriptor(data: object, what: str) -> Descriptor:
    if not isinstance(data, dict):
        raise UnsupportedArtifact(f"{what}: a descriptor is not a JSON object")
    media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or not is_digest(digest):
        raise UnsupportedArtifact(f"{what}: a descriptor lacks a media type or sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UnsupportedArtifact(f"{what}: descriptor {digest} has no valid size")
    return Descriptor(media_type, digest, size, _strings(data.get("annotations")))


def _strings(data: object) -> dict[str, str]:
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def assemble(
    config: ModelConfig, layers: Sequence[Descriptor], created: datetime
) -> tuple[bytes, Manifest]:
    """The config blob and the manifest of a model made of `layers`."""
    body = config_blob(config, created, [layer.digest for layer in layers])
    descriptor = Descriptor(media_types.MODEL_CONFIG, sha256_digest(body), len(body))
    return body, Manifest(config=descriptor, layers=list(layers))


def file_layer(media_type: str, digest: str, size: int, name: str) -> Descriptor:
    """A layer holding one file, annotated with its name as Docker does."""
    return Descriptor(
        media_type, digest, size, {media_types.TITLE: name, media_types.FILE_PATH: name}
    )
