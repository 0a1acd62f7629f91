"""One DNS query from one sandbox, answered: local names from the NameTable, the rest
forwarded upstream (or refused with SERVFAIL when the sandbox may not reach out).

Local answers are computed synchronously, so the UDP path does no task switch for them;
only forwarding awaits.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import ip_address

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
import structlog

from berth.network.domain.model import IPAddress
from berth.network.domain.names import Member, NameTable

log = structlog.get_logger("berth.network.dns")

TTL = 600  # Docker's, for local names
UDP_MIN = 512
UDP_MAX = 4096
TCP_MAX = 65535
OUR_PAYLOAD = 1232  # the EDNS buffer size DNS flag day 2020 settled on
HEADER = 12

Forward = Callable[
    [dns.message.Message, Sequence[str], bool], Awaitable[dns.message.Message | None]
]


class Resolver:
    def __init__(
        self,
        forward: Forward,
        host_upstreams: Callable[[], Sequence[str]],
        names: Callable[[], NameTable],
    ) -> None:
        self._names = names
        self._forward = forward
        self._host_upstreams = host_upstreams

    def answer_now(
        self, sandbox_id: str, wire: bytes, *, tcp: bool
    ) -> bytes | Awaitable[bytes | None] | None:
        """The reply's bytes, or an awaitable of them when the query goes upstream, or None
        when nothing should be sent (not a query at all)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _format_error(wire)
        if query.flags & dns.flags.QR:
            return None  # a response: answering it could start a loop
        if query.opcode() != dns.opcode.QUERY:
            return _render(_reply(query, dns.rcode.NOTIMP), query, tcp)
        if len(query.question) != 1:
            return _render(_reply(query, dns.rcode.FORMERR), query, tcp)
        table = self._names()
        local = self._local(table, sandbox_id, query)
        if local is not None:
            return _render(local, query, tcp)
        if not table.forwards(sandbox_id):
            return _render(_reply(query, dns.rcode.SERVFAIL), query, tcp)
        return self._forwarded(table.upstreams(sandbox_id), query, tcp)

    def _local(
        self, table: NameTable, sandbox_id: str, query: dns.message.Message
    ) -> dns.message.Message | None:
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            return None
        if question.rdtype == dns.rdatatype.PTR:
            return self._pointer(table, sandbox_id, query, question.name)
        members = table.resolve(sandbox_id, question.name.to_text())
        if members is None:
            return None
        reply = _reply(query, dns.rcode.NOERROR, authoritative=True)
        version = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(question.rdtype)
        if version is not None:
            records = _records(members, version)
            if records:
                reply.answer.append(dns.rrset.from_rdata_list(question.name, TTL, records))
        return reply  # another type of a local name: the name exists, with no such record

    def _pointer(
        self, table: NameTable, sandbox_id: str, query: dns.message.Message, name: dns.name.Name
    ) -> dns.message.Message | None:
        try:
            address = ip_address(dns.reversename.to_address(name))
        except (dns.exception.SyntaxError, ValueError):
            return None
        found = table.reverse(sandbox_id, address)
        if found is None:
            return None
        reply = _reply(query, dns.rcode.NOERROR, authoritative=True)
        reply.answer.append(dns.rrset.from_text(name, TTL, "IN", "PTR", found + "."))
        return reply

    async def _forwarded(
        self, own_upstreams: Sequence[str], query: dns.message.Message, tcp: bool
    ) -> bytes | None:
        upstreams = own_upstreams or tuple(self._host_upstreams())
        answer = await self._forward(query, upstreams, tcp) if upstreams else None
        if answer is None:
            return _render(_reply(query, dns.rcode.SERVFAIL), query, tcp)
        answer.id = query.id
        return _render(answer, query, tcp)


def _records(members: list[Member], version: int) -> list[dns.rdata.Rdata]:
    """Every member's address, shuffled per answer (DNS round-robin)."""
    found = [_record(a) for m in members for a in m.addresses(version)]
    random.shuffle(found)
    return found


@functools.lru_cache(maxsize=65536)
def _record(address: IPAddress) -> dns.rdata.Rdata:
    """An A or AAAA record's data, made once per address (parsing the text costs more
    than the rest of an answer)."""
    rdtype = dns.rdatatype.A if address.version == 4 else dns.rdatatype.AAAA
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, str(address))


def _reply(
    query: dns.message.Message, rcode: dns.rcode.Rcode, *, authoritative: bool = False
) -> dns.message.Message:
    reply = dns.message.make_response(query, recursion_available=True, our_payload=OUR_PAYLOAD)
    reply.set_rcode(rcode)
    if authoritative:
        reply.flags |= dns.flags.AA
    return reply


def _render(reply: dns.message.Message, query: dns.message.Message, tcp: bool) -> bytes:
    """To wire form; over UDP, what does not fit the client's buffer is cut and flagged TC
    so that the client asks again over TCP."""
    if tcp:
        limit = TCP_MAX
    else:
        limit = max(UDP_MIN, min(query.payload, UDP_MAX)) if query.edns >= 0 else UDP_MIN
    return reply.to_wire(max_size=limit, prefer_truncation=True)


def _format_error(wire: bytes) -> bytes | None:
    """FORMERR for bytes that do not parse, when there is a header to answer to."""
    if len(wire) < HEADER or wire[2] & 0x80:  # too short, or a response
        return None
    flags = 0x8000 | (wire[2] & 0x79) << 8 | 0x0080  # QR; opcode and RD copied; RA
    return wire[:2] + (flags | dns.rcode.FORMERR).to_bytes(2, "big") + bytes(8)
