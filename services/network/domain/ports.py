"""Published ports: checking what is asked and choosing free host ports."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from berth.common.errors import AlreadyExists, FieldViolation, InvalidArgument, ResourceExhausted
from berth.network.domain.model import IPAddress, PortBinding

PROTOCOLS = ("tcp", "udp")
EPHEMERAL_PORTS = range(32768, 61000)  # Linux's default ip_local_port_range
Claim = tuple[str, IPAddress | None, int]  # protocol, host address (None: all), host port


def check_bindings(bindings: Sequence[PortBinding], field: str = "port_bindings") -> None:
    violations = []
    for index, binding in enumerate(bindings):
        where = f"{field}[{index}]"
        if not 1 <= binding.container_port <= 65535:
            violations.append(FieldViolation(f"{where}.container_port", "must be 1 to 65535"))
        if not 0 <= binding.host_port <= 65535:
            violations.append(FieldViolation(f"{where}.host_port", "must be 0 to 65535"))
        if binding.protocol not in PROTOCOLS:
            violations.append(FieldViolation(f"{where}.protocol", "must be tcp or udp"))
        if binding.host_ip is not None and binding.host_ip.version != 4:
            violations.append(FieldViolation(f"{where}.host_ip", "only IPv4 is published yet"))
    if violations:
        raise InvalidArgument(violations)


def conflicts(claim: Claim, taken: Iterable[Claim]) -> bool:
    protocol, address, port = claim
    return any(
        p == protocol and q == port and (a is None or address is None or a == address)
        for p, a, q in taken
    )


def choose(
    wanted: Sequence[tuple[PortBinding, IPAddress | None]],
    taken: Iterable[Claim],
    rng: random.Random | None = None,
) -> list[Claim]:
    """A host port for each binding: the one asked for if free, else a random free one."""
    claimed = list(taken)
    chosen: list[Claim] = []
    picker = rng or random.Random()
    for binding, address in wanted:
        if binding.host_port:
            claim = (binding.protocol, address, binding.host_port)
            if conflicts(claim, claimed):
                raise AlreadyExists(
                    f"Bind for {address or '0.0.0.0'}:{binding.host_port} failed: "
                    "port is already allocated",
                    reason="PORT_ALLOCATED",
                    metadata={"port": str(binding.host_port), "protocol": binding.protocol},
                )
        else:
            claim = _random_claim(binding.protocol, address, claimed, picker)
        claimed.append(claim)
        chosen.append(claim)
    return chosen


def _random_claim(
    protocol: str, address: IPAddress | None, claimed: list[Claim], picker: random.Random
) -> Claim:
    start = picker.randrange(len(EPHEMERAL_PORTS))
    for offset in range(len(EPHEMERAL_PORTS)):
        port = EPHEMERAL_PORTS[(start + offset) % len(EPHEMERAL_PORTS)]
        if not conflicts((protocol, address, port), claimed):
            return (protocol, address, port)
    raise ResourceExhausted("no free host port left to publish on", reason="PORTS_EXHAUSTED")
