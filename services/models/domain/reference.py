"""Model references, normalised as Docker Model Runner does.

`smollm2` and `ai/smollm2` are `ai/smollm2:latest` on Docker Hub (the `ai/` namespace is
Docker Hub's default only); a first component with a
dot, a colon or `localhost` is a registry host (`127.0.0.1:5000/team/llm:v1`); `hf.co/...`
(or `huggingface.co/...`) names a Hugging Face repository, lower-cased as every OCI name is.
The normalised text (`Reference.name`) is what the store keeps and what every answer shows:
the Docker Hub host is left out of it, every other host is kept.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from berth.common.errors import FieldViolation, InvalidArgument

DOCKER_HUB = "index.docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
HUGGING_FACE = "hf.co"
DEFAULT_NAMESPACE = "ai"
DEFAULT_TAG = "latest"

_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_HF_ALIASES = {"hf.co", "huggingface.co"}
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"(?:\[[0-9a-fA-F:]+\]|[a-zA-Z0-9.-]+)(?::[0-9]+)?")
_NAME_MAX = 255


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    # None only for a reference by digest without a tag (`ai/smollm2@sha256:...`).
    tag: str | None = DEFAULT_TAG
    digest: str | None = None

    @property
    def repository_name(self) -> str:
        """The repository with its host, as `name` shows it but without tag or digest."""
        if self.registry == DOCKER_HUB:
            return self.repository
        return f"{self.registry}/{self.repository}"

    @property
    def name(self) -> str:
        text = self.repository_name
        if self.tag:
            text += f":{self.tag}"
        return f"{text}@{self.digest}" if self.digest else text

    @property
    def is_huggingface(self) -> bool:
        return self.registry == HUGGING_FACE

    @property
    def api_host(self) -> str:
        """The host whose registry API serves this reference."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def insecure(self) -> bool:
        """Whether the registry is spoken to over plain HTTP (loopback only, as Docker)."""
        if self.registry.startswith("["):
            host = self.registry[1 : self.registry.find("]")]
        else:
            host = self.registry.partition(":")[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag)

    def __str__(self) -> str:
        return self.name


def parse_reference(text: str, field: str = "model") -> Reference:
    """Parse and normalise `text`; InvalidArgument (INVALID_REFERENCE) on `field` when bad."""
    try:
        return _parse(text)
    except ValueError as error:
        raise InvalidArgument(
            [FieldViolation(field, f"invalid reference {text!r}: {error}")],
            reason="INVALID_REFERENCE",
            metadata={"reference": text},
        ) from None


def _parse(text: str) -> Reference:
    if not text or text != text.strip():
        raise ValueError("a model reference is required, without spaces")
    rest, digest = _split_digest(text)
    registry, path = _split_registry(rest)
    path, tag = _split_tag(path)
    if registry == HUGGING_FACE:
        path = path.lower()
    elif path != path.lower():
        raise ValueError("repository names must be lowercase")
    if "/" not in path and registry == DOCKER_HUB:
        path = f"{DEFAULT_NAMESPACE}/{path}"
    components = path.split("/")
    if registry == HUGGING_FACE and len(components) != 2:
        raise ValueError("a Hugging Face reference is hf.co/<org>/<repository>[:<quantization>]")
    if not all(_COMPONENT.fullmatch(c) for c in components):
        raise ValueError("repository name components are lowercase letters, digits and . _ -")
    if len(path) > _NAME_MAX:
        raise ValueError(f"repository name longer than {_NAME_MAX} characters")
    return Reference(registry, path, tag or (None if digest else DEFAULT_TAG), digest)


def _split_digest(text: str) -> tuple[str, str | None]:
    rest, at, digest = text.partition("@")
    if not at:
        return text, None
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"{digest!r} is not a sha256:<64 hex> digest")
    return rest, digest


def _split_registry(text: str) -> tuple[str, str]:
    first, slash, rest = text.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return DOCKER_HUB, text
    if not _HOST.fullmatch(first):
        raise ValueError(f"{first!r} is not a registry host")
    host = first.lower()
    if host in _HUB_ALIASES:
        return DOCKER_HUB, rest
    if host in _HF_ALIASES:
        return HUGGING_FACE, rest
    return host, rest


def _split_tag(path: str) -> tuple[str, str | None]:
    name, colon, tag = path.rpartition(":")
    if not colon:
        return path, None
    if "/" in tag:
        return path, None
    if not _TAG.fullmatch(tag):
        raise ValueError(f"{tag!r} is not a valid tag")
    return name, tag
