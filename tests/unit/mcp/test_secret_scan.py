"""Secret scanning of tool calls: real-looking keys of many providers are found in nested
arguments and in results, by kind and place, without the key ever being repeated; ordinary
tool traffic (prose, code, ids, hashes, URLs, numbers, images) passes.

The keys are put together from pieces at run time, so that this file holds none that a
scanner or a push protection would flag."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from typing import Any

import pytest

from berth.common.errors import PermissionDenied
from berth.mcp.domain.secret_scan import (
    KNOWN_KIND,
    MAX_CHARS,
    Finding,
    find_secrets,
    refuse_secrets,
    secret_kinds,
)

CHARS = "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xYz" * 4


def b64url(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def random_b64(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode()


# kind -> a key of that kind, as the provider issues it
KEYS = {
    "AWS Access Key": "AKIA" + "IOSFODNN7EXAMPLE",
    "GitHub Token": "ghp_" + CHARS[:36],
    "GitLab Token": "glpat-" + CHARS[:20],
    "Slack Token": "xoxb-" + "123456789012-1234567890123-" + CHARS[:24].lower(),
    "Stripe Access Key": "sk_" + "live_" + CHARS[:24],
    "Private Key": "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA "
    "PRIVATE KEY-----",
    "JSON Web Token": b64url({"alg": "HS256", "typ": "JWT"})
    + "."
    + b64url({"sub": "1234567890", "name": "Ada"})
    + "."
    + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "OpenAI Token": "sk-proj-" + CHARS[:20] + "T3Blbk" + "FJ" + CHARS[10:30],
    "Anthropic API Key": "sk-ant-" + "api03-" + CHARS[:93] + "AA",
    "SendGrid API Key": "SG." + CHARS[:22] + "." + CHARS[:43],
    "Twilio API Key": "SK" + "0123456789abcdef" * 2,
    "NPM tokens": "npm_" + CHARS[:36],
    "PyPI Token": "pypi-" + "AgEIcHlwaS5vcmc" + CHARS[:80],
    "Google API Key": "AIza" + CHARS[:35],
    "Hugging Face Token": "hf_" + CHARS[:34],
    "Telegram Bot Token": "123456789:" + CHARS[:35],
    "Basic Auth Credentials": "postgres://admin:" + "Tr0ub4dor@db.example.com/app",
    "Azure Storage Account access key": "AccountName=berth;Account" + "Key=" + CHARS[:86] + "==",
    "Mailchimp Access Key": "0123456789abcdef" * 2 + "-us12",
    "Square OAuth Secret": "sq0csp-" + CHARS[:43],
    "IBM Cloud IAM Key": 'ibm_api_key = "' + CHARS[:44] + '"',
}

ORDINARY = [
    "The quick brown fox jumps over the lazy dog.",
    "password: see docs",
    "token: <your token here>",
    "api_key = os.environ['API_KEY']",
    "def main() -> int:\n    return sum(x * x for x in range(10))\n",
    str(uuid.UUID(int=0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0)),
    "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",  # a git commit
    "sha256:" + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "https://example.com/search?q=berth&page=2#results",
    "https://ada@example.com/ and git@github.com:org/repo.git",
    "Asia/Tokyo 2024-05-01T12:00:00Z 203.0.113.7:8080",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0 ada@host",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----",
    "APAddressBook and APFileManager are class names",
    random_b64(3000),
    os.urandom(2000).hex(),
]


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_key_is_found_by_kind_and_place_in_nested_arguments(kind: str) -> None:
    arguments = {
        "query": "weekly report",
        "config": {"retries": 3, "headers": [{"name": "X-Api"}, {"value": f"use {KEYS[kind]}"}]},
    }
    assert find_secrets(arguments, "arguments") == [
        Finding(kind, "arguments.config.headers[1].value")
    ]


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_key_deep_inside_a_long_text_is_found(kind: str) -> None:
    filler = "All quiet on the build farm today; nothing to report.\n" * 3000
    key = KEYS[kind]
    for text in (f"{key}\n{filler}", f"{filler}{key}", f"{filler}{key}\n{filler}"):
        assert secret_kinds(text) == [kind]


def test_a_key_in_a_result_is_found_in_text_structured_content_and_resources() -> None:
    result = {
        "content": [
            {"type": "text", "text": "Echo: hello"},
            {"type": "text", "text": f"export GITHUB_TOKEN={KEYS['GitHub Token']}"},
            {
                "type": "resource",
                "resource": {"uri": "file:///etc/app.env", "text": KEYS["Stripe Access Key"]},
            },
        ],
        "structuredContent": {"credentials": {"aws": KEYS["AWS Access Key"]}},
        "isError": False,
    }
    assert find_secrets(result, "result") == [
        Finding("GitHub Token", "result.content[1].text"),
        Finding("Stripe Access Key", "result.content[2].resource.text"),
        Finding("AWS Access Key", "result.structuredContent.credentials.aws"),
    ]


def test_a_key_used_as_a_dict_key_is_found_and_never_shown_in_a_path() -> None:
    key = KEYS["GitHub Token"]
    findings = find_secrets({"tokens": {key: {"scope": KEYS["Slack Token"]}}}, "arguments")
    assert findings == [
        Finding("GitHub Token", "arguments.tokens.<secret key>"),
        Finding("Slack Token", "arguments.tokens.<secret key>.scope"),
    ]
    assert all(key not in finding.path for finding in findings)


@pytest.mark.parametrize("text", ORDINARY, ids=lambda text: text[:30])
def test_ordinary_text_passes(text: str) -> None:
    assert secret_kinds(text) == []
    assert find_secrets({"content": [{"type": "text", "text": text}]}, "result") == []


def test_ordinary_results_of_every_shape_pass() -> None:
    result = {
        "content": [
            {"type": "text", "text": "\n".join(ORDINARY)},
            {"type": "image", "data": random_b64(750_000), "mimeType": "image/png"},
            {"type": "audio", "data": random_b64(10_000), "mimeType": "audio/wav"},
            {"type": "resource", "resource": {"uri": "file:///a.bin", "blob": random_b64(5000)}},
            {"type": "resource_link", "uri": "file:///README.md", "name": "README.md"},
        ],
        "structuredContent": {
            "count": 12345678901234,
            "ratio": 0.5,
            "ok": True,
            "nothing": None,
            "ids": [str(uuid.UUID(int=n)) for n in range(100)],
            "embedding": [n / 7 for n in range(10_000)],
        },
        "_meta": {"progressToken": 7},
    }
    assert find_secrets(result, "result") == []


def test_large_results_scan_quickly() -> None:
    """A MiB of text full of the literals some detectors start from (URLs, `token`, `key`,
    `_authToken=`, `eyJ`) and a MiB image: scanned in well under a second."""
    line = '{"url": "https://example.com//a//b", "token": "abc", "key": 1, "_authToken=": "eyJ"}\n'
    result = {
        "content": [
            {"type": "text", "text": line * (MAX_CHARS // len(line))},
            {"type": "image", "data": random_b64(1 << 20), "mimeType": "image/png"},
        ]
    }
    started = time.perf_counter()
    assert find_secrets(result, "result") == []
    assert time.perf_counter() - started < 1.0


def test_text_beyond_the_scanned_length_is_not_scanned() -> None:
    """The documented limit: each string is scanned up to MAX_CHARS characters."""
    assert secret_kinds("." * MAX_CHARS + KEYS["GitHub Token"]) == []
    assert secret_kinds("." * (MAX_CHARS - 100) + KEYS["GitHub Token"]) == ["GitHub Token"]


def test_refusal_says_what_and_where_but_never_the_key() -> None:
    arguments = {"message": KEYS["GitHub Token"], "config": {"aws": KEYS["AWS Access Key"]}}
    with pytest.raises(PermissionDenied) as refused:
        refuse_secrets(arguments, "arguments", "echo", "everything")
    error = refused.value
    assert error.reason == "SECRET_DETECTED"
    assert error.message == (
        "refused: the arguments of tool echo (server everything) contain secrets "
        "(GitHub Token at arguments.message, AWS Access Key at arguments.config.aws); "
        "berth does not pass secrets through tool calls. "
        "To allow it: berth mcp feature disable block-secrets"
    )
    assert error.metadata == {
        "tool": "echo",
        "server": "everything",
        "where": "arguments",
        "kinds": "GitHub Token,AWS Access Key",
    }
    for key in (KEYS["GitHub Token"], KEYS["AWS Access Key"]):
        assert key not in str(error) and key not in repr(error.metadata)


def test_a_refused_result_says_so_and_counts_what_it_does_not_list() -> None:
    result = {"content": [{"type": "text", "text": KEYS[kind]} for kind in sorted(KEYS)[:5]]}
    with pytest.raises(PermissionDenied) as refused:
        refuse_secrets(result, "result", "read_file", "files")
    message = refused.value.message
    assert message.startswith("refused: the result of tool read_file (server files) contains ")
    assert "AWS Access Key at result.content[0].text" in message
    assert " and 2 more); " in message


def test_nothing_to_refuse_returns_quietly() -> None:
    refuse_secrets({"message": "hello world"}, "arguments", "echo", "everything")
    refuse_secrets({"content": [{"type": "text", "text": "Echo: hello world"}]}, "result", "e", "s")


def test_a_value_berth_gave_the_server_is_found_whatever_it_looks_like() -> None:
    result = {"content": [{"type": "text", "text": "the password is correct-horse-battery"}]}
    assert find_secrets(result, "result") == []
    found = find_secrets(result, "result", known={"correct-horse-battery"})
    assert found == [Finding(KNOWN_KIND, "result.content[0].text")]
