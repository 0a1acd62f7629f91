"""Fixtures of the network tests: a client of the shared stack's agent, and another host."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.integration.network.netclient import DnsNetClient, NetClient, tag
from tests.support.hostns import Outside, outside_host
from tests.support.stack import Stack

UNDERLAY_SUBNETS = itertools.count(1)  # each other host gets its own 10.199.N.0/24


@pytest.fixture
def net(stack: Stack) -> NetClient:
    return NetClient(stack.channel())


@pytest.fixture
def outside(stack: Stack) -> Iterator[Outside]:
    with outside_host(stack.host, next(UNDERLAY_SUBNETS)) as host:
        yield host


@pytest.fixture
def dns(stack: Stack) -> DnsNetClient:
    return DnsNetClient(stack.channel())


@pytest.fixture
def t(dns: DnsNetClient) -> Iterator[str]:
    """The test's tag; every sandbox and network named `...-TAG` is removed afterwards."""
    value = tag()
    try:
        yield value
    finally:
        dns.remove_tagged(value)
