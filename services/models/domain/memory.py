"""How much memory a model needs to run, checked before it is pulled.

    estimate = weights + KV cache + overhead

- weights: the bytes of the model's layers (they are loaded whole);
- KV cache: keys and values in f16 (2 bytes) for every layer, KV head and token of the
  context the engine would load: `--context-size` when the model was packaged with one
  (a negative value means the model's native length), otherwise Docker Model Runner's
  default of 4096 tokens, never more than the model's native length. The shape comes from
  the GGUF metadata (`<arch>.block_count`, `.attention.head_count[_kv]`,
  `.attention.key_length`/`value_length`, else `embedding_length / head_count`); a model
  whose shape is not known (safetensors) counts no KV cache;
- overhead: a fixed allowance for the engine itself, its compute buffers and runtime
  (256 MiB for llama.cpp and GGUF, 1 GiB for vLLM and safetensors).

Docker Model Runner asked gguf-parser-go for a full llama.cpp estimate at 4096 tokens; this
is the same idea, coarser, and with no need to read the weights.
"""

from __future__ import annotations

from berth.common.errors import FailedPrecondition
from berth.models.domain.model_config import FORMAT_GGUF, ModelConfig

DEFAULT_CONTEXT_TOKENS = 4096
KV_BYTES_PER_VALUE = 2
GGUF_OVERHEAD_BYTES = 256 * 2**20
OTHER_OVERHEAD_BYTES = 2**30


def estimate_runtime_memory(config: ModelConfig, weights_bytes: int) -> int:
    """Bytes of memory the model needs to run (see the module's formula)."""
    overhead = GGUF_OVERHEAD_BYTES if config.format == FORMAT_GGUF else OTHER_OVERHEAD_BYTES
    return weights_bytes + kv_cache_bytes(config) + overhead


def context_tokens(config: ModelConfig) -> int:
    """The context the engine would load the model with."""
    native = config.native_context_length
    if config.context_size is not None and config.context_size > 0:
        return config.context_size
    if config.context_size is not None and config.context_size < 0 and native:
        return native
    return min(DEFAULT_CONTEXT_TOKENS, native or DEFAULT_CONTEXT_TOKENS)


def kv_cache_bytes(config: ModelConfig) -> int:
    """The KV cache for `context_tokens(config)`; 0 when the model's shape is unknown."""
    metadata = config.gguf
    arch = metadata.get("general.architecture") or config.architecture
    layers = _ints(metadata.get(f"{arch}.block_count"))
    heads = _ints(metadata.get(f"{arch}.attention.head_count"))
    embedding = _ints(metadata.get(f"{arch}.embedding_length"))
    if not layers or not heads or max(heads) <= 0:
        return 0
    kv_heads = _ints(metadata.get(f"{arch}.attention.head_count_kv")) or heads
    head_dim = embedding[0] // max(heads) if embedding else 0
    key_length = (_ints(metadata.get(f"{arch}.attention.key_length")) or [head_dim])[0]
    value_length = (_ints(metadata.get(f"{arch}.attention.value_length")) or [head_dim])[0]
    # A per-layer list of KV heads (some architectures vary them) is summed as it is.
    kv_head_layers = sum(kv_heads) if len(kv_heads) > 1 else kv_heads[0] * layers[0]
    per_token = kv_head_layers * (key_length + value_length) * KV_BYTES_PER_VALUE
    return per_token * context_tokens(config)


def _ints(text: str | None) -> list[int]:
    """The integers of a GGUF metadata value ("30", or an array "3, 3, 4"); [] if none."""
    if not text:
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        return []


def check_runtime_memory(estimate: int, available: int, model: str) -> None:
    """FailedPrecondition RUNTIME_MEMORY_EXCEEDED when `estimate` exceeds `available`.

    `available` <= 0 means the host's memory is unknown: nothing is checked then.
    """
    if available <= 0 or estimate <= available:
        return
    raise FailedPrecondition(
        f"model {model} needs about {_gib(estimate)} of memory to run, more than the"
        f" {_gib(available)} this host has; use --ignore-runtime-memory-check to pull it anyway",
        reason="RUNTIME_MEMORY_EXCEEDED",
        metadata={
            "model": model,
            "estimated_bytes": str(estimate),
            "available_bytes": str(available),
        },
    )


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"
