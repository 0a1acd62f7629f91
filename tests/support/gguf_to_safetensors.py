"""Turn a GGUF model into a safetensors directory that vLLM serves (the test setup's way to get
a real safetensors model from the one real GGUF the tests have).

Runs with the vLLM environment's Python (it has transformers; `gguf` and `accelerate` are
installed beside it): `python gguf_to_safetensors.py MODEL.gguf OUT_DIR`. transformers
dequantizes the weights to bf16; the GGUF's quantization must not be copied into the config,
or vLLM would look for quantized weights (and transformers would refuse to save).
"""

from __future__ import annotations

import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # The weights are plain bf16 now: drop what says they are GGUF-quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
