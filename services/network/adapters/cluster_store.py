"""The cluster's shared state in Redis: hosts, overlay networks, endpoints, address claims.

Keys (all under `berth:`):
    host:<name>               the host's record (JSON), expiring unless its heartbeat renews it
    hosts                     SET of registered host names; a name without its key is dead
    networks                  HASH network id -> the overlay network (JSON)
    network-names, vnis       HASH name -> id, vni -> id (uniqueness across the cluster)
    endpoints:<network id>    HASH endpoint id -> the endpoint (JSON)
    addresses:<network id>    HASH address -> "<host>/<endpoint id>": who holds it
and the pub/sub channel `changes`, where every write announces what it changed.

Uniqueness comes from Redis itself: an address is claimed with HSETNX, a network is
created in a WATCH/MULTI transaction, and a dead host is swept by one Lua script.
Every Redis failure surfaces as ClusterUnavailable.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError, WatchError

from berth.common.errors import Unavailable
from berth.network.domain.overlay import ClusterEndpoint, HostRecord

PREFIX = "berth:"
HOSTS = PREFIX + "hosts"
NETWORKS = PREFIX + "networks"
NETWORK_NAMES = PREFIX + "network-names"
VNIS = PREFIX + "vnis"
CHANNEL = PREFIX + "changes"

# Sweeps a dead host: its endpoints and address claims on every network. Returns the
# ids of the networks it changed. A host whose key came back (it was only late) is kept.
_REAP = """
if redis.call('EXISTS', ARGV[2] .. 'host:' .. ARGV[1]) == 1 then return {} end
local changed = {}
local owner = ARGV[1] .. '/'
for _, nid in ipairs(redis.call('HKEYS', KEYS[2])) do
  local touched = false
  local eps_key = ARGV[2] .. 'endpoints:' .. nid
  local eps = redis.call('HGETALL', eps_key)
  for i = 1, #eps, 2 do
    if cjson.decode(eps[i + 1]).host == ARGV[1] then
      redis.call('HDEL', eps_key, eps[i]); touched = true
    end
  end
  local claims_key = ARGV[2] .. 'addresses:' .. nid
  local claims = redis.call('HGETALL', claims_key)
  for i = 1, #claims, 2 do
    if string.sub(claims[i + 1], 1, #owner) == owner then
      redis.call('HDEL', claims_key, claims[i]); touched = true
    end
  end
  if touched then table.insert(changed, nid) end
end
redis.call('SREM', KEYS[1], ARGV[1])
return changed
"""

# Releases address claims, but only those still held by the given owner.
_RELEASE = """
local released = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[i]); released = released + 1
  end
end
return released
"""


# Records an endpoint only while its network exists (a removal may have come between the
# address claim and this write), and announces it.
_PUT_ENDPOINT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PUBLISH', KEYS[3], ARGV[4])
return 1
"""


class ClusterUnavailable(Unavailable):
    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the cluster store (Redis) is unreachable: {detail}; "
            "overlay changes are refused until the agent reconnects",
            reason="CLUSTER_UNAVAILABLE",
        )


def endpoints_key(network_id: str) -> str:
    return f"{PREFIX}endpoints:{network_id}"


def addresses_key(network_id: str) -> str:
    return f"{PREFIX}addresses:{network_id}"


def change(kind: str, network_id: str, host: str) -> str:
    return json.dumps({"kind": kind, "network_id": network_id, "host": host})


