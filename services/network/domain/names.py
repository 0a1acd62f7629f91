"""The names the embedded DNS server answers, as each sandbox sees them.

A NameTable is a snapshot built from the agent's state after every change, so a lookup
never sees a change half made and costs a few dictionary reads. Docker's rules:

- user-defined networks have embedded DNS; the default `bridge` does not;
- on such a network, a running sandbox answers to its name, its short id, its aliases on
  that network, and any of those followed by `.NETWORK`;
- a name is looked up in the asking sandbox's networks only, in the order it joined them;
  the first network that knows the name gives every address it has for it;
- a legacy link (`--link target:alias`) is seen only by the sandbox that declared it, on
  the network it was declared on, and resolves once the target is running there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from berth.network.domain.endpoints import in_join_order
from berth.network.domain.model import (
    Driver,
    IPAddress,
    Network,
    Sandbox,
    SandboxState,
)
from berth.network.domain.overlay import ClusterEndpoint

SHORT_ID = 12


@dataclass(frozen=True)
class Member:
    """One running sandbox's addresses on one network."""

    ipv4: IPv4Address | None
    ipv6: IPv6Address | None

    def addresses(self, version: int) -> list[IPAddress]:
        address = self.ipv4 if version == 4 else self.ipv6
        return [] if address is None else [address]


@dataclass
class NetworkNames:
    """Who answers to what on one network."""

    name: str
    names: dict[str, list[Member]] = field(default_factory=dict)  # lower-case name -> members
    sandboxes: dict[str, Member] = field(default_factory=dict)  # lower-case sandbox name
    reverse: dict[IPAddress, str] = field(default_factory=dict)  # address -> "name.network"


@dataclass(frozen=True)
class Asker:
    """What one sandbox sees: its DNS networks in order, its links, where it forwards."""

    networks: tuple[str, ...]  # network ids
    links: dict[str, dict[str, str]]  # network id -> lower-case alias -> lower-case target
    upstreams: tuple[str, ...]  # its own `--dns` servers; empty: the host's
    forwards: bool  # False when every network it is on is --internal


def has_embedded_dns(network: Network) -> bool:
    return network.driver in (Driver.BRIDGE, Driver.OVERLAY) and not network.predefined


def needs_dns(sandbox: Sandbox, networks: dict[str, Network]) -> bool:
    """Whether the sandbox is on a network with embedded DNS (and so asks 127.0.0.11)."""
    return any(has_embedded_dns(networks[e.network_id]) for e in sandbox.endpoints.values())


def dns_names(sandbox: Sandbox, network: Network) -> list[str]:
    """The names this sandbox answers to on `network` (inspect's DNSNames)."""
    if not has_embedded_dns(network):
        return []
    endpoint = sandbox.endpoints.get(network.id)
    aliases = [] if endpoint is None else endpoint.aliases
    return _unique([sandbox.name, sandbox.id[:SHORT_ID], *aliases])


