"""MCP gateway: tools/call latency and throughput through berth against the same client calling
the same server directly, in the same run, over stdio and streamable HTTP; and tools/list time
with 1, 5 and 10 servers enabled.

Starts a private berth-mcpd (its own temporary state directory, its HTTP endpoint on a free
loopback port with its own token) and a berth-gateway in front of it (the stdio path goes
through it), imports a catalog of real servers into it and enables, for each part, only the
servers that part needs. The client is the MCP SDK's ClientSession throughout.

- tools/call: `echo` of @modelcontextprotocol/server-everything (node), the same server both
  ways:
  - stdio: direct = the SDK's stdio_client running mcp-server-everything; berth =
    stdio_client running `berth mcp gateway run` (stdio relayed over gRPC through
    berth-gateway to berth-mcpd, which runs mcp-server-everything over stdio);
  - streamable HTTP: direct = the SDK's streamable_http_client on mcp-server-everything
    `streamableHttp` (one process on a loopback port); berth = the same client on berth-mcpd's
    /mcp, whose catalog entry is `remote:` that same server.
  After warm-up calls (not timed), rounds alternate direct and berth: each round makes
  sequential calls (latency p50/p99 over every round's samples) and then has concurrent
  callers on the one session share a fixed number of calls (calls per second, median round).
- tools/list: copies of mcp-server-time (Python, stdio) under different names, 1, 5 and 10 of
  them enabled. For berth (over streamable HTTP and over stdio) and for the baseline (the same
  client on one mcp-server-time directly, and on N of them in parallel): the time from opening
  a new session to its first tools/list answer (servers started included), and the mean
  tools/list time in an established session after warm-up.
- secret scanning: the same `echo` through berth over streamable HTTP with the
  `block-secrets` feature off (the baseline) and on, rounds alternating, with a short message
  and a 64 KiB one (both the arguments and the result are scanned): p50 and the cost added.
Targets (the issue's): added p50 under 2 ms, throughput at least 0.5x direct.

Run: make bench (or .venv/bin/python -m bench.mcp [--calls 300] [--callers 8]
[--concurrent-calls 600] [--rounds 3] [--new-sessions 2])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
import httpx2
from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from berth.api.mcp.v1 import catalog_service_pb2 as catalog_pb
from berth.api.mcp.v1 import catalog_service_pb2_grpc as catalog_rpc
from berth.api.mcp.v1 import feature_service_pb2 as feature_pb
from berth.api.mcp.v1 import feature_service_pb2_grpc as feature_rpc
from berth.api.mcp.v1 import server_service_pb2 as server_pb
from berth.api.mcp.v1 import server_service_pb2_grpc as server_rpc
from tests.support.mcp import NODE_BIN, endpoint_url
from tests.support.processes import BIN, DaemonProcess, free_port, poll, start

TOKEN = "berth-bench-mcp-token"
TARGET_ADDED_P50_MS = 2.0
TARGET_RATIO = 0.5
WARMUP_CALLS = 30
LIST_WARMUP = 3
LIST_SAMPLES = 20
SERVER_COUNTS = (1, 5, 10)
READY_TIMEOUT_S = 30.0
FIRST_CALL_TIMEOUT_S = 30.0
SHORT_SESSIONS_MAX = 5
EVERYTHING = NODE_BIN / "mcp-server-everything"
TIME_SERVER = BIN / "mcp-server-time"
TIME_ARGS = ["--local-timezone", "UTC"]
ECHO = {"message": "hello from the bench"}
DIRECT, BERTH = "direct", "berth"
STDIO, HTTP = "stdio", "streamable HTTP"
STDIO_ONE, HTTP_ONE = "everything-stdio", "everything-http"
SCAN_FEATURE = "block-secrets"
SCAN_OFF, SCAN_ON = "off", "on"
# Ordinary text (nothing to refuse): the scanning cost of a call that passes.
SCAN_PAYLOADS = {
    f"{len(ECHO['message'])} B": ECHO,
    "64 KiB": {"message": ("All quiet on the build farm; nothing to report. " * 1400)[:65536]},
}


def catalog_yaml(http_port: int) -> str:
    times = "".join(
        f"  time-{i}:\n"
        f"    description: mcp-server-time, copy {i}\n"
        f"    command: {TIME_SERVER}\n"
        f"    args: {TIME_ARGS}\n"
        for i in range(1, max(SERVER_COUNTS) + 1)
    )
    return (
        "name: bench\n"
        "servers:\n"
        f"  {STDIO_ONE}:\n"
        "    description: server-everything over stdio, from node_modules\n"
        f"    command: {EVERYTHING}\n"
        f"  {HTTP_ONE}:\n"
        "    description: the bench's own server-everything over streamable HTTP\n"
        f"    remote: {{url: 'http://127.0.0.1:{http_port}/mcp'}}\n"
        f"{times}"
    )


# --- the machinery under test ---


@dataclass
class Berth:
    mcpd: DaemonProcess
    gateway: DaemonProcess
    endpoint: str  # berth-mcpd's /mcp
    everything_url: str  # the streamable HTTP server-everything, direct
    errlog: TextIO  # where the stdio servers the client runs write their stderr

    def enable(self, *names: str) -> None:
        """Exactly these servers enabled; each part enables its own before opening sessions."""
        with grpc.insecure_channel(self.mcpd.target) as channel:
            servers = server_rpc.ServerServiceStub(channel)
            servers.ResetServers(server_pb.ResetServersRequest())
            if names:
                servers.EnableServers(server_pb.EnableServersRequest(names=list(names)))

    def feature(self, name: str, enabled: bool) -> None:
        with grpc.insecure_channel(self.mcpd.target) as channel:
            features = feature_rpc.FeatureServiceStub(channel)
            if enabled:
                features.EnableFeature(feature_pb.EnableFeatureRequest(name=name))
            else:
                features.DisableFeature(feature_pb.DisableFeatureRequest(name=name))


@contextmanager
def running_berth(root: Path) -> Iterator[Berth]:
    """berth-mcpd, berth-gateway and the HTTP server-everything; all stopped at the end."""
    run = root / "run"
    run.mkdir()
    with ExitStack() as stack:
        http_port = free_port()
        everything_url = f"http://127.0.0.1:{http_port}/mcp"
        stack.enter_context(http_everything(http_port, root / "everything-http.log"))
        mcpd = start(
            "mcpd",
            "berth.mcp.main",
            run / "mcpd.sock",
            ["--state-dir", str(root / "mcp"), "--gateway-port", "0", "--gateway-token", TOKEN],
            root,
        )
        stack.callback(mcpd.stop)
        nowhere = f"unix://{run}/absent.sock"  # the bench uses only the MCP routes
        gateway = start(
            "gateway",
            "berth.gateway.main",
            run / "berth.sock",
            [
                "--state-dir",
                str(root / "gateway"),
                "--mcp-address",
                mcpd.target,
                "--network-address",
                nowhere,
                "--models-address",
                nowhere,
            ],
            root,
        )
        stack.callback(gateway.stop)
        with grpc.insecure_channel(mcpd.target) as channel:
            catalog_rpc.CatalogServiceStub(channel).ImportCatalog(
                catalog_pb.ImportCatalogRequest(content=catalog_yaml(http_port))
            )
            endpoint = endpoint_url(channel)
        errlog = stack.enter_context((root / "stdio-clients.log").open("a"))
        yield Berth(mcpd, gateway, endpoint, everything_url, errlog)


@contextmanager
def http_everything(port: int, log_path: Path) -> Iterator[None]:
    """mcp-server-everything serving streamable HTTP on `port`, in its own process group."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(EVERYTHING), "streamableHttp"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PORT": str(port)},
            start_new_session=True,
        )
    try:
        poll(lambda: _listening(process, port), READY_TIMEOUT_S, f"server-everything on {port}")
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)


