"""Enabled MCP servers and their config (`berth mcp server ...`, `berth mcp config ...`).

A server is a catalog entry, found by its name across all catalogs (the built-in one
first, then the user's by name: the first catalog that has the name defines the server).
berth-mcpd keeps two things about servers: the set of enabled names, and each server's
config, the object its entry's `config` JSON Schema describes (Docker's config.yaml, one
document keyed by server name).

Config text is YAML or JSON (JSON is read as YAML). Every problem with it is reported as
an INVALID_ARGUMENT violation on `content`: "line L, column C: invalid YAML: ..." for a
syntax error, "SERVER.PATH: reason" for a value the schema refuses; nothing is written
then. Running servers is the gateway's job (berth.mcp.gateway); it hears of every change
through `on_change`. The SECRETS, POLICY and OAUTH columns come from `standing`, which the
secret store, the policy and the OAuth apps answer (see main.py).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from berth.common.errors import FieldViolation, InvalidArgument, NotFound
from berth.mcp.domain import json_schema
from berth.mcp.domain.catalogs import Catalogs, ServerEntry

# One server's config: the object of its properties.
Config = dict[str, Any]


class Requirement(enum.Enum):
    """One of the OAUTH, SECRETS, CONFIG and POLICY columns of `server ls`."""

    NONE = "none"
    DONE = "done"
    PARTIAL = "partial"
    REQUIRED = "required"


class ConfigFormat(enum.Enum):
    YAML = "yaml"
    JSON = "json"


@dataclass(frozen=True)
class ServerStatus:
    """A server as `server ls|inspect` shows it. `catalog` is empty when no catalog has its
    entry any more (it stays enabled until disabled)."""

    name: str
    catalog: str
    entry: ServerEntry
    enabled: bool
    config: Config = field(default_factory=dict)
    oauth: Requirement = Requirement.NONE
    secrets: Requirement = Requirement.NONE
    config_status: Requirement = Requirement.NONE
    policy: Requirement = Requirement.NONE


# A server's (secrets, policy, oauth) requirement columns.
Standing = Callable[[str, ServerEntry], tuple[Requirement, Requirement, Requirement]]


def nothing_in_place(name: str, entry: ServerEntry) -> tuple[Requirement, Requirement, Requirement]:
    """The standing when no secret store is wired: every need is unmet."""
    secrets = Requirement.REQUIRED if entry.get("secrets") else Requirement.NONE
    oauth = Requirement.REQUIRED if entry.get("oauth") else Requirement.NONE
    return secrets, secrets, oauth


class ServerStore(Protocol):
    """Where the enabled set and the config are kept."""

    def load_enabled(self) -> list[str]: ...
    def save_enabled(self, names: list[str]) -> None: ...
    def load_config(self) -> dict[str, Config]: ...
    def save_config(self, config: Mapping[str, Config]) -> None: ...


# -- config text ------------------------------------------------------------------------


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML that keeps dates as the strings they look like (config is JSON data)."""


_ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", _ConfigLoader.construct_yaml_str)


def _invalid(reasons: Iterable[str]) -> InvalidArgument:
    violations = [FieldViolation("content", reason) for reason in reasons]
    return InvalidArgument(violations, reason="INVALID_CONFIG")


def parse_config_text(content: str, path: str = "") -> Any:
    """The document of YAML or JSON text (at `path` of the whole config), or InvalidArgument
    naming the line."""
    if not content.strip():
        raise _invalid(["give the config as a YAML or JSON document"])
    try:
        document = yaml.load(content, Loader=_ConfigLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = error.problem or error.context
        raise _invalid([f"line {line}, column {column}: invalid YAML: {reason}"]) from None
    except yaml.YAMLError as error:
        raise _invalid([f"invalid YAML: {error}"]) from None
    problems = not_json(document, path)
    if problems:
        raise _invalid(problems)
    return document


def not_json(value: Any, path: str) -> list[str]:
    """Where a YAML document holds something JSON cannot (binary, sets, non-string keys)."""
    if isinstance(value, dict):
        found = [
            f"{path or 'the document'}: key {k!r} is not a string"
            for k in value
            if not isinstance(k, str)
        ]
        for key, item in value.items():
            found.extend(not_json(item, json_schema.child_path(path, str(key))))
        return found
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in not_json(item, f"{path}[{i}]")]
    if value is None or isinstance(value, (str, int, float, bool)):
        return []
    return [f"{path or 'the document'}: not a JSON value ({type(value).__name__})"]


def dump_config(document: Mapping[str, Any], fmt: ConfigFormat = ConfigFormat.YAML) -> str:
    if fmt is ConfigFormat.JSON:
        return json.dumps(document, indent=2) + "\n"
    return yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True, width=100)


def config_problems(server: str, entry: ServerEntry, config: Any) -> list[str]:
    """What is wrong with `config` as the config of `server` (paths start with its name)."""
    if not isinstance(config, dict):
        return [f"{server}: expected an object of config properties, got {_kind(config)}"]
    schema = entry.get("config")
    if schema is None:
        return [f"{server}: the server takes no config"] if config else []
    return json_schema.problems(config, schema, server)


def _kind(value: Any) -> str:
    return json_schema.TYPE_NAMES.get(json_schema.kind_of(value), json_schema.kind_of(value))


def config_requirement(entry: ServerEntry, config: Config) -> Requirement:
    schema = entry.get("config")
    if schema is None:
        return Requirement.NONE
    if not json_schema.problems(config, schema):
        return Requirement.DONE
    return Requirement.PARTIAL if config else Requirement.REQUIRED


