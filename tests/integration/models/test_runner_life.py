"""The runner's life from the CLI: stop and uninstall, with and without the models, and what
install refuses on this host (a backend it lacks, a GPU it lacks)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.integration.models.conftest import ModelStack, start_model_stack
from tests.support.models import smollm2_gguf

pytestmark = pytest.mark.timeout(300)

MODEL = "ai/smollm2"


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStack]:
    made = start_model_stack(tmp_path_factory.mktemp("life"))
    try:
        yield made
    finally:
        made.stop()


def _status(stack: ModelStack) -> dict[str, object]:
    return json.loads(stack.ok("model", "status", "--json"))


def _model_id(stack: ModelStack) -> str:
    stack.ok("model", "package", "--gguf", str(smollm2_gguf()), MODEL)
    [model] = stack.models()
    return str(model["id"])


def test_stop_runner_keeps_the_models_and_with_models_removes_them(stack: ModelStack) -> None:
    model_id = _model_id(stack)

    stack.ok("model", "stop-runner")
    assert _status(stack)["running"] is False
    assert [m["id"] for m in stack.models()] == [model_id]

    stack.ok("model", "start-runner")
    said = stack.ok("model", "stop-runner", "--models")
    assert f"Deleted: {model_id}" in said
    assert stack.models() == []
    assert _status(stack)["running"] is False


def test_uninstall_runner_with_models_and_images(stack: ModelStack) -> None:
    model_id = _model_id(stack)

    said = stack.ok("model", "uninstall-runner", "--models", "--images")

    assert "Model runner uninstalled" in said and f"Deleted: {model_id}" in said
    assert "none removed" in said, "berth installed no backend, so it removes none"
    assert stack.models() == []
    assert _status(stack)["installed"] is False
    stack.ok("model", "install-runner")
    assert _status(stack)["running"] is True


def test_install_refuses_a_backend_or_gpu_the_host_lacks(stack: ModelStack) -> None:
    # This stack's berth-modeld is not told where vLLM is, and its own environment lacks it.
    lacking = stack.berth("model", "install-runner", "--backend", "vllm")
    assert lacking.returncode != 0
    assert "vllm backend is not installed" in lacking.stderr
    assert "--vllm-python" in lacking.stderr

    no_gpu = stack.berth("model", "install-runner", "--gpu", "cuda")
    assert no_gpu.returncode != 0 and "no NVIDIA GPU" in no_gpu.stderr

    assert _status(stack)["running"] is True, "a refused install changes nothing"


def test_a_port_in_use_is_refused_readably_and_install_defaults_to_the_daemons(
    stack: ModelStack,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = stack.berth("model", "install-runner", "--port", str(port))

    assert refused.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in refused.stderr
    status = _status(stack)
    assert status["installed"] is True and status["running"] is False
    # Without --port: berth-modeld's own --openai-port (0 here: any free port).
    stack.ok("model", "install-runner")
    assert _status(stack)["running"] is True
