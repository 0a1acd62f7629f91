"""The resolver files of a sandbox (`/etc/netns/NAME/resolv.conf` and `hosts`, which
`ip netns exec` mounts over /etc) and the host's resolv.conf they start from."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import ip_address

from berth.network.domain.model import IPAddress

EMBEDDED_DNS = "127.0.0.11"
MAX_NAMESERVERS = 3  # what the C library reads (MAXNS)
HEADER = "# Written by the berth network agent; changes are overwritten."
LOCALHOST_LINES = (
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    "fe00::\tip6-localnet",
    "ff00::\tip6-mcastprefix",
    "ff02::1\tip6-allnodes",
    "ff02::2\tip6-allrouters",
)


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> ResolvConf:
        servers: list[str] = []
        search: tuple[str, ...] = ()
        options: list[str] = []
        for line in text.splitlines():
            words = line.split("#", 1)[0].split(";", 1)[0].split()
            if len(words) < 2:
                continue
            keyword, values = words[0], words[1:]
            if keyword == "nameserver" and _is_address(values[0]):
                servers.append(values[0])
            elif keyword in ("search", "domain"):
                search = tuple(values)  # the last one wins, as in the C library
            elif keyword == "options":
                options.extend(values)
        return cls(tuple(servers[:MAX_NAMESERVERS]), search, tuple(options))

    def reachable_from_sandbox(self) -> tuple[str, ...]:
        """The nameservers less loopback ones, which are the host's own, not a sandbox's."""
        return tuple(s for s in self.nameservers if not server_address(s).is_loopback)


def sandbox_resolv_conf(
    host: ResolvConf,
    *,
    embedded: bool,
    dns: Sequence[str],
    dns_search: Sequence[str],
    dns_options: Sequence[str],
) -> str:
    """With embedded DNS (a sandbox on a user-defined network), 127.0.0.11 answers and
    forwards the rest to `dns` or the host's servers, named in a comment as Docker does;
    without, the servers are written directly."""
    search = tuple(dns_search) or host.search
    options = tuple(dns_options) or tuple(o for o in host.options if not o.startswith("ndots:"))
    lines = [HEADER]
    if embedded:
        upstreams = tuple(dns) or host.nameservers
        lines.append(f"# ExtServers: [{' '.join(upstreams)}]")
        lines.append(f"nameserver {EMBEDDED_DNS}")
        if not any(o.startswith("ndots:") for o in options):
            options = ("ndots:0", *options)
    else:
        lines.extend(f"nameserver {s}" for s in tuple(dns) or host.reachable_from_sandbox())
    if search:
        lines.append(f"search {' '.join(search)}")
    if options:
        lines.append(f"options {' '.join(options)}")
    return "\n".join(lines) + "\n"


def sandbox_hosts(
    hostname: str,
    own: Iterable[IPAddress],
    links: Iterable[tuple[IPAddress, Sequence[str]]],
) -> str:
    """localhost, the legacy links (address and names) and the sandbox's own addresses
    with its hostname, in /etc/hosts form."""
    lines = [HEADER, *LOCALHOST_LINES]
    lines.extend(f"{address}\t{' '.join(names)}" for address, names in links)
    lines.extend(f"{address}\t{hostname}" for address in own)
    return "\n".join(lines) + "\n"


def server_address(server: str) -> IPAddress:
    """A nameserver's address, without the zone of a link-local IPv6 one (fe80::1%eth0)."""
    return ip_address(server.split("%")[0])


def _is_address(text: str) -> bool:
    try:
        server_address(text)
    except ValueError:
        return False
    return True
