"""Secrets (`berth mcp secret ...`): names, providers, and which server receives which value.

A secret is a name, a provider and a value kept encrypted by a SecretVault (berth-mcpd's is
berth.mcp.adapters.secret_store). Names are letters, digits, `_`, `.` and `-`, starting
with a letter, digit or `_`, at most 128 characters (POSTGRES_PASSWORD,
github.personal_access_token). The provider is `credstore` for values set by hand, or
`oauth/<app>` for an OAuth app's tokens, kept under the name `oauth.<app>` (names starting
with `oauth.` are kept for those).

A server receives a secret only when its catalog entry declares it (`secrets: [{name: ...}]`)
AND the policy (berth.mcp.domain.policy) allows it AND the secret is set. Values leave the
daemon only through `granted` (injection into a server) and `export`; no other result, error
message or log line carries one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from berth.common.errors import BerthError, FieldViolation, InvalidArgument
from berth.mcp.domain.catalogs import ServerEntry
from berth.mcp.domain.policy import Policies, Policy
from berth.mcp.domain.servers import Requirement, Servers

CREDSTORE = "credstore"
OAUTH_PREFIX = "oauth/"
OAUTH_NAME_PREFIX = "oauth."
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
NAME_HINT = "letters, digits, _ . and -, starting with a letter, digit or _, at most 128 characters"
MAX_VALUE_CHARS = 64 * 1024


@dataclass(frozen=True)
class SecretInfo:
    """A secret's metadata: never its value."""

    name: str
    provider: str  # "credstore" or "oauth/<app>"
    create_time: datetime
    update_time: datetime


class SecretVault(Protocol):
    """The encrypted store. Synchronous, thread-safe and process-safe (replicas may share
    it); async callers use asyncio.to_thread. Every method fails with FAILED_PRECONDITION
    (SECRET_KEY_MISMATCH or SECRET_KEY_MISSING) when the store's key is not at hand."""

    def list(self) -> list[SecretInfo]: ...  # sorted by name
    def reveal(self, names: Iterable[str]) -> dict[str, str]: ...  # of those that exist
    def put(self, name: str, value: str, provider: str) -> SecretInfo: ...
    def remove(self, names: Sequence[str] | None) -> list[str]: ...  # None: all; an unknown
    # name raises NotFound (reason SECRET_NOT_FOUND) and removes nothing
    def update(
        self, name: str, provider: str, change: Callable[[str | None], str | None]
    ) -> str | None: ...  # atomic read-modify-write: change(old) -> new, or None to delete


@dataclass(frozen=True)
class SecretView:
    """A secret as `secret ls` shows it: metadata and the catalog servers declaring it."""

    info: SecretInfo
    servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportedSecret:
    """A secret with its value, as `secret export` prints it."""

    name: str
    value: str = field(repr=False)
    servers: tuple[str, ...] = ()  # the requested servers that declare it and may receive it


# -- validation -------------------------------------------------------------------------


def name_problem(name: str) -> str | None:
    if not name:
        return "give the secret's name"
    if not re.fullmatch(NAME_PATTERN, name):
        return f"{name!r} is not a valid secret name ({NAME_HINT})"
    return None


def provider_problem(name: str, provider: str) -> str | None:
    """What is wrong with `provider` for the secret `name`, if anything."""
    if provider == CREDSTORE:
        if name.startswith(OAUTH_NAME_PREFIX):
            return (
                f"names starting with {OAUTH_NAME_PREFIX!r} hold OAuth tokens: use "
                f"--provider oauth/{name.removeprefix(OAUTH_NAME_PREFIX)}"
            )
        return None
    if not provider.startswith(OAUTH_PREFIX):
        return f"unsupported provider {provider!r}: use {CREDSTORE} or oauth/<app>"
    app = provider.removeprefix(OAUTH_PREFIX)
    if name_problem(app) is not None:
        return f"{app!r} is not a valid OAuth app name ({NAME_HINT})"
    if name != OAUTH_NAME_PREFIX + app:
        return f"the tokens of OAuth app {app} are kept as the secret {OAUTH_NAME_PREFIX}{app}"
    return None


def value_problem(value: str) -> str | None:
    """What is wrong with a value; never quotes it."""
    if not value:
        return "give the secret's value (an empty value is refused)"
    if len(value) > MAX_VALUE_CHARS:
        return f"the value is longer than {MAX_VALUE_CHARS} characters"
    if "\x00" in value:
        return "the value contains a NUL character, which no environment variable can carry"
    return None


def _check_set(name: str, value: str, provider: str) -> None:
    problems = [("name", name_problem(name)), ("value", value_problem(value))]
    if problems[0][1] is None:
        problems.append(("provider", provider_problem(name, provider)))
    violations = [FieldViolation(where, why) for where, why in problems if why is not None]
    if violations:
        raise InvalidArgument(violations, reason="INVALID_SECRET")