def _listening(process: subprocess.Popen[bytes], port: int) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"server-everything exited with status {process.returncode}")
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


# --- the clients ---

Opener = Callable[[], AbstractAsyncContextManager[ClientSession]]


@contextlib.asynccontextmanager
async def _session(
    streams: AbstractAsyncContextManager[Any],
) -> AsyncIterator[ClientSession]:
    async with streams as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def stdio_session(
    command: Path, args: list[str], errlog: TextIO, env: dict[str, str] | None = None
) -> Opener:
    """A server (or berth's relay) run by the client; its stderr goes to `errlog`."""
    params = StdioServerParameters(command=str(command), args=args, env=env)
    return lambda: _session(stdio_client(params, errlog=errlog))


def http_session(url: str, token: str | None = None) -> Opener:
    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[ClientSession]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
            _session(streamable_http_client(url, http_client=http)) as session,
        ):
            yield session

    return opened


def berth_stdio(berth: Berth) -> Opener:
    """`berth mcp gateway run`, as a client's MCP configuration runs it."""
    env = {"BERTH_HOST": berth.gateway.target}
    return stdio_session(BIN / "berth", ["mcp", "gateway", "run"], berth.errlog, env)


# --- tools/call ---


@dataclass
class CallFigures:
    latencies: list[float] = field(default_factory=list)  # seconds, every round's
    rates: list[float] = field(default_factory=list)  # calls per second, one per round
    failed_first_calls: int = 0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


