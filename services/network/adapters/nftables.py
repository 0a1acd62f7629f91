"""berth's nftables rules: one table of its own (`table inet berth`), replaced atomically.

`render()` turns a plain description of berth's bridges and published ports into one
`nft` script; `Nftables` applies it with `nft -f -` (one script is one transaction), so
the table is always either the old or the new one, and nothing else on the host changes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from berth.network.domain.model import IPAddress, IPNetwork

TABLE = "berth"
PROTOCOLS = ("tcp", "udp")
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
NETNS_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# The nat output hook has no named priority in nft 1.0.6; -100 is dstnat's value.
DSTNAT_OUTPUT = "-100"


@dataclass(frozen=True)
class BridgeRules:
    """The rules one berth network's bridge needs."""

    bridge: str  # the bridge device of one berth network
    subnets: tuple[IPNetwork, ...]  # its IPv4 and IPv6 subnets
    internal: bool = False  # --internal: no traffic in or out of the network (only within it)
    masquerade: bool = True  # enable_ip_masquerade and gateway mode nat


@dataclass(frozen=True)
class PortForward:
    """A published port (-p): DNAT from the host to a sandbox."""

    protocol: str  # "tcp" | "udp"
    host_ip: IPAddress | None  # None: every local address of the host
    host_port: int
    target_ip: IPAddress
    target_port: int
    bridge: str


def render(
    bridges: Sequence[BridgeRules], forwards: Sequence[PortForward] = (), *, table: str = TABLE
) -> str:
    """The nft script that (re)creates `table inet <table>` with exactly these rules.

    Deterministic: the same bridges and forwards, in any order, give the same script.
    Raises ValueError for names or values that cannot be rendered safely.
    """
    _check_table(table)
    for bridge in bridges:
        _check_bridge(bridge)
    for forward in forwards:
        _check_forward(forward)
    _check_unique([b.bridge for b in bridges])
    ordered_bridges = sorted(bridges, key=lambda b: b.bridge)
    ordered_forwards = sorted(forwards, key=_forward_key)
    chains = [
        _chain("filter", "forward", "filter", _forward_rules(ordered_bridges, ordered_forwards)),
        _chain("nat", "postrouting", "srcnat", _postrouting_rules(ordered_bridges)),
        _chain("nat", "prerouting", "dstnat", _dnat_rules(ordered_forwards, False)),
        _chain("nat", "output", DSTNAT_OUTPUT, _dnat_rules(ordered_forwards, True)),
    ]
    header = f"table inet {table} {{}}\ndelete table inet {table}\n"
    return header + f"table inet {table} {{\n" + "\n".join(chains) + "}\n"


