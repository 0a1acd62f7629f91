"""The llama.cpp engine: llama-cpp-python's own OpenAI-compatible server for one GGUF model,
served by uvicorn on a unix socket. The runner starts one such child per loaded model:

    python -m berth.models.engines.llama_server --model PATH --socket PATH
        [--n-ctx N] [--embedding] [--chat-template-file PATH] [--model-alias NAME]

The model's own chat template (`tokenizer.chat_template` in the GGUF) formats chats unless
`--chat-template-file` gives another. Everything is logged to stdout/stderr, line by line.

Streamed completions are served here rather than by llama-cpp-python's routes, which start the
stream before the model has looked at the prompt (an error then cuts it with no reply) and
report no usage. Here the reply starts with the first chunk, so a prompt longer than the
context is an OpenAI 400 error as it is unstreamed, and `stream_options.include_usage` ends
the stream with a usage chunk as OpenAI's does.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import llama_cpp
import uvicorn
from fastapi import FastAPI, Request
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.server import app as server_app
from llama_cpp.server.errors import RouteErrorHandler
from llama_cpp.server.settings import ModelSettings, ServerSettings
from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

MAX_DEFAULT_CONTEXT = 4096
# ggml's log levels (ggml.h; llama-cpp-python's own logger still maps an older order): DEBUG
# lines, a few thousand per load, are dropped; CONT continues the previous line.
_GGML_DEBUG, _GGML_CONT = 1, 5
# How long a SIGTERM waits for the requests in flight before cancelling them.
GRACEFUL_SHUTDOWN_S = 2
PR_SET_PDEATHSIG = 1
# The request fields llama-cpp-python's routes leave out of the call to the model.
CHAT_EXCLUDE = frozenset({"n", "logit_bias_type", "user", "min_tokens"})
COMPLETION_EXCLUDE = CHAT_EXCLUDE | {"best_of"}
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llama_server", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the GGUF file (first shard)")
    parser.add_argument("--socket", type=Path, required=True, help="the unix socket to serve on")
    parser.add_argument(
        "--n-ctx", type=int, help="the context size (default: the model's, at most 4096)"
    )
    parser.add_argument("--embedding", action="store_true", help="serve embeddings")
    parser.add_argument("--chat-template-file", type=Path, help="a Jinja chat template to use")
    parser.add_argument("--model-alias", help="the model's name in /v1/models")
    return parser.parse_args(argv)


class LlamaLog:
    """llama.cpp's own log to stderr as it comes, without its DEBUG lines."""

    def __init__(self) -> None:
        self._last_level = 0
        self.muted = False
        # Kept on the instance: ctypes must not free the callback llama.cpp holds.
        self.callback = llama_cpp.llama_log_callback(self._write)

    def install(self) -> None:
        llama_cpp.llama_log_set(self.callback, ctypes.c_void_p(0))

    def _write(self, level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        if level != _GGML_CONT:
            self._last_level = level
        if self._last_level != _GGML_DEBUG and not self.muted:
            sys.stderr.write(text.decode(errors="replace"))
            sys.stderr.flush()


@dataclass(frozen=True)
class ModelFacts:
    """What the engine's settings depend on, from the GGUF's metadata."""

    architecture: str | None = None
    context_length: int | None = None
    pooling_type: str | None = None


def read_facts(model: Path, log: LlamaLog) -> ModelFacts:
    """The model's facts, read by loading only its vocabulary (quick, and quiet); none when
    llama.cpp cannot read it (the real load then logs why)."""
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    log.muted = True
    try:
        handle = llama_cpp.llama_model_load_from_file(str(model).encode(), params)
    finally:
        log.muted = False
    if not handle:
        return ModelFacts()
    try:
        architecture = _metadata(handle, "general.architecture")
        if not architecture:
            return ModelFacts()
        context = _metadata(handle, f"{architecture}.context_length")
        return ModelFacts(
            architecture=architecture,
            context_length=int(context) if context and context.isdigit() else None,
            pooling_type=_metadata(handle, f"{architecture}.pooling_type"),
        )
    finally:
        llama_cpp.llama_model_free(handle)


def _metadata(handle: llama_cpp.llama_model_p, key: str) -> str | None:
    buffer = ctypes.create_string_buffer(256)
    length = llama_cpp.llama_model_meta_val_str(handle, key.encode(), buffer, len(buffer))
    return buffer.value.decode() if length >= 0 else None


def context_size(asked: int | None, facts: ModelFacts) -> int:
    if asked:
        return asked
    return min(facts.context_length or MAX_DEFAULT_CONTEXT, MAX_DEFAULT_CONTEXT)


def kv_overrides(embedding: bool, facts: ModelFacts) -> list[str] | None:
    """A model without a pooling type of its own (a chat model) embeds one vector per token;
    the OpenAI API wants one per input: their mean."""
    if embedding and facts.architecture and facts.pooling_type is None:
        return [f"{facts.architecture}.pooling_type=int:{llama_cpp.LLAMA_POOLING_TYPE_MEAN}"]
    return None


def forget_settings_environment() -> None:
    """Drop the variables llama-cpp-python's settings would read (API_KEY, N_GPU_LAYERS,
    CONFIG_FILE...): the engine is configured by its arguments only."""
    names = {name.upper() for name in (*ModelSettings.model_fields, *ServerSettings.model_fields)}
    for key in list(os.environ):
        if key.upper() in names | {"CONFIG_FILE"}:
            del os.environ[key]


def build_app(args: argparse.Namespace, log: LlamaLog) -> FastAPI:
    """The server app with its model loaded."""
    forget_settings_environment()
    facts = read_facts(args.model, log)
    model = ModelSettings(
        model=str(args.model),
        model_alias=args.model_alias,
        n_ctx=context_size(args.n_ctx, facts),
        embedding=args.embedding,
        kv_overrides=kv_overrides(args.embedding, facts),
        # llama-cpp-python's server would keep every token's logits (n_ctx * n_vocab floats,
        # 0.8 GiB for SmolLM2 at 4096) for `logprobs` only, and lock the model in memory.
        logits_all=False,
        use_mlock=False,
        verbose=True,
    )
    # One request at a time: a new request waits for the running one instead of cutting it.
    server = ServerSettings(interrupt_requests=False)
    app = server_app.create_app(server_settings=server, model_settings=[model])
    # create_app loaded the model into the module's proxy; calling it returns that model.
    assert server_app._llama_proxy is not None
    llama = server_app._llama_proxy()
    if args.chat_template_file:
        use_chat_template(llama, args.chat_template_file)
    serve_streams(app, TokenCount.attach(llama))
    return app


def use_chat_template(llama: llama_cpp.Llama, path: Path) -> None:
    """Format chats with the Jinja template in this file instead of the model's own."""
    template = path.read_text()
    eos, bos = llama.token_eos(), llama.token_bos()
    llama.chat_handler = Jinja2ChatFormatter(
        template=template,
        eos_token=_token_text(llama, eos),
        bos_token=_token_text(llama, bos),
        stop_token_ids=[eos],
    ).to_chat_handler()
    print(f"llama_server: using the chat template in {path}", file=sys.stderr)


def _token_text(llama: llama_cpp.Llama, token: int) -> str:
    if token < 0:
        return ""
    return llama.detokenize([token], special=True).decode(errors="replace")


# --- streamed completions ---


class TokenCount:
    """The tokens of the completion being made, which llama-cpp-python's stream does not
    report. Counted where its completion loop takes them, `Llama.generate`: the prompt it is
    given, and each token it yields but an end-of-generation one, which the completion does
    not keep: the same counts as its unstreamed usage. The model serves one request at a time,
    so the counts are those of the request being served."""

    def __init__(self) -> None:
        self.prompt = 0
        self.completion = 0

    @classmethod
    def attach(cls, llama: llama_cpp.Llama) -> TokenCount:
        count = cls()
        generate = llama.generate
        vocab = llama_cpp.llama_model_get_vocab(llama.model)

        def counting(tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:
            count.prompt, count.completion = len(tokens), 0
            for token in generate(tokens, *args, **kwargs):
                if not llama_cpp.llama_vocab_is_eog(vocab, token):
                    count.completion += 1
                yield token

        llama.generate = counting  # type: ignore[method-assign]
        return count

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        }


def serve_streams(app: FastAPI, count: TokenCount) -> None:
    """Serve the streamed chat and text completions here; unstreamed ones stay the library's."""

    async def chat(request: Request, body: CreateChatCompletionRequest) -> Any:
        if not body.stream:
            return await server_app.create_chat_completion(request, body)
        kwargs = body.model_dump(exclude=CHAT_EXCLUDE)
        call = llama_cpp.Llama.create_chat_completion
        return CompletionStream(body, call, kwargs, await _include_usage(request), count)

    async def completion(request: Request, body: CreateCompletionRequest) -> Any:
        if isinstance(body.prompt, list):
            if len(body.prompt) > 1:
                return _error_reply(400, "only one prompt at a time is supported", "prompt")
            body.prompt = body.prompt[0] if body.prompt else ""
        if not body.stream:
            return await server_app.create_completion(request, body)
        kwargs = body.model_dump(exclude=COMPLETION_EXCLUDE)
        call = llama_cpp.Llama.__call__
        return CompletionStream(body, call, kwargs, await _include_usage(request), count)

    # First, so that they match before the library's routes for the same paths.
    app.router.routes[:0] = [
        RouteErrorHandler(path, endpoint, methods=["POST"], response_model=None)
        for path, endpoint in (("/v1/chat/completions", chat), ("/v1/completions", completion))
    ]


async def _include_usage(request: Request) -> bool:
    """`stream_options.include_usage`, which llama-cpp-python's request models drop."""
    options = (await request.json()).get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class CompletionStream(Response):
    """One streamed completion. The reply starts with the first chunk: until then an error is
    an error reply (llama-cpp-python's, in OpenAI's shape); after, an error event ends the
    stream. A client that goes away stops generation after the token being made."""

    media_type = "text/event-stream"

    def __init__(
        self,
        body: CreateChatCompletionRequest | CreateCompletionRequest,
        call: Callable[..., Any],
        kwargs: dict[str, Any],
        include_usage: bool,
        count: TokenCount,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(STREAM_HEADERS)
        self._body, self._call, self._kwargs = body, call, kwargs
        self._include_usage = include_usage
        self._count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stop_when_gone() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                print(
                    f"llama_server: Disconnected from client {scope.get('client')}", file=sys.stderr
                )
                group.cancel_scope.cancel()

            group.start_soon(stop_when_gone)
            await self._answer(scope, receive, send)
            group.cancel_scope.cancel()

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The same lock as the library's routes: one request at a time, the others wait.
        async with contextlib.asynccontextmanager(server_app.get_llama_proxy)() as proxy:
            chunks: Iterator[dict[str, Any]] | None = None
            try:
                try:
                    llama = server_app.prepare_request_resources(
                        self._body, proxy, self._body.model, self._kwargs
                    )
                    chunks = await run_in_threadpool(self._call, llama, **self._kwargs)
                    first = await run_in_threadpool(next, chunks, None)
                except Exception as error:
                    status, payload = _error_payload(error, self._body)
                    await JSONResponse({"error": payload}, status)(scope, receive, send)
                    return
                start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                await send(start)
                await self._stream(send, first, chunks)
            finally:
                _close(chunks)

    async def _stream(
        self, send: Send, first: dict[str, Any] | None, chunks: Iterator[dict[str, Any]]
    ) -> None:
        last = first
        try:
            if first is not None:
                await _send_event(send, first)
            async for chunk in iterate_in_threadpool(chunks):
                await _send_event(send, chunk)
                last = chunk
        except Exception as error:
            _, payload = _error_payload(error, self._body)
            await _send_event(send, {"error": payload})
        else:
            if self._include_usage and last is not None:
                await _send_event(send, _usage_chunk(last, self._count))
            await _send_event(send, "[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _error_payload(
    error: Exception, body: CreateChatCompletionRequest | CreateCompletionRequest
) -> tuple[int, dict[str, Any]]:
    """The reply llama-cpp-python's routes give for an error: a prompt longer than the context
    is a 400 `context_length_exceeded`, anything else a 500."""
    for pattern, formatter in RouteErrorHandler.pattern_and_formatters.items():
        match = pattern.search(str(error))
        if match is not None:
            status, payload = formatter(body, match)
            return status, dict(payload)
    traceback.print_exception(error, file=sys.stderr)
    return 500, _openai_error(str(error), "internal_server_error")


def _error_reply(status: int, message: str, param: str | None) -> JSONResponse:
    return JSONResponse({"error": _openai_error(message, "invalid_request_error", param)}, status)


def _openai_error(message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": kind, "param": param, "code": None}


def _usage_chunk(last: dict[str, Any], count: TokenCount) -> dict[str, Any]:
    """OpenAI's last chunk of a stream that asked for usage: no choices, the usage."""
    fields = ("id", "object", "created", "model")
    return {
        **{name: last[name] for name in fields if name in last},
        "choices": [],
        "usage": count.usage(),
    }


async def _send_event(send: Send, data: dict[str, Any] | str) -> None:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    event = f"data: {text}\n\n".encode()
    await send({"type": "http.response.body", "body": event, "more_body": True})


def _close(chunks: Iterator[dict[str, Any]] | None) -> None:
    """Stop generation: closing the generator ends llama.cpp's completion loop."""
    if isinstance(chunks, Generator):
        chunks.close()


def listen(path: Path) -> socket.socket:
    """The unix socket, bound before uvicorn starts so that only this user can connect."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    return sock


def serve(app: FastAPI, path: Path) -> None:
    config = uvicorn.Config(app, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, log_level="info")
    server = uvicorn.Server(config)

    def exit_soon(*_: object) -> None:
        server.should_exit = True

    # Until uvicorn takes SIGTERM over, it makes the server exit as soon as it has started;
    # uvicorn raises the SIGTERM it handled again once it has shut down, which is then harmless.
    signal.signal(signal.SIGTERM, exit_soon)
    sock = listen(path)
    print(f"llama_server: listening on unix socket {path}", file=sys.stderr)
    try:
        server.run(sockets=[sock])
    finally:
        path.unlink(missing_ok=True)


def die_with_parent() -> None:
    """SIGTERM when the process that started this engine dies, however it dies: an engine
    in its own session would otherwise outlive a crashed runner."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    die_with_parent()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    args = parse_args(argv)
    log = LlamaLog()
    log.install()
    try:
        app = build_app(args, log)
    except (OSError, ValueError) as error:
        print(f"llama_server: cannot load {args.model}: {error}", file=sys.stderr)
        return 1
    serve(app, args.socket)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: that would wait for a generation still running in a worker thread, and
    # tear the model down while llama.cpp can still call back into Python to log.
    os._exit(code)
