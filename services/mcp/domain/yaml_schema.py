"""A small schema checker over PyYAML nodes, so every problem names its line and column.

A schema is a tree of `Shape`s. `Shape.read(node, path, problems)` returns the node's plain
Python value, or `INVALID` after appending one `Problem` per thing wrong with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

STR_TAG = "tag:yaml.org,2002:str"
BOOL_TAG = "tag:yaml.org,2002:bool"
INVALID: Any = object()
SCALAR_KINDS = {
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    BOOL_TAG: "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (1-based), which key path, and why."""

    line: int
    column: int
    path: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"line {self.line}, column {self.column}: {where}{self.reason}"


def problem_at(node: yaml.Node, path: str, reason: str) -> Problem:
    return Problem(node.start_mark.line + 1, node.start_mark.column + 1, path, reason)


def child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = SCALAR_KINDS.get(node.tag)
    return f"{kind} ({node.value})" if kind else f"{node.value!r}"


class Shape:
    """What one node must look like."""

    def read(self, node: yaml.Node, path: str, problems: list[Problem]) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Shape):
    """A string, optionally matching `pattern` (described by `hint`) or one of `choices`."""

    pattern: str = ""
    hint: str = ""
    choices: tuple[str, ...] = ()

    def read(self, node: yaml.Node, path: str, problems: list[Problem]) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag != STR_TAG:
            problems.append(problem_at(node, path, f"expected a string, got {_kind(node)}"))
            return INVALID
        value: str = node.value
        if self.choices and value not in self.choices:
            allowed = ", ".join(self.choices)
            problems.append(problem_at(node, path, f"{value!r} is not one of: {allowed}"))
            return INVALID
        if self.pattern and not re.fullmatch(self.pattern, value):
            problems.append(problem_at(node, path, f"{value!r} is not {self.hint}"))
            return INVALID
        return value


@dataclass(frozen=True)
class Flag(Shape):
    def read(self, node: yaml.Node, path: str, problems: list[Problem]) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag != BOOL_TAG:
            problems.append(problem_at(node, path, f"expected true or false, got {_kind(node)}"))
            return INVALID
        return SafeConstructor().construct_object(node)


@dataclass(frozen=True)
class ListOf(Shape):
    item: Shape

    def read(self, node: yaml.Node, path: str, problems: list[Problem]) -> Any:
        if not isinstance(node, yaml.SequenceNode):
            problems.append(problem_at(node, path, f"expected a list, got {_kind(node)}"))
            return INVALID
        values = [self.item.read(n, f"{path}[{i}]", problems) for i, n in enumerate(node.value)]
        return INVALID if any(v is INVALID for v in values) else values


def _mapping_pairs(
    node: yaml.Node, path: str, problems: list[Problem]
) -> list[tuple[str, yaml.Node]] | None:
    """The (key, value node) pairs of a mapping with string keys, each key once."""
    if not isinstance(node, yaml.MappingNode):
        problems.append(problem_at(node, path, f"expected a mapping, got {_kind(node)}"))
        return None
    pairs: list[tuple[str, yaml.Node]] = []
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = Text().read(key_node, path, problems)
        if key is INVALID:
            continue
        if key in seen:
            problems.append(problem_at(key_node, child_path(path, key), "duplicate key"))
            continue
        seen.add(key)
        pairs.append((key, value_node))
    return pairs


@dataclass(frozen=True)
class MapOf(Shape):
    """A mapping of names (checked by `key`) to values of one shape."""

    value: Shape
    key: Text = field(default_factory=Text)

    def read(self, node: yaml.Node, path: str, problems: list[Problem]) -> Any:
        pairs = _mapping_pairs(node, path, problems)
        if pairs is None:
            return INVALID
        result: dict[str, Any] = {}
        for key, value_node in pairs:
            key_node = next(k for k, v in node.value if v is value_node)
            if self.key.read(key_node, child_path(path, key), problems) is INVALID:
                continue
            result[key] = self.value.read(value_node, child_path(path, key), problems)
        ok = len(result) == len(pairs) and INVALID not in result.values()
        return result if ok else INVALID


Rule = Callable[[yaml.Node, dict[str, Any], str], list[str]]


@dataclass(frozen=True)
class Record(Shape):
    """A mapping with known keys; `rules` check the keys together (one reason per problem)."""

    fields: Mapping[str, Shape]
    required: frozenset[str] = frozenset()
    rules: tuple[Rule, ...] = ()

    def read(self, node: yaml.Node, path: str, problems: list[Problem]) -> Any:
        pairs = _mapping_pairs(node, path, problems)
        if pairs is None:
            return INVALID
        before = len(problems)
        result: dict[str, Any] = {}
        for key, value_node in pairs:
            shape = self.fields.get(key)
            if shape is None:
                known = ", ".join(self.fields)
                key_node = next(k for k, v in node.value if v is value_node)
                reason = f"unknown key {key!r}; known keys: {known}"
                problems.append(problem_at(key_node, child_path(path, key), reason))
                continue
            result[key] = shape.read(value_node, child_path(path, key), problems)
        for missing in sorted(self.required - result.keys()):
            problems.append(problem_at(node, child_path(path, missing), "required key missing"))
        if len(problems) > before:
            return INVALID
        for rule in self.rules:
            problems.extend(problem_at(node, path, reason) for reason in rule(node, result, path))
        return INVALID if len(problems) > before else result


@dataclass(frozen=True)
class JsonObject(Shape):
    """Any mapping whose value is JSON (e.g. a JSON Schema written as YAML)."""

    def read(self, node: yaml.Node, path: str, problems: list[Problem]) -> Any:
        if not isinstance(node, yaml.MappingNode):
            problems.append(problem_at(node, path, f"expected a mapping, got {_kind(node)}"))
            return INVALID
        try:
            value = SafeConstructor().construct_document(node)
            json.dumps(value)
        except (ConstructorError, TypeError, ValueError) as error:
            problems.append(problem_at(node, path, f"not a JSON value: {error}"))
            return INVALID
        return value
