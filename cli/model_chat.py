"""`berth model run`: a one-shot prompt, an interactive chat, or a preload (`--detach`).

As Docker does, a model missing from the store is pulled first (berth-modeld answers
NOT_FOUND with reason MODEL_NOT_FOUND; the CLI pulls and tries again), and a runner that is
not running is installed or started first (reason RUNNER_NOT_RUNNING). The answer streams
token by token; the interactive chat keeps the whole conversation and ends on `/bye` or EOF.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TextIO, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from berth.api.models.v1 import inference_service_pb2 as inf
from berth.api.models.v1 import model_service_pb2 as store
from berth.api.models.v1 import resources_pb2 as res
from berth.api.models.v1 import runner_service_pb2 as runner_pb
from berth.api.models.v1.inference_service_pb2_grpc import InferenceServiceStub
from berth.api.models.v1.model_service_pb2_grpc import ModelServiceStub
from berth.api.models.v1.runner_service_pb2_grpc import RunnerServiceStub
from berth.cli.context import connection
from berth.cli.errors import describe_rpc_error
from berth.cli.model_auth import registry_auth_for
from berth.cli.model_parse import backend_name
from berth.cli.model_progress import follow

T = TypeVar("T")
ANSWER_COLOR = "\x1b[36m"
RESET = "\x1b[0m"
HELP = """Available Commands:
  /bye            Exit
  /?, /help       Show this help

Use \"\"\" to begin a multi-line message, and \"\"\" again to end it.
Ctrl + c stops the model from answering; Ctrl + d or /bye exits."""


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason a berth error carries, or "" when it has none."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (AttributeError, ValueError):
        return ""
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def pull_request(model: str, ignore_memory_check: bool = False) -> store.PullModelRequest:
    request = store.PullModelRequest(model=model, ignore_runtime_memory_check=ignore_memory_check)
    auth = registry_auth_for(model)
    if auth is not None:
        request.registry_auth.CopyFrom(auth)
    return request


def pull(model: str, ignore_memory_check: bool, out: TextIO) -> res.OperationEvent:
    """Pull with progress on `out`; returns the SUCCEEDED event."""
    stub = connection().stub(ModelServiceStub)
    return follow(stub.PullModel(pull_request(model, ignore_memory_check)), out=out)


def ensure_runner(out: TextIO) -> None:
    """Install or start the runner, as Docker's CLI does before a command that needs it."""
    runner = connection().stub(RunnerServiceStub)
    status = runner.GetStatus(runner_pb.GetStatusRequest()).status
    if not status.installed:
        print("Installing the model runner...", file=out)
        follow(runner.InstallRunner(runner_pb.InstallRunnerRequest()), out=out)
    elif not status.running:
        print("Starting the model runner...", file=out)
        runner.StartRunner(runner_pb.StartRunnerRequest())


def when_ready(
    attempt: Callable[[], T],
    model: str,
    *,
    out: TextIO,
    pull_missing: bool = True,
    ignore_memory_check: bool = False,
) -> T:
    """`attempt()`, after pulling the model or starting the runner when berth says so."""
    pulled = started = False
    while True:
        try:
            return attempt()
        except grpc.RpcError as error:
            reason = error_reason(error)
            missing = error.code() == grpc.StatusCode.NOT_FOUND and reason == "MODEL_NOT_FOUND"
            if missing and pull_missing and not pulled:
                print(f"Unable to find model '{model}' locally. Pulling from the server.", file=out)
                pull(model, ignore_memory_check, out)
                pulled = True
            elif reason == "RUNNER_NOT_RUNNING" and not started:
                ensure_runner(out)
                started = True
            else:
                raise


def use_color(mode: str, out: TextIO) -> bool:
    """`--color auto|yes|no`: auto colours only a terminal."""
    if mode == "yes":
        return True
    return mode == "auto" and out.isatty()


