"""`berth model bench` against the real SmolLM2 GGUF on llama.cpp: what the CLI prints and its
JSON, bad requests and missing models, and a run as an operation that outlives its client, can
be watched again and is stopped by cancelling it."""

from __future__ import annotations

import json
import re

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from berth.api.models.v1 import inference_service_pb2 as inf
from berth.api.models.v1 import operation_service_pb2 as ops
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1 import runner_service_pb2 as runner_pb
from berth.api.models.v1.inference_service_pb2_grpc import InferenceServiceStub
from berth.api.models.v1.operation_service_pb2_grpc import OperationServiceStub
from berth.api.models.v1.runner_service_pb2_grpc import RunnerServiceStub
from tests.integration.models.conftest import ModelStack
from tests.integration.test_errors import violations
from tests.integration.test_forwarding import error_info
from tests.support.processes import poll

pytestmark = pytest.mark.timeout(300)

MODEL = "ai/smollm2"
LEVEL_FIELDS = {
    "concurrency",
    "duration",
    "requests",
    "failed_requests",
    "prompt_tokens",
    "completion_tokens",
    "tokens_per_second",
    "request_tokens_per_second",
    "requests_per_second",
    "ttft_p50",
    "ttft_p99",
    "latency_p50",
    "latency_p99",
}


def _level_line(text: str, concurrency: int) -> str:
    lines = [x for x in text.splitlines() if x.startswith(f"Concurrency {concurrency}:")]
    assert len(lines) == 1, text
    return lines[0]


def test_bench_prints_every_figure_of_every_level(runner: ModelStack) -> None:
    result = runner.berth(
        *("model", "bench", MODEL, "--concurrency", "1,2", "--duration", "3s"),
        *("--timeout", "60s"),
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Model: ai/smollm2" in out and "Duration: 3s per concurrency level" in out
    assert "Concurrency levels: 1, 2" in out
    duration = r"\d+(\.\d+)?(ms|s|µs)"
    for concurrency in (1, 2):
        line = _level_line(out, concurrency)
        assert re.search(r"[1-9]\d* requests, 0 failed", line), line
        assert re.search(r"[1-9][\d.]* tokens/s", line), line
        assert re.search(rf"time to first token p50 {duration} p99 {duration}", line), line
        assert re.search(rf"latency p50 {duration} p99 {duration}", line), line
    header = next(x for x in out.splitlines() if x.startswith("CONCURRENCY"))
    assert header.split() == [
        *("CONCURRENCY", "REQUESTS", "FAILED", "TOKENS/S"),
        *("TTFT", "P50", "TTFT", "P99", "LATENCY", "P50", "LATENCY", "P99"),
    ]
    assert "Max tokens/s:" in out


def test_bench_json_has_every_field(runner: ModelStack) -> None:
    result = runner.berth(
        "model", "bench", MODEL, "--concurrency", "2", "--duration", "2s", "--json"
    )
    assert result.returncode == 0, result.stderr
    bench = json.loads(result.stdout)
    assert bench["model"] == "ai/smollm2:latest" and bench["model_id"].startswith("sha256:")
    assert bench["backend"] == "BACKEND_LLAMA_CPP"
    assert bench["prompt"].startswith("Write a comprehensive 100 word summary on whales")
    [level] = bench["levels"]
    assert set(level) == LEVEL_FIELDS
    assert level["concurrency"] == 2 and level["requests"] > 0 and level["failed_requests"] == 0
    # int64 fields are strings in proto3 JSON
    assert int(level["prompt_tokens"]) > 0 and int(level["completion_tokens"]) > 0
    assert level["tokens_per_second"] > 0 and level["requests_per_second"] > 0
    assert level["ttft_p50"] != "0s" and level["latency_p99"] != "0s"


def test_bad_flags_are_refused_before_anything_runs(runner: ModelStack) -> None:
    for flags, named in (
        (("--concurrency", "1,0"), "--concurrency"),
        (("--duration", "0s"), "--duration"),
        (("--timeout", "soon"), "--timeout"),
    ):
        result = runner.berth("model", "bench", MODEL, *flags)
        assert result.returncode != 0
        assert named in result.stderr, result.stderr
    request = inf.BenchModelRequest(
        model=MODEL, concurrency=[1, 0], duration=Duration(), timeout=Duration(seconds=-1)
    )
    with pytest.raises(grpc.RpcError) as refused:
        list(InferenceServiceStub(runner.channel()).BenchModel(request, timeout=30))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(refused.value)) == {"concurrency[1]", "duration", "timeout"}


def test_a_prompt_longer_than_the_context_fails_the_run_at_once(runner: ModelStack) -> None:
    too_long = "word " * 5000  # about 5000 tokens; the engine's context is 4096
    result = runner.berth("model", "bench", MODEL, "--prompt", too_long, "--duration", "30s")
    assert result.returncode != 0
    assert "maximum context length is 4096 tokens" in result.stderr
    assert "Concurrency 1:" not in result.stdout


def test_a_missing_model_is_not_found_and_starts_nothing(runner: ModelStack) -> None:
    result = runner.berth("model", "bench", "ai/never-pulled", "--duration", "1s")
    assert result.returncode != 0 and "not found" in result.stderr
    request = inf.BenchModelRequest(model="ai/never-pulled", duration=Duration(seconds=1))
    with pytest.raises(grpc.RpcError) as missing:
        list(InferenceServiceStub(runner.channel()).BenchModel(request, timeout=30))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(missing.value).reason == "MODEL_NOT_FOUND"
    listed = OperationServiceStub(runner.channel()).ListOperations(
        ops.ListOperationsRequest(all=True, kind=res.OPERATION_KIND_BENCH_MODEL)
    )
    assert all(op.model != "ai/never-pulled:latest" for op in listed.operations)


def test_a_run_outlives_its_client_and_stops_when_cancelled(runner: ModelStack) -> None:
    request = inf.BenchModelRequest(
        model=MODEL, concurrency=[2], duration=Duration(seconds=120), max_tokens=2000
    )
    call = InferenceServiceStub(runner.channel()).BenchModel(request)
    operation_id = next(call).event.operation_id
    call.cancel()
    operations = OperationServiceStub(runner.channel())
    watch = ops.WatchOperationRequest(operation_id=operation_id)
    watched = operations.WatchOperation(watch, timeout=60)
    for response in watched:
        assert response.event.state == res.OPERATION_STATE_RUNNING
        assert response.event.kind == res.OPERATION_KIND_BENCH_MODEL
        if response.event.phase == res.OPERATION_PHASE_BENCHMARKING:
            break
    watched.cancel()
    stopped = operations.CancelOperation(ops.CancelOperationRequest(operation_id=operation_id))
    assert stopped.operation.state == res.OPERATION_STATE_CANCELLED
    poll(
        lambda: all(e.active_requests == 0 for e in _status(runner).engines),
        30,
        "the cancelled run's requests to end",
    )


def _status(stack: ModelStack) -> res.RunnerStatus:
    return RunnerServiceStub(stack.channel()).GetStatus(runner_pb.GetStatusRequest()).status
