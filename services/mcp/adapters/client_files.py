"""MCP client configuration files on disk: JSON, JSON with comments, YAML and TOML.

How each format keeps what berth does not own:
- JSON and JSONC are edited in place (berth.mcp.adapters.jsonc): comments, key order and
  layout stay byte for byte; only berth's member changes. A client that reads plain JSON
  (`Format.JSON`) gets its file refused when it has comments or trailing commas.
- TOML goes through tomlkit, which keeps comments and layout.
- YAML goes through PyYAML, which keeps keys and their order but not comments: a YAML file
  with comments is refused (FAILED_PRECONDITION) rather than rewritten without them.

Writes are atomic (a crash leaves the old file or the new one), keep the file's mode (0600
for a new file: it may hold the endpoint's token) and follow a symlinked file to its
target. Before a file changes, it is copied beside itself as
`<name>.berth-backup-<UTC time>`.
"""

from __future__ import annotations

import copy
import datetime
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
import tomlkit.items
import yaml

from berth.common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from berth.common.jsonfile import write_text
from berth.mcp.adapters import jsonc
from berth.mcp.domain.clients import ConfigDocument, Format, Layout

NEW_FILE_MODE = 0o600
BACKUP_SUFFIX = ".berth-backup-"


def unreadable(path: Path, problem: str, reason: str = "INVALID_CLIENT_CONFIG") -> InvalidArgument:
    violation = FieldViolation("config_path", f"{path}: {problem}")
    return InvalidArgument([violation], reason=reason, metadata={"config_path": str(path)})


def not_a_container(path: Path, layout: Layout, found: Any) -> InvalidArgument:
    expected = "a list" if layout.listed else "an object"
    where = ".".join(layout.servers_at)
    return unreadable(path, f"{where} is {type(found).__name__}, expected {expected}")


# -- JSON and JSONC -----------------------------------------------------------------------


class JsonDocument:
    def __init__(self, path: Path, text: str, layout: Layout) -> None:
        self.path = path
        self.text = text
        self.layout = layout
        self.strict = layout.format is Format.JSON
        root = self._parse(text)
        if root is not None and not root.is_object:
            raise unreadable(path, "the document is not a JSON object")

    def _parse(self, text: str) -> jsonc.Node | None:
        try:
            return jsonc.parse(text, strict=self.strict)
        except jsonc.JsoncError as error:
            kind = "JSON" if self.strict else "JSON with comments"
            problem = f"line {error.line}, column {error.column}: invalid {kind}: {error.problem}"
            raise unreadable(self.path, problem) from None

    def servers(self) -> dict[str, Any]:
        root = self._parse(self.text)
        container: Any = root.value if root is not None else {}
        for key in self.layout.servers_at:
            container = container.get(key, {}) if isinstance(container, dict) else {}
        return dict(container) if isinstance(container, dict) else {}

    def put_server(self, name: str, entry: Mapping[str, Any]) -> None:
        try:
            self.text = jsonc.set_member(self.text, self.layout.servers_at, name, dict(entry))
        except ValueError as error:
            raise unreadable(self.path, str(error)) from None

    def remove_server(self, name: str) -> None:
        self.text = jsonc.remove_member(self.text, self.layout.servers_at, name)
        if self.layout.servers_at and not self.servers():
            *parents, key = self.layout.servers_at
            self.text = jsonc.remove_member(self.text, tuple(parents), key)

    def dump(self) -> str:
        return self.text


# -- YAML ---------------------------------------------------------------------------------


def yaml_comment_line(text: str) -> int | None:
    """The line (from 1) of the first comment: a `#` outside every token of the text."""
    spans = [(t.start_mark.index, t.end_mark.index) for t in yaml.scan(text, yaml.SafeLoader)]
    inside = bytearray(len(text) + 1)
    for start, end in spans:
        inside[start:end] = b"\x01" * (end - start)
    for index, char in enumerate(text):
        if char == "#" and not inside[index]:
            return text.count("\n", 0, index) + 1
    return None


