"""Secret scanning of tool calls (the `block-secrets` feature): finds credentials in
JSON-like values (a call's arguments, its result) with detect-secrets' plugins, and says
what kind of secret sits where, never the secret itself.

Which detectors run, and why:
- every provider-specific plugin of detect-secrets 1.5.0: AWS, Azure Storage, basic-auth
  credentials in URLs, Cloudant, Discord, GitHub, GitLab, IBM Cloud IAM, IBM COS HMAC, JSON
  Web Tokens, Mailchimp, npm (`.npmrc` lines), OpenAI, private keys (PEM, OpenSSH, PGP,
  PuTTY), PyPI, SendGrid, Slack, SoftLayer, Square, Stripe, Telegram, Twilio; and
  Artifactory's API-token pattern;
- left out: the keyword plugin ("password: see docs"), both high-entropy plugins (hashes,
  git SHAs, UUIDs and base64 data are ordinary tool output), the public-IP plugin (an
  address is no credential) and Artifactory's password pattern (`AP`, a hex digit and 8
  letters: ordinary names such as `APAddressBook`);
- added here, for providers 1.5.0 does not know: Anthropic API keys, GitHub fine-grained
  tokens, Google API keys, Hugging Face tokens and bare npm tokens (`npm_...`).

The plugins' `analyze_string` is called directly: detect-secrets' `scan_line` goes through
its process-wide settings (rebuilt on every call) and, with the verification filter on,
would send a found key to its provider to check it.

Speed (about 30 us for a small call, 12-17 ms per MiB of text): a plugin runs only on
windows around the hits of a quick pattern that every one of its matches contains (`AKIA`,
`ghp_`, `PRIVATE KEY`, `token": "` and 44 characters...); two whose own patterns are as
quick (credentials in URLs, Twilio) run over the whole text. Each string is scanned up to
its first MAX_CHARS characters; the `data` of image and audio content and the `blob` of
embedded resources (base64 binary) are not scanned.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from re import Match
from typing import Any

from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import BasePlugin, RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

from berth.common.errors import PermissionDenied

# The feature flag that switches scanning (on by default).
FEATURE = "block-secrets"

# Text beyond this, in one string, is not scanned (a secret is found in the first MiB).
MAX_CHARS = 1 << 20
# No detector matches fewer characters (`xoxb-1-a`).
MIN_CHARS = 8
# Content items whose payload is base64 binary, and the key of that payload.
BINARY_TYPES = frozenset({"image", "audio"})
# Text up to this length is scanned whole where a trigger hits (windows would cost more).
WHOLE_CHARS = 4096
# Windows of text closer than this are scanned as one (one call costs as much as ~200 chars).
MERGE_GAP = 256
# How a dict key that holds a secret appears in paths.
SECRET_KEY = "<secret key>"
# The kind of a value from berth's own secret store that the server was given.
KNOWN_KIND = "a secret berth gave this server"
SCANNED = (str, dict, list, tuple)
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")


@dataclass(frozen=True)
class Finding:
    """A secret of kind `kind` (e.g. "AWS Access Key") at `path` (e.g. arguments.config.key)."""

    kind: str
    path: str


# -- detectors 1.5.0 lacks, in its own plugin form ------------------------------------------


class ArtifactoryTokenDetector(RegexBasedDetector):
    secret_type = ArtifactoryDetector.secret_type
    denylist = (ArtifactoryDetector.denylist[0],)  # the API token, not the password pattern


class AnthropicKeyDetector(RegexBasedDetector):
    secret_type = "Anthropic API Key"
    denylist = (re.compile(r"sk-ant-[a-z]{2,8}\d{2}-[A-Za-z0-9_\-]{80,}"),)


class GitHubFineGrainedTokenDetector(RegexBasedDetector):
    secret_type = GitHubTokenDetector.secret_type
    denylist = (re.compile(r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}"),)


class GoogleApiKeyDetector(RegexBasedDetector):
    secret_type = "Google API Key"
    denylist = (re.compile(r"AIza[0-9A-Za-z_\-]{35}"),)


class HuggingFaceTokenDetector(RegexBasedDetector):
    secret_type = "Hugging Face Token"
    denylist = (re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{34}(?![A-Za-z0-9_])"),)


class NpmAccessTokenDetector(RegexBasedDetector):
    secret_type = NpmDetector.secret_type
    denylist = (re.compile(r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9_])"),)


# -- when each runs ---------------------------------------------------------------------------


@dataclass
class Detector:
    """A plugin, quick patterns (`triggers`) one of which every match of the plugin
    contains, and how far a match reaches before and after it. The plugin runs on the
    stretches of text around the triggers' hits; with no trigger, on the whole text.
    Triggers for any case (`fold`) are written in lower case and searched in the lower-cased
    text: much faster than a case-insensitive search, as is one pattern per literal start
    rather than one alternation."""

    plugin: BasePlugin
    triggers: tuple[str, ...] = ()
    before: int = 0
    after: int = 0
    fold: bool = False
    patterns: list[re.Pattern[str]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.patterns = [re.compile(trigger) for trigger in self.triggers]

    @property
    def kind(self) -> str:
        return str(self.plugin.secret_type)

    def finds(self, text: str, folded: str) -> bool:
        """Whether the plugin matches somewhere in `text` (`folded`: the same text in lower
        case, character for character)."""
        if not self.patterns:
            return _matches(self.plugin, text)
        searched = folded if self.fold else text
        if len(text) <= WHOLE_CHARS:
            return any(p.search(searched) for p in self.patterns) and _matches(self.plugin, text)
        hits = heapq.merge(*(p.finditer(searched) for p in self.patterns), key=Match.start)
        return any(_matches(self.plugin, text[low:high]) for low, high in self._windows(hits))

    def _windows(self, hits: Iterator[Match[str]]) -> Iterator[tuple[int, int]]:
        """The stretches around the trigger's hits, close ones merged."""
        window: tuple[int, int] | None = None
        for hit in hits:
            low, high = max(hit.start() - self.before, 0), hit.end() + self.after
            if window is None:
                window = (low, high)
            elif low > window[1] + MERGE_GAP:
                yield window
                window = (low, high)
            else:
                window = (window[0], max(window[1], high))
        if window is not None:
            yield window


