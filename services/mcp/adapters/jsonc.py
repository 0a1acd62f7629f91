"""JSON and JSON with comments, edited in place.

MCP clients keep berth's entry in files people also edit by hand (Zed's settings.json starts
with comments; VS Code's mcp.json allows them and trailing commas). Parsing and dumping
would lose the comments and the layout, so an edit here splices text: it finds the span of
one object member and replaces, inserts or removes only that, indented like its neighbours.
Everything else in the file keeps its bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
LITERALS = {"true": True, "false": False, "null": None}
DEFAULT_UNIT = "  "


class JsoncError(ValueError):
    """Text that is not JSON (or JSONC): `line` and `column` count from 1."""

    def __init__(self, problem: str, text: str, position: int) -> None:
        self.problem = problem
        self.line = text.count("\n", 0, position) + 1
        self.column = position - (text.rfind("\n", 0, position) + 1) + 1
        super().__init__(f"line {self.line}, column {self.column}: {problem}")


@dataclass
class Node:
    """One value of the document: its span and its Python value."""

    start: int
    end: int
    value: Any
    members: list[Member] = field(default_factory=list)  # objects only

    @property
    def is_object(self) -> bool:
        return isinstance(self.value, dict)

    def member(self, key: str) -> Member | None:
        found = [m for m in self.members if m.key == key]
        return found[-1] if found else None  # the last one wins, as in JSON.parse


@dataclass
class Member:
    key: str
    start: int  # the key's opening quote
    value: Node
    comma: int | None = None  # the comma that follows the value, when there is one


class _Parser:
    def __init__(self, text: str, strict: bool) -> None:
        self.text = text
        self.strict = strict
        self.pos = 0

    def document(self) -> Node | None:
        self._skip()
        if self.pos == len(self.text):
            return None
        node = self._value()
        self._skip()
        if self.pos != len(self.text):
            raise self._error("unexpected text after the document")
        return node

    def _error(self, problem: str) -> JsoncError:
        return JsoncError(problem, self.text, self.pos)

    def _skip(self) -> None:
        text = self.text
        while self.pos < len(text):
            if text[self.pos] in " \t\r\n\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos) or text.startswith("/*", self.pos):
                if self.strict:
                    raise self._error("comments are not allowed in JSON")
                self._comment()
            else:
                return

    def _comment(self) -> None:
        if self.text.startswith("//", self.pos):
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end
            return
        end = self.text.find("*/", self.pos + 2)
        if end < 0:
            raise self._error("unterminated comment")
        self.pos = end + 2

    def _value(self) -> Node:
        if self.pos >= len(self.text):
            raise self._error("unexpected end of the document")
        char = self.text[self.pos]
        if char == "{":
            return self._object()
        if char == "[":
            return self._array()
        if char == '"':
            start = self.pos
            return Node(start, self.pos, self._string())
        return self._scalar()

    def _string(self) -> str:
        try:
            value, self.pos = json.decoder.scanstring(self.text, self.pos + 1)
        except json.JSONDecodeError as error:
            self.pos = error.pos
            raise self._error(error.msg) from None
        return value

    def _scalar(self) -> Node:
        start = self.pos
        for word, value in LITERALS.items():
            if self.text.startswith(word, start):
                self.pos = start + len(word)
                return Node(start, self.pos, value)
        number = NUMBER.match(self.text, start)
        if not number:
            raise self._error(f"unexpected character {self.text[start]!r}")
        self.pos = number.end()
        return Node(start, self.pos, json.loads(number.group()))

    def _object(self) -> Node:
        node = Node(self.pos, self.pos, {})
        self.pos += 1
        while True:
            self._skip()
            if self._closes("}", node):
                return node
            if self.text[self.pos] != '"':
                raise self._error("expected a string key in double quotes")
            key_start = self.pos
            key = self._string()
            self._skip()
            self._expect(":")
            self._skip()
            member = Member(key, key_start, self._value())
            node.members.append(member)
            node.value[key] = member.value.value
            self._skip()
            if self._at(","):
                member.comma = self.pos
                self.pos += 1
            elif not self._at("}"):
                raise self._error("expected ',' or '}' after an object member")

    def _array(self) -> Node:
        node = Node(self.pos, self.pos, [])
        self.pos += 1
        while True:
            self._skip()
            if self._closes("]", node):
                return node
            node.value.append(self._value().value)
            self._skip()
            if self._at(","):
                self.pos += 1
            elif not self._at("]"):
                raise self._error("expected ',' or ']' after an array item")

    def _closes(self, bracket: str, node: Node) -> bool:
        if self.pos >= len(self.text):
            raise self._error(f"expected '{bracket}' before the end of the document")
        if self.text[self.pos] != bracket:
            return False
        if self.strict and self.text[: self.pos].rstrip().endswith(","):
            raise self._error("trailing commas are not allowed in JSON")
        self.pos += 1
        node.end = self.pos
        return True

    def _at(self, char: str) -> bool:
        return self.pos < len(self.text) and self.text[self.pos] == char

    def _expect(self, char: str) -> None:
        if not self._at(char):
            raise self._error(f"expected {char!r}")
        self.pos += 1


def parse(text: str, strict: bool = False) -> Node | None:
    """The document's root node (None when the text is empty), or JsoncError."""
    return _Parser(text, strict).document()


