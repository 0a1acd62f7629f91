"""The daemons behind the gateway and the channels that reach them.

HostRegistry answers which network agent serves a host named in `x-berth-host`: this
host's own, the static `--hosts` entries, and, with a host directory (the cluster's Redis,
see host_directory.py), every live host the network agents register there.

With upstream TLS (ClientTls), TCP daemon addresses are dialed over TLS (mTLS with a client
certificate); when its files change every such backend gets a new channel, and the old one
is closed once the calls already on it are done, as for a host that left.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import grpc.aio
import structlog

from berth.common.addresses import parse_address
from berth.common.errors import NotFound
from berth.common.tls import ClientTls

log = structlog.get_logger("berth.gateway.hosts")

LOCAL_ALIASES = frozenset({"", "local", "localhost"})
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
REFRESH_INTERVAL_S = 1.0
MAX_BACKOFF_S = 5.0
# How long calls already on their way to a host that left the directory (or on a channel
# whose TLS credentials were replaced) may go on.
RETIRE_GRACE_S = 30.0


@dataclass(eq=False)
class Backend:
    """One daemon: a channel and the raw-bytes callables for its methods, made once each."""

    domain: str
    host: str
    address: str
    tls: ClientTls | None = None
    channel: grpc.aio.Channel = field(init=False)
    _callables: dict[str, Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.channel = self._open()

    @property
    def secure(self) -> bool:
        """Whether the channel uses TLS: with upstream TLS, to a TCP address."""
        return self.tls is not None and not parse_address(self.address).is_unix

    def hint(self) -> str:
        """What to check when the daemon cannot be reached, beyond grpc's own words."""
        if not self.secure:
            return ""
        return (
            " (dialed with TLS: check that the daemon's certificate is signed by the gateway's "
            "--upstream-tls-ca and that its --tls-client-ca signed the gateway's "
            "--upstream-tls-cert)"
        )

    def _open(self) -> grpc.aio.Channel:
        target = parse_address(self.address).target
        if self.tls is None or not self.secure:
            return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        options = [*CHANNEL_OPTIONS, *self.tls.options()]
        return grpc.aio.secure_channel(target, self.tls.credentials(), options=options)

    def renew(self) -> grpc.aio.Channel:
        """Switch to a new channel with the current credentials; returns the old one, which
        the caller closes (calls already sent keep using it until then)."""
        old = self.channel
        self.channel = self._open()
        self._callables = {}
        return old

    def callable(self, path: str, request_streaming: bool, response_streaming: bool) -> Any:
        found = self._callables.get(path)
        if found is None:
            kind = (
                ("stream" if request_streaming else "unary")
                + "_"
                + ("stream" if response_streaming else "unary")
            )
            # No serializers: requests and responses stay bytes (nothing is decoded).
            found = getattr(self.channel, kind)(path, _registered_method=True)
            self._callables[path] = found
        return found

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; calls in flight get `grace` seconds before they are cancelled."""
        await self.channel.close(grace)


class HostDirectoryUnavailable(Exception):
    """The host directory cannot be read now (its message says why, without secrets)."""


class HostDirectory(Protocol):
    """Where live hosts are listed: their names and their agents' gRPC addresses."""

    async def read(self) -> dict[str, str]:
        """Live hosts' agent addresses (ones parse_address takes) by host name.

        Raises HostDirectoryUnavailable when the directory cannot be read.
        """
        ...

    async def close(self) -> None: ...


