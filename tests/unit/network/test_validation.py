"""Validation of user input for the network agent: names, options, sysctls, ids."""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest

from berth.common.errors import InvalidArgument
from berth.network.domain import validation
from berth.network.domain.model import BridgeOptions
from berth.network.domain.validation import (
    bridge_options,
    check_alias,
    check_hostname,
    check_ifname,
    check_labels,
    check_name,
    endpoint_sysctls,
    new_id,
    short_id,
)

NET_ID = "0123456789abcdef" * 4
SYSCTLS = "com.docker.network.endpoint.sysctls"
OPT = "com.docker.network"

# Attempts to break out of a path, an nft rule, a shell or a log line.
INJECTIONS = [
    "a;b",
    "../x",
    "x/y",
    "x y",
    "eth0\n",
    "a\nb",
    "a\x00b",
    'a"b',
    "a'b",
    "a`id`",
    "$(id)",
    "a*",
    "a\\b",
    "a{b}",
    "a#b",
    "é",
    "eth\u0660",  # Arabic-Indic digit zero: a digit to str.isdigit, not to us
    "\uff45\uff54\uff480",  # fullwidth "eth" then 0
    "a\u202eb",  # right-to-left override
]


def violations(error: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in error.value.violations}


def refused(check: Callable[[str], object], value: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as error:
        check(value)
    return error.value


# check_name


@pytest.mark.parametrize("name", ["a", "my-net", "isolated_nw", "Net.1", "0", "a" * 64])
def test_name_accepts_docker_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", [*INJECTIONS, "-a", ".a", "_a", ".", "..", "a" * 65])
def test_name_refuses_bad_names(name: str) -> None:
    error = refused(check_name, name)
    assert [v.field for v in error.violations] == ["name"]
    assert error.reason == "INVALID_NAME"


def test_name_required_message_names_the_kind_and_field() -> None:
    with pytest.raises(InvalidArgument) as error:
        check_name("", field="sandbox.name", what="sandbox")
    assert violations(error) == {"sandbox.name": "sandbox name is required"}


def test_name_messages_say_why() -> None:
    assert "at most 64" in refused(check_name, "a" * 65).violations[0].description
    message = refused(check_name, "a;b").violations[0].description
    assert '"a;b"' in message
    assert "[a-zA-Z0-9][a-zA-Z0-9_.-]" in message


def test_messages_escape_control_characters_and_shorten() -> None:
    message = refused(check_name, "a\nb\x1b[31m").message
    assert "\n" not in message
    assert "\x1b" not in message
    assert "\\n" in message
    long_bad = refused(check_name, "x;" * 500).message
    assert len(long_bad) < 300


# check_ifname


@pytest.mark.parametrize("name", ["eth0", "br-0123456789ab", "veth_1", "a.b", "x" * 15, "_x"])
def test_ifname_accepts_linux_names(name: str) -> None:
    assert check_ifname(name, field="ifname") == name


@pytest.mark.parametrize(
    "name", [*INJECTIONS, "", ".", "..", "x" * 16, "eth0:1", "-eth0", ".eth0", "a\tb"]
)
def test_ifname_refuses_bad_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        check_ifname(name, field="driver_opts.parent")
    assert list(violations(error)) == ["driver_opts.parent"]
    assert error.value.reason == "INVALID_INTERFACE_NAME"


def test_ifname_too_long_says_the_limit() -> None:
    with pytest.raises(InvalidArgument) as error:
        check_ifname("x" * 16, field="f")
    assert "at most 15" in violations(error)["f"]


# check_hostname


@pytest.mark.parametrize(
    "name", ["web", "db-1", "1host", "a.example.com", "A" * 63, ".".join(["a" * 63] * 3 + ["b"])]
)
def test_hostname_accepts_rfc1123(name: str) -> None:
    assert check_hostname(name) == name


@pytest.mark.parametrize(
    "name",
    [
        *INJECTIONS,
        "",
        "-web",
        "web-",
        "a..b",
        ".a",
        "a.",
        "under_score",
        "a" * 64,
        ".".join(["a" * 63] * 4),  # 255 characters
    ],
)
def test_hostname_refuses_others(name: str) -> None:
    error = refused(check_hostname, name)
    assert [v.field for v in error.violations] == ["hostname"]
    assert error.reason == "INVALID_HOSTNAME"


# check_alias


@pytest.mark.parametrize("alias", ["db", "mysql", "c5", "app.local", "_srv", "my_db-1"])
def test_alias_accepts_dns_names(alias: str) -> None:
    assert check_alias(alias, field="aliases[0]") == alias


@pytest.mark.parametrize(
    "alias", [*INJECTIONS, "", "a..b", ".a", "a.", "-a", "a-", "a" * 64, "a." * 127 + "a"]
)
def test_alias_refuses_others(alias: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        check_alias(alias, field="aliases[1]")
    assert list(violations(error)) == ["aliases[1]"]
    assert error.value.reason == "INVALID_ALIAS"


# check_labels


def test_labels_accept_free_text() -> None:
    labels = {"com.example.team": "net ops", "empty": "", "ünï": "çödé ✓"}
    result = check_labels(labels)
    assert result == labels
    assert result is not labels


def test_labels_report_every_bad_entry() -> None:
    with pytest.raises(InvalidArgument) as error:
        check_labels({"": "x", "ok": "fine", "a\nb": "v", "k": "line\r\n", "t": "tab\there"})
    found = violations(error)
    assert set(found) == {'labels[""]', 'labels["a\\nb"]', 'labels["k"]', 'labels["t"]'}
    assert "required" in found['labels[""]']
    assert "control" in found['labels["k"]']
    assert error.value.reason == "INVALID_LABEL"


# bridge_options


def test_bridge_defaults() -> None:
    assert bridge_options({}, network_id=NET_ID) == BridgeOptions(bridge_name="br-0123456789ab")


def test_bridge_every_option_parsed() -> None:
    options = {
        f"{OPT}.bridge.name": "br-test",
        f"{OPT}.bridge.enable_ip_masquerade": "false",
        f"{OPT}.bridge.enable_icc": "0",
        f"{OPT}.bridge.host_binding_ipv4": "127.0.0.1",
        f"{OPT}.driver.mtu": "9000",
        f"{OPT}.container_iface_prefix": "ens",
        f"{OPT}.bridge.inhibit_ipv4": "TRUE",
        f"{OPT}.bridge.gateway_mode_ipv4": "routed",
        f"{OPT}.bridge.gateway_mode_ipv6": "nat",
    }
    assert bridge_options(options, network_id=NET_ID) == BridgeOptions(
        bridge_name="br-test",
        enable_ip_masquerade=False,
        enable_icc=False,
        host_binding_ipv4=IPv4Address("127.0.0.1"),
        mtu=9000,
        container_iface_prefix="ens",
        inhibit_ipv4=True,
        gateway_mode_ipv4="routed",
        gateway_mode_ipv6="nat",
    )


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        *[("true", True), ("True", True), ("1", True), ("t", True), ("TRUE", True)],
        *[("false", False), ("FALSE", False), ("0", False), ("F", False), ("False", False)],
    ],
)
@pytest.mark.parametrize("attribute", ["enable_ip_masquerade", "enable_icc", "inhibit_ipv4"])
def test_bridge_booleans_take_dockers_spellings(
    attribute: str, spelling: str, expected: bool
) -> None:
    options = bridge_options({f"{OPT}.bridge.{attribute}": spelling}, network_id=NET_ID)
    assert getattr(options, attribute) is expected


