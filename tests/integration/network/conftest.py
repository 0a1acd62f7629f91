"""Fixtures of the network tests: a client of the shared stack's agent, and another host."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.integration.network.netclient import NetClient
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
