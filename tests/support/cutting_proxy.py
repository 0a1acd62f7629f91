"""A TCP proxy on 127.0.0.1 that can cut a connection in the middle of a response.

It forwards bytes both ways, a thread per direction. `cut_next_response_after(n)` arms a
one-shot cut: once `n` more bytes have gone from the server to the client (on whichever
connection carries them; tests make one request at a time), that connection is closed on
both sides at once, so the client gets a response shorter than it announced. Counters say
how many bytes reached the client, to compare a resumed download with a full one.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

_PIECE = 64 << 10


@dataclass
class CuttingProxy:
    host: str
    port: int
    target: tuple[str, int]
    bytes_to_client: int = 0
    connections: int = 0
    cuts: int = 0
    _cut_after: int | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _sockets: set[socket.socket] = field(default_factory=set, repr=False)
    _listener: socket.socket | None = field(default=None, repr=False)
    _stopped: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def cut_next_response_after(self, n_bytes: int) -> None:
        with self._lock:
            self._cut_after = n_bytes

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            everything = [*self._sockets, *([self._listener] if self._listener else [])]
            self._sockets.clear()
        for sock in everything:
            _close(sock)

    # --- forwarding ---

    def serve(self, listener: socket.socket) -> None:
        self._listener = listener
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets.update((client, server))
            for source, sink, to_client in ((client, server, False), (server, client, True)):
                threading.Thread(
                    target=self._pump, args=(source, sink, to_client, (client, server)), daemon=True
                ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        to_client: bool,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        try:
            while data := source.recv(_PIECE):
                data, cut = self._allowance(data) if to_client else (data, False)
                sink.sendall(data)
                if cut:
                    break
                if to_client:
                    with self._lock:
                        self.bytes_to_client += len(data)
        except OSError:
            pass
        finally:
            for sock in pair:  # one side ended or was cut: the connection ends
                with self._lock:
                    self._sockets.discard(sock)
                _close(sock)

    def _allowance(self, data: bytes) -> tuple[bytes, bool]:
        """The part of `data` to forward, and whether the connection must then be cut."""
        with self._lock:
            if self._cut_after is None:
                return data, False
            if len(data) < self._cut_after:
                self._cut_after -= len(data)
                return data, False
            allowed = data[: self._cut_after]
            self._cut_after = None
            self.cuts += 1
            self.bytes_to_client += len(allowed)
            return allowed, True


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextmanager
def cutting_proxy(target_host: str, target_port: int) -> Iterator[CuttingProxy]:
    """A running proxy to target_host:target_port on a free port of 127.0.0.1."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    proxy = CuttingProxy("127.0.0.1", int(listener.getsockname()[1]), (target_host, target_port))
    thread = threading.Thread(target=proxy.serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.stop()
        thread.join(timeout=10)
