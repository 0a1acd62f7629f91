"""The embedded DNS server's sockets: UDP and TCP on 127.0.0.11:53 inside each sandbox
that needs them, all served by the agent's one event loop.

A socket stays in the namespace it was made in, so each is made by a thread that entered
the sandbox's namespace and then handed to asyncio; the socket a query arrives on says
which sandbox asked. No process per sandbox, no port translation.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from berth.network.adapters.netns import in_netns_thread
from berth.network.dns.resolver import Resolver
from berth.network.domain.resolvconf import EMBEDDED_DNS

log = structlog.get_logger("berth.network.dns")

PORT = 53
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # bind before the sandbox's lo is up
TCP_IDLE_S = 10.0  # a TCP client that sends nothing for this long is dropped
TCP_CLIENTS = 32  # per sandbox; more are closed at once
LENGTH = 2
UDP_BATCH = 64  # datagrams answered per wake-up at most
UDP_RECEIVE = 65535


@dataclass
class _Served:
    udp: socket.socket
    tcp: asyncio.Server
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    tcp_clients: int = 0


class DnsListeners:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._served: dict[str, _Served] = {}

    def serving(self) -> set[str]:
        return set(self._served)

    async def open(self, sandbox_id: str, netns: Path) -> None:
        """Listen inside the namespace at `netns` for this sandbox; OSError if it cannot."""
        if sandbox_id in self._served:
            return
        udp_sock, tcp_sock = await in_netns_thread(netns, _bound_sockets)
        try:
            tcp = await asyncio.start_server(
                lambda r, w: self._tcp_client(sandbox_id, r, w), sock=tcp_sock
            )
        except BaseException:
            udp_sock.close()
            tcp_sock.close()
            raise
        self._served[sandbox_id] = _Served(udp=udp_sock, tcp=tcp)
        asyncio.get_running_loop().add_reader(udp_sock.fileno(), self._readable, sandbox_id)

    def close(self, sandbox_id: str) -> None:
        served = self._served.pop(sandbox_id, None)
        if served is None:
            return
        asyncio.get_running_loop().remove_reader(served.udp.fileno())
        served.udp.close()
        served.tcp.close()
        for task in served.pending:
            task.cancel()

    def close_all(self) -> None:
        for sandbox_id in list(self._served):
            self.close(sandbox_id)

    # -- UDP -------------------------------------------------------------------------

    def _readable(self, sandbox_id: str) -> None:
        """Answers the datagrams waiting, a batch per wake-up: one poll for many queries
        under load, while other work still gets the loop between batches."""
        served = self._served.get(sandbox_id)
        if served is None:
            return
        for _ in range(UDP_BATCH):
            try:
                data, peer = served.udp.recvfrom(UDP_RECEIVE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error about an earlier reply: nothing to do
                continue
            self._datagram(served, sandbox_id, data, peer)

    def _datagram(self, served: _Served, sandbox_id: str, data: bytes, peer: object) -> None:
        try:
            reply = self.resolver.answer_now(sandbox_id, data, tcp=False)
        except Exception:  # one bad query must never stop the server
            log.exception("dns query failed", sandbox=sandbox_id)
            return
        if isinstance(reply, bytes):
            _send(served.udp, reply, peer)
        elif reply is not None:
            task = asyncio.ensure_future(_send_later(reply, served.udp, peer))
            served.pending.add(task)
            task.add_done_callback(served.pending.discard)

    # -- TCP -------------------------------------------------------------------------

    async def _tcp_client(
        self, sandbox_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        served = self._served.get(sandbox_id)
        if served is None or served.tcp_clients >= TCP_CLIENTS:
            writer.close()
            return
        served.tcp_clients += 1
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_S):
                    size = int.from_bytes(await reader.readexactly(LENGTH), "big")
                    data = await reader.readexactly(size)
                reply = self.resolver.answer_now(sandbox_id, data, tcp=True)
                if reply is not None and not isinstance(reply, bytes):
                    reply = await reply
                if reply is None:
                    continue
                writer.write(len(reply).to_bytes(LENGTH, "big") + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("dns query over tcp failed", sandbox=sandbox_id)
        finally:
            served.tcp_clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _send_later(reply: Awaitable[bytes | None], udp: socket.socket, peer: object) -> None:
    try:
        data = await reply
    except Exception:
        log.exception("forwarded dns query failed")
        return
    if data is not None and udp.fileno() != -1:
        _send(udp, data, peer)


def _send(udp: socket.socket, data: bytes, peer: object) -> None:
    """Sends without waiting: a reply the socket cannot take now is dropped, as UDP may
    drop it anyway, and the client asks again."""
    with contextlib.suppress(OSError):
        udp.sendto(data, peer)


def _bound_sockets() -> tuple[socket.socket, socket.socket]:
    """UDP and listening TCP sockets on 127.0.0.11:53 of the calling thread's namespace."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for sock in (udp, tcp):
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.setblocking(False)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((EMBEDDED_DNS, PORT))
        tcp.bind((EMBEDDED_DNS, PORT))
        tcp.listen(64)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp
