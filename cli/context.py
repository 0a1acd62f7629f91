"""The state every command shares: the connection chosen by the global options."""

from __future__ import annotations

from berth.cli.connection import Connection, Target

_connection = Connection(Target())


def connect(target: Target) -> Connection:
    global _connection
    _connection.close()
    _connection = Connection(target)
    return _connection


def connection() -> Connection:
    """The gateway connection for this invocation (opened on first use)."""
    return _connection
