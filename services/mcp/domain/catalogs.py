"""Catalogs of MCP servers (`berth mcp catalog ...`): the model, the YAML format, the rules.

A catalog is a YAML file close to Docker's catalog format, with berth's ServerSpec fields::

    name: team-servers              # optional: the catalog's name (lowercase, digits, dashes)
    displayName: Team servers       # optional
    description: What we run        # optional
    servers:                        # server name -> entry (lowercase letters, digits, dashes)
      time:
        title: Time                 # optional strings: title, description, icon, homepage
        description: Current time and time zone conversion
        command: mcp-server-time    # a stdio server: command, args, workingDir, env ...
        args: ["--local-timezone", "{{time.zone}}"]   # `{{server.property}}` config templates
        workingDir: /srv/time
        env: {TZ: UTC}              # string values only
        config:                     # JSON Schema of the server's config, as YAML
          type: object
          properties: {zone: {type: string}}
          required: [zone]
        tools:                      # what it declares: name (required), title, description
          - {name: get_current_time, description: Get the current time}
        longLived: false
        callTimeout: 30s            # h, m, s, ms parts, e.g. 1m30s or 500ms
        tags: [time]
      search:
        remote:                     # ... or a remote one: exactly one of command and remote
          url: https://example.com/mcp
          transport: streamable-http  # or sse; default streamable-http
          headers: {X-Client: berth}
        secrets:                    # name (required), injection: env|file|header, env, path,
          - name: search.api_key    #   header, description
            header: X-API-Key       # injection defaults to header when `header` is given,
        oauth:                      #   to env otherwise
          provider: search          # required; scopes, env, authorizationServer, clientId
          scopes: [read]

An entry is kept as its validated mapping (`ServerEntry`), exactly the keys above; export
writes it back, so an exported catalog imports to the same thing. Problems are reported as
"line L, column C: servers.time.command: expected a string", one per problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import PurePosixPath
from typing import Any, Protocol

import yaml

from berth.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from berth.mcp.domain.yaml_schema import (
    Flag,
    JsonObject,
    ListOf,
    MapOf,
    Problem,
    Record,
    Text,
)

BUILTIN_NAME = "berth"
NAME_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"
NAME_HINT = "a valid name (lowercase letters, digits and dashes, at most 64)"
DURATION_PATTERN = r"(?=\d)(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?"
TRANSPORTS = ("streamable-http", "sse")
INJECTIONS = ("env", "file", "header")

# A server entry: its validated mapping, with the YAML keys of the module docstring.
ServerEntry = dict[str, Any]


@dataclass(frozen=True)
class Catalog:
    name: str
    display_name: str = ""
    description: str = ""
    source: str = ""
    builtin: bool = False
    update_time: datetime | None = None
    servers: Mapping[str, ServerEntry] = field(default_factory=dict)


# -- the format -------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta | None:
    """ "1m30s", "500ms" ... as a timedelta; None when it is not such a duration."""
    match = re.fullmatch(DURATION_PATTERN, text)
    if match is None:
        return None
    hours, minutes, seconds, millis = (int(part or 0) for part in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds, milliseconds=millis)


def format_duration(duration: timedelta) -> str:
    millis = round(duration.total_seconds() * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _one_way_to_run(node: yaml.Node, entry: dict[str, Any], path: str) -> list[str]:
    runs = [key for key in ("command", "remote") if key in entry]
    if len(runs) != 1:
        return ["needs exactly one of `command` (stdio) and `remote`"]
    stdio_only = sorted({"args", "workingDir", "env"} & entry.keys())
    if "remote" in entry and stdio_only:
        return [f"{', '.join(stdio_only)} only apply to a stdio server (`command`)"]
    headers = [s["name"] for s in entry.get("secrets", []) if injection_of(s) == "header"]
    if "command" in entry and headers:
        return [f"secret {headers[0]!r}: header injection needs a remote server"]
    return []


def _secret_fields_fit(node: yaml.Node, secret: dict[str, Any], path: str) -> list[str]:
    injection = injection_of(secret)
    if injection == "header" and "header" not in secret:
        return ["header injection needs `header`"]
    if injection in ("env", "file") and "env" not in secret:
        return [f"{injection} injection needs `env`"]
    if "path" in secret and injection != "file":
        return ["`path` only applies to file injection"]
    return []


def _duration_ok(node: yaml.Node, entry: dict[str, Any], path: str) -> list[str]:
    timeout = entry.get("callTimeout")
    if timeout is not None and parse_duration(timeout) is None:
        return [f"callTimeout: {timeout!r} is not a duration like 30s, 1m30s or 500ms"]
    return []


def injection_of(secret: Mapping[str, Any]) -> str:
    return secret.get("injection") or ("header" if "header" in secret else "env")


TEXT = Text()
TEXTS = ListOf(TEXT)
TEXT_MAP = MapOf(TEXT)
SECRET = Record(
    {
        "name": TEXT,
        "injection": Text(choices=INJECTIONS),
        "env": TEXT,
        "path": TEXT,
        "header": TEXT,
        "description": TEXT,
    },
    required=frozenset({"name"}),
    rules=(_secret_fields_fit,),
)
ENTRY = Record(
    {
        "title": TEXT,
        "description": TEXT,
        "command": TEXT,
        "args": TEXTS,
        "workingDir": TEXT,
        "remote": Record(
            {"url": TEXT, "transport": Text(choices=TRANSPORTS), "headers": TEXT_MAP},
            required=frozenset({"url"}),
        ),
        "env": TEXT_MAP,
        "secrets": ListOf(SECRET),
        "config": JsonObject(),
        "tools": ListOf(
            Record(
                {"name": TEXT, "title": TEXT, "description": TEXT},
                required=frozenset({"name"}),
            )
        ),
        "oauth": Record(
            {
                "provider": TEXT,
                "scopes": TEXTS,
                "env": TEXT,
                "authorizationServer": TEXT,
                "clientId": TEXT,
            },
            required=frozenset({"provider"}),
        ),
        "longLived": Flag(),
        "callTimeout": TEXT,
        "icon": TEXT,
        "homepage": TEXT,
        "tags": TEXTS,
    },
    rules=(_one_way_to_run, _duration_ok),
)
CATALOG = Record(
    {
        "name": Text(pattern=NAME_PATTERN, hint=NAME_HINT),
        "displayName": TEXT,
        "description": TEXT,
        "servers": MapOf(ENTRY, key=Text(pattern=NAME_PATTERN, hint=NAME_HINT)),
    },
    required=frozenset({"servers"}),
)


def _invalid(problems: list[Problem], field_name: str) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation(field_name, str(problem)) for problem in problems],
        reason="INVALID_CATALOG",
    )


def read_document(text: str, field_name: str = "content") -> dict[str, Any]:
    """The catalog file's validated top-level mapping, or InvalidArgument listing every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = f"invalid YAML: {error.problem or error.context}"
        raise _invalid([Problem(line, column, "", reason)], field_name) from None
    except yaml.YAMLError as error:
        raise _invalid([Problem(1, 1, "", f"invalid YAML: {error}")], field_name) from None
    if root is None:
        raise _invalid([Problem(1, 1, "", "the file is empty")], field_name)
    problems: list[Problem] = []
    document = CATALOG.read(root, "", problems)
    if problems:
        raise _invalid(problems, field_name)
    return document


