"""The secret policy: its grammar (with exact error places), its rules, and where it is kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from berth.common.errors import FailedPrecondition, InvalidArgument
from berth.mcp.adapters.policy_store import POLICY_FILE, FilePolicyStore
from berth.mcp.domain.policy import DEFAULT_POLICY, Policies, Rule, parse_policy


def refused(text: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        parse_policy(text)
    assert raised.value.reason == "INVALID_POLICY"
    assert {v.field for v in raised.value.violations} == {"content"}
    return raised.value


# -- the grammar ------------------------------------------------------------------------


def test_the_seed_example_is_one_rule() -> None:
    policy = parse_policy("my-secret allows postgres")
    assert policy.rules == (Rule(1, "my-secret", True, ("postgres",)),)
    assert policy.allows("my-secret", "postgres")
    assert not policy.allows("my-secret", "mysql")
    assert not policy.allows("other", "postgres")


def test_comments_blank_lines_tabs_crlf_and_server_lists() -> None:
    text = (
        "# who gets what\r\n"
        "\r\n"
        "  POSTGRES_PASSWORD\tallows  db ,db-replica,\tbackup   # the database ones\r\n"
        "github.*  denies  untrusted-*\n"
        "   \t  # an indented comment\n"
        "github.* allows *#no blank needed before a comment\n"
    )
    policy = parse_policy(text)
    assert policy.text == text
    assert [(r.line, r.secret, r.allow, r.servers) for r in policy.rules] == [
        (3, "POSTGRES_PASSWORD", True, ("db", "db-replica", "backup")),
        (4, "github.*", False, ("untrusted-*",)),
        (6, "github.*", True, ("*",)),
    ]


def test_wildcards_match_any_run_of_characters_and_nothing_else() -> None:
    policy = parse_policy("github.* allows git*\n*_TOKEN allows ci-*-runner\n")
    assert policy.allows("github.token", "git")
    assert policy.allows("github.", "github-mirror")
    assert not policy.allows("githubXtoken", "git")  # `.` is a dot, not any character
    assert not policy.allows("GITHUB.token", "git")  # case counts
    assert policy.allows("NPM_TOKEN", "ci-linux-runner")
    assert policy.allows("_TOKEN", "ci--runner")
    assert not policy.allows("NPM_TOKEN", "ci-runner")


def test_a_deny_wins_over_any_allow_whatever_the_order() -> None:
    for text in (
        "* allows *\nPROD_* denies staging\n",
        "PROD_* denies staging\n* allows *\n",
    ):
        policy = parse_policy(text)
        assert not policy.allows("PROD_DB", "staging")
        assert policy.allows("PROD_DB", "production")
        assert policy.allows("DEV_DB", "staging")


def test_a_policy_of_only_comments_allows_nothing() -> None:
    policy = parse_policy("# nothing for anyone\n")
    assert policy.rules == ()
    assert not policy.allows("A", "b")


def test_the_default_policy_lets_every_server_have_what_it_declares() -> None:
    policy = parse_policy(DEFAULT_POLICY)
    assert policy.allows("POSTGRES_PASSWORD", "postgres")
    assert policy.allows("github.personal_access_token", "github-official")


@pytest.mark.parametrize(
    ("text", "line", "column", "why"),
    [
        ("my-secret allow postgres", 1, 11, "expected `allows` or `denies`, found 'allow'"),
        ("my-secret Allows postgres", 1, 11, "expected `allows` or `denies`, found 'Allows'"),
        ("my-secret", 1, 10, "expected `allows` or `denies` after the secret"),
        ("my-secret   # comment", 1, 13, "expected `allows` or `denies` after the secret"),
        ("my-secret allows", 1, 17, "expected a server name or pattern after `allows`"),
        ("my-secret denies ", 1, 18, "expected a server name or pattern after `denies`"),
        ("a allows b c", 1, 12, "expected `,` or the end of the rule, found 'c'"),
        ("a allows b,", 1, 12, "expected a server name or pattern, but the line ends"),
        ("a allows b,,c", 1, 12, "expected a server name or pattern, but found ','"),
        ("a allows Postgres", 1, 10, "'P' cannot appear in a server name or pattern"),
        ("a allows post_gres", 1, 14, "'_' cannot appear in a server name or pattern"),
        ("my$secret allows b", 1, 3, "'$' cannot appear in a secret name or pattern"),
        (", allows b", 1, 1, "expected a secret name or pattern, but found ','"),
        ("\n\n\tok allows b\n  x! allows y", 4, 4, "'!' cannot appear in a secret name"),
        ("a allows b\r\nc allows\r\n", 2, 9, "expected a server name or pattern after"),
        ("s" * 129 + " allows b", 1, 1, "a secret name or pattern is longer than 128"),
        ("a allows " + "b" * 65, 1, 10, "a server name or pattern is longer than 64"),
    ],
)
def test_a_bad_line_is_refused_with_its_line_and_column(
    text: str, line: int, column: int, why: str
) -> None:
    error = refused(text)
    described = error.violations[0].description
    assert described.startswith(f"line {line}, column {column}: {why}"), described
    assert error.metadata == {"line": str(line), "column": str(column)}
    assert f"line {line}, column {column}" in error.message


def test_every_bad_line_is_reported_and_the_first_is_in_the_metadata() -> None:
    error = refused("ok allows b\nbad\n# fine\nalso allows Bad\n")
    assert [v.description.split(":")[0] for v in error.violations] == [
        "line 2, column 4",
        "line 4, column 13",
    ]
    assert error.metadata == {"line": "2", "column": "4"}
    assert "(and 1 more)" in error.message


@pytest.mark.parametrize("text", ["", "  \n\t\n"])
def test_an_empty_policy_is_refused(text: str) -> None:
    error = refused(text)
    assert "the policy is empty" in error.violations[0].description


# -- the policy in force, on disk -------------------------------------------------------


def test_before_any_set_the_default_policy_is_dumped_without_a_time(tmp_path: Path) -> None:
    policies = Policies(FilePolicyStore(tmp_path))
    assert policies.dump() == (DEFAULT_POLICY, None)
    assert policies.current().allows("ANY", "server")


def test_set_keeps_the_text_exactly_and_dump_round_trips(tmp_path: Path) -> None:
    policies = Policies(FilePolicyStore(tmp_path))
    text = "# backup of 2026\r\nA allows b   # trailing comment\r\n\nB denies *"
    assert len(policies.set(text).rules) == 2
    dumped, when = policies.dump()
    assert dumped == text
    assert when is not None
    again = Policies(FilePolicyStore(tmp_path))  # another replica, or a restart
    assert again.dump()[0] == text
    assert again.current().allows("A", "b") and not again.current().allows("B", "b")
    assert os.stat(tmp_path / POLICY_FILE).st_mode & 0o777 == 0o600


def test_an_invalid_policy_leaves_the_previous_one_in_force(tmp_path: Path) -> None:
    policies = Policies(FilePolicyStore(tmp_path))
    policies.set("A allows b\n")
    before = policies.dump()
    with pytest.raises(InvalidArgument):
        policies.set("A allows b\nB allow c\n")
    assert policies.dump() == before
    assert policies.current().allows("A", "b")


def test_a_stored_policy_that_does_not_parse_releases_nothing(tmp_path: Path) -> None:
    policies = Policies(FilePolicyStore(tmp_path))
    policies.set("A allows b\n")
    (tmp_path / POLICY_FILE).write_text("A allows b\nbroken by hand\n")
    with pytest.raises(FailedPrecondition) as raised:
        policies.current()
    assert raised.value.reason == "POLICY_INVALID"
    assert "line 2, column 8" in raised.value.message
    assert "berth mcp policy set" in raised.value.message
