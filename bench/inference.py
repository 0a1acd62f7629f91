"""Inference: tokens per second and time to first token through berth against the same engine
driven directly, in the same run, at concurrency 1 and 8, on llama.cpp and on vLLM.

Starts berth-modeld on a temporary unix socket as the integration tests start it (its
OpenAI-compatible API on a free loopback port, found through RunnerService.GetStatus),
packages SmolLM2-135M-Instruct (the GGUF for llama.cpp; for vLLM the safetensors made from it),
loads each engine with a first request, and starts beside it the same engine on its own, with
the configuration berth gave its engine (read from the engine's command line):
- llama.cpp: llama-cpp-python's own server (`python -m llama_cpp.server`) on the same GGUF,
  same n_ctx, the model's own chat template, no logits_all or mlock, requests queued rather
  than interrupted (what berth's engine sets);
- vLLM: vLLM's own OpenAI server (services/models/engines/vllm_server.py) with the arguments
  and environment of berth's vLLM engine, on a TCP port instead of its unix socket.
Three paths, one workload: the same chat (system + user message), temperature 0, max_tokens
64, streamed; the prompt makes SmolLM2 write on past that (the gRPC API has no ignore_eos), so
every request generates the same count (the tokens/req column shows it):
- berth gRPC: InferenceService.Chat on berth-modeld's own socket (not through the gateway,
  whose hop bench.gateway_overhead measures);
- berth HTTP: POST /v1/chat/completions (SSE) on berth-modeld's OpenAI-compatible API;
- direct: POST /v1/chat/completions (SSE) on the engine's own server, loopback TCP.
After warm-up requests (not timed), rounds alternate between the paths (the order rotates),
so all see the same machine; each starts once both engines are idle (vLLM's workers spin for
about a second after a batch, which would slow the next path). A round at concurrency C is C
clients sending requests back to back; its throughput is the completion tokens over the
round's wall time (median of the rounds); TTFT is the time from sending a request to its first
text (p50, and p99 when there are 20 samples or more). Prints berth's throughput ratio and
added TTFT p50 against direct, and berth-modeld's own resident memory (engines excluded) after
the runs and at its peak while serving (from the engine's load on; packaging comes before),
against the issue's targets: >= 0.95x throughput, < 10 ms added TTFT, < 200 MB resident. Also
how busy the rest of the machine was meanwhile: the figures are only as steady as the machine.

Run: make bench (or .venv/bin/python -m bench.inference [--backend llama.cpp|vllm|both]
[--rounds 5] [--max-tokens 64]). vLLM is skipped, saying so, where berth-modeld has no
--vllm-python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import grpc.aio
import httpx2

from berth.api.models.v1 import inference_service_pb2 as inf
from berth.api.models.v1 import model_service_pb2 as model_pb
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1 import runner_service_pb2 as runner_pb
from berth.api.models.v1.inference_service_pb2_grpc import InferenceServiceStub
from berth.api.models.v1.model_service_pb2_grpc import ModelServiceStub
from berth.api.models.v1.runner_service_pb2_grpc import RunnerServiceStub
from tests.support.models import smollm2_gguf, smollm2_safetensors, vllm_python
from tests.support.processes import DaemonProcess, free_port, poll, start

TARGET_RATIO = 0.95
TARGET_ADDED_TTFT_MS = 10.0
TARGET_RSS_MB = 200.0
MB = 1 << 20
SYSTEM = "You are a helpful assistant."
PROMPT = "Write a long story about a lighthouse keeper and the sea."
# Concurrency level -> requests each client sends in a round.
LEVELS = {1: 2, 8: 1}
P99_MIN_SAMPLES = 20
# A round starts once the engines use less than this share of a core over a window.
SETTLE_WINDOW_S = 0.25
IDLE_CORE_SHARE = 0.1
SETTLE_MAX_S = 10.0
LOAD_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 600.0
DIRECT, GRPC, HTTP = "direct", "berth gRPC", "berth HTTP"
BACKENDS = ("llama.cpp", "vllm")


@dataclass(frozen=True)
class Sample:
    ttft: float
    tokens: int


@dataclass(frozen=True)
class Round:
    seconds: float
    samples: list[Sample]

    @property
    def rate(self) -> float:
        return sum(s.tokens for s in self.samples) / self.seconds


@dataclass
class Figures:
    """One path at one concurrency level: every round."""

    rounds: list[Round] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.rounds)

    @property
    def spread(self) -> float:
        """How far apart the rounds' throughputs are, as a share of their median."""
        rates = [r.rate for r in self.rounds]
        return (max(rates) - min(rates)) / self.rate

    @property
    def ttfts_ms(self) -> list[float]:
        return sorted(s.ttft * 1000 for r in self.rounds for s in r.samples)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.ttfts_ms)

    @property
    def p99_ms(self) -> float | None:
        ordered = self.ttfts_ms
        if len(ordered) < P99_MIN_SAMPLES:
            return None
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    @property
    def tokens_per_request(self) -> float:
        return statistics.mean(s.tokens for r in self.rounds for s in r.samples)


