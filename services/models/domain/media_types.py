"""The media types and annotations of model artifacts, as Docker Model Runner writes them."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST_V2)

MODEL_CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"
# Every version of Docker's model config starts with this.
MODEL_CONFIG_PREFIX = "application/vnd.docker.ai.model.config"

GGUF = "application/vnd.docker.ai.gguf.v3"
SAFETENSORS = "application/vnd.docker.ai.safetensors"
LICENSE = "application/vnd.docker.ai.license"
CHAT_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"
DIR_TAR = "application/vnd.docker.ai.dir.tar"
VLLM_CONFIG_TAR = "application/vnd.docker.ai.vllm.config.tar"
MULTIMODAL_PROJECTOR = "application/vnd.docker.ai.mmproj"

# Layer annotations.
TITLE = "org.opencontainers.image.title"
FILE_PATH = "org.cncf.model.filepath"
