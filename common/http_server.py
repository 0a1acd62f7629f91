"""An ASGI app served by uvicorn inside the daemon's own event loop.

The socket is bound here, before uvicorn starts, so `start` reports the port really bound
(port 0 picks a free one) and a port in use is an OSError to the caller rather than uvicorn's
`sys.exit`. uvicorn installs no signal handlers: the daemon owns SIGTERM and SIGINT.
With an ssl.SSLContext (common/tls.py makes one that follows its files) it serves HTTPS.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp


class _EmbeddedServer(uvicorn.Server):
    """uvicorn.Server without signal handling, telling when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class HttpServer:
    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        grace_s: float = 2.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.tls = tls
        # Requests still running after this are cancelled (a stream being generated).
        self.grace_s = grace_s
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> tuple[str, int]:
        """Listen and serve in the background; (host, port) actually bound."""
        listener = _bind(self.host, self.port)
        config = uvicorn.Config(
            self.app,
            log_config=None,
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=self.grace_s,
            ssl_context_factory=self._ssl_context if self.tls is not None else None,
        )
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(sockets=[listener]), name="http-server")
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not server.listening.is_set():
            listening.cancel()
            listener.close()
            task.result()  # uvicorn's error, if any
            raise RuntimeError("the HTTP server stopped while starting")
        self._server, self._task = server, task
        host, port = listener.getsockname()[:2]
        return host, port

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def _ssl_context(self, _config: uvicorn.Config, _default: object) -> ssl.SSLContext:
        assert self.tls is not None
        return self.tls

    async def stop(self) -> None:
        """Stop accepting, let requests finish for `grace_s`, then cancel what is left."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._server = self._task = None
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), self.grace_s + 3.0)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on such sockets; without it a token
    # written after the response headers waits for the client's delayed ACK (~40 ms).
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener
