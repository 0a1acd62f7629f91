"""An agent's link to the cluster: registration and heartbeat, change notifications, the
sweeping of dead hosts, and resynchronisation.

Redis pub/sub delivers at most once, so notifications only make things converge faster:
the full state is read again on every (re)connection and every `resync_interval`, and
whoever handles a notification reads the current state rather than trusting the message.
While Redis is unreachable, `connected` is False, `require()` fails fast, and the link
retries with a growing, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from berth.common.addresses import describe_url
from berth.network.adapters.cluster_store import CHANNEL, ClusterStore, ClusterUnavailable
from berth.network.domain.model import now
from berth.network.domain.overlay import HostRecord

log = structlog.get_logger("berth.network.cluster")

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0
REJOIN_MARGIN_S = 1.0


@dataclass(frozen=True)
class Change:
    kind: str  # network | endpoints
    network_id: str
    host: str


@dataclass(frozen=True)
class Timing:
    heartbeat_interval: float = 1.0
    host_ttl: float = 5.0
    resync_interval: float = 10.0


OnChange = Callable[[Change], Awaitable[None]]
OnResync = Callable[[], Awaitable[None]]


class ClusterLink:
    def __init__(
        self,
        store: ClusterStore,
        *,
        host_name: str,
        underlay_address: str,
        agent_address: str,
        timing: Timing,
        on_change: OnChange | None = None,
        on_resync: OnResync | None = None,
    ) -> None:
        self.store = store
        self.host_name = host_name
        self.underlay_address = underlay_address
        self.agent_address = agent_address
        self.timing = timing
        self.on_change: OnChange = on_change or _nothing_changed
        self.on_resync: OnResync = on_resync or _nothing
        self.connected = False
        self.hosts: dict[str, HostRecord] = {}
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[tuple[str, str], Change] = {}
        self._sweep_from = 0.0  # loop time before which no host is swept
        self._stopped = False
        self._wake = asyncio.Event()

    def require(self) -> None:
        if not self.connected:
            raise ClusterUnavailable(f"not connected to {describe_url(self.store.url)}")

    def record(self) -> HostRecord:
        return HostRecord(self.host_name, self.underlay_address, self.agent_address, now())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster-link")

    async def stop(self) -> None:
        """Cancel until the link is down: on Python 3.11, a cancellation that lands as a
        Redis command completes can be lost (asyncio.wait_for inside redis-py), so the
        loops also check `_stopped`."""
        self._stopped = True
        self._wake.set()
        if self._task is not None:
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait([self._task], timeout=1.0)
        await self.store.close()

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                await self._session()
            except ClusterUnavailable as error:
                if self.connected:
                    log.warning("lost the cluster store", error=error.message)
            except Exception:
                log.exception("cluster link failed")
            if self._stopped:  # redis-py may turn stop()'s cancellation into an error
                return
            if self.connected:  # a session that worked: start the backoff over
                backoff = BACKOFF_FIRST_S
            self.connected = False
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _session(self) -> None:
        """One connected period: subscribe first (so nothing after the resync is
        missed), register, resync, then serve until Redis fails."""
        pubsub = self.store.pubsub()
        try:
            try:
                await pubsub.subscribe(CHANNEL)
            except Exception as error:
                raise ClusterUnavailable(str(error) or type(error).__name__) from error
            await self._beat()
            self._sweep_from = asyncio.get_running_loop().time() + self._rejoin_grace()
            await self._sweep()
            self.connected = True
            log.info("joined the cluster", store=describe_url(self.store.url), host=self.host_name)
            await self.on_resync()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._listen(pubsub))
                group.create_task(self._heartbeats())
                group.create_task(self._resyncs())
                group.create_task(self._dispatch())
        except* ClusterUnavailable as errors:
            raise errors.exceptions[0] from None
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _rejoin_grace(self) -> float:
        """Long enough for a live host to notice Redis is back and beat again."""
        return BACKOFF_MAX_S * 1.5 + self.timing.heartbeat_interval + REJOIN_MARGIN_S

    async def _listen(self, pubsub: object) -> None:
        while not self._stopped:
            try:
                message = await pubsub.get_message(timeout=1.0)  # type: ignore[attr-defined]
            except Exception as error:
                raise ClusterUnavailable(str(error) or type(error).__name__) from error
            if message is None or message.get("type") != "message":
                continue
            change = _parse(message["data"])
            if change is not None and change.host != self.host_name:
                self._pending[(change.kind, change.network_id)] = change
                self._wake.set()

    async def _dispatch(self) -> None:
        """Handle notifications one at a time; a burst about one network is one read."""
        while not self._stopped:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                key = next(iter(self._pending))
                change = self._pending.pop(key)
                await self.on_change(change)

    async def _heartbeats(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.timing.heartbeat_interval)
            await self._beat()
            await self._sweep()

    async def _resyncs(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.timing.resync_interval)
            await self.on_resync()

    async def _beat(self) -> None:
        await self.store.heartbeat(self.record(), self.timing.host_ttl)

    async def _sweep(self) -> None:
        """Remove every host whose heartbeat expired, and announce what that changed.

        Right after a (re)connection nobody is swept: after a Redis outage every key has
        expired, and live hosts still in their reconnection backoff must get the time to
        beat again before they count as dead."""
        live, dead = await self.store.hosts()
        self.hosts = live
        if asyncio.get_running_loop().time() < self._sweep_from:
            return
        for host in sorted(dead - {self.host_name}):
            changed = await self.store.reap(host)
            if changed:
                log.info("removed a dead host's endpoints", host=host, networks=len(changed))
            for network_id in changed:
                await self.store.publish("endpoints", network_id, host)
                self._pending[("endpoints", network_id)] = Change("endpoints", network_id, host)
                self._wake.set()


async def _nothing_changed(change: Change) -> None:
    return None


async def _nothing() -> None:
    return None


def _parse(data: str) -> Change | None:
    try:
        fields = json.loads(data)
        return Change(str(fields["kind"]), str(fields.get("network_id", "")), str(fields["host"]))
    except (ValueError, KeyError, TypeError):
        log.warning("ignored a malformed cluster message", data=data[:200])
        return None