def parse_catalog(text: str, name: str = "", source: str = "") -> Catalog:
    """A catalog from its YAML text, named `name`, else by its own `name:` key, else after
    the file it came from (`team.yaml` or `https://host/team.yaml` gives `team`)."""
    document = read_document(text)
    chosen = name or document.get("name", "") or _base_name(source)
    check_name(chosen, "name")
    return Catalog(
        name=chosen,
        display_name=document.get("displayName", ""),
        description=document.get("description", ""),
        source=source,
        servers=dict(sorted(document["servers"].items())),
    )


def _base_name(source: str) -> str:
    path = source.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return PurePosixPath(path).stem.lower() if path else ""


def dump_catalog(catalog: Catalog) -> str:
    """The catalog's YAML text; parse_catalog reads it back to the same catalog."""
    document: dict[str, Any] = {"name": catalog.name}
    if catalog.display_name:
        document["displayName"] = catalog.display_name
    if catalog.description:
        document["description"] = catalog.description
    document["servers"] = dict(catalog.servers)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def check_name(name: str, field_name: str) -> None:
    if not name:
        reason = "a catalog name is needed: give one or add a `name:` key to the file"
        raise InvalidArgument([FieldViolation(field_name, reason)], reason="MISSING_NAME")
    if not re.fullmatch(NAME_PATTERN, name):
        raise InvalidArgument([FieldViolation(field_name, f"{name!r} is not {NAME_HINT}")])


def entry_from_document(text: str, server: str, field_name: str) -> ServerEntry:
    """The entry named `server` of another catalog file."""
    entries = read_document(text, field_name)["servers"]
    if server not in entries:
        known = ", ".join(sorted(entries)) or "none"
        reason = f"holds no server {server!r} (it has: {known})"
        raise InvalidArgument([FieldViolation(field_name, reason)], reason="SERVER_NOT_IN_FILE")
    return entries[server]


