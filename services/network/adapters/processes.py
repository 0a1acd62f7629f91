"""Commands run inside a sandbox, their output streamed as it comes (`sandbox exec`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

CHUNK = 64 * 1024
HOST_NETNS = "host"  # a sandbox on the host network: the agent's own namespace
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _unrunnable(command: str, search_path: str) -> tuple[int, str] | None:
    """127 or 126 with a message when `command` cannot be run. Sandboxes share the
    agent's filesystem, so looking it up here is looking it up there."""
    found = command if "/" in command else shutil.which(command, path=search_path)
    if found is None or not os.path.exists(found):
        return 127, f"{command}: executable file not found in $PATH\n"
    if not os.access(found, os.X_OK) or os.path.isdir(found):
        return 126, f"{command}: permission denied\n"
    return None


def in_netns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """Named namespaces go through `ip netns exec`, which also applies
    /etc/netns/NAME/resolv.conf; others (a /proc/PID/ns/net path) through nsenter."""
    if netns == HOST_NETNS:  # children inherit the agent's namespace
        return list(argv)
    path = Path(netns)
    if path.parent == Path("/run/netns"):
        return ["ip", "netns", "exec", path.name, *argv]
    return ["nsenter", f"--net={netns}", "--", *argv]


async def stream(
    netns: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    workdir: str | None,
    stdin: bytes,
) -> AsyncIterator[tuple[str, bytes] | int]:
    """Yields ("stdout"|"stderr", chunk) while the command runs, then its exit code
    (128+N when killed by signal N; 127 when the command is not found, 126 when it cannot
    be run, as shells and Docker say). Cancelling the iteration kills the command."""
    problem = _unrunnable(argv[0], env.get("PATH", DEFAULT_PATH))
    if problem is not None:
        code, message = problem
        yield "stderr", message.encode()
        yield code
        return
    process = await asyncio.create_subprocess_exec(
        *in_netns_argv(netns, argv),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": DEFAULT_PATH, **env},
        cwd=workdir or None,
    )
    queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()

    async def pump(name: str, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(CHUNK):
            await queue.put((name, chunk))
        await queue.put(None)

    assert process.stdin and process.stdout and process.stderr
    pumps = [
        asyncio.create_task(pump("stdout", process.stdout)),
        asyncio.create_task(pump("stderr", process.stderr)),
    ]
    try:
        process.stdin.write(stdin)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await process.stdin.drain()
        process.stdin.close()
        open_pipes = 2
        while open_pipes:
            item = await queue.get()
            if item is None:
                open_pipes -= 1
            else:
                yield item
        code = await process.wait()
        yield 128 - code if code < 0 else code
    finally:
        for task in pumps:
            task.cancel()
        if process.returncode is None:
            process.kill()
            await process.wait()
