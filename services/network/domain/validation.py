"""Validation of what users send the network agent: names, interface names, options.

Everything accepted here is safe in kernel object names, in paths such as /run/netns/NAME
and /etc/netns/NAME, and in nft rules: accepted names use a small ASCII alphabet (no '/',
quotes, spaces, '*', ';' or control characters) and cannot be '.' or '..'.

Every checker raises InvalidArgument with one FieldViolation per problem; checkers of a
mapping report all of its problems together. Offending values are quoted and escaped (JSON
style, shortened) in messages, so they cannot forge log lines either.

Bridge option choices, where Docker's table (seed 003) leaves room:
- `com.docker.network.driver.mtu`: 68..65535, or 0 meaning Docker's default (1500).
- `com.docker.network.bridge.host_binding_ipv4`: an IPv4 address only (Docker also takes
  an IPv6 one; berth's model stores IPv4).
- `com.docker.network.bridge.gateway_mode_ipv4|ipv6`: `nat` or `routed` (the seed names
  only `nat`; Docker's `nat-unprotected` and `isolated` are refused).
- `com.docker.network.container_iface_prefix`: 1..13 characters of [A-Za-z0-9_-], so
  prefix + two digits fits 15 and `net.ipv4.conf.IFNAME.x` keys stay unambiguous (no '.').
- `com.docker.network.host_ipv4|host_ipv6` (source NAT address): refused, berth does not
  support choosing it.
"""

from __future__ import annotations

import json
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address, ip_address
from typing import Any

from berth.common.errors import FieldViolation, InvalidArgument
from berth.network.domain.model import BridgeOptions, IPAddress

NAME_MAX = 64
IFNAME_MAX = 15  # IFNAMSIZ - 1
IFACE_PREFIX_MAX = 13  # prefix + up to two digits fits IFNAME_MAX
DNS_NAME_MAX = 253
DNS_LABEL_MAX = 63
MTU_MIN = 68  # the IPv4 minimum
MTU_MAX = 65535
DEFAULT_MTU = 1500
SYSCTL_VALUE_MAX = 128
ID_HEX_CHARS = 64
SHORT_ID_CHARS = 12
_SHOW_MAX = 80

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_IFACE_PREFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_ALIAS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_SYSCTL_KEY = re.compile(r"net\.ipv([46])\.conf\.IFNAME\.([a-z0-9_]+)")
_SYSCTL_VALUE = re.compile(r"[A-Za-z0-9_.:-]+")
_RESOLVER_OPTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*(?::[0-9]{1,5})?")

BRIDGE_NAME = "com.docker.network.bridge.name"
ENABLE_IP_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
ENABLE_ICC = "com.docker.network.bridge.enable_icc"
HOST_BINDING_IPV4 = "com.docker.network.bridge.host_binding_ipv4"
MTU = "com.docker.network.driver.mtu"
CONTAINER_IFACE_PREFIX = "com.docker.network.container_iface_prefix"
INHIBIT_IPV4 = "com.docker.network.bridge.inhibit_ipv4"
GATEWAY_MODE_IPV4 = "com.docker.network.bridge.gateway_mode_ipv4"
GATEWAY_MODE_IPV6 = "com.docker.network.bridge.gateway_mode_ipv6"
HOST_IPV4 = "com.docker.network.host_ipv4"
HOST_IPV6 = "com.docker.network.host_ipv6"
ENDPOINT_SYSCTLS = "com.docker.network.endpoint.sysctls"

GATEWAY_MODES = ("nat", "routed")
_TRUE = frozenset({"1", "t", "true"})  # Go's strconv.ParseBool, case-insensitive
_FALSE = frozenset({"0", "f", "false"})


class _Bad(ValueError):
    """A value's problem, worded for the user."""


def _show(value: str) -> str:
    """The value quoted and escaped to ASCII, shortened: safe in messages and logs."""
    text = str(value)
    if len(text) <= _SHOW_MAX:
        return json.dumps(text)
    return json.dumps(text[:_SHOW_MAX])[:-1] + '..."'


def _entry(field: str, key: str) -> str:
    """The field path of one entry of a mapping, e.g. `options["com.docker.network..."]`."""
    return f"{field}[{_show(key)}]"