@dataclass
class BackendRun:
    levels: dict[int, dict[str, Figures]]
    # Cores that processes other than this bench's used meanwhile (other work on the machine).
    other_cores: float
    # berth-modeld's peak resident memory from loading the engine to the end of the rounds.
    modeld_peak_mb: float


# --- the clients ---


class ChatPath(Protocol):
    resent: int  # requests sent again on a fresh connection

    async def request(self, max_tokens: int) -> Sample: ...

    async def aclose(self) -> None: ...


class GrpcChat:
    """InferenceService.Chat, streamed; the last message's usage counts the tokens."""

    def __init__(self, target: str, model: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = InferenceServiceStub(self.channel)
        self.model = model
        self.resent = 0

    async def request(self, max_tokens: int) -> Sample:
        request = inf.ChatRequest(
            model=self.model,
            messages=[
                inf.ChatMessage(role=inf.CHAT_ROLE_SYSTEM, content=SYSTEM),
                inf.ChatMessage(role=inf.CHAT_ROLE_USER, content=PROMPT),
            ],
            sampling=inf.SamplingParams(temperature=0, max_tokens=max_tokens),
            stream=True,
        )
        started = time.perf_counter()
        first, tokens = None, 0
        async for reply in self.stub.Chat(request, timeout=REQUEST_TIMEOUT_S):
            if reply.content and first is None:
                first = time.perf_counter()
            if reply.HasField("usage"):
                tokens = reply.usage.completion_tokens
        return _sample(started, first, tokens)

    async def aclose(self) -> None:
        await self.channel.close()


class HttpChat:
    """POST /v1/chat/completions with SSE; the usage chunk counts the tokens where the server
    sends one, else the chunks with text do (llama-cpp-python's: one per token). Connections
    are kept alive between requests, as the OpenAI clients keep them."""

    def __init__(self, base_url: str, model: str) -> None:
        self.client = httpx2.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S)
        self.model = model
        self.resent = 0

    async def request(self, max_tokens: int) -> Sample:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": PROMPT},
            ],
            "temperature": 0,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started, reply = await self._send(body)
        first, pieces, usage = None, 0, None
        try:
            reply.raise_for_status()
            async for line in reply.aiter_lines():
                chunk = _event(line)
                if chunk is None:
                    continue
                if chunk.get("usage"):
                    usage = int(chunk["usage"]["completion_tokens"])
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    first = first or time.perf_counter()
                    pieces += 1
        finally:
            await reply.aclose()
        return _sample(started, first, usage if usage is not None else pieces)

    async def _send(self, body: dict[str, Any]) -> tuple[float, httpx2.Response]:
        """When the request left, and its reply. Sent again (once, timed from then) when the
        kept-alive connection it went on was being closed by the server (idle 5 s) just then."""
        for attempt in range(2):
            started = time.perf_counter()
            request = self.client.build_request("POST", "/v1/chat/completions", json=body)
            try:
                return started, await self.client.send(request, stream=True)
            except (httpx2.ReadError, httpx2.RemoteProtocolError):
                if attempt:
                    raise
                self.resent += 1
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.client.aclose()