@dataclass
class ChatSession:
    """One conversation with a model: the history and how answers are shown."""

    model: str
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    color: bool = False
    debug: bool = False
    ignore_memory_check: bool = False
    # berth's own `run --system` and `--temperature` (Docker's run has neither).
    system: str | None = None
    temperature: float | None = None
    history: list[inf.ChatMessage] = field(default_factory=list)
    _started: float = 0.0

    def ask(self, text: str) -> str:
        """Send `text` with the conversation so far and stream the answer to `out`.

        On an error or Ctrl-C the question is dropped from the history and the
        exception propagates.
        """
        self.history.append(inf.ChatMessage(role=inf.CHAT_ROLE_USER, content=text))
        try:
            answer = self._answer()
        except BaseException:
            self.history.pop()
            raise
        self.history.append(inf.ChatMessage(role=inf.CHAT_ROLE_ASSISTANT, content=answer))
        return answer

    def request(self) -> inf.ChatRequest:
        messages = list(self.history)
        if self.system is not None:
            messages.insert(0, inf.ChatMessage(role=inf.CHAT_ROLE_SYSTEM, content=self.system))
        sampling = inf.SamplingParams(temperature=self.temperature)
        return inf.ChatRequest(model=self.model, messages=messages, sampling=sampling, stream=True)

    def _open(self) -> tuple[Any, inf.ChatResponse | None]:
        self._started = time.monotonic()
        call = connection().stub(InferenceServiceStub).Chat(self.request())
        try:
            return call, next(call, None)
        except KeyboardInterrupt:
            call.cancel()
            raise

    def _answer(self) -> str:
        call, first = when_ready(
            self._open,
            self.model,
            out=self.err,
            ignore_memory_check=self.ignore_memory_check,
        )
        responses: Iterator[inf.ChatResponse] = chain([first] if first else [], call)
        return self._stream(call, responses)

    def _stream(self, call: Any, responses: Iterator[inf.ChatResponse]) -> str:
        parts: list[str] = []
        last = inf.ChatResponse()
        first_token_at: float | None = None
        try:
            for response in responses:
                last.MergeFrom(response)
                if not response.content:
                    continue
                if first_token_at is None:
                    first_token_at = time.monotonic()
                    if self.color:
                        self.out.write(ANSWER_COLOR)
                parts.append(response.content)
                self.out.write(response.content)
                self.out.flush()
        except KeyboardInterrupt:
            call.cancel()
            self._end_answer(parts)
            raise
        self._end_answer(parts)
        if self.debug:
            ended = time.monotonic()
            self.err.write(debug_line(last, self._started, first_token_at, ended) + "\n")
        return "".join(parts)

    def _end_answer(self, parts: list[str]) -> None:
        if parts and self.color:
            self.out.write(RESET)
        self.out.write("\n")
        self.out.flush()


def debug_line(last: inf.ChatResponse, started: float, first: float | None, ended: float) -> str:
    """`--debug`: what served the answer, token counts and speeds."""
    usage = last.usage
    pieces = [f"id {last.id}" if last.id else "", f"backend {backend_name(last.backend)}"]
    pieces.append(f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens")
    if first is not None:
        pieces.append(f"first token after {(first - started) * 1000:.0f}ms")
        if usage.completion_tokens and ended > first:
            pieces.append(f"{usage.completion_tokens / (ended - first):.1f} tokens/s")
    reason = inf.FinishReason.Name(last.finish_reason).removeprefix("FINISH_REASON_").lower()
    pieces.append(f"finish {reason}")
    return "[debug] " + ", ".join(piece for piece in pieces if piece)


def read_message(read_line: Callable[[str], str | None]) -> str | None:
    """One user message; `\"\"\"` starts and ends a multi-line one. None on EOF."""
    line = read_line("> ")
    if line is None or not line.startswith('"""'):
        return line
    body = line[3:]
    if len(body) >= 3 and body.endswith('"""'):
        return body[:-3]
    lines = [body] if body else []
    while True:
        more = read_line(". ")
        if more is None:
            return "\n".join(lines) or None
        if more.endswith('"""'):
            lines.append(more[:-3])
            return "\n".join(lines)
        lines.append(more)


def terminal_reader(prompt: str) -> str | None:
    """A line from the terminal, with line editing; None on Ctrl-D."""
    try:
        return input(prompt)
    except EOFError:
        return None


def stream_reader(stream: TextIO) -> Callable[[str], str | None]:
    """Lines from a pipe or file, without prompts; None at its end."""

    def read(_prompt: str) -> str | None:
        line = stream.readline()
        return None if line == "" else line.rstrip("\r\n")

    return read


def chat_loop(
    session: ChatSession, read_line: Callable[[str], str | None], interactive: bool
) -> None:
    """Ask each message in turn until `/bye` or EOF; errors are shown and the chat goes on."""
    if interactive:
        print("Interactive chat mode started. Type '/bye' to exit.", file=session.err)
    while True:
        try:
            text = read_message(read_line)
        except KeyboardInterrupt:
            print("\nUse Ctrl + d or /bye to exit.", file=session.err)
            continue
        if text is None:
            if interactive:
                print(file=session.out)
            return
        command = text.strip()
        if command.lower() in ("/bye", "/exit"):
            return
        if not command:
            continue
        if command.split()[0] in ("/?", "/help"):
            print(HELP, file=session.err)
            continue
        if command.startswith("/") and " " not in command:
            print(f"Unknown command '{command}'. Type /? for help", file=session.err)
            continue
        try:
            session.ask(text)
        except KeyboardInterrupt:
            continue
        except grpc.RpcError as error:
            print(f"berth: {describe_rpc_error(error, connection().target.host)}", file=session.err)


def run_detached(model: str, *, debug: bool, ignore_memory_check: bool, err: TextIO) -> res.Engine:
    """`run --detach`: load the model into an engine and return once it is ready."""
    runner = connection().stub(RunnerServiceStub)
    request = runner_pb.RunModelRequest(model=model)
    response = when_ready(
        lambda: runner.RunModel(request), model, out=err, ignore_memory_check=ignore_memory_check
    )
    if debug:
        engine = response.engine
        print(
            f"Model {engine.model or model} loaded successfully "
            f"({backend_name(engine.backend)}, pid {engine.pid})"
        )
    return response.engine