class Nftables:
    """Applies berth's table with the `nft` binary, optionally inside a named netns."""

    def __init__(self, netns: str | None = None, table: str = TABLE) -> None:
        _check_table(table)
        if netns is not None and (not NETNS_NAME.fullmatch(netns) or netns in (".", "..")):
            raise ValueError(f"invalid network namespace name: {netns!r}")
        self._prefix = ["ip", "netns", "exec", netns] if netns else []
        self._table = table

    async def apply(
        self, bridges: Sequence[BridgeRules], forwards: Sequence[PortForward] = ()
    ) -> None:
        """Atomically replace the whole table; RuntimeError with nft's stderr on failure."""
        await self._script(render(bridges, forwards, table=self._table))

    async def remove(self) -> None:
        """Delete the table; no error if it does not exist."""
        await self._script(f"table inet {self._table} {{}}\ndelete table inet {self._table}\n")

    async def current(self) -> str:
        """`nft list table inet <table>` output, "" if the table does not exist."""
        if not await self._exists():
            return ""
        return await self._run(["list", "table", "inet", self._table])

    async def _exists(self) -> bool:
        tables = await self._run(["list", "tables", "inet"])
        return f"table inet {self._table}" in tables.splitlines()

    async def _script(self, script: str) -> None:
        await self._run(["-f", "-"], script)

    async def _run(self, args: list[str], stdin: str | None = None) -> str:
        process = await asyncio.create_subprocess_exec(
            *self._prefix,
            "nft",
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate(stdin.encode() if stdin is not None else None)
        if process.returncode != 0:
            message = err.decode(errors="replace").strip()
            raise RuntimeError(f"nft {' '.join(args)} failed ({process.returncode}): {message}")
        return out.decode(errors="replace")


def _chain(kind: str, hook: str, priority: str, rules: Iterable[str]) -> str:
    """A base chain named after its hook."""
    lines = [
        f"\tchain {hook} {{",
        f"\t\ttype {kind} hook {hook} priority {priority}; policy accept;",
    ]
    lines += [f"\t\t{rule}" for rule in rules]
    return "\n".join([*lines, "\t}", ""])


def _forward_rules(bridges: Sequence[BridgeRules], forwards: Sequence[PortForward]) -> list[str]:
    # Internal networks are sealed first, so nothing below (not even a published port) opens them.
    rules: list[str] = []
    for bridge in bridges:
        if bridge.internal:
            name = _quote(bridge.bridge)
            rules.append(f"iifname {name} oifname != {name} drop")
            rules.append(f"oifname {name} iifname != {name} drop")
    # A published port is open to everyone, other berth networks included (as with Docker's
    # userland proxy). Matching the connection's reply tuple accepts both directions of
    # DNATed connections only: direct traffic to the sandbox stays isolated.
    for forward in forwards:
        rules.append(
            f"meta l4proto {forward.protocol} ct status dnat "
            f"ct reply {_family(forward.target_ip)} saddr {forward.target_ip} "
            f"ct reply proto-src {forward.target_port} accept"
        )
    names = [b.bridge for b in bridges]
    for name in names:
        others = [other for other in names if other != name]
        if others:
            rules.append(f"iifname {_quote(name)} oifname {_set([_quote(o) for o in others])} drop")
    rules.append("ct state established,related accept")
    return rules


def _postrouting_rules(bridges: Sequence[BridgeRules]) -> list[str]:
    rules: list[str] = []
    for bridge in bridges:
        if bridge.internal or not bridge.subnets:
            continue
        name = _quote(bridge.bridge)
        for family, subnets in _by_family(bridge.subnets):
            # Hairpin: a sandbox reaching a published port of its own bridge through the host's
            # address must see the reply come from the host, not straight from the target.
            rules.append(f"oifname {name} {family} saddr {subnets} ct status dnat masquerade")
            if bridge.masquerade:
                rules.append(f"{family} saddr {subnets} oifname != {name} masquerade")
    return rules


def _dnat_rules(forwards: Sequence[PortForward], local_output: bool) -> list[str]:
    return [_dnat_rule(forward, local_output) for forward in forwards]


def _dnat_rule(forward: PortForward, local_output: bool) -> str:
    family = _family(forward.target_ip)
    if forward.host_ip is not None:
        match = f"{family} daddr {forward.host_ip}"
    elif local_output:
        # Loopback cannot be DNATed out of the host (martian source) without touching sysctls.
        loopback = "127.0.0.0/8" if family == "ip" else "::1"
        match = f"{family} daddr != {loopback} fib daddr type local"
    else:
        match = f"meta nfproto {_nfproto(forward.target_ip)} fib daddr type local"
    target = (
        f"{forward.target_ip}:{forward.target_port}"
        if isinstance(forward.target_ip, IPv4Address)
        else f"[{forward.target_ip}]:{forward.target_port}"
    )
    return f"{match} {forward.protocol} dport {forward.host_port} dnat {family} to {target}"


def _by_family(subnets: Iterable[IPNetwork]) -> list[tuple[str, str]]:
    v4 = sorted(str(s) for s in subnets if isinstance(s, IPv4Network))
    v6 = sorted(str(s) for s in subnets if not isinstance(s, IPv4Network))
    return [(family, _set(items)) for family, items in (("ip", v4), ("ip6", v6)) if items]


def _set(items: Sequence[str]) -> str:
    """One nft value, or an anonymous set of several."""
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _quote(name: str) -> str:
    return f'"{name}"'


def _family(address: IPAddress) -> str:
    return "ip" if isinstance(address, IPv4Address) else "ip6"


def _nfproto(address: IPAddress) -> str:
    return "ipv4" if isinstance(address, IPv4Address) else "ipv6"


def _forward_key(forward: PortForward) -> tuple[str, str, int, str, str, int]:
    return (
        forward.bridge,
        forward.protocol,
        forward.host_port,
        str(forward.host_ip),
        str(forward.target_ip),
        forward.target_port,
    )


def _check_table(table: str) -> None:
    if not TABLE_NAME.fullmatch(table):
        raise ValueError(f"invalid nftables table name: {table!r}")


def _check_interface(name: str) -> None:
    if not isinstance(name, str) or not INTERFACE_NAME.fullmatch(name):
        raise ValueError(f"invalid bridge name: {name!r}")


def _check_bridge(bridge: BridgeRules) -> None:
    _check_interface(bridge.bridge)
    for subnet in bridge.subnets:
        if not isinstance(subnet, IPv4Network | IPv6Network):
            raise ValueError(f"invalid subnet for {bridge.bridge}: {subnet!r}")


def _check_forward(forward: PortForward) -> None:
    _check_interface(forward.bridge)
    if forward.protocol not in PROTOCOLS:
        raise ValueError(f"invalid protocol: {forward.protocol!r} (tcp or udp)")
    for port in (forward.host_port, forward.target_port):
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"invalid port: {port!r}")
    if not isinstance(forward.target_ip, IPv4Address | IPv6Address):
        raise ValueError(f"invalid target address: {forward.target_ip!r}")
    if forward.host_ip is not None and type(forward.host_ip) is not type(forward.target_ip):
        raise ValueError(
            f"host address {forward.host_ip} and target {forward.target_ip} differ in family"
        )


def _check_unique(names: Sequence[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"bridge listed more than once: {', '.join(duplicates)}")