@pytest.mark.parametrize(
    ("value", "mtu"), [("68", 68), ("1280", 1280), ("65535", 65535), ("0", 1500)]
)
def test_bridge_mtu(value: str, mtu: int) -> None:
    assert bridge_options({f"{OPT}.driver.mtu": value}, network_id=NET_ID).mtu == mtu


@pytest.mark.parametrize("mode", ["nat", "routed"])
def test_bridge_gateway_modes(mode: str) -> None:
    options = {f"{OPT}.bridge.gateway_mode_ipv4": mode, f"{OPT}.bridge.gateway_mode_ipv6": mode}
    parsed = bridge_options(options, network_id=NET_ID)
    assert (parsed.gateway_mode_ipv4, parsed.gateway_mode_ipv6) == (mode, mode)


def test_bridge_prefix_of_13_characters_fits() -> None:
    parsed = bridge_options({f"{OPT}.container_iface_prefix": "p" * 13}, network_id=NET_ID)
    assert len(parsed.container_iface_prefix + "99") == 15


BAD_BRIDGE_VALUES = [
    ("bridge.name", ["", "a;b", "../x", "x y", "br0\n", "x" * 16, "brü", "-br"]),
    ("bridge.enable_ip_masquerade", ["", "yes", "on", "2", " true", "truee"]),
    ("bridge.enable_icc", ["no", "off", "tru"]),
    ("bridge.inhibit_ipv4", ["y", "-1"]),
    ("bridge.host_binding_ipv4", ["", "1.2.3", "256.0.0.1", "01.2.3.4", "::1", "host"]),
    (
        "driver.mtu",
        ["", "67", "65536", "-1", "1e3", " 1500", "1_500", "\u0661\u0665\u0660\u0660", "1500.0"],
    ),
    ("container_iface_prefix", ["", "p" * 14, "a;b", "e/x", "eth.", "é", "-e", "x y"]),
    ("bridge.gateway_mode_ipv4", ["", "NAT", "isolated", "nat-unprotected", "direct"]),
    ("bridge.gateway_mode_ipv6", ["bridge", "Routed"]),
]


