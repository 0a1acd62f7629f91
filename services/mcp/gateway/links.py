"""Links to MCP servers: the byte pipes a gateway speaks MCP over, one per connection.

A stdio link is a child process in its own process group (so stopping it stops whatever it
started, npx's node included) that also dies with berth-mcpd (PR_SET_PDEATHSIG, set by
util-linux's `setpriv` just before it becomes the server). It is not set from a Python
`preexec_fn`: that makes Python fork() the daemon and run fork handlers in the child, and
gRPC's handlers then crash it (SIGABRT, SIGSEGV) before it ever runs the server. Without
one, Python starts the child with vfork() and exec(), which runs no fork handlers.
HTTP links are the MCP SDK's streamable HTTP and SSE client transports, pumped into the
same interface.

A link may carry secrets (in a child's environment, in headers): they never reach its
failure text, where a server's own stderr would otherwise repeat them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import httpx2
import structlog
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter

from berth.mcp.gateway.messages import Message

log = structlog.get_logger("berth.mcp.links")

# Tool results (images, files) can make long lines.
LINE_LIMIT = 64 << 20
STDERR_TAIL_LINES = 20
CLOSE_GRACE_S = 2.0
# Runs its arguments with PR_SET_PDEATHSIG set (SIGTERM when berth-mcpd exits).
SETPRIV = shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin")


class LinkError(Exception):
    """The server could not be started or reached."""


class Link(Protocol):
    """One connection to one MCP server."""

    pid: int  # the process of a stdio server; 0 for a remote one
    # When (epoch seconds) a restart would start the server with a fresher OAuth token than
    # the one in its environment; None: never (a remote server's requests carry a fresh one).
    renew_at: float | None

    async def send(self, message: Message) -> None: ...

    async def receive(self) -> Message | None:
        """The next message; None once the server is gone."""
        ...

    def failure(self) -> str:
        """Why the link ended, for people (exit status, last lines of stderr)."""
        ...

    async def close(self) -> None: ...


def dying_with_parent(argv: list[str]) -> list[str]:
    """`argv`, run so that it gets SIGTERM when this process ends (where setpriv exists)."""
    if SETPRIV is None:
        return argv
    return [SETPRIV, "--pdeathsig", "TERM", "--", *argv]


class StdioLink:
    """A server process spoken to over newline-delimited JSON on stdin/stdout."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        redact: Collection[str] = (),
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._process = process
        self.pid = process.pid
        self.renew_at: float | None = None
        self._redact = [value for value in redact if value]
        self._on_close = on_close
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        self._send_lock = asyncio.Lock()

    @classmethod
    async def start(
        cls,
        command: str,
        args: list[str],
        env: dict[str, str],
        cwd: str | None,
        redact: Collection[str] = (),
        on_close: Callable[[], None] | None = None,
    ) -> StdioLink:
        """Starts the server; `redact` are values kept out of its failure text, `on_close`
        runs once it has stopped (or failed to start)."""
        program = shutil.which(command, path=env.get("PATH"))
        if program is None:
            if on_close:
                on_close()
            raise LinkError(f"command {command!r} not found on PATH")
        if SETPRIV is None:
            log.warning("setpriv not found: mcp servers outlive a killed berth-mcpd")
        try:
            process = await asyncio.create_subprocess_exec(
                *dying_with_parent([program, *args]),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
                limit=LINE_LIMIT,
            )
        except OSError as error:
            if on_close:
                on_close()
            raise LinkError(f"cannot start {command!r}: {error.strerror or error}") from None
        return cls(process, redact, on_close)

    async def send(self, message: Message) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        line = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        async with self._send_lock:
            try:
                stdin.write(line)
                await stdin.drain()
            except (ConnectionError, RuntimeError) as error:
                raise LinkError(f"the server's stdin is closed: {error}") from None

    async def receive(self) -> Message | None:
        stdout = self._process.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                self._stderr.append(f"berth: an output line longer than {LINE_LIMIT} bytes")
                return None
            if not line:
                await self._settle()
                return None
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                log.debug("mcp server wrote a non-JSON line", pid=self.pid, line=line[:200])
                continue
            if isinstance(message, dict):
                return message

    async def _settle(self) -> None:
        """At end of output: lets the exit status and the last stderr lines arrive, so that
        `failure` says how the server ended."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._process.wait(), CLOSE_GRACE_S)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), CLOSE_GRACE_S)

    def failure(self) -> str:
        code = self._process.returncode
        status = "is not answering" if code is None else f"exited with status {code}"
        if code is not None and code < 0:
            status = f"was killed by signal {-code}"
        tail = " | ".join(line for line in self._stderr if line)
        return f"{status}: {tail}" if tail else status

    async def close(self) -> None:
        process = self._process
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), CLOSE_GRACE_S)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            self._signal_group(sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), CLOSE_GRACE_S)
            if process.returncode is not None:
                break
        # Whatever the server started and left behind in its group goes too.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stderr_task, CLOSE_GRACE_S)
        if self._on_close:
            on_close, self._on_close = self._on_close, None
            on_close()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def _drain_stderr(self) -> None:
        stderr = self._process.stderr
        assert stderr is not None
        with contextlib.suppress(ValueError, asyncio.LimitOverrunError):
            while line := await stderr.readline():
                self._stderr.append(self._redacted(line.decode(errors="replace").rstrip()))

    def _redacted(self, text: str) -> str:
        for value in self._redact:
            text = text.replace(value, "[secret]")
        return text


Streams = AbstractAsyncContextManager[Any]


class HttpLink:
    """A remote server over the SDK's streamable HTTP or SSE client transport."""

    pid = 0
    renew_at = None

    def __init__(self, open_streams: Callable[[], Streams], url: str) -> None:
        self._open_streams = open_streams
        self._url = url
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._write: Any = None
        self._ready = asyncio.Event()
        self._problem = ""
        self._task = asyncio.create_task(self._run())

    @classmethod
    async def connect(
        cls, url: str, transport: str, headers: dict[str, str], auth: httpx2.Auth | None = None
    ) -> HttpLink:
        """Connects; `auth` (berth's OAuth client) signs every request when given."""
        if transport == "sse":

            def open_streams() -> Streams:
                return sse_client(url, headers=headers, auth=auth)
        else:

            def open_streams() -> Streams:
                client = httpx2.AsyncClient(
                    headers=headers, auth=auth, timeout=httpx2.Timeout(30, read=300)
                )
                return _owning(client, streamable_http_client(url, http_client=client))

        link = cls(open_streams, url)
        await link._ready.wait()
        if link._write is None:
            raise LinkError(f"cannot reach {url}: {link._problem}")
        return link

    async def _run(self) -> None:
        try:
            async with self._open_streams() as (read, write):
                self._write = write
                self._ready.set()
                async for item in read:
                    if isinstance(item, Exception):
                        log.debug("remote mcp server sent something unreadable", error=str(item))
                        continue
                    self._inbox.put_nowait(_as_dict(item))
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the SDK raises exception groups
            self._problem = _first_cause(error)
        finally:
            self._write = None
            self._ready.set()
            self._inbox.put_nowait(None)

    async def send(self, message: Message) -> None:
        write = self._write
        if write is None:
            raise LinkError(f"the connection to {self._url} is closed")
        await write.send(SessionMessage(jsonrpc_message_adapter.validate_python(message)))

    async def receive(self) -> Message | None:
        return await self._inbox.get()

    def failure(self) -> str:
        return f"the connection to {self._url} ended" + (
            f": {self._problem}" if self._problem else ""
        )

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


@contextlib.asynccontextmanager
async def _owning(client: httpx2.AsyncClient, streams: Streams) -> AsyncIterator[Any]:
    async with client, streams as opened:
        yield opened


def _as_dict(item: SessionMessage) -> Message:
    return item.message.model_dump(by_alias=True, mode="json", exclude_unset=True)


def _first_cause(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return str(error) or type(error).__name__
