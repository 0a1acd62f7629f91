"""The llama.cpp engine: llama-cpp-python's own OpenAI-compatible server for one GGUF model,
served by uvicorn on a unix socket. The runner starts one such child per loaded model:

    python -m berth.models.engines.llama_server --model PATH --socket PATH
        [--n-ctx N] [--embedding] [--chat-template-file PATH] [--model-alias NAME]

The model's own chat template (`tokenizer.chat_template` in the GGUF) formats chats unless
`--chat-template-file` gives another. Everything is logged to stdout/stderr, line by line.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import uvicorn
from fastapi import FastAPI
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.server import app as server_app
from llama_cpp.server.settings import ModelSettings, ServerSettings

MAX_DEFAULT_CONTEXT = 4096
# ggml's log levels (ggml.h; llama-cpp-python's own logger still maps an older order): DEBUG
# lines, a few thousand per load, are dropped; CONT continues the previous line.
_GGML_DEBUG, _GGML_CONT = 1, 5
# How long a SIGTERM waits for the requests in flight before cancelling them.
GRACEFUL_SHUTDOWN_S = 2
PR_SET_PDEATHSIG = 1


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
    if args.chat_template_file:
        use_chat_template(args.chat_template_file)
    return app


def use_chat_template(path: Path) -> None:
    """Format chats with the Jinja template in this file instead of the model's own."""
    template = path.read_text()
    # create_app loaded the model into the module's proxy; calling it returns that model.
    assert server_app._llama_proxy is not None
    llama = server_app._llama_proxy()
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
