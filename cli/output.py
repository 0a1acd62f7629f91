"""Printing results the way Docker does: plain tables by default, JSON where asked."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A Docker-style table: upper-case headers, no borders, columns padded."""
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="", padding=(0, 3, 0, 0))
    for header in headers:
        table.add_column(header.upper(), no_wrap=True, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def message_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data, with proto field names and defaults included."""
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def print_json(data: Any) -> None:
    if isinstance(data, Message):
        data = message_dict(data)
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(f"{line}\n")