def declared(entry: ServerEntry) -> list[str]:
    """The names of the secrets a catalog entry declares, in its order."""
    return list(dict.fromkeys(secret["name"] for secret in entry.get("secrets") or []))


def _requirement(wanted: Sequence[str], have: Iterable[str]) -> Requirement:
    if not wanted:
        return Requirement.NONE
    count = len(set(wanted) & set(have))
    if count == len(set(wanted)):
        return Requirement.DONE
    return Requirement.PARTIAL if count else Requirement.REQUIRED


# -- the service ------------------------------------------------------------------------


class Secrets:
    """The secret store as `berth mcp secret` and the gateway use it."""

    def __init__(self, vault: SecretVault, servers: Servers, policies: Policies) -> None:
        self.vault = vault
        self.servers = servers
        self.policies = policies

    def set(self, name: str, value: str, provider: str) -> SecretView:
        provider = provider or CREDSTORE
        _check_set(name, value, provider)
        info = self.vault.put(name, value, provider)
        return SecretView(info, tuple(self._declaring().get(name, ())))

    def list(self) -> list[SecretView]:
        declaring = self._declaring()
        return [SecretView(info, tuple(declaring.get(info.name, ()))) for info in self.vault.list()]

    def remove(self, names: list[str], all_: bool) -> list[str]:
        if all_ and names:
            raise InvalidArgument([FieldViolation("names", "give names or `all`, not both")])
        if not all_:
            _check_names(names)
        return self.vault.remove(None if all_ else list(dict.fromkeys(names)))

    def export(self, servers: list[str]) -> list[ExportedSecret]:
        """The secrets that are set, declared by one of `servers` (none: every enabled one)
        and allowed to it by the policy, with their values; sorted by name."""
        wanted = self._allowed(self._requested(servers))
        values = self.vault.reveal(wanted)
        return [
            ExportedSecret(name, values[name], tuple(wanted[name]))
            for name in sorted(wanted)
            if name in values
        ]

    def granted(self, server: str, entry: ServerEntry) -> dict[str, str]:
        """Name -> value of what `server` receives: declared, allowed and set."""
        wanted = self._allowed({server: entry})
        return self.vault.reveal(wanted) if wanted else {}

    def standing(self, server: str, entry: ServerEntry) -> tuple[Requirement, Requirement]:
        """The SECRETS and POLICY columns of `server ls` for `server`.

        A store or policy that cannot be read (wrong key, broken policy) counts as nothing
        set, nothing allowed: listing servers keeps working, and the secret commands and the
        server's start say what is wrong."""
        names = declared(entry)
        if not names:
            return Requirement.NONE, Requirement.NONE
        try:
            have = [info.name for info in self.vault.list()]
        except BerthError:
            have = []
        try:
            policy = self.policies.current()
            allowed = [name for name in names if policy.allows(name, server)]
        except BerthError:
            allowed = []
        return _requirement(names, have), _requirement(names, allowed)

    # -- helpers ------------------------------------------------------------------------

    def _declaring(self) -> dict[str, list[str]]:
        """Secret name -> the catalog servers whose entries declare it, sorted."""
        found: dict[str, list[str]] = {}
        for server, (_, entry) in sorted(self.servers.entries().items()):
            for name in declared(entry):
                found.setdefault(name, []).append(server)
        return found

    def _requested(self, servers: list[str]) -> dict[str, ServerEntry]:
        if not servers:
            entries = self.servers.entries()
            enabled = self.servers.store.load_enabled()
            return {name: entries[name][1] for name in sorted(enabled) if name in entries}
        bad = [
            FieldViolation(f"servers[{i}]", "empty server name")
            for i, name in enumerate(servers)
            if not name
        ]
        if bad:
            raise InvalidArgument(bad)
        return {name: self.servers.find(name)[1] for name in dict.fromkeys(servers)}

    def _allowed(self, entries: Mapping[str, ServerEntry]) -> dict[str, list[str]]:
        """Secret name -> the servers of `entries` that declare it and may receive it."""
        policy: Policy = self.policies.current()
        wanted: dict[str, list[str]] = {}
        for server, entry in entries.items():
            for name in declared(entry):
                if policy.allows(name, server):
                    wanted.setdefault(name, []).append(server)
        return wanted


def _check_names(names: list[str]) -> None:
    if not names:
        raise InvalidArgument(
            [FieldViolation("names", "give the names of the secrets to remove, or `all`")]
        )
    bad = [
        FieldViolation(f"names[{i}]", why)
        for i, name in enumerate(names)
        if (why := name_problem(name)) is not None
    ]
    if bad:
        raise InvalidArgument(bad)