# -- edits ------------------------------------------------------------------------------


def line_start(text: str, position: int) -> int:
    return text.rfind("\n", 0, position) + 1


def line_end(text: str, position: int) -> int:
    end = text.find("\n", position)
    return len(text) if end < 0 else end


def line_indent(text: str, position: int) -> str:
    start = line_start(text, position)
    line = text[start : line_end(text, start)]
    return line[: len(line) - len(line.lstrip(" \t"))]


def indent_unit(text: str, root: Node) -> str:
    """The file's indentation step, read from the root object's first member."""
    if root.members:
        return line_indent(text, root.members[0].start) or DEFAULT_UNIT
    return DEFAULT_UNIT


def render(value: Any, indent: str, unit: str) -> str:
    return json.dumps(value, indent=unit, ensure_ascii=False).replace("\n", "\n" + indent)


def find(root: Node, path: tuple[str, ...]) -> tuple[Node, tuple[str, ...]]:
    """The deepest object along `path` and the keys of the path still missing below it."""
    node = root
    for depth, key in enumerate(path):
        member = node.member(key)
        if member is None:
            return node, path[depth:]
        if not member.value.is_object:
            raise ValueError(f"{'.'.join(path[: depth + 1])} is not an object")
        node = member.value
    return node, ()


def set_member(text: str, path: tuple[str, ...], key: str, value: Any) -> str:
    """`text` with the member `key` of the object at `path` set to `value` (created with the
    objects along the path when missing, replaced in place when present)."""
    root = parse(text)
    if root is None:
        return json.dumps(nest((*path, key), value), indent=2, ensure_ascii=False) + "\n"
    if not root.is_object:
        raise ValueError("the document is not a JSON object")
    parent, missing = find(root, path)
    unit = indent_unit(text, root)
    if missing:
        return insert(text, parent, missing[0], nest((*missing[1:], key), value), unit)
    existing = parent.member(key)
    if existing is None:
        return insert(text, parent, key, value, unit)
    rendered = render(value, line_indent(text, existing.start), unit)
    return text[: existing.value.start] + rendered + text[existing.value.end :]


def nest(path: tuple[str, ...], value: Any) -> Any:
    for key in reversed(path):
        value = {key: value}
    return value


def insert(text: str, obj: Node, key: str, value: Any, unit: str) -> str:
    """`text` with a new last member in `obj`, on its own line."""
    if not obj.members:
        indent = line_indent(text, obj.start) + unit
        member = f"{json.dumps(key)}: {render(value, indent, unit)}"
        inside = text[obj.start + 1 : obj.end - 1]
        if inside.strip():  # only comments: keep them after the new member
            return text[: obj.start + 1] + "\n" + indent + member + text[obj.start + 1 :]
        closing = "\n" + line_indent(text, obj.start)
        return text[: obj.start + 1] + "\n" + indent + member + closing + text[obj.end - 1 :]
    last = obj.members[-1]
    indent = line_indent(text, last.start)
    member = f"{json.dumps(key)}: {render(value, indent, unit)}"
    if last.comma is not None:  # a trailing comma: keep that style
        at, comma_before, comma_after = last.comma + 1, "", ","
    else:
        at, comma_before, comma_after = last.value.end, ",", ""
    eol = line_end(text, at)
    if text[at:eol].strip().startswith("//"):  # a comment about the last member stays with it
        new_line = "\n" + indent + member + comma_after
        return text[:at] + comma_before + text[at:eol] + new_line + text[eol:]
    return text[:at] + comma_before + "\n" + indent + member + comma_after + text[at:]


def remove_member(text: str, path: tuple[str, ...], key: str) -> str:
    """`text` without the member `key` of the object at `path` (unchanged when absent)."""
    root = parse(text)
    if root is None or not root.is_object:
        return text
    parent, missing = find(root, path)
    if missing:
        return text
    index = next((i for i, m in enumerate(parent.members) if m.key == key), None)
    if index is None:
        return text
    return _without(text, parent.members, index)


def _without(text: str, members: list[Member], index: int) -> str:
    member = members[index]
    start = member.start
    end = member.comma + 1 if member.comma is not None else member.value.end
    before, after = text[line_start(text, start) : start], text[end : line_end(text, end)]
    if not before.strip() and not after.strip():  # alone on its lines: drop the lines
        start, end = line_start(text, start), min(line_end(text, end) + 1, len(text))
    elif member.comma is not None:
        end += len(after) - len(after.lstrip(" \t"))
    text = text[:start] + text[end:]
    previous = members[index - 1] if index else None
    if member.comma is None and previous is not None and previous.comma is not None:
        # It was the last member: the comma before it would now trail.
        text = text[: previous.comma] + text[previous.comma + 1 :]
    return text
