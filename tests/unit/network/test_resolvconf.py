"""The sandbox's resolv.conf and hosts files, and reading the host's resolv.conf."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest

from berth.common.errors import InvalidArgument
from berth.network.adapters.resolver_files import HostResolvConf, SandboxFiles
from berth.network.domain.resolvconf import ResolvConf, sandbox_hosts, sandbox_resolv_conf
from berth.network.domain.validation import check_dns_option, check_dns_search

HOST = ResolvConf.parse(
    "# comment\n"
    "nameserver 127.0.0.53\n"
    "nameserver 10.0.0.2 ; trailing\n"
    "nameserver not-an-address\n"
    "nameserver 10.0.0.3\n"
    "nameserver 10.0.0.4\n"
    "search corp.example lab.example\n"
    "options ndots:3 edns0\n"
)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("# Written")]


def test_parse_keeps_three_servers_search_and_options() -> None:
    assert HOST.nameservers == ("127.0.0.53", "10.0.0.2", "10.0.0.3")
    assert HOST.search == ("corp.example", "lab.example")
    assert HOST.options == ("ndots:3", "edns0")
    assert HOST.reachable_from_sandbox() == ("10.0.0.2", "10.0.0.3")


def test_embedded_dns_sandboxes_ask_127_0_0_11_with_ndots_0() -> None:
    text = sandbox_resolv_conf(HOST, embedded=True, dns=[], dns_search=[], dns_options=[])
    assert lines(text) == [
        "# ExtServers: [127.0.0.53 10.0.0.2 10.0.0.3]",
        "nameserver 127.0.0.11",
        "search corp.example lab.example",
        "options ndots:0 edns0",
    ]


def test_own_dns_settings_win() -> None:
    text = sandbox_resolv_conf(
        HOST, embedded=True, dns=["9.9.9.9"], dns_search=["svc.local"], dns_options=["ndots:2"]
    )
    assert lines(text) == [
        "# ExtServers: [9.9.9.9]",
        "nameserver 127.0.0.11",
        "search svc.local",
        "options ndots:2",
    ]


def test_default_bridge_sandboxes_get_the_servers_directly() -> None:
    text = sandbox_resolv_conf(HOST, embedded=False, dns=[], dns_search=[], dns_options=[])
    assert "nameserver 127.0.0.11" not in text
    assert lines(text)[:2] == ["nameserver 10.0.0.2", "nameserver 10.0.0.3"]
    own = sandbox_resolv_conf(HOST, embedded=False, dns=["1.1.1.1"], dns_search=[], dns_options=[])
    assert lines(own)[0] == "nameserver 1.1.1.1"


def test_hosts_has_localhost_links_and_own_addresses() -> None:
    text = sandbox_hosts(
        "web", [ip_address("10.1.0.5")], [(ip_address("10.1.0.2"), ["database", "db"])]
    )
    assert "127.0.0.1\tlocalhost" in lines(text)
    assert lines(text)[-2:] == ["10.1.0.2\tdatabase db", "10.1.0.5\tweb"]


def test_host_resolv_conf_is_read_again_after_a_change(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    host = HostResolvConf(path)
    assert host.read().nameservers == ()
    path.write_text("nameserver 10.0.0.1\n")
    assert host.read().nameservers == ("10.0.0.1",)
    path.write_text("nameserver 10.0.0.2\nnameserver 10.0.0.3\n")
    assert host.read().nameservers == ("10.0.0.2", "10.0.0.3")


def test_sandbox_files_are_written_and_removed(tmp_path: Path) -> None:
    files = SandboxFiles(tmp_path)
    files.write("box", "resolv.conf", "nameserver 127.0.0.11\n")
    files.write("box", "hosts", "127.0.0.1\tlocalhost\n")
    assert (tmp_path / "box" / "resolv.conf").read_text() == "nameserver 127.0.0.11\n"
    files.remove("box")
    assert not (tmp_path / "box").exists()


@pytest.mark.parametrize("option", ["ndots:2", "rotate", "single-request", "timeout:1"])
def test_resolver_options_accepted(option: str) -> None:
    assert check_dns_option(option, field="dns_options[0]") == option


@pytest.mark.parametrize("option", ["", "ndots:2\nnameserver 6.6.6.6", "a b", "x:y"])
def test_resolver_options_that_would_corrupt_the_file_are_refused(option: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        check_dns_option(option, field="dns_options[0]")
    assert error.value.violations[0].field == "dns_options[0]"


def test_search_domains_are_checked() -> None:
    assert check_dns_search("corp.example.", field="dns_search[0]") == "corp.example."
    with pytest.raises(InvalidArgument):
        check_dns_search("bad domain\nnameserver 6.6.6.6", field="dns_search[0]")
