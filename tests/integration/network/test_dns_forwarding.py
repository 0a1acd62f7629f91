"""The embedded DNS server's way out and its robustness: names it does not know go to the
host's resolvers or the sandbox's own `dns` servers (a dnsmasq in another namespace plays
the real one), dead upstreams give SERVFAIL instead of a hang, internal-only sandboxes never
forward, and malformed queries, oversized answers and a query flood are survived.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from berth.api.network.v1 import sandbox_service_pb2 as spb
from tests.integration.network.netclient import PY, DnsNetClient, attachment
from tests.support.hostns import Outside
from tests.support.processes import stop_process
from tests.support.stack import Stack

UPSTREAM_NAME = "upstream.test"
UPSTREAM_ADDRESS = "10.99.1.2"
SERVER_START_S = 10.0
SLOW_DIG = ("+time=8", "+tries=1")  # longer than the agent's worst case for one upstream
MANY = 34  # A records of 16 bytes each: more than a 512-byte answer holds
FLOOD_MINIMUM = 20_000
FORMERR = 1  # the rcode, in the low bits of the header's fourth byte

# A UDP server that reads queries and never answers; on SIGTERM it prints how many it got.
SILENT_SERVER = """
import signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
received = 0
def done(*_):
    print(received, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
print("ready", flush=True)
while True:
    s.recvfrom(4096)
    received += 1
"""

# Bad input for the server at 127.0.0.11, then a good query; prints what came back (JSON).
MALFORMED = """
import json, socket, sys
import dns.message, dns.rrset
SERVER = ("127.0.0.11", 53)
def ask(wire, wait=2.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(wait)
    s.sendto(wire, SERVER)
    try:
        return s.recv(65535).hex()
    except TimeoutError:
        return None
    finally:
        s.close()
def query(name):
    return dns.message.make_query(name, "A")
garbage = bytes.fromhex("abcd01000005000000000000") + b"\\x07garbage\\xff\\xfe"
two = query(sys.argv[1])
two.question.append(dns.rrset.RRset(query("other.test").question[0].name, 1, 1))
response = bytearray(query(sys.argv[1]).to_wire())
response[2] |= 0x80
stalled = socket.create_connection(SERVER, timeout=5)
stalled.sendall(b"\\x00\\x40")
results = {
    "garbage": ask(garbage),
    "short": ask(b"\\x12\\x34\\x01\\x00\\x00", wait=1.0),
    "response": ask(bytes(response), wait=1.0),
    "two_questions": ask(two.to_wire()),
    "oversized": ask(bytes(range(256)) * 12),
}
good = query(sys.argv[1])
results["good"] = dns.message.from_wire(bytes.fromhex(ask(good.to_wire()))).to_text()
tcp = socket.create_connection(SERVER, timeout=5)
wire = good.to_wire()
tcp.sendall(len(wire).to_bytes(2, "big") + wire)
size = int.from_bytes(tcp.recv(2), "big")
data = b""
while len(data) < size:
    data += tcp.recv(size - len(data))
results["good_tcp"] = dns.message.from_wire(data).to_text()
stalled.close()
print(json.dumps(results))
"""

# Sends queries without waiting for answers (half local names, half random unknown ones)
# until stdin closes and at least argv[2] were sent, then collects the answers still
# coming; prints "sent replies" at the end.
FLOOD = """
import random, socket, string, sys, threading
import dns.message
local, minimum = sys.argv[1], int(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
def unknown():
    return "".join(random.choices(string.ascii_lowercase, k=12)) + ".flood.test"
wires = [dns.message.make_query(local if i % 2 else unknown(), "A").to_wire()
         for i in range(2000)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
sent = replies = 0
print("started", flush=True)
while sent < minimum or not stop.is_set():
    try:
        s.sendto(wires[sent % len(wires)], ("127.0.0.11", 53))
        sent += 1
    except BlockingIOError:
        pass
    while True:
        try:
            s.recv(65535)
            replies += 1
        except BlockingIOError:
            break
s.settimeout(1.0)
try:
    while True:
        s.recv(65535)
        replies += 1
except TimeoutError:
    pass
print(sent, replies, flush=True)
"""


@pytest.fixture
def host_resolvers(stack: Stack) -> Iterator[Path]:
    """The agent's host resolv.conf, for the test to rewrite; put back afterwards."""
    original = stack.resolv_conf.read_text()
    try:
        yield stack.resolv_conf
    finally:
        stack.resolv_conf.write_text(original)


@contextmanager
def server(netns: str, argv: Sequence[str], ready: str) -> Iterator[subprocess.Popen[str]]:
    """A process run in `netns` until the block ends; waits for the first line of
    its output to contain `ready`."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", netns, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert ready in first, f"{argv[0]} did not start: {first!r} {process.poll()}"
        yield process
    finally:
        stop_process(process, timeout=5)


@contextmanager
def dnsmasq(outside: Outside) -> Iterator[subprocess.Popen[str]]:
    """A resolver at outside.address that knows upstream.test and logs every query to
    its stderr (read it after the block: the process is stopped by then)."""
    argv = [
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        f"--listen-address={outside.address}",
        "--bind-interfaces",
        f"--address=/{UPSTREAM_NAME}/{UPSTREAM_ADDRESS}",
        "--pid-file=",  # none
        "--log-queries",
        "--log-facility=-",
    ]
    process = subprocess.Popen(
        ["ip", "netns", "exec", outside.netns, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_answering(outside)
        yield process
    finally:
        stop_process(process, timeout=5)


def wait_answering(outside: Outside) -> None:
    deadline = time.monotonic() + SERVER_START_S
    argv = ["dig", f"@{outside.address}", "+time=1", "+tries=1", "+short", UPSTREAM_NAME]
    while UPSTREAM_ADDRESS not in outside.run(*argv).stdout:
        assert time.monotonic() < deadline, "dnsmasq did not start answering"
        time.sleep(0.1)


def log_of(process: subprocess.Popen[str]) -> str:
    """Everything a stopped process wrote to stderr."""
    assert process.stderr is not None and process.poll() is not None
    return process.stderr.read()


def netns_of(dns: DnsNetClient, sandbox: str) -> str:
    found = dns.sandboxes.InspectSandbox(spb.InspectSandboxRequest(sandbox=sandbox)).sandbox
    return Path(found.netns_path).name


def test_unknown_names_go_to_the_hosts_resolvers(
    dns: DnsNetClient, t: str, outside: Outside, host_resolvers: Path
) -> None:
    asker = f"asker-{t}"
    dns.sandbox(asker, dns.user_network(f"out_nw-{t}", "10.63.1.0/24"))
    with dnsmasq(outside):
        before = dns.lookup(asker, UPSTREAM_NAME)
        assert (before.status, before.answers) == ("SERVFAIL", [])

        host_resolvers.write_text(f"nameserver {outside.address}\n")
        answer = dns.lookup(asker, UPSTREAM_NAME)
        assert (answer.status, answer.answers) == ("NOERROR", [UPSTREAM_ADDRESS])
        assert dns.getent_hosts(asker, UPSTREAM_NAME) == [UPSTREAM_ADDRESS]
        assert dns.dig(asker, "+tcp", UPSTREAM_NAME).answers == [UPSTREAM_ADDRESS]


def test_a_sandboxs_own_dns_servers_are_used(dns: DnsNetClient, t: str, outside: Outside) -> None:
    own, plain = f"own-{t}", f"plain-{t}"
    net = dns.user_network(f"out_nw-{t}", "10.63.2.0/24")
    dns.create_sandbox(own, attachment(net), dns=[outside.address])
    dns.sandbox(plain, net)
    with dnsmasq(outside):
        assert dns.resolve(own, UPSTREAM_NAME) == [UPSTREAM_ADDRESS]
        assert dns.resolve(plain, UPSTREAM_NAME) == [], "the host's resolver is unroutable"
        assert dns.resolve(own, plain) == [dns.address(plain, net)], "local names first"
    resolv_conf = dns.file_in(own, "/etc/resolv.conf")
    assert "nameserver 127.0.0.11" in resolv_conf
    assert f"nameserver {outside.address}" not in resolv_conf


def test_a_silent_upstream_gives_servfail_not_a_hang(
    dns: DnsNetClient, t: str, outside: Outside
) -> None:
    asker = f"asker-{t}"
    dns.create_sandbox(
        asker, attachment(dns.user_network(f"out_nw-{t}", "10.63.3.0/24")), dns=[outside.address]
    )
    silent = [PY, "-c", SILENT_SERVER, outside.address]
    with server(outside.netns, silent, "ready") as process:
        answer = dns.dig(asker, *SLOW_DIG, UPSTREAM_NAME)
        stop_process(process, timeout=5)
        received = int(process.communicate()[0])
    assert (answer.status, answer.answers) == ("SERVFAIL", [])
    assert received >= 1, "the query was forwarded to the silent server"


def test_an_upstream_with_nothing_listening_gives_servfail(
    dns: DnsNetClient, t: str, outside: Outside, host_resolvers: Path
) -> None:
    asker = f"asker-{t}"
    dns.sandbox(asker, dns.user_network(f"out_nw-{t}", "10.63.4.0/24"))
    host_resolvers.write_text(f"nameserver {outside.address}\n")
    answer = dns.dig(asker, *SLOW_DIG, UPSTREAM_NAME)
    assert (answer.status, answer.answers) == ("SERVFAIL", [])
    assert dns.dig(asker, *SLOW_DIG, "+tcp", UPSTREAM_NAME).status == "SERVFAIL"


def test_an_internal_only_sandbox_never_forwards(
    dns: DnsNetClient, t: str, outside: Outside
) -> None:
    inner, peer, reaching = f"inner-{t}", f"peer-{t}", f"reaching-{t}"
    internal = dns.user_network(f"internal_nw-{t}", "10.63.5.0/24", internal=True)
    open_net = dns.user_network(f"open_nw-{t}", "10.63.6.0/24")
    dns.create_sandbox(inner, attachment(internal), dns=[outside.address])
    dns.sandbox(peer, internal)
    dns.create_sandbox(reaching, attachment(open_net), dns=[outside.address])
    with dnsmasq(outside) as process:
        refused = dns.lookup(inner, f"inner.{UPSTREAM_NAME}")
        assert dns.resolve(inner, peer) == [dns.address(peer, internal)]
        assert dns.resolve(reaching, f"reaching.{UPSTREAM_NAME}") == [UPSTREAM_ADDRESS]
    assert (refused.status, refused.answers) == ("SERVFAIL", [])
    log = log_of(process)
    assert f"reaching.{UPSTREAM_NAME}" in log, "dnsmasq logs the queries it gets"
    assert f"inner.{UPSTREAM_NAME}" not in log


def test_malformed_queries_are_survived(dns: DnsNetClient, t: str) -> None:
    asker = f"asker-{t}"
    net = dns.user_network(f"bad_nw-{t}", "10.63.7.0/24")
    dns.sandbox(asker, net)
    address = dns.address(asker, net)
    found = dns.exec(asker, [PY, "-c", MALFORMED, asker], timeout=60)
    assert found.code == 0, found.stderr
    results = json.loads(found.stdout)

    assert results["garbage"] is not None, "bytes with a DNS header are answered"
    garbage = bytes.fromhex(results["garbage"])
    assert garbage[:2] == b"\xab\xcd" and garbage[2] & 0x80, "an answer to the same id"
    assert garbage[3] & 0x0F == FORMERR
    assert results["short"] is None, "no header: nothing to answer"
    assert results["response"] is None, "responses are not answered"
    assert results["two_questions"] is not None
    assert bytes.fromhex(results["two_questions"])[3] & 0x0F == FORMERR
    for good in (results["good"], results["good_tcp"]):
        assert "rcode NOERROR" in good and f"A {address}" in good, good
    assert dns.resolve(asker, asker) == [address]


def test_large_answers_are_truncated_over_udp_and_whole_over_tcp(dns: DnsNetClient, t: str) -> None:
    net = dns.user_network(f"many_nw-{t}", "10.63.8.0/24")
    asker = f"asker-{t}"
    dns.sandbox(asker, net)
    for i in range(MANY):
        dns.create_sandbox(f"member{i}-{t}", attachment(net, aliases=["many"]))

    truncated = dns.dig(asker, "+noedns", "+ignore", "many")
    assert "tc" in truncated.flags
    assert len(truncated.answers) < MANY
    retried = dns.dig(asker, "+noedns", "many")
    assert "tc" not in retried.flags and len(set(retried.answers)) == MANY
    over_tcp = dns.dig(asker, "+tcp", "many")
    assert "tc" not in over_tcp.flags and len(set(over_tcp.answers)) == MANY
    with_edns = dns.dig(asker, "+ignore", "many")
    assert "tc" not in with_edns.flags and len(with_edns.answers) == MANY, "fits 1232 bytes"
    assert dns.getent_hosts(asker, "many") == sorted(retried.answers)


def test_a_query_flood_does_not_stall_the_agent(
    dns: DnsNetClient, t: str, outside: Outside
) -> None:
    """Half the flood goes to an upstream that never answers, so forwarded queries pile
    up to the agent's limit; the API and the other lookups must go on meanwhile."""
    net = dns.user_network(f"flood_nw-{t}", "10.63.9.0/24")
    other = dns.user_network(f"flood_other-{t}", "10.63.10.0/24")
    flooder, late = f"flooder-{t}", f"late-{t}"
    dns.create_sandbox(flooder, attachment(net), dns=[outside.address])
    silent = [PY, "-c", SILENT_SERVER, outside.address]
    flood = [PY, "-c", FLOOD, flooder, str(FLOOD_MINIMUM)]
    with (
        server(outside.netns, silent, "ready"),
        server(netns_of(dns, flooder), flood, "started") as flooding,
    ):
        dns.sandboxes.CreateSandbox(
            spb.CreateSandboxRequest(name=late, networks=[attachment(net)], start=True),
            timeout=30,
        )
        dns.connect(late, other, timeout=30)
        resolved_meanwhile = dns.resolve(late, flooder)
        sent, replies = (int(n) for n in flooding.communicate(timeout=120)[0].split())
    assert sent >= FLOOD_MINIMUM and replies > 0
    assert resolved_meanwhile == [dns.address(flooder, net)]
    assert dns.resolve(flooder, late) == [dns.address(late, net)]
    assert dns.lookup(flooder, "after.flood.test").status == "SERVFAIL"
