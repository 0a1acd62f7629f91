"""Queries the embedded DNS server cannot answer, sent on to real resolvers.

Sent from the agent's own namespace: the host's resolvers, loopback ones included, are
reachable from there. Each server gets `timeout` seconds, at most MAX_SERVERS are tried,
so a client hears SERVFAIL well before its own resolver gives up; at most `limit` queries
are out at once, and past that the rest get SERVFAIL at once rather than queue.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.asyncquery
import dns.exception
import dns.message
import structlog

from berth.network.domain.resolvconf import MAX_NAMESERVERS

log = structlog.get_logger("berth.network.dns")


class Upstream:
    def __init__(self, *, timeout: float, limit: int) -> None:
        self.timeout = timeout
        self.limit = limit
        self.in_flight = 0

    async def forward(
        self, query: dns.message.Message, servers: Sequence[str], tcp: bool
    ) -> dns.message.Message | None:
        """The first answer of the servers, in order; None when none answered."""
        if self.in_flight >= self.limit:
            return None
        self.in_flight += 1
        try:
            for server in servers[:MAX_NAMESERVERS]:
                answer = await self._ask(query, server, tcp)
                if answer is not None:
                    return answer
            return None
        finally:
            self.in_flight -= 1

    async def _ask(
        self, query: dns.message.Message, server: str, tcp: bool
    ) -> dns.message.Message | None:
        try:
            if tcp:
                return await dns.asyncquery.tcp(query, server, timeout=self.timeout)
            return await dns.asyncquery.udp(
                query, server, timeout=self.timeout, ignore_unexpected=True
            )
        except (dns.exception.DNSException, OSError, EOFError) as error:
            log.debug(
                "upstream did not answer", server=server, error=str(error) or type(error).__name__
            )
            return None
