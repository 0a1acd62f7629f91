"""The daemons behind the gateway and the channels that reach them.

HostRegistry answers which network agent serves a host named in `x-berth-host`
(static configuration now; the overlay capability fills it from Redis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from berth.common.addresses import parse_address
from berth.common.errors import NotFound

LOCAL_ALIASES = frozenset({"", "local", "localhost"})
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass
class Backend:
    """One daemon: a channel and the raw-bytes callables for its methods, made once each."""

    domain: str
    host: str
    address: str
    channel: grpc.aio.Channel = field(init=False)
    _callables: dict[str, Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        target = parse_address(self.address).target
        self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)

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

    async def close(self) -> None:
        await self.channel.close()


class HostRegistry:
    """Network agents by host name; the local one answers for '', 'local' and its name."""

    def __init__(self, local_name: str, local: Backend, remote: dict[str, Backend]) -> None:
        self.local_name = local_name
        self.local = local
        self.remote = remote

    def agent(self, host: str) -> Backend:
        if host in LOCAL_ALIASES or host == self.local_name:
            return self.local
        backend = self.remote.get(host)
        if backend is None:
            known = ", ".join(sorted([self.local_name, *self.remote]))
            raise NotFound(
                f"no host named {host!r} (known hosts: {known})",
                reason="HOST_NOT_FOUND",
                metadata={"host": host},
            )
        return backend

    def all(self) -> list[Backend]:
        return [self.local, *self.remote.values()]
