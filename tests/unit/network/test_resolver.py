"""One query in, one answer out: the embedded DNS server's message handling, with a fake
upstream in place of real resolvers (the real ones are in the integration tests)."""

from __future__ import annotations

from collections.abc import Sequence

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from berth.network.dns.resolver import Resolver
from berth.network.domain.names import NameTable
from tests.unit.network.dns_fixtures import join, network, sandbox


class FakeUpstream:
    def __init__(self, answer: str | None = "93.184.216.34") -> None:
        self.answer = answer
        self.asked: list[tuple[str, tuple[str, ...], bool]] = []

    async def forward(
        self, query: dns.message.Message, servers: Sequence[str], tcp: bool
    ) -> dns.message.Message | None:
        self.asked.append((query.question[0].name.to_text(), tuple(servers), tcp))
        if self.answer is None:
            return None
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", self.answer))
        return reply


World = tuple[Resolver, FakeUpstream, dict[str, str]]


@pytest.fixture
def world() -> World:
    web, back = network("web", "10.25.0.0/24"), network("back", "10.27.0.0/24", internal=True)
    client = join(sandbox("client"), web, "10.25.0.2")
    boxes = [client, join(sandbox("db"), back, "10.27.0.3", links={"client": "c"})]
    for i in range(40):
        boxes.append(join(sandbox(f"app{i}"), web, f"10.25.0.{10 + i}", aliases=["app"]))
    upstream = FakeUpstream()
    table = NameTable.build([web, back], boxes)
    resolver = Resolver(upstream.forward, lambda: ["10.0.0.53"], lambda: table)
    return resolver, upstream, {b.name: b.id for b in boxes}


async def ask(
    resolver: Resolver, asker: str, wire: bytes, tcp: bool = False
) -> dns.message.Message | None:
    reply = resolver.answer_now(asker, wire, tcp=tcp)
    if reply is not None and not isinstance(reply, bytes):
        reply = await reply
    return None if reply is None else dns.message.from_wire(reply)


def query(name: str, rdtype: str = "A", **options: object) -> bytes:
    return dns.message.make_query(name, rdtype, **options).to_wire()  # type: ignore[arg-type]


async def test_local_names_are_answered_with_authority(world: World) -> None:
    resolver, upstream, ids = world
    reply = await ask(resolver, ids["client"], query("app3"))
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert [r.to_text() for r in reply.answer[0]] == ["10.25.0.13"]
    assert upstream.asked == []


async def test_a_local_name_without_that_record_is_nodata(world: World) -> None:
    resolver, upstream, ids = world
    reply = await ask(resolver, ids["client"], query("app3", "AAAA"))
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR and not reply.answer
    assert upstream.asked == []


async def test_other_names_go_to_the_host_upstreams(world: World) -> None:
    resolver, upstream, ids = world
    reply = await ask(resolver, ids["client"], query("example.com"))
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in reply.answer[0]] == ["93.184.216.34"]
    assert upstream.asked == [("example.com.", ("10.0.0.53",), False)]


async def test_no_upstream_answer_is_servfail(world: World) -> None:
    resolver, upstream, ids = world
    upstream.answer = None
    reply = await ask(resolver, ids["client"], query("example.com"))
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL


async def test_internal_only_sandboxes_never_forward(world: World) -> None:
    resolver, upstream, ids = world
    reply = await ask(resolver, ids["db"], query("example.com"))
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert upstream.asked == []
    linked = await ask(resolver, ids["db"], query("c"))
    assert linked is not None and linked.rcode() == dns.rcode.SERVFAIL  # client is not on back


async def test_big_answers_are_truncated_over_udp_and_whole_over_tcp(world: World) -> None:
    resolver, _, ids = world
    udp = await ask(resolver, ids["client"], query("app"))
    assert udp is not None and udp.flags & dns.flags.TC
    tcp = await ask(resolver, ids["client"], query("app"), tcp=True)
    assert tcp is not None and not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 40
    edns = await ask(resolver, ids["client"], query("app", use_edns=0, payload=4096))
    assert edns is not None and not edns.flags & dns.flags.TC and len(edns.answer[0]) == 40


async def test_round_robin_shuffles_the_order(world: World) -> None:
    resolver, _, ids = world
    firsts = set()
    for _ in range(30):
        reply = await ask(resolver, ids["client"], query("app", use_edns=0, payload=4096))
        assert reply is not None
        firsts.add(next(iter(reply.answer[0])).to_text())
    assert len(firsts) > 1


async def test_reverse_lookup(world: World) -> None:
    resolver, _, ids = world
    reply = await ask(resolver, ids["client"], query("13.0.25.10.in-addr.arpa", "PTR"))
    assert reply is not None
    assert [r.to_text() for r in reply.answer[0]] == ["app3.web."]


async def test_garbage_with_a_header_gets_formerr(world: World) -> None:
    resolver, _, ids = world
    reply = resolver.answer_now(ids["client"], b"\x12\x34\x01\x00" + b"\xff" * 20, tcp=False)
    assert isinstance(reply, bytes)
    message = dns.message.from_wire(reply, question_only=True)
    assert message.id == 0x1234 and message.rcode() == dns.rcode.FORMERR
    assert resolver.answer_now(ids["client"], b"\x01\x02", tcp=False) is None


async def test_responses_and_odd_queries(world: World) -> None:
    resolver, _, ids = world
    response = dns.message.make_response(dns.message.make_query("app", "A")).to_wire()
    assert resolver.answer_now(ids["client"], response, tcp=False) is None
    two = dns.message.make_query("app", "A")
    two.question.append(dns.rrset.RRset(two.question[0].name, 1, dns.rdatatype.AAAA))
    reply = await ask(resolver, ids["client"], two.to_wire())
    assert reply is not None and reply.rcode() == dns.rcode.FORMERR
    notify = dns.message.make_query("app", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    reply = await ask(resolver, ids["client"], notify.to_wire())
    assert reply is not None and reply.rcode() == dns.rcode.NOTIMP
