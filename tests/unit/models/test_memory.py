"""The runtime memory estimate a pull is checked against."""

from __future__ import annotations

import pytest

from berth.common.errors import FailedPrecondition
from berth.models.domain.memory import check_runtime_memory, estimate_runtime_memory
from berth.models.domain.model_config import ModelConfig

MIB = 2**20
WEIGHTS = 96_576_768
# SmolLM2-135M: 30 layers, 3 KV heads of 64 dimensions (576 / 9 heads), f16 keys and values.
SMOLLM2_KV_PER_TOKEN = 30 * 3 * (64 + 64) * 2


def _smollm2(**gguf: str) -> ModelConfig:
    metadata = {
        "general.architecture": "llama",
        "llama.block_count": "30",
        "llama.context_length": "8192",
        "llama.embedding_length": "576",
        "llama.attention.head_count": "9",
        "llama.attention.head_count_kv": "3",
        **gguf,
    }
    return ModelConfig(format="gguf", architecture="llama", gguf=metadata)


def test_a_gguf_model_needs_its_weights_a_4096_token_kv_cache_and_256_mib() -> None:
    estimate = estimate_runtime_memory(_smollm2(), WEIGHTS)
    assert estimate == WEIGHTS + SMOLLM2_KV_PER_TOKEN * 4096 + 256 * MIB


def test_the_packaged_context_size_sets_the_kv_cache() -> None:
    config = _smollm2().with_context_size(8192)
    assert estimate_runtime_memory(config, WEIGHTS) == (
        WEIGHTS + SMOLLM2_KV_PER_TOKEN * 8192 + 256 * MIB
    )


def test_the_default_context_never_exceeds_the_native_length() -> None:
    config = _smollm2(**{"llama.context_length": "1024"})
    assert estimate_runtime_memory(config, WEIGHTS) == (
        WEIGHTS + SMOLLM2_KV_PER_TOKEN * 1024 + 256 * MIB
    )


def test_explicit_key_and_value_lengths_win_over_the_embedding_split() -> None:
    config = _smollm2(
        **{"llama.attention.key_length": "128", "llama.attention.value_length": "128"}
    )
    assert estimate_runtime_memory(config, WEIGHTS) == (
        WEIGHTS + 30 * 3 * 256 * 2 * 4096 + 256 * MIB
    )


def test_a_model_of_unknown_shape_counts_weights_and_the_engine_overhead() -> None:
    config = ModelConfig(format="safetensors", architecture="llama")
    assert estimate_runtime_memory(config, 10 * MIB) == 10 * MIB + 1024 * MIB


def test_a_model_that_does_not_fit_is_refused_naming_the_override() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        check_runtime_memory(3 * 2**30, 2 * 2**30, "ai/smollm2:latest")
    error = caught.value
    assert error.reason == "RUNTIME_MEMORY_EXCEEDED"
    assert error.metadata == {
        "model": "ai/smollm2:latest",
        "estimated_bytes": str(3 * 2**30),
        "available_bytes": str(2 * 2**30),
    }
    assert "--ignore-runtime-memory-check" in error.message
    assert "ai/smollm2:latest" in error.message


def test_a_model_that_fits_or_a_host_of_unknown_memory_passes() -> None:
    check_runtime_memory(2 * 2**30, 2 * 2**30, "m")
    check_runtime_memory(2 * 2**30, 0, "m")
