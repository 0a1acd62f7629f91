"""Pulls that go wrong and pulls that overlap: a cut connection, a corrupt blob, two pulls of
one model, a client that walks away, an authenticating registry, the memory check."""

from __future__ import annotations

import base64
import json
import signal
import threading
import uuid
from pathlib import Path

import grpc
import pytest

from berth.api.models.v1 import model_service_pb2 as pb
from berth.api.models.v1 import operation_service_pb2 as ops_pb
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1.model_service_pb2_grpc import ModelServiceStub
from berth.api.models.v1.operation_service_pb2_grpc import OperationServiceStub
from tests.integration.models.conftest import ModelStack, start_model_stack
from tests.support.cutting_proxy import cutting_proxy
from tests.support.fake_hub import FakeHub
from tests.support.models import smollm2_gguf
from tests.support.processes import poll
from tests.support.registry import RegistryServer, registry_server

pytestmark = pytest.mark.timeout(300)


def _published(models: ModelStack, registry: RegistryServer, repository: str) -> tuple[str, str]:
    """Package SmolLM2 under a fresh name, push it, then empty the local store: (name, id)."""
    name = f"{registry.host}/{repository}-{uuid.uuid4().hex[:6]}:v1"
    models.ok("model", "package", "--gguf", str(smollm2_gguf()), name)
    model_id = json.loads(models.ok("model", "inspect", name))["id"]
    models.ok("model", "push", name)
    models.ok("model", "purge", "--force")
    assert models.models() == []
    return name, model_id


def _gguf_digest(models: ModelStack, name: str) -> str:
    shown = json.loads(models.ok("model", "inspect", name))
    return shown["manifest"]["layers"][0]["digest"]


def test_a_cut_download_resumes_where_it_stopped(
    models: ModelStack, registry: RegistryServer
) -> None:
    name, model_id = _published(models, registry, "resume/smollm2")
    host, port = registry.host.split(":")
    with cutting_proxy(host, int(port)) as proxy:
        proxy.cut_next_response_after(40 << 20)  # mid-way through the 98 MB GGUF
        through_proxy = name.replace(registry.host, proxy.address)
        pulled = models.ok("model", "pull", through_proxy)
        assert proxy.cuts == 1
    assert model_id in pulled
    gguf = _gguf_digest(models, through_proxy)
    ranged = registry.requests("GET", gguf, status=206)
    assert ranged, "the second attempt asked for the rest only"
    assert ranged[-1].size < smollm2_gguf().stat().st_size


def test_a_corrupt_blob_is_refused_and_nothing_is_stored(
    models: ModelStack, tmp_path: Path
) -> None:
    with registry_server(tmp_path) as registry:
        name, _ = _published(models, registry, "corrupt/smollm2")
        registry.corrupt_blob(_gguf_digest_in(registry), offset=1 << 20)
        result = models.berth("model", "pull", name)
    assert result.returncode != 0
    assert "does not match its digest" in result.stderr
    assert models.models() == []


def _gguf_digest_in(registry: RegistryServer) -> str:
    """The digest of the biggest blob the registry stores: the GGUF."""
    blobs = (registry.storage / "docker/registry/v2/blobs/sha256").glob("*/*/data")
    biggest = max(blobs, key=lambda p: p.stat().st_size)
    return f"sha256:{biggest.parent.name}"


def test_two_pulls_of_one_model_download_it_once(
    models: ModelStack, registry: RegistryServer
) -> None:
    name, model_id = _published(models, registry, "twice/smollm2")
    gguf = _gguf_digest_in(registry)
    fetched_before = registry.count_requests("GET", gguf)
    stub = ModelServiceStub(models.channel())
    results: list[tuple[str, res.OperationEvent]] = []

    def pull() -> None:
        events = list(stub.PullModel(pb.PullModelRequest(model=name), timeout=120))
        results.append((events[0].event.operation_id, events[-1].event))

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2
    assert results[0][0] == results[1][0], "the second pull joined the first"
    assert all(final.result.model.id == model_id for _, final in results)
    assert registry.count_requests("GET", gguf) == fetched_before + 1