def entry_from_mapping(entry: Mapping[str, Any], field_name: str) -> ServerEntry:
    """A mapping built elsewhere (e.g. from a ServerSpec), validated as if it were in a file."""
    text = yaml.safe_dump({"servers": {"entry": dict(entry)}}, sort_keys=False)
    return read_document(text, field_name)["servers"]["entry"]


def load_builtin() -> Catalog:
    """The catalog shipped with berth, `catalogs/berth.yaml` of this package."""
    text = (resources.files("berth.mcp") / "catalogs" / "berth.yaml").read_text("utf-8")
    return replace(parse_catalog(text, BUILTIN_NAME), builtin=True)


# -- the rules --------------------------------------------------------------------------


class CatalogStore(Protocol):
    """Where user catalogs are kept."""

    def load_all(self) -> list[Catalog]: ...
    def load(self, name: str) -> Catalog | None: ...
    def save(self, catalog: Catalog) -> None: ...
    def remove(self, name: str) -> bool: ...


class Catalogs:
    """The built-in catalog and the user's, with what may be done to each."""

    def __init__(
        self,
        builtin: Catalog,
        store: CatalogStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.builtin = builtin
        self.store = store
        self.clock = clock
        # Called after every change (the gateway re-reads how to run its servers).
        self.on_change: Callable[[], None] = lambda: None

    def _save(self, catalog: Catalog) -> None:
        self.store.save(catalog)
        self.on_change()

    def _remove(self, name: str) -> bool:
        removed = self.store.remove(name)
        self.on_change()
        return removed

    def list(self) -> list[Catalog]:
        return [self.builtin, *sorted(self.store.load_all(), key=lambda c: c.name)]

    def get(self, name: str) -> Catalog:
        if not name or name == BUILTIN_NAME:
            return self.builtin
        catalog = self.store.load(name) if re.fullmatch(NAME_PATTERN, name) else None
        if catalog is None:
            raise NotFound(
                f"no catalog {name!r}", reason="CATALOG_NOT_FOUND", metadata={"name": name}
            )
        return catalog

    def create(self, name: str, display_name: str, description: str) -> Catalog:
        check_name(name, "name")
        if name == BUILTIN_NAME or self.store.load(name) is not None:
            raise AlreadyExists(f"catalog {name!r} already exists", metadata={"name": name})
        catalog = Catalog(name, display_name, description, update_time=self.clock())
        self._save(catalog)
        return catalog

    def import_(self, name: str, content: str, source: str, dry_run: bool) -> Catalog:
        catalog = parse_catalog(content, name, source)
        self._refuse_builtin(catalog.name, "replaced")
        catalog = replace(catalog, update_time=self.clock())
        if not dry_run:
            self._save(catalog)
        return catalog

    def export(self, name: str) -> str:
        return dump_catalog(self.get(name))

    def add_server(self, catalog_name: str, server: str, entry: ServerEntry, force: bool) -> None:
        catalog = self._user_catalog(catalog_name, "changed")
        if not re.fullmatch(NAME_PATTERN, server):
            raise InvalidArgument([FieldViolation("server", f"{server!r} is not {NAME_HINT}")])
        if server in catalog.servers and not force:
            raise AlreadyExists(
                f"catalog {catalog_name!r} already has {server!r}; use --force to replace it",
                metadata={"catalog": catalog_name, "server": server},
            )
        servers = dict(sorted({**catalog.servers, server: entry}.items()))
        self._save(replace(catalog, servers=servers, update_time=self.clock()))

    def remove_server(self, catalog_name: str, server: str) -> None:
        catalog = self._user_catalog(catalog_name, "changed")
        if server not in catalog.servers:
            raise NotFound(
                f"catalog {catalog_name!r} has no server {server!r}",
                reason="SERVER_NOT_FOUND",
                metadata={"catalog": catalog_name, "server": server},
            )
        servers = {name: e for name, e in catalog.servers.items() if name != server}
        self._save(replace(catalog, servers=servers, update_time=self.clock()))

    def remove(self, name: str) -> None:
        self._user_catalog(name, "removed")
        self._remove(name)

    def reset(self) -> list[str]:
        names = sorted(c.name for c in self.store.load_all())
        for name in names:
            self._remove(name)
        return names

    def _user_catalog(self, name: str, verb: str) -> Catalog:
        self._refuse_builtin(name, verb)
        return self.get(name)

    @staticmethod
    def _refuse_builtin(name: str, verb: str) -> None:
        if not name or name == BUILTIN_NAME:
            raise FailedPrecondition(
                f"the built-in catalog {BUILTIN_NAME!r} cannot be {verb}",
                reason="BUILTIN_CATALOG",
                metadata={"name": BUILTIN_NAME},
            )