def _event(line: str) -> dict[str, Any] | None:
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    return None if data == "[DONE]" else json.loads(data)


def _sample(started: float, first: float | None, tokens: int) -> Sample:
    if first is None:
        raise RuntimeError("a request produced no text")
    return Sample(first - started, tokens)


# --- rounds ---


async def run_round(path: ChatPath, concurrency: int, per_client: int, max_tokens: int) -> Round:
    async def client() -> list[Sample]:
        return [await path.request(max_tokens) for _ in range(per_client)]

    started = time.perf_counter()
    done = await asyncio.gather(*(client() for _ in range(concurrency)))
    return Round(time.perf_counter() - started, [s for samples in done for s in samples])


async def settle(engine_pids: list[int]) -> None:
    """Until the engines are idle: after a batch, vLLM's workers keep a core busy for about a
    second, which would slow whichever path runs next (not waited for past SETTLE_MAX_S)."""
    deadline = time.monotonic() + SETTLE_MAX_S
    before = _cpu_seconds(engine_pids)
    while time.monotonic() < deadline:
        await asyncio.sleep(SETTLE_WINDOW_S)
        after = _cpu_seconds(engine_pids)
        if after - before < SETTLE_WINDOW_S * IDLE_CORE_SHARE:
            return
        before = after


def _cpu_seconds(roots: list[int]) -> float:
    """The CPU time these processes and all their descendants have used so far."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime
    total, todo = 0, list(roots)
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """The CPU the rest of the machine used while this context ran, in cores: whatever ran
    beside the bench, which makes its figures noisier (not any path's fault)."""

    def __enter__(self) -> OtherLoad:
        self._start = (time.monotonic(), _machine_busy_seconds(), _cpu_seconds([os.getpid()]))
        self.cores = 0.0
        return self

    def __exit__(self, *_: object) -> None:
        wall, busy, ours = self._start
        others = _machine_busy_seconds() - busy - (_cpu_seconds([os.getpid()]) - ours)
        self.cores = max(0.0, others / (time.monotonic() - wall))


def _machine_busy_seconds() -> float:
    """CPU time all the machine's cores have spent busy since boot (/proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def measure(
    make_paths: dict[str, Callable[[], ChatPath]],
    engine_pids: list[int],
    rounds: int,
    max_tokens: int,
) -> dict[int, dict[str, Figures]]:
    """Warm every path up, then rounds at each level, the paths' order rotating, each on idle
    engines. The clients are made here, in the event loop that uses them."""
    paths = {name: make() for name, make in make_paths.items()}
    try:
        for path in paths.values():
            await run_round(path, 1, 1, max_tokens)
            await run_round(path, max(LEVELS), 1, 16)  # opens the connections a level uses
        results: dict[int, dict[str, Figures]] = {}
        names = list(paths)
        for concurrency, per_client in LEVELS.items():
            figures = {name: Figures() for name in names}
            for index in range(rounds):
                turn = index % len(names)
                for name in names[turn:] + names[:turn]:
                    await settle(engine_pids)
                    try:
                        done = await run_round(paths[name], concurrency, per_client, max_tokens)
                    except Exception as error:
                        raise RuntimeError(
                            f"{name}, concurrency {concurrency}: {error!r}"
                        ) from error
                    figures[name].rounds.append(done)
            results[concurrency] = figures
        for name, path in paths.items():
            if path.resent:
                print(
                    f"  {name}: {path.resent} request(s) sent again (kept-alive connection closed)"
                )
        return results
    finally:
        for path in paths.values():
            await path.aclose()


# --- processes ---


@contextmanager
def direct_server(
    command: list[str], env: dict[str, str], log_path: Path, url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """An engine's own server in its own process group, stopped (the group) at the end."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        poll(lambda: _serving(process, url, log_path), LOAD_TIMEOUT_S, f"{url} to serve")
        yield process
    finally:
        _stop_group(process)


def _serving(process: subprocess.Popen[bytes], url: str, log_path: Path) -> bool:
    if process.poll() is not None:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"the direct server exited ({process.returncode}):\n{tail}")
    try:
        return httpx2.get(f"{url}/v1/models", timeout=5).status_code == 200
    except httpx2.TransportError:
        return False


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(30)
    with contextlib.suppress(ProcessLookupError):  # what is left (vLLM's engine core, a hang)
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _modeld_knows_vllm() -> bool:
    shown = subprocess.run(
        [sys.executable, "-m", "berth.models.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if shown.returncode != 0:
        raise RuntimeError(f"berth-modeld --help failed:\n{shown.stderr}")
    return "--vllm-python" in shown.stdout


def start_modeld(root: Path, with_vllm: bool) -> DaemonProcess:
    args = ["--state-dir", str(root / "models"), "--openai-port", "0", "--keep-alive", "3600"]
    if with_vllm:
        args += ["--vllm-python", str(vllm_python()), "--vllm-args=--enforce-eager"]
    return start("modeld", "berth.models.main", root / "modeld.sock", args, root)


def _proc(pid: int, name: str) -> list[str]:
    return Path(f"/proc/{pid}/{name}").read_bytes().decode().split("\0")[:-1]


def forget_peak(pid: int) -> None:
    """Start VmHWM over from the current resident size (Linux's clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def resident_mb(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM (the peak) of this process alone, in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    now, peak = (int(fields[k].split()[0]) * 1024 / MB for k in ("VmRSS", "VmHWM"))
    return now, peak


# --- the backends ---


@dataclass(frozen=True)
class Backend:
    name: str
    model: str  # berth's name for it
    note: str
    serial: bool  # the engine generates for one request at a time


def package(channel: grpc.Channel, backend: Backend) -> None:
    if backend.name == "llama.cpp":
        request = model_pb.PackageModelRequest(model=backend.model, gguf_path=str(smollm2_gguf()))
    else:
        request = model_pb.PackageModelRequest(
            model=backend.model, safetensors_dir=str(smollm2_safetensors())
        )
    last = None
    for response in ModelServiceStub(channel).PackageModel(request, timeout=LOAD_TIMEOUT_S):
        last = response.event
    if last is None or last.state != res.OPERATION_STATE_SUCCEEDED:
        raise RuntimeError(f"packaging {backend.model} failed: {last}")


def load_engine(channel: grpc.Channel, backend: Backend) -> res.Engine:
    """berth's engine for the model, loaded by a first request; its process's details."""
    request = inf.ChatRequest(
        model=backend.model,
        messages=[inf.ChatMessage(role=inf.CHAT_ROLE_USER, content="Hi")],
        sampling=inf.SamplingParams(temperature=0, max_tokens=4),
    )
    list(InferenceServiceStub(channel).Chat(request, timeout=LOAD_TIMEOUT_S))
    status = RunnerServiceStub(channel).GetStatus(runner_pb.GetStatusRequest()).status
    wanted = res.BACKEND_LLAMA_CPP if backend.name == "llama.cpp" else res.BACKEND_VLLM
    [engine] = [e for e in status.engines if e.backend == wanted]
    return engine


def direct_command(
    backend: Backend, engine_pid: int, port: int
) -> tuple[list[str], dict[str, str]]:
    argv = _proc(engine_pid, "cmdline")
    if backend.name == "llama.cpp":
        return llama_direct(argv, port)
    return vllm_direct(argv, engine_pid, port)


def llama_direct(argv: list[str], port: int) -> tuple[list[str], dict[str, str]]:
    """llama-cpp-python's server set up as berth's llama_server sets up its engine."""
    from berth.models.engines import llama_server  # loads llama_cpp: only where needed

    args = llama_server.parse_args(argv[argv.index("--model") :])
    if args.chat_template_file or args.embedding:
        raise RuntimeError(f"llama_cpp.server has no equivalent of berth's engine's {argv}")
    log = llama_server.LlamaLog()
    log.install()
    n_ctx = llama_server.context_size(args.n_ctx, llama_server.read_facts(args.model, log))
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(args.model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    command += ["--logits_all", "false", "--use_mlock", "false"]
    command += ["--interrupt_requests", "false", "--verbose", "true"]
    if args.model_alias:
        command += ["--model_alias", args.model_alias]
    return command, _without_llama_settings(dict(os.environ))


def _without_llama_settings(env: dict[str, str]) -> dict[str, str]:
    """As the engine does: no variable of llama-cpp-python's settings (MODEL, N_CTX...)."""
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    names = {n.upper() for n in (*ModelSettings.model_fields, *ServerSettings.model_fields)}
    names |= {"CONFIG_FILE"}
    return {k: v for k, v in env.items() if k.upper() not in names}


def vllm_direct(argv: list[str], pid: int, port: int) -> tuple[list[str], dict[str, str]]:
    """berth's vLLM engine's own command and environment, on a TCP port instead."""
    if "--uds" not in argv:
        raise RuntimeError(f"berth's vLLM engine has no --uds to replace: {argv}")
    at = argv.index("--uds")
    command = argv[:at] + argv[at + 2 :] + ["--host", "127.0.0.1", "--port", str(port)]
    env = dict(item.split("=", 1) for item in _proc(pid, "environ") if "=" in item)
    return command, env


def served_name(command: list[str], backend: Backend) -> str:
    flag = "--model_alias" if backend.name == "llama.cpp" else "--served-model-name"
    return command[command.index(flag) + 1] if flag in command else backend.model


def bench_backend(
    modeld: DaemonProcess, backend: Backend, root: Path, rounds: int, max_tokens: int
) -> BackendRun:
    with grpc.insecure_channel(modeld.target) as channel:
        package(channel, backend)
        # The peak that counts is serving's: packaging reads the model's metadata, once.
        forget_peak(modeld.process.pid)
        engine = load_engine(channel, backend)
        status = RunnerServiceStub(channel).GetStatus(runner_pb.GetStatusRequest()).status
        port = free_port()
        command, env = direct_command(backend, engine.pid, port)
        print(f"\n{backend.name}: berth engine pid {engine.pid}; direct: {' '.join(command)}")
        url = f"http://127.0.0.1:{port}"
        log_path = root / f"direct-{backend.name}.log"
        direct_name = served_name(command, backend)
        paths: dict[str, Callable[[], ChatPath]] = {
            GRPC: lambda: GrpcChat(modeld.target, backend.model),
            DIRECT: lambda: HttpChat(url, direct_name),
            HTTP: lambda: HttpChat(status.endpoint, backend.model),
        }
        with direct_server(command, env, log_path, url) as direct, OtherLoad() as others:
            pids = [engine.pid, direct.pid]
            levels = asyncio.run(measure(paths, pids, rounds, max_tokens))
        # The next backend runs on a quiet machine.
        unload = runner_pb.UnloadModelRequest(models=[backend.model])
        RunnerServiceStub(channel).UnloadModel(unload, timeout=60)
        return BackendRun(levels, others.cores, resident_mb(modeld.process.pid)[1])


# --- the report ---


def report(backend: Backend, run: BackendRun, max_tokens: int) -> None:
    print(f"{backend.name}: {backend.note}; max_tokens {max_tokens}, temperature 0, streamed")
    print(
        f"  other processes on this machine used {run.other_cores:.2f} of"
        f" {os.cpu_count()} cores meanwhile"
    )
    for concurrency, figures in run.levels.items():
        direct = figures[DIRECT]
        per_client = LEVELS[concurrency]
        print(
            f"  concurrency {concurrency} ({concurrency} client(s) x {per_client} request(s)"
            f" a round, {len(direct.rounds)} rounds)"
        )
        columns = ("tokens/s", "spread", "x direct", "TTFT p50 ms", "p99 ms", "+p50 ms")
        columns += ("tokens/req",)
        print(f"    {'path':<11}" + "".join(f"{c:>12}" for c in columns))
        for name in (DIRECT, GRPC, HTTP):
            _row(name, figures[name], direct)


def _row(name: str, figures: Figures, direct: Figures) -> None:
    ours = figures is not direct
    cells = [
        f"{figures.rate:.1f}",
        f"{figures.spread:.0%}",
        f"{figures.rate / direct.rate:.3f}x" if ours else "-",
        f"{figures.p50_ms:.1f}",
        f"{figures.p99_ms:.1f}" if figures.p99_ms is not None else "-",
        f"{figures.p50_ms - direct.p50_ms:+.1f}" if ours else "-",
        f"{figures.tokens_per_request:.1f}",
    ]
    print(f"    {name:<11}" + "".join(f"{cell:>12}" for cell in cells))


def summary(
    backends: list[Backend],
    all_results: dict[str, BackendRun],
    resident: float,
) -> None:
    print(
        f"\ntargets (issue #7): >= {TARGET_RATIO}x direct throughput,"
        f" < {TARGET_ADDED_TTFT_MS:.0f} ms added TTFT p50,"
        f" berth-modeld < {TARGET_RSS_MB:.0f} MB resident"
    )
    for backend in backends:
        for concurrency, figures in all_results[backend.name].levels.items():
            direct = figures[DIRECT]
            for name in (GRPC, HTTP):
                ratio = figures[name].rate / direct.rate
                added = figures[name].p50_ms - direct.p50_ms
                # One request at a time: TTFT is mostly the wait for the requests before.
                queued = backend.serial and concurrency > 1
                verdict = "queued, not judged" if queued else _met(added < TARGET_ADDED_TTFT_MS)
                print(
                    f"  {backend.name:<9} c{concurrency} {name:<10}"
                    f" throughput {ratio:.3f}x ({_met(ratio >= TARGET_RATIO)}),"
                    f" added TTFT {added:+.1f} ms ({verdict})"
                )
    peak = max(run.modeld_peak_mb for run in all_results.values())
    print(
        f"  berth-modeld resident (engines excluded): {resident:.0f} MB after the runs,"
        f" {peak:.0f} MB at most while serving ({_met(max(resident, peak) < TARGET_RSS_MB)})"
    )


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --- main ---


def chosen_backends(asked: str) -> list[Backend]:
    backends = {
        "llama.cpp": Backend(
            "llama.cpp",
            "ai/smollm2",
            "SmolLM2-135M-Instruct Q4_1 GGUF; llama-cpp-python's server runs one request at"
            " a time on both paths, so at concurrency 8 requests queue (TTFT includes the wait)",
            serial=True,
        ),
        "vllm": Backend(
            "vllm",
            "ai/smollm2-vllm",
            "SmolLM2-135M-Instruct bf16 safetensors, vLLM on CPU, --enforce-eager",
            serial=False,
        ),
    }
    names = BACKENDS if asked == "both" else (asked,)
    chosen = [backends[n] for n in names]
    if "vllm" in names and (missing := _vllm_missing()):
        print(f"vllm: skipped: {missing}")
        chosen = [b for b in chosen if b.name != "vllm"]
    return chosen


def _vllm_missing() -> str | None:
    """Why the vLLM half cannot run here, if it cannot."""
    try:
        vllm_python()
    except RuntimeError as error:
        return str(error)
    if not _modeld_knows_vllm():
        return "this berth-modeld has no --vllm-python flag (no vLLM backend)"
    return None


def run(args: argparse.Namespace) -> None:
    backends = chosen_backends(args.backend)
    if not backends:
        return
    results: dict[str, BackendRun] = {}
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="berth-bench-")))
        modeld = start_modeld(root, any(b.name == "vllm" for b in backends))
        stack.callback(modeld.stop)
        for backend in backends:
            results[backend.name] = bench_backend(
                modeld, backend, root, args.rounds, args.max_tokens
            )
        resident = resident_mb(modeld.process.pid)[0]
    print()
    for backend in backends:
        report(backend, results[backend.name], args.max_tokens)
    summary(backends, results, resident)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the cleanups, as Ctrl-C does


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per level")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per request")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
