"""The cluster's host directory in Redis, as the network agents keep it (an adapter).

Each agent refreshes `berth:host:<name>` (JSON with its `agent_address`, expiring after
the host TTL) and adds its name to the set `berth:hosts`. A name whose key is gone has
stopped heartbeating: it is dead even while the set still holds it.
"""

from __future__ import annotations

import json

import redis.asyncio
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from berth.common.addresses import describe_url, parse_address
from berth.gateway.backends import HostDirectoryUnavailable

log = structlog.get_logger("berth.gateway.hosts")

HOSTS_KEY = b"berth:hosts"
HOST_KEY_PREFIX = b"berth:host:"
TIMEOUT_S = 1.0


class RedisHostDirectory:
    """Reads live hosts with SMEMBERS berth:hosts, then one MGET of their records."""

    def __init__(self, url: str, timeout: float = TIMEOUT_S) -> None:
        self.where = describe_url(url)
        self._warned: set[tuple[str, str]] = set()
        # One retry at once (a pooled connection Redis closed on restart), no more: the
        # registry retries a failed read itself, with its own backoff.
        self._redis = redis.asyncio.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )

    async def read(self) -> dict[str, str]:
        try:
            names = sorted(await self._redis.smembers(HOSTS_KEY))
            records = await self._redis.mget([HOST_KEY_PREFIX + n for n in names]) if names else []
        except (RedisError, OSError) as error:
            raise HostDirectoryUnavailable(f"Redis at {self.where}: {error}") from error
        hosts = {}
        for raw_name, record in zip(names, records, strict=True):
            name = raw_name.decode("utf-8", "replace")
            address = self._usable(name, agent_address(record))
            if address:
                hosts[name] = address
        return hosts

    async def close(self) -> None:
        await self._redis.aclose()

    def _usable(self, name: str, address: str) -> str:
        """The address when grpc can dial it; a bad one is skipped, with one warning."""
        if not address:
            return ""
        try:
            parse_address(address)
        except ValueError:
            if (name, address) not in self._warned:
                self._warned.add((name, address))
                log.warning("host record with a bad agent address", host=name, address=address)
            return ""
        return address


def agent_address(record: bytes | None) -> str:
    """The `agent_address` of a host record; '' for an expired, unreadable or empty one."""
    if record is None:
        return ""
    try:
        value = json.loads(record)
    except ValueError:
        return ""
    address = value.get("agent_address") if isinstance(value, dict) else None
    return address.strip() if isinstance(address, str) else ""
