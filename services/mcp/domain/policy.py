"""The secret policy (`berth mcp policy ...`): which server may receive which secret.

The grammar, one rule per line::

    policy   = line *( newline line )          ; newline is LF; a CR before it is ignored
    line     = *blank [ rule *blank ] [ comment ]
    rule     = secret 1*blank verb 1*blank servers
    verb     = "allows" / "denies"              ; lowercase, exactly
    servers  = server *( *blank "," *blank server )
    comment  = "#" *any                         ; to the end of the line
    blank    = space / tab
    secret   = 1*128( ALPHA / DIGIT / "_" / "." / "-" / "*" )
    server   = 1*64( lowercase ALPHA / DIGIT / "-" / "*" )

`*` in a pattern matches any run of characters, none included (`github.*` matches
`github.token`; `*` alone matches everything); every other character matches itself, case
counting. A secret reaches a server only when the server's catalog entry declares it AND
some `allows` rule matches the pair AND no `denies` rule does: a deny wins over any allow,
whatever the order of the lines. Blank and comment-only lines are fine; a policy of only
comments allows nothing. The text is kept exactly as given, comments and all, so
`policy dump` shows what `policy set` was given.

A text that does not parse is refused as a whole (INVALID_ARGUMENT, reason INVALID_POLICY),
one violation on `content` per bad line, "line L, column C: why" (1-based; a tab counts as
one column), and ErrorInfo metadata `line` and `column` of the first; the policy in force
stays as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Protocol

from berth.common.errors import FailedPrecondition, FieldViolation, InvalidArgument

ALLOWS = "allows"
DENIES = "denies"
VERBS = (ALLOWS, DENIES)
SECRET_PATTERN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-*"
)
SERVER_PATTERN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-*")
SECRET_PATTERN_MAX = 128
SERVER_PATTERN_MAX = 64
BLANKS = " \t"
MAX_POLICY_CHARS = 1024 * 1024
MAX_REPORTED = 20

DEFAULT_POLICY = """\
# berth's default secret policy: every server may receive the secrets its catalog entry
# declares, and no other. Narrow it down with `berth mcp policy set`, one rule a line:
#   <secret> allows|denies <server>[, <server>...]   (* matches anything; a deny wins)
* allows *
"""


@dataclass(frozen=True)
class Rule:
    """One line's rule: `secret` allows (or denies) each of `servers`; patterns use `*`."""

    line: int
    secret: str
    allow: bool
    servers: tuple[str, ...]

    @cached_property
    def _secret_re(self) -> re.Pattern[str]:
        return _compile(self.secret)

    @cached_property
    def _server_res(self) -> tuple[re.Pattern[str], ...]:
        return tuple(_compile(server) for server in self.servers)

    def matches(self, secret: str, server: str) -> bool:
        if not self._secret_re.fullmatch(secret):
            return False
        return any(pattern.fullmatch(server) for pattern in self._server_res)


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


@dataclass(frozen=True)
class Policy:
    text: str
    rules: tuple[Rule, ...]

    def allows(self, secret: str, server: str) -> bool:
        """Whether the policy lets `server` receive `secret` (the entry must declare it too)."""
        matching = [rule for rule in self.rules if rule.matches(secret, server)]
        return any(rule.allow for rule in matching) and not any(not rule.allow for rule in matching)


# -- parsing ----------------------------------------------------------------------------


class _Problem(Exception):
    def __init__(self, column: int, why: str) -> None:
        super().__init__(why)
        self.column = column
        self.why = why