def _fail(violations: list[FieldViolation], reason: str) -> None:
    """Raise all violations together; metadata names the offending fields."""
    if violations:
        fields = "; ".join(dict.fromkeys(v.field for v in violations))
        raise InvalidArgument(violations, reason=reason, metadata={"fields": fields})


def _one(field: str, problem: str | None, reason: str, value: str) -> None:
    if problem:
        metadata = {"field": field, "value": _show(value)}
        raise InvalidArgument([FieldViolation(field, problem)], reason=reason, metadata=metadata)


# Names


def _name_problem(name: str, what: str) -> str | None:
    if not name:
        return f"{what} name is required"
    if not _NAME.fullmatch(name):
        return f"invalid {what} name {_show(name)}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    if len(name) > NAME_MAX:
        return f"{what} name is too long ({len(name)} characters, at most {NAME_MAX})"
    return None


def check_name(name: str, *, field: str = "name", what: str = "network") -> str:
    """A network or sandbox name, by Docker's rule; at most 64 characters."""
    _one(field, _name_problem(name, what), "INVALID_NAME", name)
    return name


def _ifname_problem(name: str, *, what: str = "interface name") -> str | None:
    if not name:
        return f"{what} is required"
    if name in (".", ".."):
        return f"{_show(name)} is not a valid {what}"
    if not _IFNAME.fullmatch(name):
        return (
            f"invalid {what} {_show(name)}: use letters, digits, '_', '.' and '-', "
            "starting with a letter, a digit or '_'"
        )
    if len(name) > IFNAME_MAX:
        return f"{what} {_show(name)} is too long ({len(name)} characters, at most {IFNAME_MAX})"
    return None


def check_ifname(name: str, *, field: str) -> str:
    """A Linux interface name (1..15 characters), restricted to [A-Za-z0-9_.-]."""
    _one(field, _ifname_problem(name), "INVALID_INTERFACE_NAME", name)
    return name


def _dns_problem(name: str, what: str, label: re.Pattern[str], alphabet: str) -> str | None:
    if not name:
        return f"{what} is required"
    if len(name) > DNS_NAME_MAX:
        return f"{what} is too long ({len(name)} characters, at most {DNS_NAME_MAX})"
    for part in name.split("."):
        if not part:
            return f"invalid {what} {_show(name)}: empty label (leading, trailing or double dot)"
        if not label.fullmatch(part):
            return (
                f"invalid {what} {_show(name)}: each dot-separated label uses {alphabet} "
                "and neither starts nor ends with '-'"
            )
        if len(part) > DNS_LABEL_MAX:
            return f"invalid {what} {_show(name)}: a label is longer than {DNS_LABEL_MAX}"
    return None


def check_hostname(name: str, *, field: str = "hostname") -> str:
    """A host name: RFC 1123 labels separated by dots, at most 253 characters."""
    problem = _dns_problem(name, "hostname", _HOST_LABEL, "letters, digits and '-'")
    _one(field, problem, "INVALID_HOSTNAME", name)
    return name


def check_alias(alias: str, *, field: str) -> str:
    """A network alias: a DNS name whose labels may also hold '_', at most 253 characters."""
    problem = _dns_problem(alias, "alias", _ALIAS_LABEL, "letters, digits, '_' and '-'")
    _one(field, problem, "INVALID_ALIAS", alias)
    return alias


def check_dns_search(domain: str, *, field: str) -> str:
    """A `--dns-search` domain (a host name; a trailing dot is allowed)."""
    problem = _dns_problem(
        domain.removesuffix("."), "search domain", _ALIAS_LABEL, "letters, digits, '_' and '-'"
    )
    _one(field, problem, "INVALID_DNS_SEARCH", domain)
    return domain


def check_dns_option(option: str, *, field: str) -> str:
    """A `--dns-option`: a resolv.conf option word such as rotate or ndots:2."""
    problem = (
        None
        if _RESOLVER_OPTION.fullmatch(option)
        else "a resolver option is a word, optionally with :NUMBER (e.g. ndots:2)"
    )
    _one(field, problem, "INVALID_DNS_OPTION", option)
    return option


def _has_control(text: str) -> bool:
    # Cc: control characters (newline, escape, ...); Cs: lone surrogates, not encodable.
    return any(unicodedata.category(char) in ("Cc", "Cs") for char in text)