def _matches(plugin: BasePlugin, text: str) -> bool:
    return next(iter(plugin.analyze_string(text)), None) is not None


def _folded(text: str) -> str:
    """`text` in lower case with its length kept (non-ASCII characters become "?")."""
    if text.isascii():
        return text.lower()
    return text.encode("ascii", "replace").decode("ascii").lower()


# Between the keyword and the value of an assignment (`"token": "..."`, `key = ...`).
ASSIGN = r"""[\s"'\]=:>]+"""
KEYWORD = r"(?:key|pwd|pw|password|pass|token)"

DETECTORS = (
    Detector(AWSKeyDetector(), (r"akia|asia|abia|acca|a3t|aws",), 0, 128, fold=True),
    Detector(ArtifactoryTokenDetector(), ("AKC",), 1, 256),
    Detector(AzureStorageKeyDetector(), ("AccountKey=",), 0, 100),
    Detector(BasicAuthDetector()),
    Detector(
        CloudantDetector(),
        (rf"cl(?:oudant|ou)?[-_]?(?:api)?{KEYWORD}", r"cloudant\.com"),
        256,
        128,
        fold=True,
    ),
    Detector(DiscordBotTokenDetector(), (r"\.[a-zA-Z\d_-]{6}\.",), 26, 34),
    Detector(GitHubTokenDetector(), ("gh[pousr]_",), 0, 40),
    Detector(
        GitLabTokenDetector(),
        ("gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-", "GR1348941"),
        0,
        1100,
    ),
    Detector(
        IbmCloudIamDetector(),
        tuple(rf"{word}{ASSIGN}[a-z0-9_\-]{{44}}" for word in ("key", "p(?:wd|ass)", "token")),
        32,
        96,
        fold=True,
    ),
    Detector(
        IbmCosHmacDetector(),
        (rf"secret[-_]?(?:access)?[-_]?key{ASSIGN}[a-f0-9]{{48}}",),
        32,
        96,
        fold=True,
    ),
    Detector(JwtTokenDetector(), ("eyJ",), 0, 16384),
    Detector(MailchimpDetector(), (r"-us\d",), 32, 4),
    Detector(NpmDetector(), ("_authToken=",), 256, 64),
    Detector(OpenAIDetector(), ("T3BlbkFJ",), 256, 24),
    Detector(PrivateKeyDetector(), ("PRIVATE KEY", "PuTTY-User-Key-File-2"), 32, 8),
    Detector(PypiTokenDetector(), ("pypi-Ag",), 0, 300),
    Detector(SendGridDetector(), (r"SG\.",), 0, 70),
    Detector(SlackDetector(), ("xox[abposr]-", r"hooks\.slack\.com"), 8, 256, fold=True),
    Detector(
        SoftlayerDetector(),
        (rf"s(?:oftlayer|l)[-_]?(?:api)?{KEYWORD}", r"api\.softlayer\.com"),
        32,
        160,
        fold=True,
    ),
    Detector(SquareOAuthDetector(), ("sq0csp-",), 0, 50),
    Detector(StripeDetector(), ("k_live_",), 1, 30),
    Detector(TelegramBotTokenDetector(), (":[0-9A-Za-z_-]{35}",), 10, 0),
    Detector(TwilioKeyDetector()),
    Detector(AnthropicKeyDetector(), ("sk-ant-",), 0, 256),
    Detector(GitHubFineGrainedTokenDetector(), ("github_pat_",), 0, 90),
    Detector(GoogleApiKeyDetector(), ("AIza",), 0, 40),
    Detector(HuggingFaceTokenDetector(), ("hf_",), 1, 40),
    Detector(NpmAccessTokenDetector(), ("npm_",), 1, 40),
)