@pytest.mark.parametrize(
    ("option", "value"),
    [(f"{OPT}.{name}", value) for name, values in BAD_BRIDGE_VALUES for value in values],
)
def test_bridge_bad_value_names_the_option(option: str, value: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        bridge_options({option: value}, network_id=NET_ID)
    found = violations(error)
    assert list(found) == [f'options["{option}"]']
    assert option in found[f'options["{option}"]']
    assert error.value.reason == "INVALID_OPTION"


def test_bridge_ipv6_binding_address_gets_a_clear_message() -> None:
    with pytest.raises(InvalidArgument) as error:
        bridge_options({f"{OPT}.bridge.host_binding_ipv4": "::"}, network_id=NET_ID)
    assert "IPv6" in error.value.message


def test_bridge_unsupported_gateway_mode_says_what_is_supported() -> None:
    with pytest.raises(InvalidArgument) as error:
        bridge_options({f"{OPT}.bridge.gateway_mode_ipv4": "isolated"}, network_id=NET_ID)
    assert "nat and routed" in error.value.message


@pytest.mark.parametrize("option", [f"{OPT}.host_ipv4", f"{OPT}.host_ipv6"])
def test_bridge_snat_address_options_are_refused_clearly(option: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        bridge_options({option: "192.0.2.1"}, network_id=NET_ID)
    assert "source NAT" in violations(error)[f'options["{option}"]']


@pytest.mark.parametrize(
    "key", ["com.docker.network.bridge.default_bridge", "mtu", "x;y", "", "bridge.name\n"]
)
def test_bridge_unknown_option_lists_the_known_ones(key: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        bridge_options({key: "1"}, network_id=NET_ID)
    [(field, description)] = violations(error).items()
    assert field.startswith("options[")
    assert "\n" not in field
    assert "unknown bridge option" in description
    for known in validation.SUPPORTED_BRIDGE_OPTIONS:
        assert known in description


def test_bridge_reports_all_violations_together() -> None:
    options = {
        f"{OPT}.bridge.name": "x" * 20,
        f"{OPT}.driver.mtu": "10",
        f"{OPT}.bridge.enable_icc": "maybe",
        f"{OPT}.bridge.enable_ip_masquerade": "true",
        "com.example.unknown": "1",
    }
    with pytest.raises(InvalidArgument) as error:
        bridge_options(options, network_id=NET_ID, field="network.options")
    assert set(violations(error)) == {
        f'network.options["{OPT}.bridge.name"]',
        f'network.options["{OPT}.driver.mtu"]',
        f'network.options["{OPT}.bridge.enable_icc"]',
        'network.options["com.example.unknown"]',
    }
    assert f"{OPT}.driver.mtu" in error.value.metadata["fields"]


# endpoint_sysctls


def test_sysctls_replace_ifname() -> None:
    value = "net.ipv4.conf.IFNAME.log_martians=1,net.ipv4.conf.IFNAME.forwarding=0"
    assert endpoint_sysctls({SYSCTLS: value}, ifname="eth3") == {
        "net.ipv4.conf.eth3.log_martians": "1",
        "net.ipv4.conf.eth3.forwarding": "0",
    }


def test_sysctls_ipv6_and_value_characters() -> None:
    value = ",".join(
        [
            "net.ipv6.conf.IFNAME.accept_ra=2",
            "net.ipv6.conf.IFNAME.token=::1:2",
            "net.ipv6.conf.IFNAME.x_y=a-b.c_D",
        ]
    )
    assert endpoint_sysctls({SYSCTLS: value}, ifname="eth0") == {
        "net.ipv6.conf.eth0.accept_ra": "2",
        "net.ipv6.conf.eth0.token": "::1:2",
        "net.ipv6.conf.eth0.x_y": "a-b.c_D",
    }


def test_sysctls_none_given() -> None:
    assert endpoint_sysctls({}, ifname="eth0") == {}


@pytest.mark.parametrize(
    "setting",
    [
        "net.ipv4.conf.eth0.forwarding=1",  # the interface must be written IFNAME
        "net.ipv4.conf.all.forwarding=1",
        "net.ipv4.conf.default.forwarding=1",
        "net.ipv4.ip_forward=1",
        "net.core.somaxconn=1",
        "kernel.core_pattern=|/bin/sh",
        "net.ipv4.conf.IFNAME.Forwarding=1",
        "net.ipv4.conf.IFNAME.../../x=1",
        "net.ipv4.conf.IFNAME.a/b=1",
        "net.ipv4.neigh.IFNAME.retrans_time=1",
        "net.ipv4.conf.IFNAME.forwarding",
        "net.ipv4.conf.IFNAME.forwarding=",
        "net.ipv4.conf.IFNAME.forwarding=1 ",
        "net.ipv4.conf.IFNAME.forwarding=1;reboot",
        "net.ipv4.conf.IFNAME.forwarding=$(id)",
        "net.ipv4.conf.IFNAME.forwarding=../../x",
        "net.ipv4.conf.IFNAME.forwarding=1\n",
        "net.ipv4.conf.IFNAME.forwarding=\u0661",
        "net.ipv4.conf.IFNAME.forwarding=" + "1" * 129,
        " net.ipv4.conf.IFNAME.forwarding=1",
        "net.ipv4.conf.IFNAME.forwarding=1,",
        "",
    ],
)
def test_sysctls_refuse_other_keys_and_unsafe_values(setting: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        endpoint_sysctls({SYSCTLS: setting}, ifname="eth0", field="driver_opts")
    assert list(violations(error)) == [f'driver_opts["{SYSCTLS}"]']
    assert error.value.reason == "INVALID_DRIVER_OPT"


def test_sysctls_report_every_bad_setting_and_unknown_option() -> None:
    value = "net.ipv4.ip_forward=1,net.ipv4.conf.IFNAME.forwarding=1,kernel.x=y"
    with pytest.raises(InvalidArgument) as error:
        endpoint_sysctls(
            {SYSCTLS: value, "com.docker.network.endpoint.macaddress": "x"}, ifname="eth1"
        )
    described = [(v.field, v.description) for v in error.value.violations]
    assert len(described) == 3
    assert sum("net.ipv4.ip_forward" in d for _, d in described) == 1
    assert sum("kernel.x" in d for _, d in described) == 1
    unknown = 'endpoint_config.driver_opts["com.docker.network.endpoint.macaddress"]'
    assert unknown in dict(described)
    assert SYSCTLS in dict(described)[unknown]


def test_sysctls_refuse_a_setting_given_twice() -> None:
    value = "net.ipv4.conf.IFNAME.forwarding=1,net.ipv4.conf.IFNAME.forwarding=0"
    with pytest.raises(InvalidArgument) as error:
        endpoint_sysctls({SYSCTLS: value}, ifname="eth0")
    assert "twice" in error.value.message


@pytest.mark.parametrize("ifname", ["", "e.0", "a/b", "x" * 16])
def test_sysctls_need_a_plain_interface_name(ifname: str) -> None:
    with pytest.raises(ValueError, match="interface"):
        endpoint_sysctls({}, ifname=ifname)


# ids


def test_new_id_is_64_lowercase_hex_and_random() -> None:
    ids = {new_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[0-9a-f]{64}", i) for i in ids)


def test_new_id_short_form_is_never_all_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Docker redraws an id whose short form reads as a number.
    draws = iter(["1" * 64, "123456789012" + "a" * 52, NET_ID])
    monkeypatch.setattr(validation.secrets, "token_hex", lambda _: next(draws))
    assert new_id() == NET_ID


def test_short_id_is_the_first_12() -> None:
    assert short_id(NET_ID) == "0123456789ab"
    full = new_id()
    assert full.startswith(short_id(full))
    assert len(short_id(full)) == 12