class HostRegistry:
    """Network agents by host name; the local one answers for '', 'local' and its name.

    Static entries win over the directory's on a name clash, and the directory never
    replaces the local agent. Hosts the directory no longer lists lose their channel.
    """

    def __init__(
        self,
        local_name: str,
        local: Backend,
        static: dict[str, Backend],
        directory: HostDirectory | None = None,
        refresh_interval: float = REFRESH_INTERVAL_S,
        tls: ClientTls | None = None,
    ) -> None:
        self.local_name = local_name
        self.tls = tls
        self.local = local
        self.static = static
        self.directory = directory
        self.refresh_interval = refresh_interval
        self.live: dict[str, Backend] = {}
        self.outage: str | None = None  # why the directory is unreachable, while it is
        self._reading: asyncio.Future[bool] | None = None
        self._retiring: dict[grpc.aio.Channel, asyncio.Task[None]] = {}

    @property
    def remote(self) -> dict[str, Backend]:
        """Other hosts' agents, sorted by name."""
        merged = {**self.live, **self.static}
        return {name: merged[name] for name in sorted(merged)}

    def all(self) -> list[Backend]:
        return [self.local, *self.remote.values()]

    def find(self, host: str) -> Backend | None:
        if self._is_local(host):
            return self.local
        return self.static.get(host) or self.live.get(host)

    async def agent(self, host: str) -> Backend:
        """The agent of `host`; an unknown name makes the directory be read once first."""
        found = self.find(host)
        if found is None and self.directory is not None and self.outage is None:
            await self.refresh()
            found = self.find(host)
        if found is None:
            raise self._not_found(host)
        return found

    async def load(self) -> None:
        """The first read, before the gateway serves; watch() retries an unreachable one."""
        await self.refresh()

    async def refresh(self) -> bool:
        """Read the directory once, joining a read in flight; False when it is unreachable."""
        if self.directory is None:
            return True
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read(self.directory))
        return await asyncio.shield(self._reading)

    async def watch(self) -> None:
        """Refresh every interval until cancelled, backing off while the directory is down."""
        delay = self.refresh_interval
        while True:
            await asyncio.sleep(delay)
            delay = next_delay(delay, await self.refresh(), self.refresh_interval)

    async def close(self) -> None:
        """Close every remote agent's channel and the directory (not the local agent)."""
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        retiring = list(self._retiring)
        for task in self._retiring.values():
            task.cancel()
        await asyncio.gather(*self._retiring.values(), return_exceptions=True)
        for channel in retiring:
            await channel.close()
        for backend in self.remote.values():
            await backend.close()
        self.live = {}
        if self.directory is not None:
            await self.directory.close()

    def _is_local(self, host: str) -> bool:
        return host in LOCAL_ALIASES or host == self.local_name

    def _not_found(self, host: str) -> NotFound:
        known = ", ".join([self.local_name, *self.remote])
        stale = f"; the host directory is unreachable ({self.outage})" if self.outage else ""
        return NotFound(
            f"no host named {host!r} (known hosts: {known}){stale}",
            reason="HOST_NOT_FOUND",
            metadata={"host": host},
        )

    async def _read(self, directory: HostDirectory) -> bool:
        try:
            found = await directory.read()
        except HostDirectoryUnavailable as error:
            if self.outage is None:
                log.warning(
                    "host directory unreachable; keeping the last known hosts", error=str(error)
                )
            self.outage = str(error)
            return False
        if self.outage is not None:
            log.info("host directory reachable again", hosts=len(found))
            self.outage = None
        await self._apply(found)
        return True

    async def _apply(self, found: dict[str, str]) -> None:
        """Make the live hosts what the directory lists: keep, add, replace, close."""
        wanted = {n: a for n, a in found.items() if not self._is_local(n) and n not in self.static}
        kept = {n: b for n, b in self.live.items() if wanted.get(n) == b.address}
        gone = [b for n, b in self.live.items() if n not in kept]
        added = {n: Backend("network", n, a, self.tls) for n, a in wanted.items() if n not in kept}
        self.live = {**kept, **added}
        for backend in gone:
            log.info("host left", host=backend.host, address=backend.address)
            self._retire(backend)
        for backend in added.values():
            log.info("host joined", host=backend.host, address=backend.address)

    def _retire(self, backend: Backend) -> None:
        """Close a departed host's channel once the calls already sent to it are done.

        New calls cannot reach it (it is out of `live`), but one routed a moment before
        the refresh would otherwise be cancelled under its caller.
        """
        self._retire_channel(backend.channel)

    def _retire_channel(self, channel: grpc.aio.Channel) -> None:
        task = asyncio.create_task(channel.close(RETIRE_GRACE_S))
        self._retiring[channel] = task
        task.add_done_callback(lambda _: self._retiring.pop(channel, None))

    def renew_channels(self, others: list[Backend]) -> int:
        """New TLS channels for these backends and every agent known; the old ones retire.
        Returns how many were renewed."""
        unique = {id(b): b for b in [*others, *self.all()]}
        renewed = [b for b in unique.values() if b.secure]
        for backend in renewed:
            self._retire_channel(backend.renew())
        return len(renewed)

    async def follow_tls(self, others: list[Backend]) -> None:
        """Renew the TLS channels whenever the upstream TLS files change, until cancelled."""
        if self.tls is None:
            return
        while True:
            await asyncio.sleep(self.refresh_interval)
            if self.tls.refresh():
                count = self.renew_channels(others)
                log.info("upstream tls files changed: new channels", backends=count)


def next_delay(delay: float, reachable: bool, interval: float) -> float:
    """The pause before the next read: the interval, doubled after each failed read (capped)."""
    return interval if reachable else min(delay * 2, max(interval, MAX_BACKOFF_S))