def check_labels(labels: Mapping[str, str], *, field: str = "labels") -> dict[str, str]:
    """User labels: keys non-empty, no control characters in keys or values."""
    violations = []
    for key, value in labels.items():
        if not key:
            violations.append(FieldViolation(_entry(field, key), "label key is required"))
        elif _has_control(key):
            violations.append(
                FieldViolation(_entry(field, key), "label key contains a control character")
            )
        if _has_control(value):
            violations.append(
                FieldViolation(_entry(field, key), "label value contains a control character")
            )
    _fail(violations, "INVALID_LABEL")
    return dict(labels)


# Bridge options


def _parse_bool(value: str) -> bool:
    lowered = value.lower() if value.isascii() else value
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _Bad(f"must be true or false (or 1/0), got {_show(value)}")


def _parse_bridge_name(value: str) -> str:
    problem = _ifname_problem(value, what="bridge name")
    if problem:
        raise _Bad(problem)
    return value


def _parse_host_binding(value: str) -> IPv4Address:
    try:
        address = ip_address(value)
    except ValueError:
        raise _Bad(f"{_show(value)} is not an IPv4 address") from None
    if not isinstance(address, IPv4Address):
        raise _Bad(f"{_show(value)} is an IPv6 address; berth takes an IPv4 address here")
    return address


def _parse_mtu(value: str) -> int:
    wanted = f"must be a whole number from {MTU_MIN} to {MTU_MAX} (or 0: {DEFAULT_MTU})"
    if not (value.isascii() and value.isdigit() and len(value) <= 5):
        raise _Bad(f"{wanted}, got {_show(value)}")
    mtu = int(value)
    if mtu == 0:
        return DEFAULT_MTU
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise _Bad(f"{wanted}, got {mtu}")
    return mtu


def _parse_iface_prefix(value: str) -> str:
    if not value:
        raise _Bad("interface prefix must not be empty")
    if not _IFACE_PREFIX.fullmatch(value):
        raise _Bad(
            f"invalid interface prefix {_show(value)}: use letters, digits, '_' and '-', "
            "starting with a letter, a digit or '_'"
        )
    if len(value) > IFACE_PREFIX_MAX:
        raise _Bad(
            f"interface prefix {_show(value)} is too long ({len(value)} characters, at most "
            f"{IFACE_PREFIX_MAX} so that the prefix and a number fit in {IFNAME_MAX})"
        )
    return value


def _parse_gateway_mode(value: str) -> str:
    if value not in GATEWAY_MODES:
        raise _Bad(
            f"unknown gateway mode {_show(value)}; berth supports nat and routed "
            "(Docker's nat-unprotected and isolated are not supported)"
        )
    return value


# option -> (BridgeOptions attribute, parser)
_BRIDGE_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    BRIDGE_NAME: ("bridge_name", _parse_bridge_name),
    ENABLE_IP_MASQUERADE: ("enable_ip_masquerade", _parse_bool),
    ENABLE_ICC: ("enable_icc", _parse_bool),
    HOST_BINDING_IPV4: ("host_binding_ipv4", _parse_host_binding),
    MTU: ("mtu", _parse_mtu),
    CONTAINER_IFACE_PREFIX: ("container_iface_prefix", _parse_iface_prefix),
    INHIBIT_IPV4: ("inhibit_ipv4", _parse_bool),
    GATEWAY_MODE_IPV4: ("gateway_mode_ipv4", _parse_gateway_mode),
    GATEWAY_MODE_IPV6: ("gateway_mode_ipv6", _parse_gateway_mode),
}
_NO_SNAT_ADDRESS = (
    "berth does not support choosing the source NAT address; remove this option "
    "(masquerade uses the outgoing interface's address)"
)
# In seed 003's table but not supported by berth: refused with this reason.
_REFUSED_BRIDGE_OPTIONS = {HOST_IPV4: _NO_SNAT_ADDRESS, HOST_IPV6: _NO_SNAT_ADDRESS}
SUPPORTED_BRIDGE_OPTIONS = tuple(_BRIDGE_OPTIONS)


def _bridge_option(key: str) -> tuple[str, Callable[[str], Any]]:
    if key in _BRIDGE_OPTIONS:
        return _BRIDGE_OPTIONS[key]
    if key in _REFUSED_BRIDGE_OPTIONS:
        raise _Bad(_REFUSED_BRIDGE_OPTIONS[key])
    raise _Bad(f"unknown bridge option; known options: {', '.join(SUPPORTED_BRIDGE_OPTIONS)}")


