"""A safetensors directory read as Docker reads it: weights, config files, model config."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from berth.common.errors import InvalidArgument
from berth.models.adapters.safetensors_files import read_safetensors_dir
from tests.support.models import write_safetensors


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "smol"
    folder.mkdir()
    write_safetensors(
        folder / "model.safetensors",
        {"embed.weight": ("BF16", [4, 3]), "norm.weight": ("BF16", [3])},
        {"format": "pt"},
    )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "max_position_embeddings": 2048,
    }
    (folder / "config.json").write_text(json.dumps(config))
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "merges.txt",
        "README.md",
        "chat_template.jinja",
        "tokenizer.model",
        "LICENSE",
        "LICENSE.md",
        ".hidden.json",
        "picture.png",
    ):
        (folder / name).write_text(name)
    (folder / "sub").mkdir()
    (folder / "sub" / "nested.json").write_text("{}")
    return folder


def test_a_safetensors_directory_reads_as_docker_describes_it(model_dir: Path) -> None:
    model = read_safetensors_dir(model_dir)
    weights = model_dir / "model.safetensors"
    assert model.weights == [weights]
    config = model.config
    assert config.format == "safetensors"
    assert config.quantization == "BF16"
    assert config.parameters == "15.00"
    assert config.architecture == "llama"
    assert config.size == f"{weights.stat().st_size}.00B"
    assert config.safetensors == {"format": "pt", "tensor_count": "2"}
    assert config.context_size is None
    assert model.native_context_length == 2048


def test_the_engine_config_files_are_those_docker_packs(model_dir: Path) -> None:
    names = [p.name for p in read_safetensors_dir(model_dir).config_files]
    assert names == [
        "README.md",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
    ]


def test_shards_add_up_and_mixed_dtypes_say_so(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"b": ("F32", [1000, 1000])})
    write_safetensors(
        tmp_path / "model-00001-of-00002.safetensors",
        {"a": ("BF16", [500, 1000]), "c": ("BF16", [10])},
    )
    model = read_safetensors_dir(tmp_path)
    assert [p.name for p in model.weights] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert model.config.parameters == "1.50M"
    assert model.config.quantization == "mixed"
    assert model.config.safetensors == {"tensor_count": "3"}
    assert model.config.size == "5.00MB"  # 1 MB of BF16, 4 MB of F32


def test_the_weights_own_architecture_wins_over_config_json(model_dir: Path) -> None:
    write_safetensors(
        model_dir / "model.safetensors",
        {"w": ("F16", [2])},
        {"architecture": "mistral"},
    )
    assert read_safetensors_dir(model_dir).config.architecture == "mistral"


def test_without_model_type_the_first_architecture_is_used(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors", {"w": ("F16", [2])})
    (tmp_path / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"]}')
    assert read_safetensors_dir(tmp_path).config.architecture == "Qwen2ForCausalLM"


def test_a_directory_without_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InvalidArgument) as caught:
        read_safetensors_dir(tmp_path)
    (violation,) = caught.value.violations
    assert violation.field == "safetensors_dir"
    assert "no .safetensors files" in violation.description


def test_a_path_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        read_safetensors_dir(tmp_path / "absent")
    assert caught.value.violations[0].field == "safetensors_dir"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        struct.pack("<Q", 2**40) + b"{}",
        struct.pack("<Q", 50) + b"{}",
        struct.pack("<Q", 8) + b"not json",
        struct.pack("<Q", 2) + b"[]",
    ],
)
def test_a_weight_file_without_a_safetensors_header_is_refused(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(InvalidArgument) as caught:
        read_safetensors_dir(tmp_path)
    assert caught.value.reason == "UNSUPPORTED_FORMAT"
    assert "model.safetensors is not a safetensors file" in caught.value.violations[0].description
