"""The model store as a user meets it: berth-modeld behind a gateway, driven by the `berth`
CLI, with a real registry (Debian's docker-registry), a stand-in for the Hugging Face Hub
serving the real SmolLM2 GGUF, and the real model file."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from berth.api.models.v1 import inference_service_pb2 as inf
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1 import runner_service_pb2 as runner_pb
from berth.api.models.v1.runner_service_pb2_grpc import RunnerServiceStub
from tests.support.fake_hub import FakeHub, fake_hub
from tests.support.models import SMOLLM2_FILE, smollm2_gguf
from tests.support.processes import BIN, DaemonProcess, start
from tests.support.registry import RegistryServer, registry_server

SMOLLM2_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
# With its own template's default system prompt this small model rambles at temperature 0 on
# llama.cpp; with a plain one it answers the question.
SYSTEM = "You are a helpful assistant."
QUESTION = "What is the capital of France?"


def france_chat(model: str, stream: bool, max_tokens: int = 32) -> inf.ChatRequest:
    """The question every inference test asks, at temperature 0."""
    return inf.ChatRequest(
        model=model,
        messages=[
            inf.ChatMessage(role=inf.CHAT_ROLE_SYSTEM, content=SYSTEM),
            inf.ChatMessage(role=inf.CHAT_ROLE_USER, content=QUESTION),
        ],
        sampling=inf.SamplingParams(temperature=0, max_tokens=max_tokens),
        stream=stream,
    )


@dataclass
class ModelStack:
    root: Path
    modeld: DaemonProcess
    gateway: DaemonProcess

    @property
    def target(self) -> str:
        return self.gateway.target

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def berth(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        variables = {**os.environ, "BERTH_HOST": self.target, **(env or {})}
        variables.pop("BERTH_ON", None)
        variables.setdefault("DOCKER_CONFIG", str(self.root / "no-docker-config"))
        return subprocess.run(
            [str(BIN / "berth"), *args],
            capture_output=True,
            text=True,
            env=variables,
            timeout=timeout,
        )

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = self.berth(*args, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def models(self) -> list[dict[str, Any]]:
        return json.loads(self.ok("model", "ls", "--json"))

    def tags(self) -> set[str]:
        return {tag for model in self.models() for tag in model.get("tags", [])}

    def runner_status(self) -> res.RunnerStatus:
        return RunnerServiceStub(self.channel()).GetStatus(runner_pb.GetStatusRequest()).status

    def stop(self) -> None:
        self.gateway.stop()
        self.modeld.stop()


def start_model_stack(root: Path, modeld_args: Sequence[str] = ()) -> ModelStack:
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    modeld = start(
        "modeld",
        "berth.models.main",
        run / "modeld.sock",
        ["--state-dir", str(root / "models"), "--openai-port", "0", *modeld_args],
        root,
        env={"DOCKER_CONFIG": str(root / "daemon-docker-config")},
    )
    try:
        gateway = start(
            "gateway",
            "berth.gateway.main",
            run / "berth.sock",
            [
                *("--state-dir", str(root / "gateway"), "--socket-group", ""),
                *("--models-address", modeld.target),
                *("--network-address", f"unix://{run}/no-networkd.sock"),
                *("--mcp-address", f"unix://{run}/no-mcpd.sock"),
            ],
            root,
        )
    except BaseException:
        modeld.stop()
        raise
    return ModelStack(root, modeld, gateway)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStack]:
    """A runner serving SmolLM2's GGUF as ai/smollm2 on llama.cpp, engines kept loaded."""
    stack = start_model_stack(tmp_path_factory.mktemp("runner"), ["--keep-alive", "600"])
    try:
        stack.ok("model", "package", "--gguf", str(smollm2_gguf()), "ai/smollm2")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with registry_server(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    """This stands in for the Hugging Face Hub: a repository holding the real SmolLM2 GGUF."""
    files: dict[str, Path | bytes] = {
        SMOLLM2_FILE: smollm2_gguf(),
        "README.md": b"# SmolLM2 135M Instruct, GGUF\n",
    }
    with fake_hub({SMOLLM2_REPO: files}) as server:
        yield server


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, hub: FakeHub) -> Iterator[ModelStack]:
    stack = start_model_stack(
        tmp_path_factory.mktemp("modeld"), ["--huggingface-endpoint", hub.endpoint]
    )
    try:
        yield stack
    finally:
        stack.stop()
