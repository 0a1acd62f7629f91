"""IP address management of the network agent: subnets of networks and their addresses.

What `docker network create --subnet/--gateway/--ip-range/--aux-address/--ipv6` and
`docker network connect --ip/--ip6` need: requested subnets are validated and default
ones picked from address pools (`plan`), committed per network (`add_network`), and
container addresses handed out (`allocate`) and given back (`release`).
Plain Python on the stdlib `ipaddress` module; the state round-trips through JSON.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any

from berth.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from berth.network.domain.model import IPAddress, IPInterface, IPNetwork, Subnet

DEFAULT_POOLS_V4: list[tuple[str, int]] = [
    *((f"172.{octet}.0.0/16", 16) for octet in range(17, 32)),
    ("192.168.0.0/16", 20),
]
DEFAULT_POOL_V6: str = "fd00::/8"

STATE_VERSION = 1
ULA_BLOCK_PREFIX = 48  # RFC 4193: a random global ID gives a /48, networks get /64s of it
NETWORK_PREFIX_V6 = 64
# The longest prefixes that still leave an address for a container besides the gateway.
MAX_PREFIX = {4: 30, 6: 126}


@dataclass(frozen=True)
class SubnetRequest:
    """One IPAM config entry as the user gave it (strings; empty = not given)."""

    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    aux_addresses: Mapping[str, str] = field(default_factory=dict)


class Ipam:
    """Subnets of every network and the addresses handed out in them."""

    def __init__(
        self,
        pools_v4: Sequence[tuple[str, int]] = DEFAULT_POOLS_V4,
        pool_v6: str = DEFAULT_POOL_V6,
    ) -> None:
        self._pools_v4 = [_pool_v4(base, size) for base, size in pools_v4]
        self._pool_v6 = _pool_v6(pool_v6)
        self._ula_block = _random_ula_block(self._pool_v6)
        self._networks: dict[str, list[_Pool]] = {}

    # ---- subnets ---------------------------------------------------------------------------

    def plan(
        self,
        requests: Sequence[SubnetRequest],
        *,
        ipv4: bool,
        ipv6: bool,
        avoid: Iterable[IPNetwork] = (),
        field: str = "ipam.config",
    ) -> list[Subnet]:
        """Validate `requests` and pick default subnets for the rest; changes nothing.

        `avoid` holds the host's routes and resolvers: requested subnets must not overlap
        them and default ones skip them. A default route (prefix 0) is ignored, as it
        overlaps everything.
        """
        avoided = [network for network in avoid if network.prefixlen > 0]
        violations: list[FieldViolation] = []
        planned: list[tuple[int, Subnet]] = []
        for index, request in enumerate(requests):
            path = f"{field}[{index}]"
            subnet = _resolve(request, path, violations, ipv4=ipv4, ipv6=ipv6)
            if subnet is not None:
                planned.append((index, subnet))
        violations += _mutual_overlaps(planned, field)
        if violations:
            raise InvalidArgument(violations)
        for _, subnet in planned:
            self._check_not_taken(subnet.subnet)
            _check_not_host(subnet.subnet, avoided)
        subnets = [subnet for _, subnet in planned]
        versions = {subnet.subnet.version for subnet in subnets}
        if ipv4 and 4 not in versions:
            subnets.append(self._default_v4(avoided))
        if ipv6 and 6 not in versions:
            subnets.append(self._default_v6(avoided))
        return sorted(subnets, key=lambda subnet: subnet.subnet.version)

    def add_network(self, network_id: str, subnets: Sequence[Subnet]) -> None:
        """Commit a plan; overlap is checked again, as another plan may have come first."""
        if network_id in self._networks:
            raise AlreadyExists(
                f"network {network_id} already has subnets",
                reason="NETWORK_EXISTS",
                metadata={"network_id": network_id},
            )
        violations = _mutual_overlaps(list(enumerate(subnets)), "subnets")
        if violations:
            raise InvalidArgument(violations)
        for subnet in subnets:
            self._check_not_taken(subnet.subnet)
        self._networks[network_id] = [_Pool(_copy(subnet)) for subnet in subnets]

    def remove_network(self, network_id: str) -> None:
        """Forget the network, its subnets and every address in them (unknown: no-op)."""
        self._networks.pop(network_id, None)

    def subnets(self, network_id: str) -> list[Subnet]:
        return [_copy(pool.subnet) for pool in self._pools(network_id)]

    # ---- addresses -------------------------------------------------------------------------

    def allocate(
        self,
        network_id: str,
        version: int,
        requested: IPAddress | None = None,
        field: str = "ip_address",
    ) -> IPInterface:
        """Hand out `requested`, or the next free address after the last one handed out."""
        pools = [pool for pool in self._pools(network_id) if pool.version == version]
        if requested is not None:
            return _take_requested(network_id, pools, version, requested, field)
        if not pools:
            raise FailedPrecondition(
                f"network {network_id} has no IPv{version} subnet",
                reason="NO_SUBNET",
                metadata={"network_id": network_id, "version": str(version)},
            )
        for pool in pools:
            interface = pool.take_next()
            if interface is not None:
                return interface
        raise ResourceExhausted(
            f"no available IPv{version} addresses on network {network_id}",
            reason="ADDRESS_POOL_EXHAUSTED",
            metadata={
                "network_id": network_id,
                "subnet": ",".join(str(pool.subnet.subnet) for pool in pools),
            },
        )

    def release(self, network_id: str, address: IPAddress) -> None:
        """Free an address; reserved, unknown or already free ones are left as they are."""
        for pool in self._networks.get(network_id, []):
            if address in pool.subnet.subnet:
                pool.give_back(int(address))

    def set_in_use(self, network_id: str, addresses: Iterable[IPAddress]) -> None:
        """Make exactly these addresses the ones in use (an overlay network's, as the
        cluster records them); the allocation cursor is kept."""
        wanted = set(addresses)
        for pool in self._pools(network_id):
            for value in list(pool.used):
                if pool._address(value) not in wanted:
                    pool.give_back(value)
            for address in wanted:
                value = int(address)
                free = value not in pool.used and value not in pool.reserved
                if free and address in pool.subnet.subnet:
                    pool.take(value)

    def in_use(self, network_id: str) -> set[IPAddress]:
        """The addresses handed out (reserved ones, like the gateway, are not listed)."""
        return {address for pool in self._pools(network_id) for address in pool.used_addresses()}

    # ---- persistence -----------------------------------------------------------------------

    def network_ids(self) -> list[str]:
        return list(self._networks)

    def to_dict(self, *, addresses: bool = True) -> dict[str, Any]:
        """JSON-ready state; addresses=False leaves out the addresses in use (for a store
        that records them with their holders and reconciles on load)."""
        return {
            "version": STATE_VERSION,
            "ula_block": str(self._ula_block) if self._ula_block else None,
            "networks": {
                network_id: [pool.to_dict(addresses=addresses) for pool in pools]
                for network_id, pools in self._networks.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **pools: Any) -> Ipam:
        """Restore `to_dict`'s output; `pools` are the constructor's pool arguments."""
        ipam = cls(**pools)
        block = data.get("ula_block")
        if block and ipam._ula_block is not None:
            stored = IPv6Network(block)
            if stored.subnet_of(ipam._pool_v6):  # else the pool changed: keep the new block
                ipam._ula_block = stored
        for network_id, entries in data.get("networks", {}).items():
            ipam._networks[network_id] = [_Pool.from_dict(entry) for entry in entries]
        return ipam

    # ---- helpers ---------------------------------------------------------------------------

    def _pools(self, network_id: str) -> list[_Pool]:
        try:
            return self._networks[network_id]
        except KeyError:
            raise NotFound(
                f"network {network_id} has no IPAM state",
                reason="NETWORK_NOT_FOUND",
                metadata={"network_id": network_id},
            ) from None

    def _taken_by(self, network: IPNetwork) -> tuple[str, IPNetwork] | None:
        for network_id, pools in self._networks.items():
            for pool in pools:
                if _overlap(network, pool.subnet.subnet):
                    return network_id, pool.subnet.subnet
        return None

    def _check_not_taken(self, network: IPNetwork) -> None:
        taken = self._taken_by(network)
        if taken is not None:
            other_id, other = taken
            raise FailedPrecondition(
                f"subnet {network} overlaps subnet {other} of network {other_id}: "
                "Pool overlaps with other one on this address space",
                reason="SUBNET_OVERLAP",
                metadata={"subnet": str(network), "network_id": other_id, "other": str(other)},
            )

    def _is_free(self, network: IPNetwork, avoided: Sequence[IPNetwork]) -> bool:
        host = any(_overlap(network, other) for other in avoided)
        return not host and self._taken_by(network) is None

    def _default_v4(self, avoided: Sequence[IPNetwork]) -> Subnet:
        for base, size in self._pools_v4:
            for candidate in base.subnets(new_prefix=size):
                if self._is_free(candidate, avoided):
                    return _default_subnet(candidate)
        raise _pools_exhausted(4)

    def _default_v6(self, avoided: Sequence[IPNetwork]) -> Subnet:
        for candidate in self._ula_candidates():
            if self._is_free(candidate, avoided):
                return _default_subnet(candidate)
        raise _pools_exhausted(6)

    def _ula_candidates(self) -> Iterator[IPv6Network]:
        block = self._ula_block or self._pool_v6
        return block.subnets(new_prefix=NETWORK_PREFIX_V6)


class _Pool:
    """Allocation state of one subnet, addresses kept as integers for speed.

    `reserved` (network, broadcast, gateway, aux addresses) and `used` never share an
    address; `taken` counts both inside the allocation range so that a full range is
    known without scanning it.
    """

    def __init__(self, subnet: Subnet) -> None:
        self.subnet = subnet
        allocation_range = subnet.ip_range or subnet.subnet
        self.first = int(allocation_range.network_address)
        self.last = int(allocation_range.broadcast_address)
        self.reserved = _reservations(subnet)
        self.used: set[int] = set()
        self.cursor: int | None = None  # the last address handed out dynamically
        self.taken = sum(1 for value in self.reserved if self._in_range(value))

    @property
    def version(self) -> int:
        return self.subnet.subnet.version

    def _in_range(self, value: int) -> bool:
        return self.first <= value <= self.last

    def _interface(self, value: int) -> IPInterface:
        interface = IPv4Interface if self.version == 4 else IPv6Interface
        return interface((value, self.subnet.subnet.prefixlen))

    def _address(self, value: int) -> IPAddress:
        return IPv4Address(value) if self.version == 4 else IPv6Address(value)

    def take(self, value: int) -> IPInterface:
        self.used.add(value)
        if self._in_range(value):
            self.taken += 1
        return self._interface(value)

    def take_next(self) -> IPInterface | None:
        if self.taken > self.last - self.first:
            return None
        value = self.first if self.cursor is None else self.cursor + 1
        # Terminates: `taken` says at least one address of the range is free.
        while True:
            if not self._in_range(value):
                value = self.first
            if value not in self.used and value not in self.reserved:
                self.cursor = value
                return self.take(value)
            value += 1

    def give_back(self, value: int) -> None:
        if value in self.used:
            self.used.remove(value)
            if self._in_range(value):
                self.taken -= 1

    def used_addresses(self) -> set[IPAddress]:
        return {self._address(value) for value in self.used}

    def to_dict(self, *, addresses: bool = True) -> dict[str, Any]:
        return {
            **_subnet_to_dict(self.subnet),
            "in_use": [str(self._address(v)) for v in sorted(self.used)] if addresses else [],
            "cursor": None if self.cursor is None else str(self._address(self.cursor)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Pool:
        pool = cls(_subnet_from_dict(data))
        for text in data.get("in_use", []):
            value = int(ip_address(text))
            if value not in pool.reserved and value not in pool.used:
                pool.take(value)
        cursor = data.get("cursor")
        pool.cursor = None if cursor is None else int(ip_address(cursor))
        return pool


# ---- requested addresses -------------------------------------------------------------------


def _take_requested(
    network_id: str, pools: Sequence[_Pool], version: int, requested: IPAddress, field: str
) -> IPInterface:
    if requested.version != version:
        raise InvalidArgument(
            [FieldViolation(field, f"{requested} is not an IPv{version} address")]
        )
    pool = next((pool for pool in pools if requested in pool.subnet.subnet), None)
    if pool is None:
        raise InvalidArgument(
            [FieldViolation(field, f"no configured subnet contains IP address {requested}")]
        )
    value = int(requested)
    if value in pool.reserved or value in pool.used:
        what = pool.reserved.get(value, "in use")
        raise AlreadyExists(
            f"address {requested} is already in use on network {network_id} ({what})",
            reason="ADDRESS_IN_USE",
            metadata={"address": str(requested), "network_id": network_id, "used_as": what},
        )
    return pool.take(value)


def _reservations(subnet: Subnet) -> dict[int, str]:
    network = subnet.subnet
    reserved = {int(network.network_address): "network address"}
    if network.version == 4:
        reserved[int(network.broadcast_address)] = "broadcast address"
    reserved.setdefault(int(subnet.gateway), "gateway")
    for name, address in subnet.aux_addresses.items():
        reserved.setdefault(int(address), f"aux address {name}")
    return reserved


# ---- requested subnets ---------------------------------------------------------------------


def _resolve(
    request: SubnetRequest,
    path: str,
    violations: list[FieldViolation],
    *,
    ipv4: bool,
    ipv6: bool,
) -> Subnet | None:
    """The Subnet a request asks for, or None with its problems added to `violations`."""
    if not request.subnet:
        violations += _without_subnet(request, path)
        return None
    network = _parse_network(request.subnet, f"{path}.subnet", violations)
    if network is None:
        return None
    problem = _subnet_problem(network, ipv4=ipv4, ipv6=ipv6)
    if problem:
        violations.append(FieldViolation(f"{path}.subnet", problem))
        return None
    count = len(violations)
    gateway = _resolve_gateway(network, request.gateway, f"{path}.gateway", violations)
    ip_range = _resolve_ip_range(network, request.ip_range, f"{path}.ip_range", violations)
    aux = _resolve_aux(network, gateway, request.aux_addresses, path, violations)
    if len(violations) > count or gateway is None:
        return None
    return Subnet(subnet=network, gateway=gateway, ip_range=ip_range, aux_addresses=aux)


def _without_subnet(request: SubnetRequest, path: str) -> list[FieldViolation]:
    violations = []
    for name, given in (("gateway", request.gateway), ("ip_range", request.ip_range)):
        if given:
            violations.append(FieldViolation(f"{path}.{name}", f"{name} {given} needs a subnet"))
    for name in request.aux_addresses:
        violations.append(
            FieldViolation(f"{path}.aux_addresses[{name}]", "an aux address needs a subnet")
        )
    return violations


def _subnet_problem(network: IPNetwork, *, ipv4: bool, ipv6: bool) -> str:
    if network.version == 4 and not ipv4:
        return "an IPv4 subnet was given but IPv4 is disabled on this network (--ipv4=false)"
    if network.version == 6 and not ipv6:
        return "an IPv6 subnet was given but IPv6 is not enabled on this network (--ipv6)"
    limit = MAX_PREFIX[network.version]
    if network.prefixlen > limit:
        return f"subnet {network} is too small: use a prefix of /{limit} or shorter"
    return ""


def _parse_network(text: str, path: str, violations: list[FieldViolation]) -> IPNetwork | None:
    if "/" not in text:
        violations.append(FieldViolation(path, f"invalid CIDR {text!r}: no prefix length"))
        return None
    try:
        network = ip_network(text, strict=False)
    except ValueError:
        violations.append(FieldViolation(path, f"invalid CIDR {text!r}"))
        return None
    if int(ip_address(text.split("/", 1)[0])) != int(network.network_address):
        violations.append(FieldViolation(path, f"invalid subnet {text}: it should be {network}"))
        return None
    return network


def _parse_address(text: str, path: str, violations: list[FieldViolation]) -> IPAddress | None:
    try:
        return ip_address(text)
    except ValueError:
        violations.append(FieldViolation(path, f"invalid IP address {text!r}"))
        return None


def _resolve_gateway(
    network: IPNetwork, text: str, path: str, violations: list[FieldViolation]
) -> IPAddress | None:
    if not text:
        return network.network_address + 1
    gateway = _parse_address(text, path, violations)
    if gateway is None:
        return None
    problem = _gateway_problem(network, gateway)
    if problem:
        violations.append(FieldViolation(path, problem))
        return None
    return gateway


def _gateway_problem(network: IPNetwork, gateway: IPAddress) -> str:
    if gateway not in network:
        return f"gateway {gateway} is not inside subnet {network}"
    if gateway == network.network_address:
        return f"gateway {gateway} is the network address of subnet {network}"
    if network.version == 4 and gateway == network.broadcast_address:
        return f"gateway {gateway} is the broadcast address of subnet {network}"
    return ""


def _resolve_ip_range(
    network: IPNetwork, text: str, path: str, violations: list[FieldViolation]
) -> IPNetwork | None:
    if not text:
        return None
    ip_range = _parse_network(text, path, violations)
    if ip_range is None:
        return None
    if ip_range.version != network.version or not ip_range.subnet_of(network):  # type: ignore[arg-type]
        violations.append(FieldViolation(path, f"ip range {ip_range} is not inside {network}"))
        return None
    return ip_range


def _resolve_aux(
    network: IPNetwork,
    gateway: IPAddress | None,
    given: Mapping[str, str],
    path: str,
    violations: list[FieldViolation],
) -> dict[str, IPAddress]:
    resolved: dict[str, IPAddress] = {}
    for name, text in given.items():
        aux_path = f"{path}.aux_addresses[{name}]"
        address = _parse_address(text, aux_path, violations)
        if address is None:
            continue
        if address not in network:
            violations.append(FieldViolation(aux_path, f"{address} is not inside {network}"))
        elif address == gateway:
            violations.append(FieldViolation(aux_path, f"{address} is the gateway"))
        else:
            resolved[name] = address
    return resolved


def _mutual_overlaps(planned: Sequence[tuple[int, Subnet]], field: str) -> list[FieldViolation]:
    violations = []
    for position, (index, subnet) in enumerate(planned):
        for other_index, other in planned[:position]:
            if _overlap(subnet.subnet, other.subnet):
                violations.append(
                    FieldViolation(
                        f"{field}[{index}].subnet",
                        f"subnet {subnet.subnet} overlaps {field}[{other_index}].subnet "
                        f"({other.subnet})",
                    )
                )
    return violations


def _check_not_host(network: IPNetwork, avoided: Sequence[IPNetwork]) -> None:
    for other in avoided:
        if _overlap(network, other):
            raise FailedPrecondition(
                f"subnet {network} overlaps {other}, which this host uses",
                reason="SUBNET_OVERLAPS_HOST",
                metadata={"subnet": str(network), "host_network": str(other)},
            )


def _overlap(first: IPNetwork, second: IPNetwork) -> bool:
    return first.version == second.version and first.overlaps(second)  # type: ignore[arg-type]


# ---- default pools -------------------------------------------------------------------------


def _pool_v4(base: str, size: int) -> tuple[IPv4Network, int]:
    network = IPv4Network(base)
    if not network.prefixlen <= size <= MAX_PREFIX[4]:
        raise ValueError(f"address pool {base}: size /{size} does not fit")
    return network, size


def _pool_v6(text: str) -> IPv6Network:
    network = IPv6Network(text)
    if network.prefixlen > NETWORK_PREFIX_V6:
        raise ValueError(f"IPv6 pool {text} is smaller than a /{NETWORK_PREFIX_V6}")
    return network


def _random_ula_block(pool: IPv6Network) -> IPv6Network | None:
    """A /48 at random inside `pool` (RFC 4193's global ID), or None if `pool` is no bigger."""
    if pool.prefixlen >= ULA_BLOCK_PREFIX:
        return None
    global_id = secrets.randbits(ULA_BLOCK_PREFIX - pool.prefixlen)
    start = int(pool.network_address) + (global_id << (128 - ULA_BLOCK_PREFIX))
    return IPv6Network((start, ULA_BLOCK_PREFIX))


def _default_subnet(network: IPNetwork) -> Subnet:
    return Subnet(subnet=network, gateway=network.network_address + 1)


def _pools_exhausted(version: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"all predefined IPv{version} address pools have been fully subnetted",
        reason="POOLS_EXHAUSTED",
        metadata={"version": str(version)},
    )


# ---- serialisation -------------------------------------------------------------------------


def _copy(subnet: Subnet) -> Subnet:
    return Subnet(
        subnet=subnet.subnet,
        gateway=subnet.gateway,
        ip_range=subnet.ip_range,
        aux_addresses=dict(subnet.aux_addresses),
    )


def _subnet_to_dict(subnet: Subnet) -> dict[str, Any]:
    return {
        "subnet": str(subnet.subnet),
        "gateway": str(subnet.gateway),
        "ip_range": str(subnet.ip_range) if subnet.ip_range else None,
        "aux_addresses": {name: str(address) for name, address in subnet.aux_addresses.items()},
    }


def _subnet_from_dict(data: Mapping[str, Any]) -> Subnet:
    ip_range = data.get("ip_range")
    return Subnet(
        subnet=ip_network(data["subnet"]),
        gateway=ip_address(data["gateway"]),
        ip_range=ip_network(ip_range) if ip_range else None,
        aux_addresses={
            name: ip_address(text) for name, text in data.get("aux_addresses", {}).items()
        },
    )