def test_a_pull_goes_on_when_its_client_leaves(
    models: ModelStack, registry: RegistryServer
) -> None:
    name, model_id = _published(models, registry, "leave/smollm2")
    channel = models.channel()
    call = ModelServiceStub(channel).PullModel(pb.PullModelRequest(model=name))
    operation_id = next(call).event.operation_id
    call.cancel()
    watch = OperationServiceStub(channel).WatchOperation(
        ops_pb.WatchOperationRequest(operation_id=operation_id), timeout=120
    )
    final = list(watch)[-1].event
    assert final.state == res.OPERATION_STATE_SUCCEEDED
    assert final.result.model.id == model_id
    assert name in models.tags()
    with pytest.raises(grpc.RpcError) as unknown:
        list(
            OperationServiceStub(channel).WatchOperation(
                ops_pb.WatchOperationRequest(operation_id="nope")
            )
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_push_to_a_registry_with_basic_auth(models: ModelStack, tmp_path: Path) -> None:
    with registry_server(tmp_path, users={"alice": "s3cret-pw"}) as registry:
        name = f"{registry.host}/private/smollm2:v1"
        models.ok("model", "package", "--gguf", str(smollm2_gguf()), name)
        refused = models.berth("model", "push", name)
        assert refused.returncode != 0
        assert registry.host in refused.stderr and "authentication" in refused.stderr
        assert registry.count_requests("PUT", "/manifests/", 201) == 0

        config = tmp_path / "docker"
        config.mkdir()
        auth = base64.b64encode(b"alice:s3cret-pw").decode()
        (config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
        pushed = models.ok("model", "push", name, env={"DOCKER_CONFIG": str(config)})
        assert "Model pushed successfully" in pushed
        assert "s3cret-pw" not in models.modeld.log_path.read_text()


def test_pull_from_hugging_face_by_quantization(models: ModelStack) -> None:
    remote = json.loads(
        models.ok("model", "inspect", "-r", "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF")
    )
    assert remote["config"]["quantization"] == "Q4_1"
    assert remote["manifest"]["layers"][0]["digest"].startswith("sha256:")
    pulled = models.ok("model", "pull", "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1")
    name = "hf.co/huggingfacetb/smollm2-135m-instruct-gguf:Q4_1"
    assert name in pulled
    [model] = [m for m in models.models() if name in m["tags"]]
    assert model["config"]["architecture"] == "llama"
    assert model["config"]["quantization"] == "Q4_1"
    assert int(model["manifest"]["layers"][0]["size"]) == smollm2_gguf().stat().st_size

    # No tag: Q4_K_M is not there, so the repository's first GGUF is taken.
    models.ok("model", "pull", "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF")
    default = json.loads(
        models.ok("model", "inspect", "hf.co/huggingfacetb/smollm2-135m-instruct-gguf")
    )
    assert default["config"]["quantization"] == "Q4_1"

    missing = models.berth("model", "pull", "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q8_0")
    assert missing.returncode != 0 and "Q4_1" in missing.stderr


def test_the_runtime_memory_check(registry: RegistryServer, tmp_path: Path) -> None:
    small = start_model_stack(tmp_path, ["--memory-limit", str(64 << 20)])
    try:
        name = f"{registry.host}/memory/smollm2-{uuid.uuid4().hex[:6]}:v1"
        small.ok("model", "package", "--gguf", str(smollm2_gguf()), name)
        small.ok("model", "push", name)
        small.ok("model", "rm", name)
        refused = small.berth("model", "pull", name)
        assert refused.returncode != 0
        assert "--ignore-runtime-memory-check" in refused.stderr
        assert small.models() == []
        small.ok("model", "pull", "--ignore-runtime-memory-check", name)
        assert name in small.tags()
    finally:
        small.stop()


def test_a_cut_hugging_face_download_resumes(models: ModelStack, hub: FakeHub) -> None:
    models.ok("model", "purge", "--force")
    seen = len(hub.requests)
    hub.cut_next_download_after(30 << 20)
    models.ok("model", "pull", "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1")
    ranged = [
        r for m, path, r in hub.requests[seen:] if m == "GET" and path.endswith(".gguf") and r
    ]
    assert ranged and ranged[-1].startswith("bytes=")
    assert int(ranged[-1].removeprefix("bytes=").split("-")[0]) > 0


def test_a_crash_mid_pull_leaves_no_model_and_the_next_pull_resumes(
    registry: RegistryServer, tmp_path: Path
) -> None:
    stack = start_model_stack(tmp_path)
    try:
        name, model_id = _published(stack, registry, "crash/smollm2")
        host, port = registry.host.split(":")
        with cutting_proxy(host, int(port)) as proxy:
            proxy.cut_next_response_after(40 << 20)
            stub = ModelServiceStub(stack.channel())
            call = stub.PullModel(
                pb.PullModelRequest(model=name.replace(registry.host, proxy.address))
            )
            next(call)
            # The daemon waits a moment before resuming a cut download: kill it then.
            poll(lambda: proxy.cuts == 1, 30, "the download to be cut")
            stack.modeld.stop(signal.SIGKILL)
            call.cancel()
    finally:
        stack.stop()
    partial = list((tmp_path / "models" / "store" / "ingest").glob("*"))
    assert [p for p in partial if p.is_file() and p.stat().st_size > 0]

    stack = start_model_stack(tmp_path)
    try:
        assert stack.models() == [], "half a pull never shows as a model"
        gguf = _gguf_digest_in(registry)
        resumed_before = len(registry.requests("GET", gguf, status=206))
        pulled = stack.ok("model", "pull", name)
        assert model_id in pulled
        resumed = registry.requests("GET", gguf, status=206)
        assert len(resumed) == resumed_before + 1, "the rest only was fetched"
    finally:
        stack.stop()
