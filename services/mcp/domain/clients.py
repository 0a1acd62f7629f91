"""MCP clients and berth's entry in their configuration files (`berth mcp client ...`).

Each known client has a user-wide file under the home directory and, for most, a file in
the project (the git repository around the caller's working directory). berth's entry is
named "berth": for STDIO it runs `berth mcp gateway run`; for STREAMING and SSE it is the
aggregated endpoint's URL with `Authorization: Bearer <token>`. Connecting and
disconnecting change that entry only; the file's previous version is kept as a backup.

Scope, as Docker's `docker mcp client` has it: GLOBAL is the user-wide file; PROJECT is the
project's file and needs a git repository around `project_dir`; UNSPECIFIED is the project's
file for clients that have one, the user-wide file for the others.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from berth.common.errors import FailedPrecondition, FieldViolation, InvalidArgument

ENTRY_NAME = "berth"
STDIO_COMMAND = "berth"
STDIO_ARGS = ("mcp", "gateway", "run")
GOOSE_DESCRIPTION = "berth's MCP gateway: the servers enabled with `berth mcp server enable`"


class Transport(enum.Enum):
    """How a client reaches berth (the CLI's `--transport`)."""

    STDIO = "stdio"
    STREAMING = "streaming"
    SSE = "sse"


# The path of each HTTP transport on the endpoint.
HTTP_PATHS = {Transport.STREAMING: "/mcp", Transport.SSE: "/sse"}


class Scope(enum.Enum):
    UNSPECIFIED = "unspecified"
    GLOBAL = "global"
    PROJECT = "project"


class Format(enum.Enum):
    JSON = "json"
    JSONC = "jsonc"  # JSON with comments and trailing commas
    YAML = "yaml"
    TOML = "toml"


# The daemon's aggregated endpoint for an HTTP transport: (URL, bearer token), or None when
# it serves no HTTP.
Endpoint = Callable[[Transport], tuple[str, str] | None]


@dataclass(frozen=True)
class Gateway:
    """What berth's entry points at."""

    transport: Transport
    url: str = ""
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Layout:
    """Where server entries live in a file: the object (or, `listed`, the list of objects
    named by their "name") at `servers_at`. `template` is the document of a new file."""

    format: Format
    servers_at: tuple[str, ...]
    listed: bool = False
    template: Mapping[str, Any] | None = None


class ConfigDocument(Protocol):
    """One client configuration file, read; changes are written by ConfigFiles.write."""

    def servers(self) -> dict[str, Any]: ...
    def put_server(self, name: str, entry: Mapping[str, Any]) -> None: ...
    def remove_server(self, name: str) -> None: ...
    def dump(self) -> str: ...


class ConfigFiles(Protocol):
    """Reading and writing client configuration files. `read` gives an empty document for a
    missing file and raises InvalidArgument (naming the file and line) for one that cannot
    be parsed; `write` and `delete` return the backup's path ("" when there was no file)."""

    def read(self, path: Path, layout: Layout) -> ConfigDocument: ...
    def write(self, path: Path, text: str) -> str: ...
    def delete(self, path: Path) -> str: ...


# -- berth's entry, client by client ------------------------------------------------------

Entry = dict[str, Any]


def plain_entry(gateway: Gateway, url_key: str = "url") -> Entry:
    """The `mcpServers` entry most clients share: a command, or a URL with headers."""
    if gateway.transport is Transport.STDIO:
        return {"command": STDIO_COMMAND, "args": list(STDIO_ARGS)}
    return {url_key: gateway.url, "headers": gateway.headers}


def typed_entry(gateway: Gateway, http_type: str = "http") -> Entry:
    """Claude Code's and VS Code's entries, which name their transport in `type`."""
    if gateway.transport is Transport.STDIO:
        return {"type": "stdio", "command": STDIO_COMMAND, "args": list(STDIO_ARGS)}
    kind = http_type if gateway.transport is Transport.STREAMING else "sse"
    return {"type": kind, "url": gateway.url, "headers": gateway.headers}


def gemini_entry(gateway: Gateway) -> Entry:
    """Gemini CLI: `httpUrl` is streamable HTTP, `url` is SSE."""
    if gateway.transport is Transport.STREAMING:
        return {"httpUrl": gateway.url, "headers": gateway.headers}
    return plain_entry(gateway)


def windsurf_entry(gateway: Gateway) -> Entry:
    """Windsurf: a remote server's URL is `serverUrl`."""
    return plain_entry(gateway, url_key="serverUrl")


def zed_entry(gateway: Gateway) -> Entry:
    entry = plain_entry(gateway)
    return {**entry, "env": {}} if gateway.transport is Transport.STDIO else entry


def continue_entry(gateway: Gateway) -> Entry:
    """Continue: a list item carrying its name; headers go in `requestOptions`."""
    if gateway.transport is Transport.STDIO:
        return {"name": ENTRY_NAME, "command": STDIO_COMMAND, "args": list(STDIO_ARGS)}
    kind = "streamable-http" if gateway.transport is Transport.STREAMING else "sse"
    options = {"headers": gateway.headers}
    return {"name": ENTRY_NAME, "type": kind, "url": gateway.url, "requestOptions": options}


def goose_entry(gateway: Gateway) -> Entry:
    common = {"name": ENTRY_NAME, "enabled": True, "description": GOOSE_DESCRIPTION}
    tail = {"envs": {}, "env_keys": [], "timeout": 300}
    if gateway.transport is Transport.STDIO:
        run = {"type": "stdio", "cmd": STDIO_COMMAND, "args": list(STDIO_ARGS)}
        return {**common, **run, **tail}
    http = {"type": "streamable_http", "uri": gateway.url, "headers": gateway.headers}
    return {**common, **http, **tail}


def codex_entry(gateway: Gateway) -> Entry:
    if gateway.transport is Transport.STDIO:
        return plain_entry(gateway)
    return {"url": gateway.url, "http_headers": gateway.headers}


def transport_of(entry: Any) -> Transport | None:
    """How an entry (of any client's shape) reaches its server."""
    if not isinstance(entry, Mapping):
        return None
    kind = str(entry.get("type", "")).lower()
    if "command" in entry or "cmd" in entry or kind == "stdio":
        return Transport.STDIO
    if kind == "sse":
        return Transport.SSE
    if kind in ("http", "streamable-http", "streamable_http") or "httpUrl" in entry:
        return Transport.STREAMING
    url = next((entry[k] for k in ("url", "serverUrl", "uri") if k in entry), None)
    if not isinstance(url, str):
        return None
    return Transport.SSE if url.rstrip("/").endswith("/sse") else Transport.STREAMING


# -- the clients --------------------------------------------------------------------------

ALL = frozenset(Transport)
NO_SSE = frozenset({Transport.STDIO, Transport.STREAMING})


@dataclass(frozen=True)
class Client:
    """One known MCP client. Paths are Linux's: `install_dir` and `global_file` under the
    home directory, `project_file` under the project's root ("" when it has none)."""

    name: str
    display_name: str
    install_dir: str
    global_file: str
    project_file: str
    layout: Layout
    entry: Callable[[Gateway], Entry]
    transports: frozenset[Transport] = ALL
    # The project file holds berth's entry only: a disconnect removes the file.
    project_file_is_berths: bool = False
    project_layout: Layout | None = None

    @property
    def supports_project(self) -> bool:
        return bool(self.project_file)

    def layout_for(self, scope: Scope) -> Layout:
        if scope is Scope.PROJECT and self.project_layout is not None:
            return self.project_layout
        return self.layout


MCP_SERVERS_JSON = Layout(Format.JSON, ("mcpServers",))
CONTINUE_BLOCK = {"name": "berth", "version": "0.0.1", "schema": "v1", "mcpServers": []}

CLIENTS: tuple[Client, ...] = (
    Client(
        name="claude-code",
        display_name="Claude Code",
        install_dir=".claude",
        global_file=".claude.json",
        project_file=".mcp.json",
        layout=MCP_SERVERS_JSON,
        entry=typed_entry,
    ),
    Client(
        name="claude-desktop",
        display_name="Claude Desktop",
        install_dir=".config/Claude",
        global_file=".config/Claude/claude_desktop_config.json",
        project_file="",
        layout=MCP_SERVERS_JSON,
        entry=plain_entry,
        # Its file declares local (stdio) servers only; remote ones are added in the app.
        transports=frozenset({Transport.STDIO}),
    ),
    Client(
        name="codex",
        display_name="Codex",
        install_dir=".codex",
        global_file=".codex/config.toml",
        project_file=".codex/config.toml",
        layout=Layout(Format.TOML, ("mcp_servers",)),
        entry=codex_entry,
        transports=NO_SSE,
    ),
    Client(
        name="continue",
        display_name="Continue",
        install_dir=".continue",
        global_file=".continue/config.yaml",
        project_file=".continue/mcpServers/berth.yaml",
        layout=Layout(Format.YAML, ("mcpServers",), listed=True),
        entry=continue_entry,
        project_file_is_berths=True,
        project_layout=Layout(Format.YAML, ("mcpServers",), True, CONTINUE_BLOCK),
    ),
    Client(
        name="cursor",
        display_name="Cursor",
        install_dir=".cursor",
        global_file=".cursor/mcp.json",
        project_file=".cursor/mcp.json",
        layout=MCP_SERVERS_JSON,
        entry=plain_entry,
    ),
    Client(
        name="gemini-cli",
        display_name="Gemini CLI",
        install_dir=".gemini",
        global_file=".gemini/settings.json",
        project_file=".gemini/settings.json",
        layout=Layout(Format.JSONC, ("mcpServers",)),
        entry=gemini_entry,
    ),
    Client(
        name="goose",
        display_name="Goose",
        install_dir=".config/goose",
        global_file=".config/goose/config.yaml",
        project_file="",
        layout=Layout(Format.YAML, ("extensions",)),
        entry=goose_entry,
        transports=NO_SSE,
    ),
    Client(
        name="lm-studio",
        display_name="LM Studio",
        install_dir=".lmstudio",
        global_file=".lmstudio/mcp.json",
        project_file="",
        layout=MCP_SERVERS_JSON,
        entry=plain_entry,
        transports=NO_SSE,
    ),
    Client(
        name="vscode",
        display_name="VS Code",
        install_dir=".config/Code",
        global_file=".config/Code/User/mcp.json",
        project_file=".vscode/mcp.json",
        layout=Layout(Format.JSONC, ("servers",)),
        entry=typed_entry,
    ),
    Client(
        name="windsurf",
        display_name="Windsurf",
        install_dir=".codeium/windsurf",
        global_file=".codeium/windsurf/mcp_config.json",
        project_file="",
        layout=MCP_SERVERS_JSON,
        entry=windsurf_entry,
    ),
    Client(
        name="zed",
        display_name="Zed",
        install_dir=".config/zed",
        global_file=".config/zed/settings.json",
        project_file=".zed/settings.json",
        layout=Layout(Format.JSONC, ("context_servers",)),
        entry=zed_entry,
        transports=NO_SSE,
    ),
)
KNOWN = {client.name: client for client in CLIENTS}


@dataclass(frozen=True)
class ClientStatus:
    """A client's file as berth sees it (a row of `client ls`)."""

    client: Client
    scope: Scope
    config_path: Path
    installed: bool
    connected: bool
    transport: Transport | None
    servers: list[str]


@dataclass(frozen=True)
class Target:
    """The file a call is about."""

    path: Path
    scope: Scope


# -- rules --------------------------------------------------------------------------------


def find_project_root(directory: Path) -> Path | None:
    """The nearest directory at or above `directory` with a `.git` (a folder, or the file of
    a worktree or submodule), as Docker's client commands look for it."""
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def _unknown_client(name: str) -> InvalidArgument:
    known = ", ".join(KNOWN)
    reason = f"unknown MCP client {name!r}; known clients: {known}" if name else None
    violation = FieldViolation("client", reason or f"give an MCP client, one of: {known}")
    return InvalidArgument([violation], reason="UNKNOWN_CLIENT", metadata={"client": name})


def _absolute(field_name: str, value: str) -> Path:
    path = Path(value)
    if not path.is_absolute():
        reason = f"{value!r} is not an absolute path"
        raise InvalidArgument([FieldViolation(field_name, reason)])
    return path


class McpClients:
    """berth's entry in the MCP clients' files under one home directory."""

    def __init__(self, home: Path, endpoint: Endpoint, files: ConfigFiles) -> None:
        self.home = home
        self.endpoint = endpoint
        self.files = files

    def connect(
        self,
        name: str,
        scope: Scope = Scope.UNSPECIFIED,
        project_dir: str = "",
        transport: Transport = Transport.STDIO,
        config_path: str = "",
    ) -> tuple[ClientStatus, str]:
        """The client's status after the change and the backup's path ("" when there was no
        file, or when berth's entry was already exactly this one)."""
        client = self.client(name)
        entry = client.entry(self.gateway(client, transport))
        target = self.target(client, scope, project_dir, config_path)
        document = self.files.read(target.path, client.layout_for(target.scope))
        backup = ""
        if document.servers().get(ENTRY_NAME) != entry:
            document.put_server(ENTRY_NAME, entry)
            backup = self.files.write(target.path, document.dump())
        return self.status(client, target, document), backup

    def disconnect(
        self,
        name: str,
        scope: Scope = Scope.UNSPECIFIED,
        project_dir: str = "",
        config_path: str = "",
    ) -> tuple[ClientStatus, str]:
        """The client's status after the change and the backup's path ("" when berth was not
        connected: then nothing changes)."""
        client = self.client(name)
        target = self.target(client, scope, project_dir, config_path)
        document = self.files.read(target.path, client.layout_for(target.scope))
        if ENTRY_NAME not in document.servers():
            return self.status(client, target, document), ""
        document.remove_server(ENTRY_NAME)
        if self._removes_file(client, target, document):
            backup = self.files.delete(target.path)
        else:
            backup = self.files.write(target.path, document.dump())
        return self.status(client, target, document), backup

    def list(self, scope: Scope = Scope.UNSPECIFIED, project_dir: str = "") -> list[ClientStatus]:
        """One status per known client, sorted by name. A file that cannot be parsed shows
        as not connected and without servers."""
        statuses = []
        for client in sorted(CLIENTS, key=lambda c: c.name):
            target = self.target(client, scope, project_dir, "")
            try:
                document = self.files.read(target.path, client.layout_for(target.scope))
            except InvalidArgument:
                document = None
            statuses.append(self.status(client, target, document))
        return statuses

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def client(name: str) -> Client:
        client = KNOWN.get(name)
        if client is None:
            raise _unknown_client(name)
        return client

    def gateway(self, client: Client, transport: Transport) -> Gateway:
        if transport not in client.transports:
            supported = ", ".join(t.value for t in Transport if t in client.transports)
            reason = (
                f"{client.display_name} cannot reach berth over {transport.value}; "
                f"it supports: {supported}"
            )
            raise InvalidArgument([FieldViolation("transport", reason)])
        if transport is Transport.STDIO:
            return Gateway(transport)
        served = self.endpoint(transport)
        if served is None:
            raise FailedPrecondition(
                "berth-mcpd serves no HTTP endpoint for MCP clients (it was started with "
                "--gateway-port -1): connect with --transport stdio instead",
                reason="NO_HTTP_ENDPOINT",
                metadata={"transport": transport.value},
            )
        url, token = served
        return Gateway(transport, with_path(url, HTTP_PATHS[transport]), token)

    def target(self, client: Client, scope: Scope, project_dir: str, config_path: str) -> Target:
        if config_path:
            chosen = Scope.PROJECT if scope is Scope.PROJECT else Scope.GLOBAL
            return Target(_absolute("config_path", config_path), chosen)
        if scope is Scope.GLOBAL or (scope is Scope.UNSPECIFIED and not client.supports_project):
            return Target(self.home / client.global_file, Scope.GLOBAL)
        if not client.supports_project:
            reason = f"{client.display_name} has no project configuration file: use GLOBAL"
            raise InvalidArgument([FieldViolation("scope", reason)])
        return Target(self.project_root(project_dir) / client.project_file, Scope.PROJECT)

    @staticmethod
    def project_root(project_dir: str) -> Path:
        if not project_dir:
            reason = "give the working directory whose git repository is the project"
            raise InvalidArgument([FieldViolation("project_dir", reason)])
        root = find_project_root(_absolute("project_dir", project_dir))
        if root is None:
            raise FailedPrecondition(
                f"could not find the project: {project_dir} is not inside a git repository "
                "(use --global for the user-wide configuration)",
                reason="NOT_IN_GIT_REPOSITORY",
                metadata={"project_dir": project_dir},
            )
        return root

    def status(
        self, client: Client, target: Target, document: ConfigDocument | None
    ) -> ClientStatus:
        servers = document.servers() if document is not None else {}
        return ClientStatus(
            client=client,
            scope=target.scope,
            config_path=target.path,
            installed=(self.home / client.install_dir).is_dir(),
            connected=ENTRY_NAME in servers,
            transport=transport_of(servers.get(ENTRY_NAME)),
            servers=list(servers),
        )

    @staticmethod
    def _removes_file(client: Client, target: Target, document: ConfigDocument) -> bool:
        owned = client.project_file_is_berths and target.scope is Scope.PROJECT
        return owned and not document.servers()


def with_path(url: str, path: str) -> str:
    """The endpoint's URL for one transport: `path` is added unless the URL has a path."""
    scheme, _, rest = url.partition("://")
    if "/" in rest.rstrip("/"):
        return url
    return f"{scheme}://{rest.rstrip('/')}{path}"
