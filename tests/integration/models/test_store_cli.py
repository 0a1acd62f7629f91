"""`berth model package|push|pull|tag|ls|inspect|rm|purge` end to end: the CLI, the gateway,
berth-modeld, a real registry and the real SmolLM2 GGUF."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.models.conftest import ModelStack
from tests.support.models import smollm2_gguf
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.timeout(300)


def _name(registry: RegistryServer, repository: str, tag: str = "latest") -> str:
    return f"{registry.host}/{repository}-{uuid.uuid4().hex[:6]}:{tag}"


def _digest(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("Digest: "))
    return line.split()[1]


def test_package_push_rm_pull_gives_the_same_model(
    models: ModelStack, registry: RegistryServer
) -> None:
    name = _name(registry, "team/smollm2", "v1")
    packaged = models.ok("model", "package", "--gguf", str(smollm2_gguf()), name)
    assert f"Model packaged successfully: {name}" in packaged
    model_id = _digest(packaged)

    shown = json.loads(models.ok("model", "inspect", name))
    config = shown["config"]
    assert shown["id"] == model_id and name in shown["tags"]
    assert config["format"] == "MODEL_FORMAT_GGUF"
    assert config["architecture"] == "llama"
    assert config["quantization"] == "Q4_1"
    assert config["parameters"] == "134.52M"
    assert config["gguf"]["general.architecture"] == "llama"
    assert config["gguf"]["llama.context_length"] == "8192"
    assert "tokenizer.ggml.tokens" not in config["gguf"]  # the vocabulary is left out
    [layer] = shown["manifest"]["layers"]
    assert layer["media_type"] == "application/vnd.docker.ai.gguf.v3"
    assert int(layer["size"]) == smollm2_gguf().stat().st_size
    assert shown["manifest"]["config"]["media_type"] == (
        "application/vnd.docker.ai.model.config.v0.1+json"
    )

    pushed = models.ok("model", "push", name)
    assert _digest(pushed) == model_id
    assert registry.count_requests("PUT", "/manifests/v1", 201) >= 1

    removed = models.ok("model", "rm", name)
    assert f"Untagged: {name}" in removed and f"Deleted: {model_id}" in removed
    assert name not in models.tags()

    pulled = models.ok("model", "pull", name)
    assert _digest(pulled) == model_id
    again = json.loads(models.ok("model", "inspect", name))
    assert again["id"] == model_id and again["config"] == config


def test_ls_shows_the_gguf_metadata(models: ModelStack, registry: RegistryServer) -> None:
    name = _name(registry, "ls/smollm2")
    models.ok("model", "package", "--gguf", str(smollm2_gguf()), "--context-size", "2048", name)
    [row] = [m for m in models.models() if name in m["tags"]]
    assert row["config"]["architecture"] == "llama"
    assert row["config"]["quantization"] == "Q4_1"
    assert row["config"]["context_size"] == 2048
    table = models.ok("model", "ls")
    line = next(line for line in table.splitlines() if name.split(":")[0] in line)
    assert "134.52M" in line and "Q4_1" in line and "llama" in line
    assert row["id"].removeprefix("sha256:")[:12] in models.ok("model", "ls", "-q").split()


def test_tag_and_push_under_a_second_name(models: ModelStack, registry: RegistryServer) -> None:
    first = _name(registry, "tags/one")
    second = _name(registry, "tags/two", "v2")
    model_id = _digest(models.ok("model", "package", "--gguf", str(smollm2_gguf()), first))
    models.ok("model", "tag", first, second)
    assert {first, second} <= models.tags()
    models.ok("model", "push", second)
    remote = json.loads(models.ok("model", "inspect", "--remote", second))
    assert remote["id"] == model_id
    assert remote["config"]["architecture"] == "llama"
    # The GGUF went up once: the second push found it in the registry already.
    models.ok("model", "push", first)
    gguf = remote["manifest"]["layers"][0]["digest"]
    assert registry.count_requests("PUT", gguf) <= 1


def test_package_refuses_bad_input_and_stores_nothing(models: ModelStack, tmp_path) -> None:
    before = models.models()
    absent = models.berth("model", "package", "--gguf", str(tmp_path / "none.gguf"), "ai/bad:one")
    assert absent.returncode != 0 and "gguf_path" in absent.stderr and "not a file" in absent.stderr
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    refused = models.berth("model", "package", "--gguf", str(not_gguf), "ai/bad:two")
    assert refused.returncode != 0 and "GGUF" in refused.stderr
    missing = models.berth("model", "package", "ai/bad:three")
    assert missing.returncode != 0
    assert models.models() == before


def test_rm_of_an_unknown_model_removes_nothing(models: ModelStack, registry) -> None:
    name = _name(registry, "rm/keep")
    models.ok("model", "package", "--gguf", str(smollm2_gguf()), name)
    result = models.berth("model", "rm", name, "ai/never-pulled")
    assert result.returncode != 0 and "not found" in result.stderr
    assert name in models.tags()
