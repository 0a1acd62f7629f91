"""Listen and dial addresses: unix:///path/to.sock or host:port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Address:
    """A gRPC endpoint. `target` is what grpc expects for both binding and dialing."""

    target: str
    socket_path: Path | None = None

    @property
    def is_unix(self) -> bool:
        return self.socket_path is not None

    def __str__(self) -> str:
        return self.target


def parse_address(text: str) -> Address:
    """Accept unix:///abs, unix:/abs, unix:rel, a bare /abs path, host:port or :port."""
    raw = text.strip()
    if raw.startswith("unix:"):
        path = raw.removeprefix("unix:")
        path = "/" + path.lstrip("/") if path.startswith("//") else path
        return unix_address(Path(path))
    if raw.startswith("/"):
        return unix_address(Path(raw))
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not an address: {text!r} (want unix:///path.sock or host:port)")
    return Address(target=f"{host or '[::]'}:{port}")


def unix_address(path: Path) -> Address:
    path = path.absolute()
    return Address(target=f"unix://{path}", socket_path=path)


def describe_url(url: str) -> str:
    """The URL without credentials or query (where a password may be), for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
