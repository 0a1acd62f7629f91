"""The model store: pull throughput against a plain HTTP download, and package time.

Starts a real registry (Debian's docker-registry, loopback, temporary storage) and
berth-modeld on a temporary unix socket, packages the SmolLM2 GGUF (98 MB) and pushes it.
Then, alternating round by round so both see the same machine:
- berth: `PullModel` into an emptied store (purged before each round), until SUCCEEDED:
  manifest, config and GGUF fetched, every digest verified, the model committed;
- baseline: the same three blobs fetched with a plain streaming HTTP client into files,
  nothing checked.
Throughput is the GGUF's size over the round's wall time; medians are compared.
Package: `PackageModel --gguf` into an emptied store (the file hashed and copied into the
store, GGUF metadata read, config and manifest written), against copying the same file
while hashing it (what any content-addressed store must do at least).
Prints both figures, berth's ratio, and the issue's target (pull at least 0.8x).

Run: make bench (or .venv/bin/python -m bench.model_store [--rounds 5])
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import httpx2

from berth.api.models.v1 import model_service_pb2 as pb
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1.model_service_pb2_grpc import ModelServiceStub
from tests.support.models import smollm2_gguf
from tests.support.processes import DaemonProcess, start
from tests.support.registry import registry_server

TARGET_PULL_RATIO = 0.8
MIB = 1 << 20


def _finish(stream: object) -> res.OperationEvent:
    last = None
    for response in stream:  # type: ignore[attr-defined]
        last = response.event
    if last is None or last.state != res.OPERATION_STATE_SUCCEEDED:
        raise RuntimeError(f"operation did not succeed: {last}")
    return last


def _purge(stub: ModelServiceStub) -> None:
    stub.PurgeModels(pb.PurgeModelsRequest(force=True))


def berth_pull(stub: ModelServiceStub, name: str) -> float:
    _purge(stub)
    started = time.perf_counter()
    _finish(stub.PullModel(pb.PullModelRequest(model=name, ignore_runtime_memory_check=True)))
    return time.perf_counter() - started


def plain_download(registry_url: str, repository: str, tag: str, folder: Path) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    started = time.perf_counter()
    with httpx2.Client(base_url=registry_url, timeout=60) as client:
        manifest = client.get(
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        manifest.raise_for_status()
        (folder / "manifest.json").write_bytes(manifest.content)
        data = json.loads(manifest.content)
        for blob in [data["config"], *data["layers"]]:
            url = f"/v2/{repository}/blobs/{blob['digest']}"
            with client.stream("GET", url) as response, (folder / blob["digest"]).open("wb") as f:
                response.raise_for_status()
                for chunk in response.iter_bytes(8 * MIB):
                    f.write(chunk)
    return time.perf_counter() - started


def berth_package(stub: ModelServiceStub, gguf: Path, name: str) -> float:
    _purge(stub)
    started = time.perf_counter()
    _finish(stub.PackageModel(pb.PackageModelRequest(model=name, gguf_path=str(gguf))))
    return time.perf_counter() - started


def copy_and_hash(gguf: Path, folder: Path) -> float:
    target = folder / "copy.gguf"
    started = time.perf_counter()
    hasher = hashlib.sha256()
    with gguf.open("rb") as source, target.open("wb") as out:
        while chunk := source.read(MIB):
            hasher.update(chunk)
            out.write(chunk)
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def _row(label: str, seconds: list[float], size: int) -> tuple[float, float]:
    median = statistics.median(seconds)
    rate = size / MIB / median
    print(f"  {label:<34} {median * 1000:8.0f} ms  {rate:8.0f} MiB/s  (rounds: {len(seconds)})")
    return median, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    gguf = smollm2_gguf()
    size = gguf.stat().st_size
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as temp:
        root = Path(temp)
        with registry_server(root) as registry:
            modeld = start(
                "modeld", "berth.models.main", root / "modeld.sock",
                ["--state-dir", str(root / "models")], root,
            )  # fmt: skip
            try:
                run(modeld, registry.host, registry.url, gguf, size, args.rounds, root)
            finally:
                modeld.stop()


def run(
    modeld: DaemonProcess, host: str, url: str, gguf: Path, size: int, rounds: int, root: Path
) -> None:
    repository, tag = "bench/smollm2", "v1"
    name = f"{host}/{repository}:{tag}"
    with grpc.insecure_channel(modeld.target) as channel:
        stub = ModelServiceStub(channel)
        _finish(stub.PackageModel(pb.PackageModelRequest(model=name, gguf_path=str(gguf))))
        _finish(stub.PushModel(pb.PushModelRequest(model=name)))
        berth_pull(stub, name)  # warm-up: page cache, connections
        plain_download(url, repository, tag, root / "plain")
        pulls, plains, packages, copies = [], [], [], []
        for _ in range(rounds):
            pulls.append(berth_pull(stub, name))
            plains.append(plain_download(url, repository, tag, root / "plain"))
            packages.append(berth_package(stub, gguf, f"bench/packaged:{tag}"))
            copies.append(copy_and_hash(gguf, root))
    print(f"Model store, SmolLM2 GGUF ({size / MIB:.2f} MiB), local registry on loopback")
    print("pull:")
    _, berth_rate = _row("berth PullModel (verified, committed)", pulls, size)
    _, plain_rate = _row("plain HTTP download (baseline)", plains, size)
    ratio = berth_rate / plain_rate
    verdict = "met" if ratio >= TARGET_PULL_RATIO else "NOT met"
    print(f"  ratio: {ratio:.2f}x the baseline (target >= {TARGET_PULL_RATIO}x: {verdict})")
    print("package:")
    package_s, _ = _row("berth PackageModel --gguf", packages, size)
    copy_s, _ = _row("copy + sha256 (baseline)", copies, size)
    print(f"  ratio: {copy_s / package_s:.2f}x the baseline's speed")


if __name__ == "__main__":
    main()
