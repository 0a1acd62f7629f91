"""Checking server config against its catalog entry's JSON Schema (`berth mcp config write`),
with the `jsonschema` package: every violation, as "PATH: reason" where PATH is the dotted
path of the value (`filesystem.root`, `filesystem.paths[1]`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import validators
from jsonschema.exceptions import ValidationError

Schema = Mapping[str, Any]
TYPE_NAMES = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "null": "null",
}


def child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def kind_of(value: Any) -> str:
    """The JSON type of a Python value, as a schema's `type` names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return "array"


def problems(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Everything wrong with `value` under `schema` (the schema's own dialect, else the
    latest), deepest paths last; [] when it conforms."""
    validator = validators.validator_for(schema)(schema)
    return [_describe(error, path) for error in _ordered(validator.iter_errors(value))]


def _ordered(errors: Iterable[ValidationError]) -> list[ValidationError]:
    return sorted(errors, key=lambda e: [str(part) for part in e.absolute_path])


def _describe(error: ValidationError, path: str) -> str:
    where = path
    for part in error.absolute_path:
        where = f"{where}[{part}]" if isinstance(part, int) else child_path(where, str(part))
    return f"{where or 'the config'}: {error.message}"