# -- scanning -----------------------------------------------------------------------------


def secret_kinds(text: str) -> list[str]:
    """The kinds of secret in `text` (its first MAX_CHARS characters), each once."""
    if len(text) < MIN_CHARS:
        return []
    text = text[:MAX_CHARS]
    folded = _folded(text)
    return list(dict.fromkeys(d.kind for d in DETECTORS if d.finds(text, folded)))


def find_secrets(value: Any, where: str, known: Collection[str] = ()) -> list[Finding]:
    """The secrets in a JSON-like value (strings, dict keys included, in dicts and lists),
    each with its path from `where` ("arguments", "result"), in document order: what the
    detectors recognise, and any of the `known` values (the secrets berth gave the server).
    A key that holds a secret is shown as SECRET_KEY in paths, so no path repeats a secret."""
    findings: list[Finding] = []
    pending: list[tuple[str, Any]] = [(where, value)]
    known = [secret for secret in known if secret]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            findings.extend(Finding(kind, path) for kind in _kinds(item, known))
        elif isinstance(item, dict):
            pending.extend(reversed(_members(path, item, findings, known)))
        elif isinstance(item, list | tuple):
            # Paths only for what may hold text: a result can be a long array of numbers.
            inner = [(f"{path}[{i}]", v) for i, v in enumerate(item) if isinstance(v, SCANNED)]
            pending.extend(reversed(inner))
    return findings


def _kinds(text: str, known: Collection[str]) -> list[str]:
    kinds = secret_kinds(text)
    if any(secret in text for secret in known):
        kinds.append(KNOWN_KIND)
    return kinds


def _members(
    path: str, item: dict[Any, Any], findings: list[Finding], known: Collection[str]
) -> list[tuple[str, Any]]:
    """A dict's values that may hold text, with their paths; secrets in its keys go to
    `findings`."""
    skipped = _binary_key(item)
    children = []
    for key, value in item.items():
        name = str(key)
        kinds = _kinds(name, known)
        child = _child(path, SECRET_KEY if kinds else name)
        findings.extend(Finding(kind, child) for kind in kinds)
        if name != skipped and isinstance(value, SCANNED):
            children.append((child, value))
    return children


def _binary_key(item: dict[Any, Any]) -> str | None:
    """The key of the base64 payload of an image or audio item, or of a blob resource."""
    kind = item.get("type")
    if isinstance(kind, str) and kind in BINARY_TYPES:
        return "data"
    if "blob" in item and "uri" in item:
        return "blob"
    return None


def _child(path: str, name: str) -> str:
    """`path.name`, or `path["odd name"]` (shortened when long)."""
    if name == SECRET_KEY or IDENTIFIER.fullmatch(name):
        return f"{path}.{name}"
    shown = name if len(name) <= 40 else name[:37] + "..."
    return f"{path}[{json.dumps(shown)}]"


def describe(findings: list[Finding], limit: int = 3) -> str:
    """`GitHub Token at arguments.message, ...` (the first `limit`, then how many more)."""
    shown = ", ".join(f"{f.kind} at {f.path}" for f in findings[:limit])
    more = len(findings) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def refuse_secrets(
    value: Any, where: str, tool: str, server: str, known: Collection[str] = ()
) -> None:
    """Raises PermissionDenied (reason SECRET_DETECTED) when `value`, the "arguments" or the
    "result" of a call of `tool` on `server`, holds a secret (or one of the `known` values);
    the message says which kind and where, never the secret."""
    findings = find_secrets(value, where, known)
    if not findings:
        return
    whose, verb = ("arguments", "contain") if where == "arguments" else ("result", "contains")
    what = "a secret" if len(findings) == 1 else "secrets"
    raise PermissionDenied(
        f"refused: the {whose} of tool {tool} (server {server}) {verb} {what} "
        f"({describe(findings)}); berth does not pass secrets through tool calls. "
        f"To allow it: berth mcp feature disable {FEATURE}",
        reason="SECRET_DETECTED",
        metadata={
            "tool": tool,
            "server": server,
            "where": where,
            "kinds": ",".join(dict.fromkeys(f.kind for f in findings)),
        },
    )