class _Line:
    """A cursor over one line's characters (positions 0-based, columns 1-based)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    @property
    def column(self) -> int:
        return self.pos + 1

    def skip_blanks(self) -> bool:
        """Skips blanks; True when some were skipped."""
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in BLANKS:
            self.pos += 1
        return self.pos > start

    def at_end(self) -> bool:
        """At the end of the line or of its rule (a comment starts)."""
        return self.pos >= len(self.text) or self.text[self.pos] == "#"

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def word(self) -> tuple[int, str]:
        """The run of characters up to a blank, comma, `#` or the end, and its column."""
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in BLANKS + ",#":
            self.pos += 1
        return start + 1, self.text[start : self.pos]


def _pattern(line: _Line, allowed: frozenset[str], longest: int, what: str, chars_hint: str) -> str:
    column, word = line.word()
    if not word:
        found = line.peek()
        got = f"found {found!r}" if found else "the line ends"
        raise _Problem(column, f"expected {what}, but {got}")
    for offset, char in enumerate(word):
        if char not in allowed:
            raise _Problem(
                column + offset, f"{char!r} cannot appear in {what}: use {chars_hint} and *"
            )
    if len(word) > longest:
        raise _Problem(column, f"{what} is longer than {longest} characters")
    return word


def _secret(line: _Line) -> str:
    return _pattern(
        line,
        SECRET_PATTERN_CHARS,
        SECRET_PATTERN_MAX,
        "a secret name or pattern",
        "letters, digits, _ . -",
    )


def _server(line: _Line) -> str:
    return _pattern(
        line,
        SERVER_PATTERN_CHARS,
        SERVER_PATTERN_MAX,
        "a server name or pattern",
        "lowercase letters, digits, -",
    )


def _verb(line: _Line) -> bool:
    if not line.skip_blanks() or line.at_end():
        raise _Problem(line.column, "expected `allows` or `denies` after the secret")
    column, word = line.word()
    if word not in VERBS:
        shown = repr(word) if word else repr(line.peek())
        raise _Problem(column, f"expected `allows` or `denies`, found {shown}")
    return word == ALLOWS


def _servers(line: _Line, verb: str) -> tuple[str, ...]:
    if not line.skip_blanks() or line.at_end():
        raise _Problem(line.column, f"expected a server name or pattern after `{verb}`")
    servers = [_server(line)]
    while True:
        line.skip_blanks()
        if line.at_end():
            return tuple(servers)
        if line.peek() != ",":
            raise _Problem(
                line.column,
                f"expected `,` or the end of the rule, found {line.word()[1]!r} "
                "(separate servers with commas)",
            )
        line.pos += 1
        line.skip_blanks()
        servers.append(_server(line))


def _parse_line(number: int, text: str) -> Rule | None:
    line = _Line(text)
    line.skip_blanks()
    if line.at_end():
        return None
    secret = _secret(line)
    allow = _verb(line)
    servers = _servers(line, ALLOWS if allow else DENIES)
    return Rule(number, secret, allow, servers)


def _lines(text: str) -> list[str]:
    return [line.removesuffix("\r") for line in text.split("\n")]


def parse_policy(text: str) -> Policy:
    """The Policy of `text`, or InvalidArgument (reason INVALID_POLICY) naming line and column."""
    if not text.strip():
        raise _invalid(
            [
                (
                    1,
                    1,
                    "the policy is empty: give at least one rule (a policy of only comments "
                    "allows nothing)",
                )
            ]
        )
    if len(text) > MAX_POLICY_CHARS:
        raise _invalid([(1, 1, f"the policy is longer than {MAX_POLICY_CHARS} characters")])
    rules: list[Rule] = []
    problems: list[tuple[int, int, str]] = []
    for number, line in enumerate(_lines(text), start=1):
        try:
            rule = _parse_line(number, line)
        except _Problem as problem:
            problems.append((number, problem.column, problem.why))
            continue
        if rule is not None:
            rules.append(rule)
    if problems:
        raise _invalid(problems)
    return Policy(text, tuple(rules))


def _invalid(problems: list[tuple[int, int, str]]) -> InvalidArgument:
    shown = problems[:MAX_REPORTED]
    violations = [
        FieldViolation("content", f"line {line}, column {column}: {why}")
        for line, column, why in shown
    ]
    if len(problems) > len(shown):
        more = len(problems) - len(shown)
        violations.append(FieldViolation("content", f"... and {more} more bad lines"))
    line, column, _ = problems[0]
    return InvalidArgument(
        violations,
        message=f"invalid policy: {violations[0].description}"
        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
        reason="INVALID_POLICY",
        metadata={"line": str(line), "column": str(column)},
    )


# -- the policy in force ----------------------------------------------------------------


class PolicyStore(Protocol):
    """Where the policy text is kept."""

    def load(self) -> tuple[str, datetime] | None: ...  # text as set, and when; None: never
    def save(self, text: str) -> None: ...


class Policies:
    """The policy in force: the stored text, else DEFAULT_POLICY."""

    def __init__(self, store: PolicyStore) -> None:
        self.store = store
        self._parsed: Policy = parse_policy(DEFAULT_POLICY)

    def current(self) -> Policy:
        """The policy in force (read afresh: replicas may share the store)."""
        text, _ = self.dump()
        if text != self._parsed.text:
            try:
                self._parsed = parse_policy(text)
            except InvalidArgument as error:
                raise FailedPrecondition(
                    f"the stored secret policy does not parse ({error.violations[0].description})"
                    ": no secret is released until it is fixed with `berth mcp policy set`",
                    reason="POLICY_INVALID",
                    metadata=error.metadata,
                ) from None
        return self._parsed

    def set(self, text: str) -> Policy:
        """Parses first; stores only a valid policy (the old one stays otherwise)."""
        policy = parse_policy(text)
        self.store.save(text)
        self._parsed = policy
        return policy

    def dump(self) -> tuple[str, datetime | None]:
        """The text as set and when; DEFAULT_POLICY and None before any `set`."""
        stored = self.store.load()
        if stored is None:
            return DEFAULT_POLICY, None
        return stored
