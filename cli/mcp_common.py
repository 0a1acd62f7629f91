"""Helpers shared by the `berth mcp` command modules: input, JSON and labels."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from berth.api.mcp.v1 import resources_pb2
from berth.cli.context import connection
from berth.cli.errors import CliError
from berth.cli.output import message_dict, print_json

StubT = TypeVar("StubT")

# Fields that carry JSON documents as text; JSON output shows them as objects.
JSON_TEXT_FIELDS = frozenset({"input_schema", "output_schema", "config_schema"})
DESCRIPTION_WIDTH = 60


class Format(StrEnum):
    """`--format` of the tools commands (Docker's `json|list`)."""

    LIST = "list"
    JSON = "json"


class Transport(StrEnum):
    """How an MCP client reaches the aggregated endpoint."""

    STDIO = "stdio"
    SSE = "sse"
    STREAMING = "streaming"


TRANSPORT_PROTO = {
    Transport.STDIO: resources_pb2.GATEWAY_TRANSPORT_STDIO,
    Transport.SSE: resources_pb2.GATEWAY_TRANSPORT_SSE,
    Transport.STREAMING: resources_pb2.GATEWAY_TRANSPORT_STREAMING,
}
TRANSPORT_LABEL = {
    resources_pb2.GATEWAY_TRANSPORT_STDIO: "stdio",
    resources_pb2.GATEWAY_TRANSPORT_SSE: "sse",
    resources_pb2.GATEWAY_TRANSPORT_STREAMING: "streaming",
    resources_pb2.GATEWAY_TRANSPORT_GRPC: "grpc",
}


def stub(stub_class: type[StubT]) -> StubT:
    return connection().stub(stub_class)


def read_stdin(what: str) -> str:
    """All of stdin; refuses to wait on a terminal nobody is typing a document into."""
    if sys.stdin is None or sys.stdin.isatty():
        raise CliError(f"no {what} given: pass it as an argument or on stdin")
    return sys.stdin.read()


def read_source(source: str, what: str) -> str:
    """The text of a file, or of stdin for `-`."""
    if source == "-":
        return read_stdin(what)
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{what} file not found: {source}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read {what} file {source}: {error}") from None


def split_list(values: Iterable[str] | None, separator: str | None = ",") -> list[str]:
    """Repeated options that may each hold several values (`--servers a,b --servers c`)."""
    found: list[str] = []
    for value in values or []:
        found.extend(item.strip() for item in value.split(separator) if item.strip())
    return found


def short(text: str, width: int = DESCRIPTION_WIDTH) -> str:
    """The first line of a description, cut to fit a table column."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def when(stamp: Timestamp, empty: str = "-") -> str:
    """A timestamp as `YYYY-MM-DD HH:MM:SS` UTC, or `empty` when unset."""
    if not stamp.seconds and not stamp.nanos:
        return empty
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def joined(items: Iterable[str], empty: str = "-") -> str:
    text = ", ".join(items)
    return text or empty


def decode_json_text(data: Any) -> Any:
    """Data whose schema-as-text fields are replaced by the documents they hold."""
    if isinstance(data, dict):
        decoded = {}
        for key, value in data.items():
            if key in JSON_TEXT_FIELDS and isinstance(value, str) and value:
                try:
                    decoded[key] = json.loads(value)
                    continue
                except json.JSONDecodeError:
                    pass
            decoded[key] = decode_json_text(value)
        return decoded
    if isinstance(data, list):
        return [decode_json_text(item) for item in data]
    return data


def as_json(message: Message) -> Any:
    return decode_json_text(message_dict(message))


def emit_json(data: Any) -> None:
    """Pretty JSON on stdout (messages with their schemas decoded)."""
    if isinstance(data, Message):
        data = as_json(data)
    elif isinstance(data, list):
        data = [as_json(item) if isinstance(item, Message) else item for item in data]
    print_json(data)


def emit(text: str) -> None:
    """Text on stdout exactly as given, with a final newline."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def note(text: str) -> None:
    """A remark for the user on stderr, so stdout stays clean for pipes."""
    sys.stderr.write(text + "\n")