def server_status(
    name: str,
    catalog: str,
    entry: ServerEntry,
    enabled: bool,
    config: Config,
    standing: Standing = nothing_in_place,
) -> ServerStatus:
    secrets, policy, oauth = standing(name, entry) if entry else nothing_in_place(name, entry)
    return ServerStatus(
        name=name,
        catalog=catalog,
        entry=entry,
        enabled=enabled,
        config=config,
        oauth=oauth,
        secrets=secrets,
        config_status=config_requirement(entry, config),
        policy=policy,
    )


# -- the rules --------------------------------------------------------------------------


def _not_found(name: str) -> NotFound:
    return NotFound(
        f"no server {name!r} in any catalog (see `berth mcp catalog show`)",
        reason="SERVER_NOT_FOUND",
        metadata={"name": name},
    )


def _needs_names(names: list[str]) -> None:
    if not names:
        raise InvalidArgument([FieldViolation("names", "give at least one server name")])
    empty = [
        FieldViolation(f"names[{i}]", "empty server name") for i, n in enumerate(names) if not n
    ]
    if empty:
        raise InvalidArgument(empty)


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


class Servers:
    """The enabled servers and the config of every server, over the catalogs."""

    def __init__(self, catalogs: Catalogs, store: ServerStore) -> None:
        self.catalogs = catalogs
        self.store = store
        # Called after every change (connected MCP clients hear that the lists changed).
        self.on_change: Callable[[], None] = lambda: None
        self.standing: Standing = nothing_in_place

    def _save_enabled(self, names: list[str]) -> None:
        self.store.save_enabled(names)
        self.on_change()

    def _save_config(self, config: Mapping[str, Config]) -> None:
        self.store.save_config(config)
        self.on_change()

    def entries(self) -> dict[str, tuple[str, ServerEntry]]:
        """Server name -> (catalog name, entry); the first catalog with a name wins."""
        found: dict[str, tuple[str, ServerEntry]] = {}
        for catalog in self.catalogs.list():
            for name, entry in catalog.servers.items():
                found.setdefault(name, (catalog.name, entry))
        return found

    def find(self, name: str) -> tuple[str, ServerEntry]:
        entry = self.entries().get(name)
        if entry is None:
            raise _not_found(name)
        return entry

    def enable(self, names: list[str]) -> list[ServerStatus]:
        """All or nothing: an unknown name enables none."""
        _needs_names(names)
        entries = self.entries()
        unknown = [name for name in _unique(names) if name not in entries]
        if unknown:
            raise _not_found(unknown[0])
        self._save_enabled(sorted({*self.store.load_enabled(), *names}))
        return self._statuses(_unique(names), entries)

    def disable(self, names: list[str]) -> list[str]:
        """The given names that were enabled; the others are ignored."""
        _needs_names(names)
        enabled = self.store.load_enabled()
        disabled = [name for name in _unique(names) if name in enabled]
        if disabled:
            self._save_enabled([name for name in enabled if name not in disabled])
        return disabled

    def reset(self) -> list[str]:
        enabled = sorted(self.store.load_enabled())
        if enabled:
            self._save_enabled([])
        return enabled

    def list(self) -> list[ServerStatus]:
        return self._statuses(sorted(self.store.load_enabled()), self.entries())

    def inspect(self, name: str) -> ServerStatus:
        if not name:
            raise InvalidArgument([FieldViolation("name", "give a server name")])
        entries = self.entries()
        if name not in entries:
            raise _not_found(name)
        return self._statuses([name], entries)[0]

    def _statuses(
        self, names: list[str], entries: Mapping[str, tuple[str, ServerEntry]]
    ) -> list[ServerStatus]:
        enabled = set(self.store.load_enabled())
        config = self.store.load_config()
        return [
            server_status(
                name,
                *entries.get(name, ("", {})),
                name in enabled,
                config.get(name, {}),
                self.standing,
            )
            for name in names
        ]

    # -- config -------------------------------------------------------------------------

    def read_config(self, server: str, fmt: ConfigFormat) -> str:
        config = self.store.load_config()
        if not server:
            return dump_config(config, fmt)
        if server not in config:
            self.find(server)
        return dump_config(config.get(server, {}), fmt)

    def write_config(self, server: str, content: str) -> str:
        """Validates, then stores; returns the stored config as YAML."""
        if server:
            self.find(server)
        document = parse_config_text(content, server)
        replacement = {server: document} if server else self._whole_config(document)
        problems = self._problems(replacement)
        if problems:
            raise _invalid(problems)
        config = {**(self.store.load_config() if server else {}), **replacement}
        stored = {name: value for name, value in config.items() if value}
        self._save_config(stored)
        return dump_config(stored.get(server, {}) if server else stored)

    def reset_config(self, server: str) -> None:
        config = self.store.load_config()
        if not server:
            self._save_config({})
            return
        if server not in config:
            self.find(server)
            return
        del config[server]
        self._save_config(config)

    @staticmethod
    def _whole_config(document: Any) -> dict[str, Any]:
        if document is None:
            return {}
        if not isinstance(document, dict):
            reason = f"expected an object keyed by server name, got {_kind(document)}"
            raise _invalid([reason])
        return document

    def _problems(self, replacement: Mapping[str, Any]) -> list[str]:
        entries = self.entries()
        found: list[str] = []
        for name, value in replacement.items():
            if name not in entries:
                found.append(f"{name}: no server {name!r} in any catalog")
                continue
            found.extend(config_problems(name, entries[name][1], value))
        return found