def bridge_options(
    options: Mapping[str, str], *, network_id: str, field: str = "options"
) -> BridgeOptions:
    """The bridge driver's `-o` options, parsed; the bridge is `br-<short id>` by default."""
    values: dict[str, Any] = {"bridge_name": f"br-{network_id[:SHORT_ID_CHARS]}"}
    violations = []
    for key, value in options.items():
        try:
            attribute, parse = _bridge_option(key)
            values[attribute] = parse(value)
        except _Bad as bad:
            problem = f"option {_show(key)}: {bad}"
            violations.append(FieldViolation(_entry(field, key), problem))
    _fail(violations, "INVALID_OPTION")
    return BridgeOptions(**values)


# Endpoint driver options


def _parse_sysctl(item: str, ifname: str) -> tuple[str, str]:
    key, equals, value = item.partition("=")
    if not item:
        raise _Bad("empty setting (a stray comma?)")
    if not equals:
        raise _Bad(f"{_show(item)} is not KEY=VALUE")
    match = _SYSCTL_KEY.fullmatch(key)
    if not match:
        raise _Bad(
            f"sysctl {_show(key)} is not allowed: only net.ipv4.conf.IFNAME.SETTING and "
            "net.ipv6.conf.IFNAME.SETTING (SETTING in a-z, 0-9, '_'), with the interface "
            "written IFNAME"
        )
    if not _SYSCTL_VALUE.fullmatch(value) or len(value) > SYSCTL_VALUE_MAX:
        raise _Bad(
            f"value {_show(value)} of {key} is not allowed: 1 to {SYSCTL_VALUE_MAX} "
            "letters, digits, '_', '.', ':' or '-'"
        )
    version, setting = match.groups()
    return f"net.ipv{version}.conf.{ifname}.{setting}", value


def _parse_sysctls(text: str, ifname: str) -> tuple[dict[str, str], list[str]]:
    settings: dict[str, str] = {}
    problems = []
    for item in text.split(","):
        try:
            key, value = _parse_sysctl(item, ifname)
        except _Bad as bad:
            problems.append(str(bad))
            continue
        if key in settings:
            problems.append(f"{key} is set twice")
        settings[key] = value
    return settings, problems


def endpoint_sysctls(
    driver_opts: Mapping[str, str],
    *,
    ifname: str,
    field: str = "endpoint_config.driver_opts",
) -> dict[str, str]:
    """Per-interface sysctls from `--driver-opt com.docker.network.endpoint.sysctls=...`.

    `ifname` is the sandbox-side interface (eth0, ...), put in place of IFNAME; it must
    hold no '.' so that the returned keys split unambiguously. Returns {key: value}.
    """
    if _ifname_problem(ifname) or "." in ifname:
        raise ValueError(f"not a sandbox interface name: {ifname!r}")
    settings: dict[str, str] = {}
    violations = []
    for key, value in driver_opts.items():
        if key != ENDPOINT_SYSCTLS:
            problem = f"unknown driver option {_show(key)}; the only one is {ENDPOINT_SYSCTLS}"
            violations.append(FieldViolation(_entry(field, key), problem))
            continue
        parsed, problems = _parse_sysctls(value, ifname)
        settings.update(parsed)
        violations += [FieldViolation(_entry(field, key), p) for p in problems]
    _fail(violations, "INVALID_DRIVER_OPT")
    return settings


# Ids


def new_id() -> str:
    """A random id of 64 lowercase hex characters, like Docker's."""
    while True:
        candidate = secrets.token_hex(ID_HEX_CHARS // 2)
        # Like Docker: a short id of digits only would read as a number.
        if not candidate[:SHORT_ID_CHARS].isdigit():
            return candidate


def short_id(full_id: str) -> str:
    """The 12-character form shown by `ls` and used in default names."""
    return full_id[:SHORT_ID_CHARS]


def parse_ip(text: str, version: int | None, field: str) -> IPAddress | None:
    if not text:
        return None
    try:
        address = ip_address(text)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, f"invalid IP address {text!r}")]) from None
    if version is not None and address.version != version:
        raise InvalidArgument([FieldViolation(field, f"{text} is not an IPv{version} address")])
    return address