class ClusterStore:
    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        self.url = url
        self.redis: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            retry_on_timeout=False,
        )
        self._reap = self.redis.register_script(_REAP)
        self._release = self.redis.register_script(_RELEASE)
        self._put_endpoint = self.redis.register_script(_PUT_ENDPOINT)

    async def close(self) -> None:
        await self.redis.aclose()

    def host(self) -> str:
        """The Redis server's host, as the URL names it."""
        return str(self.redis.connection_pool.connection_kwargs.get("host", "127.0.0.1"))

    def pubsub(self) -> redis.client.PubSub:
        return self.redis.pubsub(ignore_subscribe_messages=True)

    async def ping(self) -> None:
        async with _guard():
            await self.redis.ping()

    async def publish(self, kind: str, network_id: str, host: str) -> None:
        async with _guard():
            await self.redis.publish(CHANNEL, change(kind, network_id, host))

    # ---- hosts -----------------------------------------------------------------------------

    async def heartbeat(self, record: HostRecord, ttl_s: float) -> None:
        async with _guard(), self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_host_key(record.name), json.dumps(record.to_dict()), px=int(ttl_s * 1000))
            pipe.sadd(HOSTS, record.name)
            await pipe.execute()

    async def hosts(self) -> tuple[dict[str, HostRecord], set[str]]:
        """The live hosts, and the registered names whose heartbeat has expired."""
        async with _guard():
            names = sorted(await self.redis.smembers(HOSTS))
            values = await self.redis.mget([_host_key(n) for n in names]) if names else []
        live = {
            name: HostRecord.from_dict(json.loads(value))
            for name, value in zip(names, values, strict=True)
            if value is not None
        }
        return live, set(names) - set(live)

    async def reap(self, host: str) -> list[str]:
        """Sweep a dead host; the networks whose endpoints changed."""
        async with _guard():
            changed = await self._reap(keys=[HOSTS, NETWORKS], args=[host, PREFIX])
        return [str(n) for n in changed]

    # ---- networks --------------------------------------------------------------------------

    async def networks(self) -> dict[str, dict[str, Any]]:
        async with _guard():
            found = await self.redis.hgetall(NETWORKS)
        return {network_id: json.loads(value) for network_id, value in found.items()}

    async def create_network(
        self, build: Callable[[dict[str, dict[str, Any]]], dict[str, Any]], host: str
    ) -> dict[str, Any]:
        """Add the network `build` makes from the networks there are, atomically: if
        another host adds one in between, `build` runs again on the new set."""
        async with _guard(), self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(NETWORKS)
                    existing = {k: json.loads(v) for k, v in (await pipe.hgetall(NETWORKS)).items()}
                    record = build(existing)
                    _put_network(pipe, record)
                    pipe.publish(CHANNEL, change("network", record["id"], host))
                    await pipe.execute()
                    return record
                except WatchError:
                    continue

    async def restore_network(self, record: Mapping[str, Any], host: str) -> bool:
        """Put back a network the store lost (a Redis restarted without its data) unless
        its name or VNI went to another network since; whether it was put back."""
        async with _guard(), self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(NETWORKS, NETWORK_NAMES, VNIS)
                    if await pipe.hexists(NETWORKS, record["id"]):
                        return True
                    name_owner = await pipe.hget(NETWORK_NAMES, record["name"])
                    vni_owner = await pipe.hget(VNIS, str(record["vni"]))
                    if {name_owner, vni_owner} - {None, record["id"]}:
                        return False
                    _put_network(pipe, record)
                    pipe.publish(CHANNEL, change("network", record["id"], host))
                    await pipe.execute()
                    return True
                except WatchError:
                    continue  # another host changed the networks: look again

    async def remove_network(self, network_id: str, host: str) -> list[ClusterEndpoint]:
        """Remove the network unless some host has endpoints on it; those endpoints
        (the network is left as it is) or [] (it is gone)."""
        async with _guard(), self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(endpoints_key(network_id), NETWORKS)
                    found = await pipe.hgetall(endpoints_key(network_id))
                    if found:
                        await pipe.reset()
                        return [ClusterEndpoint.from_dict(json.loads(v)) for v in found.values()]
                    record = await pipe.hget(NETWORKS, network_id)
                    pipe.multi()
                    if record is not None:
                        data = json.loads(record)
                        pipe.hdel(NETWORK_NAMES, data["name"])
                        pipe.hdel(VNIS, str(data["vni"]))
                    pipe.hdel(NETWORKS, network_id)
                    pipe.delete(addresses_key(network_id), endpoints_key(network_id))
                    pipe.publish(CHANNEL, change("network", network_id, host))
                    await pipe.execute()
                    return []
                except WatchError:
                    continue

    # ---- endpoints and addresses -----------------------------------------------------------

    async def endpoints(self, network_id: str) -> list[ClusterEndpoint]:
        async with _guard():
            found = await self.redis.hgetall(endpoints_key(network_id))
        return [ClusterEndpoint.from_dict(json.loads(v)) for v in found.values()]

    async def claims(self, network_id: str) -> dict[str, str]:
        """Address -> holder ("<host>/<endpoint id>")."""
        async with _guard():
            return dict(await self.redis.hgetall(addresses_key(network_id)))

    async def claim(self, network_id: str, address: str, owner: str) -> bool:
        """Take the address for `owner`; False when somebody holds it already (it is
        True again for the owner that holds it)."""
        async with _guard():
            if await self.redis.hsetnx(addresses_key(network_id), address, owner):
                return True
            return bool(await self.redis.hget(addresses_key(network_id), address) == owner)

    async def release(self, network_id: str, addresses: list[str], owner: str) -> None:
        if not addresses:
            return
        async with _guard():
            await self._release(keys=[addresses_key(network_id)], args=[owner, *addresses])

    async def put_endpoint(self, endpoint: ClusterEndpoint) -> bool:
        """Record the endpoint; False when its network is gone from the cluster."""
        async with _guard():
            done = await self._put_endpoint(
                keys=[NETWORKS, endpoints_key(endpoint.network_id), CHANNEL],
                args=[
                    endpoint.network_id,
                    endpoint.id,
                    json.dumps(endpoint.to_dict()),
                    change("endpoints", endpoint.network_id, endpoint.host),
                ],
            )
        return bool(done)

    async def remove_endpoint(self, network_id: str, endpoint_id: str, host: str) -> None:
        async with _guard(), self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(endpoints_key(network_id), endpoint_id)
            pipe.publish(CHANNEL, change("endpoints", network_id, host))
            await pipe.execute()


def _host_key(name: str) -> str:
    return f"{PREFIX}host:{name}"


def _put_network(pipe: Any, record: Mapping[str, Any]) -> None:
    pipe.multi()
    pipe.hset(NETWORKS, record["id"], json.dumps(record))
    pipe.hset(NETWORK_NAMES, record["name"], record["id"])
    pipe.hset(VNIS, str(record["vni"]), record["id"])


@asynccontextmanager
async def _guard() -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError) as error:
        raise ClusterUnavailable(str(error) or type(error).__name__) from error