class NameTable:
    def __init__(
        self,
        networks: dict[str, NetworkNames] | None = None,
        askers: dict[str, Asker] | None = None,
    ) -> None:
        self.networks = networks or {}
        self.askers = askers or {}

    @classmethod
    def build(
        cls,
        networks: Iterable[Network],
        sandboxes: Iterable[Sandbox],
        remote: Iterable[ClusterEndpoint] = (),
    ) -> NameTable:
        """`remote`: the endpoints other hosts have on this host's overlay networks."""
        with_dns = {n.id: n for n in networks if has_embedded_dns(n)}
        table = {nid: NetworkNames(name=n.name) for nid, n in with_dns.items()}
        for endpoint in remote:
            if endpoint.network_id in table:
                _add_remote(table[endpoint.network_id], endpoint)
        askers: dict[str, Asker] = {}
        for sandbox in sandboxes:
            joined = [e for e in in_join_order(sandbox) if e.network_id in with_dns]
            if not joined:
                continue
            askers[sandbox.id] = Asker(
                networks=tuple(e.network_id for e in joined),
                links={
                    e.network_id: {a.lower(): t.lower() for t, a in e.links.items()} for e in joined
                },
                upstreams=tuple(sandbox.dns),
                forwards=not all(with_dns[e.network_id].internal for e in joined),
            )
            if sandbox.state is not SandboxState.RUNNING:
                continue
            for endpoint in joined:
                if endpoint.ipv4 is None and endpoint.ipv6 is None:
                    continue
                member = Member(
                    ipv4=None if endpoint.ipv4 is None else endpoint.ipv4.ip,
                    ipv6=None if endpoint.ipv6 is None else endpoint.ipv6.ip,
                )
                _add(table[endpoint.network_id], sandbox, with_dns[endpoint.network_id], member)
        return cls(table, askers)

    def asks(self, sandbox_id: str) -> bool:
        """Whether this sandbox is on a network with embedded DNS."""
        return sandbox_id in self.askers

    def resolve(self, sandbox_id: str, name: str) -> list[Member] | None:
        """The members answering to `name` for this sandbox; None when no network of its
        knows the name (the query goes upstream)."""
        asker = self.askers.get(sandbox_id)
        if asker is None:
            return None
        key = name.lower().rstrip(".")
        for network_id in asker.networks:
            names = self.networks[network_id]
            suffix = "." + names.name.lower()
            if key.endswith(suffix):
                found = self._on(asker, network_id, key.removesuffix(suffix))
                if found:
                    return found
        for network_id in asker.networks:
            found = self._on(asker, network_id, key)
            if found:
                return found
        return None

    def _on(self, asker: Asker, network_id: str, key: str) -> list[Member]:
        names = self.networks[network_id]
        target = asker.links[network_id].get(key)
        if target is not None and target in names.sandboxes:
            return [names.sandboxes[target]]
        return names.names.get(key, [])

    def reverse(self, sandbox_id: str, address: IPAddress) -> str | None:
        """The name of a sandbox at `address` on one of this sandbox's networks."""
        asker = self.askers.get(sandbox_id)
        if asker is None:
            return None
        for network_id in asker.networks:
            found = self.networks[network_id].reverse.get(address)
            if found is not None:
                return found
        return None

    def upstreams(self, sandbox_id: str) -> tuple[str, ...]:
        asker = self.askers.get(sandbox_id)
        return () if asker is None else asker.upstreams

    def forwards(self, sandbox_id: str) -> bool:
        asker = self.askers.get(sandbox_id)
        return asker is not None and asker.forwards


def _add(names: NetworkNames, sandbox: Sandbox, network: Network, member: Member) -> None:
    _add_names(names, sandbox.name, dns_names(sandbox, network), member)


def _add_remote(names: NetworkNames, endpoint: ClusterEndpoint) -> None:
    member = Member(
        ipv4=None if endpoint.ipv4 is None else endpoint.ipv4.ip,
        ipv6=None if endpoint.ipv6 is None else endpoint.ipv6.ip,
    )
    own = [endpoint.sandbox, endpoint.sandbox_id[:SHORT_ID], *endpoint.aliases]
    _add_names(names, endpoint.sandbox, _unique(own), member)


def _add_names(names: NetworkNames, sandbox: str, answers_to: list[str], member: Member) -> None:
    for name in answers_to:
        names.names.setdefault(name.lower(), []).append(member)
    names.sandboxes[sandbox.lower()] = member
    for address in (member.ipv4, member.ipv6):
        if address is not None:
            names.reverse[address] = f"{sandbox}.{names.name}"


def _unique(names: list[str]) -> list[str]:
    """Without repeats, case-insensitively, first spelling kept."""
    by_key: dict[str, str] = {}
    for name in names:
        by_key.setdefault(name.lower(), name)
    return list(by_key.values())


def legacy_link_hosts(
    sandbox: Sandbox, networks: dict[str, Network], running: dict[str, Sandbox]
) -> list[tuple[IPAddress, list[str]]]:
    """/etc/hosts entries for the links declared on networks without embedded DNS (the
    default `bridge`): the target's address there, under the alias and the target's name.
    `running` holds the running sandboxes by name."""
    entries: list[tuple[IPAddress, list[str]]] = []
    for endpoint in in_join_order(sandbox):
        if has_embedded_dns(networks[endpoint.network_id]):
            continue
        for target_name, alias in endpoint.links.items():
            target = running.get(target_name)
            theirs = None if target is None else target.endpoints.get(endpoint.network_id)
            if theirs is not None and theirs.ipv4 is not None:
                entries.append((theirs.ipv4.ip, _unique([alias, target_name])))
    return entries


def own_addresses(sandbox: Sandbox) -> list[IPAddress]:
    return [
        address.ip
        for endpoint in in_join_order(sandbox)
        for address in (endpoint.ipv4, endpoint.ipv6)
        if address is not None
    ]