async def echo(session: ClientSession, arguments: dict[str, Any] = ECHO) -> None:
    result = await session.call_tool("echo", arguments)
    if result.is_error:
        raise RuntimeError(f"echo failed: {result.content}")


async def first_call(session: ClientSession) -> int:
    """The session's first echo, tried until it works; how many tries failed (a server that
    died while starting is restarted by berth on the next call)."""
    deadline = time.monotonic() + FIRST_CALL_TIMEOUT_S
    failed = 0
    while True:
        try:
            await echo(session)
            return failed
        except MCPError:
            failed += 1
            if time.monotonic() > deadline:
                raise


async def sequential(
    session: ClientSession, calls: int, figures: CallFigures, arguments: dict[str, Any] = ECHO
) -> None:
    for _ in range(calls):
        started = time.perf_counter()
        await echo(session, arguments)
        figures.latencies.append(time.perf_counter() - started)


async def concurrent(
    session: ClientSession, callers: int, calls: int, figures: CallFigures
) -> None:
    left = calls

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await echo(session)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    figures.rates.append(calls / (time.perf_counter() - started))


async def measure_calls(
    paths: dict[str, Opener], args: argparse.Namespace
) -> dict[str, CallFigures]:
    """Both paths' sessions open side by side; rounds alternate them, the order rotating."""
    figures = {name: CallFigures() for name in paths}
    async with contextlib.AsyncExitStack() as stack:
        sessions = {name: await stack.enter_async_context(open_()) for name, open_ in paths.items()}
        for name, session in sessions.items():
            figures[name].failed_first_calls = await first_call(session)
            for _ in range(WARMUP_CALLS):
                await echo(session)
        names = list(sessions)
        per_round = max(1, args.calls // args.rounds)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                await sequential(sessions[name], per_round, figures[name])
                await concurrent(sessions[name], args.callers, args.concurrent_calls, figures[name])
    return figures


# --- secret scanning ---


async def measure_scanning(
    berth: Berth, args: argparse.Namespace
) -> dict[str, dict[str, CallFigures]]:
    """One berth session over streamable HTTP; rounds switch `block-secrets` off and on (the
    order alternating), with warm-up calls after each switch; scanning is left on."""
    figures = {size: {SCAN_OFF: CallFigures(), SCAN_ON: CallFigures()} for size in SCAN_PAYLOADS}
    per_round = max(1, args.calls // args.rounds)
    try:
        async with http_session(berth.endpoint, TOKEN)() as session:
            await first_call(session)
            for round_ in range(args.rounds):
                states = (SCAN_OFF, SCAN_ON) if round_ % 2 == 0 else (SCAN_ON, SCAN_OFF)
                for state in states:
                    berth.feature(SCAN_FEATURE, state == SCAN_ON)
                    for size, arguments in SCAN_PAYLOADS.items():
                        for _ in range(WARMUP_CALLS):
                            await echo(session, arguments)
                        await sequential(session, per_round, figures[size][state], arguments)
    finally:
        berth.feature(SCAN_FEATURE, True)
    return figures


# --- tools/list ---


@dataclass
class ListFigures:
    first: list[float] = field(default_factory=list)  # seconds: session opened to first list
    established: list[float] = field(default_factory=list)  # seconds, one per tools/list
    tools: int = 0
    short: int = 0  # new sessions whose first tools/list lacked tools (not in `first`)

    @property
    def first_ms(self) -> float:
        return statistics.mean(self.first) * 1000

    @property
    def established_ms(self) -> float:
        return statistics.mean(self.established) * 1000


async def list_through(opener: Opener, expected: int, sessions: int) -> ListFigures:
    """New sessions timed to their first tools/list; the last one then lists again."""
    figures = ListFigures()
    while len(figures.first) < sessions:
        started = time.perf_counter()
        async with opener() as session:
            listed = await session.list_tools()
            took = time.perf_counter() - started
            if len(listed.tools) != expected:
                figures.short += 1
                if figures.short > SHORT_SESSIONS_MAX:
                    raise RuntimeError(f"listed {len(listed.tools)} tools, expected {expected}")
                continue
            figures.first.append(took)
            figures.tools = len(listed.tools)
            if len(figures.first) == sessions:
                await established(session, figures)
    return figures


async def established(session: ClientSession, figures: ListFigures) -> None:
    for _ in range(LIST_WARMUP):
        await session.list_tools()
    for _ in range(LIST_SAMPLES):
        started = time.perf_counter()
        await session.list_tools()
        figures.established.append(time.perf_counter() - started)


async def list_in_parallel(opener: Opener, count: int, sessions: int) -> ListFigures:
    """What a client without a gateway does for `count` servers: a session on each at once,
    each listed (first listing only: the time until the last list is answered)."""
    figures = ListFigures()
    for _ in range(sessions):
        took, figures.tools = await _parallel_first_lists(opener, count)
        figures.first.append(took)
    return figures


async def _parallel_first_lists(opener: Opener, count: int) -> tuple[float, int]:
    listed: list[int] = []
    all_listed, done = asyncio.Event(), asyncio.Event()

    async def one() -> None:
        async with opener() as session:  # each task owns its session, start to end
            listed.append(len((await session.list_tools()).tools))
            if len(listed) == count:
                all_listed.set()
            await done.wait()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(one())
        await all_listed.wait()
        took = time.perf_counter() - started
        done.set()
    return took, sum(listed)


# --- the report ---


def report_calls(transport: str, figures: dict[str, CallFigures], args: argparse.Namespace) -> None:
    direct, through = figures[DIRECT], figures[BERTH]
    print(
        f"\ntools/call echo over {transport}: {len(direct.latencies)} sequential calls per path, "
        f"then {args.callers} callers on one session sharing {args.concurrent_calls} calls "
        f"(median of {args.rounds} alternating rounds)"
    )
    print(f"  {'metric':<10} {'direct':>10} {'berth':>10} {'berth vs direct':>17}")
    for label, q in (("p50 ms", 0.5), ("p99 ms", 0.99)):
        d, b = direct.percentile_ms(q), through.percentile_ms(q)
        print(f"  {label:<10} {d:>10.3f} {b:>10.3f} {b - d:>+14.3f} ms")
    print(
        f"  {'calls/s':<10} {direct.rate:>10.0f} {through.rate:>10.0f} "
        f"{through.rate / direct.rate:>16.2f}x"
    )
    for name, path in figures.items():
        if path.failed_first_calls:
            print(f"  ({name}: the first call failed {path.failed_first_calls} time(s) first)")


def report_scanning(figures: dict[str, dict[str, CallFigures]], args: argparse.Namespace) -> None:
    print(
        f"\ntools/call echo through berth over streamable HTTP, {SCAN_FEATURE} off (baseline) "
        f"vs on: {args.calls} sequential calls per state and message (ordinary text, so "
        f"arguments and result are both scanned), {args.rounds} alternating rounds"
    )
    print(f"  {'message':<10} {'off p50 ms':>11} {'on p50 ms':>11} {'added':>12} {'on vs off':>10}")
    for size, states in figures.items():
        off, on = states[SCAN_OFF].percentile_ms(0.5), states[SCAN_ON].percentile_ms(0.5)
        print(f"  {size:<10} {off:>11.3f} {on:>11.3f} {on - off:>+9.3f} ms {on / off:>9.2f}x")


def report_lists(lists: dict[int, dict[str, ListFigures]], sessions: int) -> None:
    print(
        f"\ntools/list, N copies of mcp-server-time enabled: first = new session opened to its "
        f"first tools/list answered (servers started included; mean of {sessions}); "
        f"established = one tools/list in an open session (mean of {LIST_SAMPLES})"
    )
    columns = (
        ("direct 1", "direct, 1 server"),
        ("direct xN", "direct, N sessions in parallel"),
        ("berth http", "berth streamable HTTP"),
        ("berth stdio", "berth stdio"),
    )
    print(f"  {'N':>3} {'tools':>5} {'':<12}" + "".join(f"{label:>13}" for label, _ in columns))
    for count, row in lists.items():
        tools = row["berth streamable HTTP"].tools
        cells = [row[key] for _, key in columns]
        print(
            f"  {count:>3} {tools:>5} {'first ms':<12}"
            + "".join(f"{c.first_ms:>13.1f}" for c in cells)
        )
        print(
            f"  {'':>3} {'':>5} {'established':<12}"
            + "".join(
                f"{c.established_ms:>13.3f}" if c.established else f"{'-':>13}" for c in cells
            )
        )
        short = {label: row[key].short for label, key in columns if row[key].short}
        if short:
            print(
                f"  {'':>3} {'':>5} new sessions whose first list lacked tools (retried): "
                + ", ".join(f"{label} {count}" for label, count in short.items())
            )


def report_server_ends(berth: Berth) -> None:
    """Servers that ended while berth-mcpd used them (a server berth stops is not logged)."""
    ended = [line for line in berth.mcpd.log_lines() if line.get("event") == "mcp server ended"]
    if not ended:
        return
    print(f"\nberth-mcpd saw {len(ended)} server(s) end unasked (each restarted on next need):")
    whys: dict[str, int] = {}
    for line in ended:
        why = str(line.get("why", ""))[:140]
        whys[why] = whys.get(why, 0) + 1
    for why, count in sorted(whys.items(), key=lambda item: -item[1]):
        print(f"  {count:>3} x {why}")


def summary(calls: dict[str, dict[str, CallFigures]]) -> None:
    print(
        f"\nsummary (targets: added p50 < {TARGET_ADDED_P50_MS:g} ms, "
        f"throughput >= {TARGET_RATIO:g}x direct)"
    )
    for transport, figures in calls.items():
        added = figures[BERTH].percentile_ms(0.5) - figures[DIRECT].percentile_ms(0.5)
        ratio = figures[BERTH].rate / figures[DIRECT].rate
        verdict = [
            "added p50 " + ("met" if added < TARGET_ADDED_P50_MS else "missed"),
            "throughput " + ("met" if ratio >= TARGET_RATIO else "missed"),
        ]
        print(
            f"  {transport:<16} added p50 {added:+.3f} ms, throughput {ratio:.2f}x direct "
            f"({', '.join(verdict)})"
        )
    print(f"  ({os.cpu_count()} cores: client, berth's processes and the servers share them)")


# --- the run ---


async def bench(berth: Berth, args: argparse.Namespace) -> None:
    calls: dict[str, dict[str, CallFigures]] = {}
    berth.enable(STDIO_ONE)
    calls[STDIO] = await measure_calls(
        {DIRECT: stdio_session(EVERYTHING, [], berth.errlog), BERTH: berth_stdio(berth)}, args
    )
    report_calls(STDIO, calls[STDIO], args)
    berth.enable(HTTP_ONE)
    calls[HTTP] = await measure_calls(
        {DIRECT: http_session(berth.everything_url), BERTH: http_session(berth.endpoint, TOKEN)},
        args,
    )
    report_calls(HTTP, calls[HTTP], args)
    report_scanning(await measure_scanning(berth, args), args)

    time_server = stdio_session(TIME_SERVER, TIME_ARGS, berth.errlog)
    one = await list_through(time_server, 2, args.new_sessions)
    lists: dict[int, dict[str, ListFigures]] = {}
    for count in SERVER_COUNTS:
        berth.enable(*(f"time-{i}" for i in range(1, count + 1)))
        # Every copy offers the same two tools: each is listed once per copy, prefixed.
        expected = 2 * count
        lists[count] = {
            "direct, 1 server": one,
            "direct, N sessions in parallel": await list_in_parallel(
                time_server, count, args.new_sessions
            ),
            "berth streamable HTTP": await list_through(
                http_session(berth.endpoint, TOKEN), expected, args.new_sessions
            ),
            "berth stdio": await list_through(berth_stdio(berth), expected, args.new_sessions),
        }
    report_lists(lists, args.new_sessions)
    report_server_ends(berth)
    summary(calls)


def _interrupt_on_sigterm(_signum: int, _frame: object) -> None:
    # As Ctrl-C: inside asyncio.run that cancels the run, so every session's cleanup runs.
    signal.raise_signal(signal.SIGINT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="sequential calls per path")
    parser.add_argument("--callers", type=int, default=8, help="concurrent callers")
    parser.add_argument(
        "--concurrent-calls", type=int, default=600, help="calls the callers share, per round"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument(
        "--new-sessions", type=int, default=2, help="new sessions timed per tools/list figure"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where started ignoring it
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    with (
        tempfile.TemporaryDirectory(prefix="berth-bench-mcp-") as tmp,
        running_berth(Path(tmp)) as berth,
    ):
        asyncio.run(bench(berth, args))


if __name__ == "__main__":
    main()
