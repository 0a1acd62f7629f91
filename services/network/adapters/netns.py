"""Network namespaces: create and remove named ones, run commands and set sysctls inside any.

A namespace is given by name (a bind mount under /run/netns, like `ip netns`) or by path
(/proc/PID/ns/net, or any file that refers to a network namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from pyroute2 import netns as pyroute2_netns

NETNS_DIR = Path("/run/netns")
NETLINK_ROUTE = 0
PROC_SYS = Path("/proc/sys")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

T = TypeVar("T")


class SysctlError(RuntimeError):
    """A sysctl could not be set inside a namespace."""


def netns_path(netns: str | Path) -> Path:
    """The file of a namespace given by name (under NETNS_DIR) or by path."""
    if isinstance(netns, Path) or "/" in netns:
        return Path(netns)
    return _named_path(netns)


def _named_path(name: str) -> Path:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid network namespace name {name!r}")
    return NETNS_DIR / name


async def create_netns(name: str) -> Path:
    """Creates the named namespace, like `ip netns add`; FileExistsError if it exists.

    `ip netns add` does it, not pyroute2: pyroute2 forks a child that runs Python, which
    gRPC's fork handling aborts in a process serving gRPC; fork+exec is safe.
    """
    path = _named_path(name)
    if path.exists():
        raise FileExistsError(f"network namespace {name!r} already exists")
    process = await asyncio.create_subprocess_exec(
        system_tool("ip"),
        "netns",
        "add",
        name,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, error = await process.communicate()
    if process.returncode != 0:
        await asyncio.to_thread(_remove, path)
        raise OSError(f"cannot create network namespace {name!r}: {error.decode().strip()}")
    return path


async def netlink_socket_in(path: Path) -> int:
    """The file descriptor of a netlink route socket living in the namespace at `path`.

    A socket stays in the namespace it was made in; making it from a thread that entered
    the namespace avoids pyroute2's forking helper (see create_netns).
    """

    def make() -> int:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE).detach()

    return await in_netns_thread(path, make)


async def remove_netns(name: str) -> None:
    """Removes the named namespace, like `ip netns del`; nothing happens if it is missing."""
    await asyncio.to_thread(_remove, _named_path(name))


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        pyroute2_netns.remove(str(path))


def netns_exists(name: str) -> bool:
    return _named_path(name).exists()


def list_netns(prefix: str) -> list[str]:
    """The named namespaces whose names start with `prefix`, sorted."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if name.startswith(prefix))


def system_tool(name: str) -> str:
    """The absolute path of a system program (nsenter, ip, ...)."""
    found = shutil.which(name, path=SYSTEM_PATH)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (looked in {SYSTEM_PATH})")
    return found


async def run_in_netns(
    netns: str | Path,
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 (the interface callers use)
) -> tuple[int, bytes, bytes]:
    """Runs `argv` inside the namespace; returns (exit code, stdout, stderr).

    The exit code is negative (-N) when the command was killed by signal N. On timeout the
    command is killed and TimeoutError raised.
    """
    path = netns_path(netns)
    if not path.exists():
        raise FileNotFoundError(f"network namespace {str(netns)!r} does not exist ({path})")
    process = await asyncio.create_subprocess_exec(
        system_tool("nsenter"),
        f"--net={path}",
        "--",
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stdout, stderr


async def write_sysctls(netns: str | Path, sysctls: Mapping[str, str]) -> None:
    """Sets each sysctl (dotted or slashed key, as `sysctl -w` takes) inside the namespace.

    Raises SysctlError naming the key when one cannot be set; the ones before it stay set.
    """
    if not sysctls:
        return
    files = {key: _sysctl_file(key) for key in sysctls}
    path = netns_path(netns)

    def write_all() -> None:
        for key, value in sysctls.items():
            try:
                files[key].write_text(value)
            except OSError as error:
                reason = (
                    "no such sysctl"
                    if error.errno == errno.ENOENT
                    else error.strerror or str(error)
                )
                raise SysctlError(
                    f"cannot set sysctl {key}={value!r} in network namespace {path}: {reason}"
                ) from error

    await in_netns_thread(path, write_all)


def _sysctl_file(key: str) -> Path:
    parts = key.split("/") if "/" in key else key.split(".")
    if not key or any(part in ("", ".", "..") for part in parts):
        raise SysctlError(f"invalid sysctl name {key!r}")
    return PROC_SYS.joinpath(*parts)


async def in_netns_thread(path: Path, work: Callable[[], T]) -> T:
    """Runs `work` in a new thread that has entered the namespace.

    setns() moves only the calling thread, and this one ends with `work`, so no thread of
    the process is ever left in another namespace (a pooled thread would be).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                pyroute2_netns.setns(fd, flags=0)
            finally:
                os.close(fd)
            result = work()
        except BaseException as error:
            loop.call_soon_threadsafe(settle, None, error)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=f"netns {path}", daemon=True).start()
    return await done
