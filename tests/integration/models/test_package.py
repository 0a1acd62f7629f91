"""`berth model package` beyond a lone GGUF: `--push`, `--from` with a new context size, licenses
and a chat template, a safetensors directory with `--dir-tar`, and a registry that wants
Docker's token flow."""

from __future__ import annotations

import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.models.conftest import ModelStack
from tests.support.models import smollm2_gguf, write_safetensors
from tests.support.registry import RegistryServer, registry_server

pytestmark = pytest.mark.timeout(300)

GGUF = "application/vnd.docker.ai.gguf.v3"
LICENSE = "application/vnd.docker.ai.license"
TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"
SAFETENSORS = "application/vnd.docker.ai.safetensors"
CONFIG_TAR = "application/vnd.docker.ai.vllm.config.tar"
DIR_TAR = "application/vnd.docker.ai.dir.tar"


def _fresh(registry: RegistryServer, repository: str, tag: str = "latest") -> str:
    return f"{registry.host}/{repository}-{uuid.uuid4().hex[:6]}:{tag}"


def _layers(model: dict[str, Any]) -> list[str]:
    return [layer["media_type"] for layer in model["manifest"]["layers"]]


def test_package_push_stores_nothing_locally(models: ModelStack, registry: RegistryServer) -> None:
    name = _fresh(registry, "direct/smollm2", "v1")
    out = models.ok("model", "package", "--gguf", str(smollm2_gguf()), "--push", name)
    assert f"Model packaged and pushed successfully: {name}" in out
    assert name not in models.tags()
    remote = json.loads(models.ok("model", "inspect", "--remote", name))
    assert _layers(remote) == [GGUF]
    assert remote["config"]["quantization"] == "Q4_1"


def test_from_a_stored_model_with_license_template_and_context(
    models: ModelStack, registry: RegistryServer, tmp_path: Path
) -> None:
    base = _fresh(registry, "base/smollm2")
    base_id = json.loads(_package_and_inspect(models, base))["id"]
    license_file = tmp_path / "LICENSE"
    license_file.write_text("Apache License 2.0\n")
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    variant = _fresh(registry, "variant/smollm2")
    models.ok(
        "model",
        "package",
        "--from",
        base,
        "--context-size",
        "1024",
        "--license",
        str(license_file),
        "--chat-template",
        str(template),
        variant,
    )
    shown = json.loads(models.ok("model", "inspect", variant))
    assert shown["id"] != base_id
    assert shown["config"]["context_size"] == 1024
    assert _layers(shown) == [GGUF, LICENSE, TEMPLATE]
    original = json.loads(models.ok("model", "inspect", base))
    assert shown["manifest"]["layers"][0]["digest"] == original["manifest"]["layers"][0]["digest"]
    assert "context_size" not in original["config"] or original["config"]["context_size"] is None


def _package_and_inspect(models: ModelStack, name: str) -> str:
    models.ok("model", "package", "--gguf", str(smollm2_gguf()), name)
    return models.ok("model", "inspect", name)


def test_a_safetensors_directory_with_a_dir_tar(
    models: ModelStack, registry: RegistryServer, tmp_path: Path
) -> None:
    model_dir = tmp_path / "tiny"
    (model_dir / "assets" / "extra").mkdir(parents=True)
    write_safetensors(model_dir / "model.safetensors", {"w": ("BF16", [64, 64])})
    (model_dir / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    (model_dir / "tokenizer.json").write_text("{}")
    (model_dir / "assets" / "extra" / "notes.txt").write_text("kept with its folders")
    name = _fresh(registry, "tiny/safetensors")
    models.ok("model", "package", "--safetensors-dir", str(model_dir), "--dir-tar", "assets", name)
    shown = json.loads(models.ok("model", "inspect", name))
    assert shown["config"]["format"] == "MODEL_FORMAT_SAFETENSORS"
    assert shown["config"]["quantization"] == "BF16"
    assert shown["config"]["architecture"] == "llama"
    assert _layers(shown) == [SAFETENSORS, CONFIG_TAR, DIR_TAR]
    # The same files packaged again give the same layers (the tars are reproducible).
    again = _fresh(registry, "tiny/again")
    models.ok("model", "package", "--safetensors-dir", str(model_dir), "--dir-tar", "assets", again)
    digests = [layer["digest"] for layer in shown["manifest"]["layers"]]
    repeat = json.loads(models.ok("model", "inspect", again))
    assert [layer["digest"] for layer in repeat["manifest"]["layers"]] == digests

    escape = models.berth(
        "model", "package", "--safetensors-dir", str(model_dir), "--dir-tar", "../..", name + "x"
    )
    assert escape.returncode != 0 and "dir_tar_paths[0]" in escape.stderr


def test_push_through_the_registry_token_flow(models: ModelStack, tmp_path: Path) -> None:
    with registry_server(tmp_path, users={"bob": "t0ken-pw"}, token_auth=True) as registry:
        name = f"{registry.host}/team/smollm2:v1"
        models.ok("model", "package", "--gguf", str(smollm2_gguf()), name)
        refused = models.berth("model", "push", name)
        assert refused.returncode != 0 and "authentication" in refused.stderr
        config = tmp_path / "docker"
        config.mkdir()
        (config / "config.json").write_text(
            json.dumps({"auths": {registry.host: {"username": "bob", "password": "t0ken-pw"}}})
        )
        env = {"DOCKER_CONFIG": str(config)}
        models.ok("model", "push", name, env=env)
        assert registry.token_server is not None
        assert any(r.user == "bob" for r in registry.token_server.requests)
        models.ok("model", "rm", name)
        models.ok("model", "pull", name, env=env)
        assert name in models.tags()


def test_untar_of_the_dir_tar_keeps_the_tree(models: ModelStack, tmp_path: Path) -> None:
    """What a runner unpacks from a --dir-tar layer: the directory, under its own name."""
    model_dir = tmp_path / "m"
    (model_dir / "assets" / "deep").mkdir(parents=True)
    write_safetensors(model_dir / "model.safetensors", {"w": ("F16", [4])})
    (model_dir / "assets" / "deep" / "a.txt").write_text("a")
    name = "ai/tree-check:v1"
    models.ok("model", "package", "--safetensors-dir", str(model_dir), "--dir-tar", "assets", name)
    shown = json.loads(models.ok("model", "inspect", name))
    [dir_tar] = [lay for lay in shown["manifest"]["layers"] if lay["media_type"] == DIR_TAR]
    blob = models.root / "models" / "store" / "blobs" / "sha256"
    with tarfile.open(blob / dir_tar["digest"].removeprefix("sha256:")) as archive:
        assert "assets/deep/a.txt" in archive.getnames()
    models.ok("model", "rm", name)