class YamlDocument:
    def __init__(self, path: Path, text: str, layout: Layout) -> None:
        self.path = path
        self.layout = layout
        self.comment_line: int | None = None
        try:
            data = yaml.safe_load(text) if text.strip() else None
            self.comment_line = yaml_comment_line(text)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            reason = error.problem or error.context
            raise unreadable(
                path, f"line {line}, column {column}: invalid YAML: {reason}"
            ) from None
        except yaml.YAMLError as error:
            raise unreadable(path, f"invalid YAML: {error}") from None
        if data is None:
            data = copy.deepcopy(dict(layout.template or {}))
        if not isinstance(data, dict):
            raise unreadable(path, "the document is not a YAML mapping")
        self.data: dict[str, Any] = data

    def _container(self, create: bool) -> Any:
        node: Any = self.data
        *parents, last = self.layout.servers_at
        for key in parents:
            if not isinstance(node, dict):
                return None
            node = node.setdefault(key, {}) if create else node.get(key)
        if not isinstance(node, dict):
            return None
        if create and node.get(last) is None:  # absent, or a key without a value
            node[last] = [] if self.layout.listed else {}
        return node.get(last)

    def servers(self) -> dict[str, Any]:
        container = self._container(create=False)
        if self.layout.listed and isinstance(container, list):
            return {i["name"]: i for i in container if isinstance(i, dict) and "name" in i}
        return dict(container) if isinstance(container, dict) else {}

    def put_server(self, name: str, entry: Mapping[str, Any]) -> None:
        container = self._container(create=True)
        expected = list if self.layout.listed else dict
        if not isinstance(container, expected):
            raise not_a_container(self.path, self.layout, container)
        if isinstance(container, dict):
            container[name] = dict(entry)
            return
        named = [i for i, item in enumerate(container) if self._named(item, name)]
        if named:
            container[named[0]] = dict(entry)
        else:
            container.append(dict(entry))

    def remove_server(self, name: str) -> None:
        container = self._container(create=False)
        if isinstance(container, dict):
            container.pop(name, None)
        elif isinstance(container, list):
            container[:] = [item for item in container if not self._named(item, name)]
        if not container and self.layout.template is None:
            self._remove_container()

    def _remove_container(self) -> None:
        node: Any = self.data
        *parents, last = self.layout.servers_at
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)

    @staticmethod
    def _named(item: Any, name: str) -> bool:
        return isinstance(item, dict) and item.get("name") == name

    def dump(self) -> str:
        if self.comment_line is not None:
            raise FailedPrecondition(
                f"{self.path} has comments (line {self.comment_line}) that rewriting it "
                "would lose: remove them, or add berth's entry by hand",
                reason="CLIENT_CONFIG_HAS_COMMENTS",
                metadata={"config_path": str(self.path), "line": str(self.comment_line)},
            )
        return yaml.safe_dump(self.data, sort_keys=False, allow_unicode=True, width=100)


# -- TOML ---------------------------------------------------------------------------------


def toml_item(value: Any) -> Any:
    """A TOML value for an entry's field: objects become inline tables."""
    if isinstance(value, Mapping):
        table = tomlkit.inline_table()
        table.update({key: toml_item(item) for key, item in value.items()})
        return table
    return value


class TomlDocument:
    def __init__(self, path: Path, text: str, layout: Layout) -> None:
        self.path = path
        self.layout = layout
        try:
            self.document = tomlkit.parse(text)
        except tomlkit.exceptions.ParseError as error:
            raise unreadable(path, f"invalid TOML: {error}") from None
        except tomlkit.exceptions.TOMLKitError as error:  # e.g. a key given twice
            raise unreadable(path, f"invalid TOML: {error}") from None

    def _container(self, create: bool) -> Any:
        node: Any = self.document
        for key in self.layout.servers_at:
            if not isinstance(node, dict):
                return None
            if key not in node and create:
                node[key] = tomlkit.table(is_super_table=True)
            node = node.get(key)
        return node

    def servers(self) -> dict[str, Any]:
        container = self._container(create=False)
        return container.unwrap() if isinstance(container, dict) else {}

    def put_server(self, name: str, entry: Mapping[str, Any]) -> None:
        container = self._container(create=True)
        if not isinstance(container, dict):
            raise not_a_container(self.path, self.layout, container)
        table = tomlkit.table()
        for key, value in entry.items():
            table.add(key, toml_item(value))
        table.add(tomlkit.nl())  # a blank line before the next table
        container[name] = table

    def remove_server(self, name: str) -> None:
        container = self._container(create=False)
        if isinstance(container, dict) and name in container:
            del container[name]
        if isinstance(container, dict) and not container:
            *parents, last = self.layout.servers_at
            parent: Any = self.document
            for key in parents:
                parent = parent[key]
            del parent[last]

    def dump(self) -> str:
        text = tomlkit.dumps(self.document)
        return text.rstrip("\n") + "\n" if text.endswith("\n\n") else text


DOCUMENTS = {
    Format.JSON: JsonDocument,
    Format.JSONC: JsonDocument,
    Format.YAML: YamlDocument,
    Format.TOML: TomlDocument,
}


class ClientFiles:
    """The ConfigFiles of berth-mcpd: the files of the host and user it runs as."""

    def read(self, path: Path, layout: Layout) -> ConfigDocument:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except (IsADirectoryError, NotADirectoryError, PermissionError, UnicodeDecodeError) as e:
            raise unreadable(
                path, f"cannot read it: {e}", reason="CLIENT_CONFIG_UNREADABLE"
            ) from None
        return DOCUMENTS[layout.format](path, text, layout)

    def write(self, path: Path, text: str) -> str:
        target = path.resolve()
        backup = self._backup(target)
        mode = stat.S_IMODE(target.stat().st_mode) if backup else NEW_FILE_MODE
        write_text(target, text, mode)
        return backup

    def delete(self, path: Path) -> str:
        target = path.resolve()
        backup = self._backup(target)
        target.unlink(missing_ok=True)
        return backup

    @staticmethod
    def _backup(target: Path) -> str:
        if not target.is_file():
            return ""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        backup = target.with_name(f"{target.name}{BACKUP_SUFFIX}{stamp}")
        shutil.copy2(target, backup)
        return str(backup)
