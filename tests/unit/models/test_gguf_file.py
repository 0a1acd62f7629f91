"""GGUF files read into Docker's model config: the real SmolLM2 file and small written ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from berth.common.errors import InvalidArgument
from berth.models.adapters.gguf_file import gguf_chat_template, gguf_shards, read_gguf
from berth.models.domain.model_config import ModelConfig
from tests.support.models import smollm2_gguf


@pytest.fixture(scope="module")
def smollm2() -> ModelConfig:
    return read_gguf([smollm2_gguf()])


def _write_gguf(
    path: Path,
    tensors: dict[str, np.ndarray],
    extra: Callable[[gguf.GGUFWriter], None] = lambda writer: None,
) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(2)
    writer.add_context_length(2048)
    extra(writer)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _f32(count: int) -> np.ndarray:
    return np.zeros(count, dtype=np.float32)


def test_smollm2_reads_as_docker_describes_it(smollm2: ModelConfig) -> None:
    assert smollm2.format == "gguf"
    assert smollm2.architecture == "llama"
    assert smollm2.quantization == "Q4_1"
    assert smollm2.parameters == "134.52M"
    assert smollm2.size == "92.10MiB"
    assert smollm2.context_size is None
    assert smollm2.native_context_length == 8192


def test_smollm2_metadata_is_strings_without_the_vocabulary(smollm2: ModelConfig) -> None:
    metadata = smollm2.gguf
    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.context_length"] == "8192"
    assert metadata["general.file_type"] == "3"
    assert metadata["llama.rope.freq_base"] == "100000.000000"
    assert metadata["llama.attention.layer_norm_rms_epsilon"] == "0.000010"
    assert metadata["tokenizer.ggml.add_bos_token"] == "false"
    assert metadata["general.languages"] == "en"
    assert metadata["tokenizer.chat_template"].startswith("{% for message in messages %}")
    for vocabulary in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
    ):
        assert vocabulary not in metadata
    assert not any(key.startswith("GGUF.") for key in metadata)


def test_the_chat_template_of_smollm2_is_found() -> None:
    template = gguf_chat_template(smollm2_gguf())
    assert template is not None
    assert "<|im_start|>" in template


def test_a_file_without_chat_template_has_none(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "tiny.gguf", {"blk.0.attn_q.weight": _f32(8)})
    assert gguf_chat_template(path) is None


def test_metadata_values_are_written_as_docker_writes_them(tmp_path: Path) -> None:
    def extra(writer: gguf.GGUFWriter) -> None:
        writer.add_float32("test.scale", 0.5)
        writer.add_bool("test.flag", True)
        writer.add_int32("test.offset", -5)
        writer.add_array("test.short", [1, 2, 3])
        writer.add_array("test.words", ["a", "b"])
        writer.add_array("test.long", list(range(51)))
        writer.add_array("test.fifty", list(range(50)))

    path = _write_gguf(tmp_path / "tiny.gguf", {"blk.0.attn_q.weight": _f32(8)}, extra)
    metadata = read_gguf([path]).gguf
    assert metadata["test.scale"] == "0.500000"
    assert metadata["test.flag"] == "true"
    assert metadata["test.offset"] == "-5"
    assert metadata["test.short"] == "1, 2, 3"
    assert metadata["test.words"] == "a, b"
    assert "test.long" not in metadata
    assert metadata["test.fifty"].startswith("0, 1, 2")
    assert metadata["llama.context_length"] == "2048"


@pytest.mark.parametrize(
    ("file_type", "dtype", "quantization"),
    [
        (None, np.float16, "F16"),
        (None, np.float32, "F32"),
        (gguf.LlamaFileType.MOSTLY_Q4_K_M, np.float32, "Q4_K_M"),
        (gguf.LlamaFileType.MOSTLY_BF16, np.float32, "BF16"),
        (gguf.LlamaFileType.ALL_F32, np.float16, "F32"),
    ],
)
def test_quantization_is_the_file_type_or_the_tensors_type(
    tmp_path: Path, file_type: gguf.LlamaFileType | None, dtype: type, quantization: str
) -> None:
    def extra(writer: gguf.GGUFWriter) -> None:
        if file_type is not None:
            writer.add_file_type(file_type)

    tensors = {
        "token_embd.weight": np.zeros(16, dtype=dtype),
        "blk.0.attn_q.weight": np.zeros(16, dtype=dtype),
        "blk.0.attn_norm.weight": _f32(4),
    }
    path = _write_gguf(tmp_path / "tiny.gguf", tensors, extra)
    assert read_gguf([path]).quantization == quantization


def _write_shards(folder: Path, total: int) -> list[Path]:
    paths = []
    for index in range(total):

        def extra(writer: gguf.GGUFWriter, index: int = index) -> None:
            writer.add_uint16("split.no", index)
            writer.add_uint16("split.count", total)

        name = f"model-{index + 1:05d}-of-{total:05d}.gguf"
        tensors = {f"blk.{index}.ffn_up.weight": _f32(300_000)}
        paths.append(_write_gguf(folder / name, tensors, extra))
    return paths


def test_every_shard_is_found_from_any_of_them(tmp_path: Path) -> None:
    paths = _write_shards(tmp_path, 3)
    (tmp_path / "model-00001-of-00004.gguf").write_bytes(b"another model")
    assert gguf_shards(paths[0]) == paths
    assert gguf_shards(paths[2]) == paths


def test_a_sharded_model_counts_all_its_shards(tmp_path: Path) -> None:
    paths = _write_shards(tmp_path, 3)
    config = read_gguf(gguf_shards(paths[1]))
    assert config.parameters == "900K"
    # 3 x 1,200,000 bytes of tensor data.
    assert config.size == "3.43MiB"
    assert config.gguf["split.count"] == "3"
    assert "split.no" not in config.gguf


def test_a_missing_shard_is_named(tmp_path: Path) -> None:
    paths = _write_shards(tmp_path, 3)
    paths[1].unlink()
    with pytest.raises(InvalidArgument) as caught:
        gguf_shards(paths[0])
    (violation,) = caught.value.violations
    assert violation.field == "gguf_path"
    assert "model-00002-of-00003.gguf" in violation.description


@pytest.mark.parametrize("name", ["model.gguf", "model-1-of-3.gguf", "model-00001-of-00003.bin"])
def test_a_file_that_is_not_a_shard_stands_alone(tmp_path: Path, name: str) -> None:
    assert gguf_shards(tmp_path / name) == [tmp_path / name]


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(InvalidArgument) as caught:
        read_gguf([path])
    assert caught.value.reason == "UNSUPPORTED_FORMAT"
    (violation,) = caught.value.violations
    assert violation.field == "gguf_path"
    assert "is not a GGUF file" in violation.description


def test_a_truncated_gguf_file_is_refused(tmp_path: Path) -> None:
    whole = _write_gguf(tmp_path / "whole.gguf", {"blk.0.attn_q.weight": _f32(8)})
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[:60])
    with pytest.raises(InvalidArgument) as caught:
        read_gguf([cut])
    assert caught.value.reason == "UNSUPPORTED_FORMAT"


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        read_gguf([tmp_path / "absent.gguf"])
    assert caught.value.violations[0].field == "gguf_path"
