"""Crash safety of berth-networkd (issue 3, "Restart safety"): kill -9 in the middle of
connects, restart with the same state dir, and the kernel, the saved state and IPAM agree.

The agent runs alone (no gateway) inside a throwaway host namespace; the test talks to its
unix socket. Each round starts several CreateSandbox calls at once, kills the agent at a
moment that varies from round to round, restarts it and checks:
- every sandbox a client was told exists is still listed;
- every running sandbox has its namespace, an eth0 with exactly the address the agent
  reports, and its host-side veth on the network's bridge;
- addresses are unique, inside the subnet, and exactly what IPAM has in use;
- no berth veth in the host namespace belongs to no sandbox (orphans were removed);
- a new sandbox gets an unused address and exchanges pings with an old one.

A namespace with the agent's prefix that the state does not know (one the agent was creating
when it died, if it does not record it first) is tolerated; the test prints how many it saw.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network, ip_interface, ip_network
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from berth.api.network.v1 import resources_pb2 as rpb
from berth.api.network.v1 import sandbox_service_pb2 as spb
from tests.integration.network.netclient import DnsNetClient, NetClient, attachment
from tests.support import hostns
from tests.support.hostns import NETNS_DIR, host_namespace
from tests.support.processes import DaemonProcess, poll, start

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("ping") is None,
    reason="needs root, ip and ping",
)

ROUNDS = 20
CONCURRENT = 6  # CreateSandbox calls in flight when the agent is killed
JITTER_S = 0.01  # at most this much later than the N-th reply the kill comes
CALL_TIMEOUT_S = 30.0
START_TIMEOUT_S = 30.0
PING_S = 10.0  # how long traffic between an old and a new sandbox may take to work
NETWORK = "crashnet"
RUNNING = spb.SANDBOX_STATE_RUNNING


@dataclass
class Agent:
    """berth-networkd in a test host, started and SIGKILLed again and again."""

    host: hostns.AgentHost
    root: Path
    daemon: DaemonProcess | None = None
    channel: grpc.Channel | None = None
    starts: int = 0

    def state(self) -> dict[str, Any]:
        """What the agent persisted, as one dict: networks, sandboxes and ipam."""
        state_dir = self.root / "state"
        if (state_dir / "state.json").exists():  # the layout of one file for everything
            return dict(json.loads((state_dir / "state.json").read_text()))
        folder = state_dir / "state"
        return {
            "networks": read_folder(folder / "networks"),
            "sandboxes": read_folder(folder / "sandboxes"),
            "ipam": json.loads((folder / "ipam.json").read_text()),
        }

    @property
    def client(self) -> NetClient:
        assert self.channel is not None
        return NetClient(self.channel)

    @property
    def dns_client(self) -> DnsNetClient:
        assert self.channel is not None
        return DnsNetClient(self.channel)

    def start(self) -> None:
        """Starts the agent (a log file per start) and waits until it serves or dies."""
        self.starts += 1
        args = ["--state-dir", str(self.root / "state"), *self.host.agent_args()]
        socket = self.root / "networkd.sock"
        self.daemon = start(
            f"networkd-{self.starts}", "berth.network.main", socket, args, self.root, wait=False
        )
        poll(self._serving, START_TIMEOUT_S, f"start #{self.starts} of the agent to serve")
        self.channel = grpc.insecure_channel(self.daemon.target)

    def _serving(self) -> bool:
        assert self.daemon is not None
        if self.daemon.process.poll() is not None:
            tail = self.daemon.log_path.read_text()[-4000:]
            raise AssertionError(f"agent start #{self.starts} exited:\n{tail}")
        try:
            with grpc.insecure_channel(self.daemon.target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=0.5
                )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def kill(self) -> None:
        assert self.daemon is not None
        self.daemon.process.send_signal(signal.SIGKILL)
        self.daemon.process.wait(timeout=10)
        self._close_channel()

    def stop(self) -> None:
        self._close_channel()
        if self.daemon is not None:
            self.daemon.stop()

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def read_folder(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


@dataclass
class Tally:
    """What the rounds did, printed at the end."""

    in_flight_at_kill: list[int] = field(default_factory=list)
    acknowledged: int = 0
    survived_unacknowledged: int = 0
    not_running: int = 0
    orphans_at_kill: int = 0
    ping_retries: int = 0
    leftover_namespaces: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.in_flight_at_kill)} kills with {self.in_flight_at_kill} calls in flight; "
            f"{self.acknowledged} creates acknowledged before a kill, "
            f"{self.survived_unacknowledged} unacknowledged ones found in the state, "
            f"{self.not_running} of them not running; "
            f"{self.orphans_at_kill} orphan veths left by the kills; "
            f"{self.ping_retries} first pings unanswered (answered later); "
            f"{len(self.leftover_namespaces)} namespaces with the agent's prefix unknown to "
            f"the state: {self.leftover_namespaces}"
        )


@pytest.fixture
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with host_namespace() as host:
        running = Agent(host=host, root=tmp_path_factory.mktemp("crash"))
        try:
            running.start()
            yield running
        finally:
            running.stop()


def test_kill_during_connects_then_restart_agrees(agent: Agent) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    agent.client.create_network(NETWORK)
    agent.client.sandbox("first", NETWORK)  # an old sandbox to ping even if a round adds none
    subnet = ip_network(agent.client.subnet(NETWORK))
    tally = Tally()
    started = time.monotonic()
    for round_no in range(ROUNDS):
        context = f"round {round_no} (seed {seed})"
        attempted = {f"r{round_no:02d}c{i}" for i in range(CONCURRENT)}
        acknowledged = crash_during_creates(agent, sorted(attempted), round_no, rng, tally)
        agent.start()
        problems = agreement_problems(agent, subnet, attempted, acknowledged, tally)
        assert not problems, f"{context}:\n" + "\n".join(problems)
        problems = fresh_connect_problems(agent, round_no, rng, subnet, tally)
        assert not problems, f"{context}, after the restart:\n" + "\n".join(problems)
    missed = tally.in_flight_at_kill.count(0)
    assert missed <= ROUNDS // 2, f"{missed} kills came after every call had ended"
    print(f"\n{ROUNDS} rounds in {time.monotonic() - started:.1f}s: {tally.summary()}")


def test_names_answer_again_after_a_restart(agent: Agent) -> None:
    """The embedded DNS server's sockets die with the agent; the restart opens them again
    in every sandbox, and the names, aliases and links are still there."""
    client = agent.dns_client
    client.user_network("names", "10.64.1.0/24")
    client.create_sandbox("asker", attachment("names", links={"later": "lt"}))
    client.create_sandbox("answerer", attachment("names", aliases=["svc"]))
    address = client.address("answerer", "names")
    assert client.resolve("asker", "svc") == [address]
    agent.kill()
    agent.start()
    client = agent.dns_client
    assert client.resolve("asker", "answerer") == [address]
    assert client.resolve("asker", "svc") == [address]
    client.create_sandbox("later", attachment("names"))
    assert client.resolve("asker", "lt") == [client.address("later", "names")]


# -- one crash -------------------------------------------------------------------------------


def crash_during_creates(
    agent: Agent, names: list[str], round_no: int, rng: random.Random, tally: Tally
) -> set[str]:
    """Kills the agent while these sandboxes are being created; returns those acknowledged."""
    create = agent.client.sandboxes.CreateSandbox
    calls: dict[str, Future[Any]] = {
        name: create.future(create_request(name), timeout=CALL_TIMEOUT_S) for name in names
    }
    replies_first = round_no % (CONCURRENT - 1)
    poll(
        lambda: sum(call.done() for call in calls.values()) >= replies_first,
        CALL_TIMEOUT_S,
        f"{replies_first} CreateSandbox replies",
    )
    time.sleep(rng.uniform(0, JITTER_S))  # moves the kill within the next call; waits for nothing
    done_before = {name for name, call in calls.items() if call.done()}
    agent.kill()
    tally.in_flight_at_kill.append(CONCURRENT - len(done_before))
    tally.orphans_at_kill += len(
        orphan_problems(host_links(agent.host), state_endpoints(agent.state()))
    )
    outcomes = {name: outcome(call) for name, call in calls.items()}
    failed = {n: o for n, o in outcomes.items() if n in done_before and o != "OK"}
    assert not failed, f"round {round_no}: creates failed before the kill: {failed}"
    acknowledged = {name for name, result in outcomes.items() if result == "OK"}
    tally.acknowledged += len(acknowledged)
    return acknowledged


def create_request(name: str) -> spb.CreateSandboxRequest:
    attachment = spb.NetworkAttachment(network=NETWORK, endpoint_config=rpb.EndpointConfig())
    return spb.CreateSandboxRequest(name=name, networks=[attachment], start=True)


def outcome(call: Future[Any]) -> str:
    try:
        call.result(timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        return f"{error.code().name}: {error.details()}"
    return "OK"


# -- kernel, state and IPAM ------------------------------------------------------------------


@dataclass(frozen=True)
class HostLink:
    name: str
    master: str | None
    line: str


def agreement_problems(
    agent: Agent, subnet: IPv4Network, attempted: set[str], acknowledged: set[str], tally: Tally
) -> list[str]:
    listed = agent.client.sandboxes.ListSandboxes(spb.ListSandboxesRequest(all=True)).sandboxes
    state = agent.state()
    network = next(n for n in state["networks"] if n["name"] == NETWORK)
    endpoints = state_endpoints(state)
    links = host_links(agent.host)
    problems = [f"acknowledged sandbox {n} is not listed" for n in acknowledged - endpoints.keys()]
    survivors = {s.name for s in listed if s.name in attempted - acknowledged}
    tally.survived_unacknowledged += len(survivors)
    tally.not_running += sum(1 for s in listed if s.name in survivors and s.state != RUNNING)
    addresses: dict[str, str] = {}
    for sandbox in listed:
        if sandbox.state != RUNNING:
            continue
        address = reported_ipv4(sandbox)
        addresses[sandbox.name] = address
        problems += sandbox_problems(sandbox, address, endpoints.get(sandbox.name), links, network)
    problems += address_problems(addresses, subnet, network["id"], state)
    problems += orphan_problems(links, endpoints)
    tally.leftover_namespaces += new_leftovers(agent.host, state, tally.leftover_namespaces)
    return problems


def state_endpoints(state: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Each sandbox of the saved state, by name, with its endpoint on NETWORK."""
    network = next(n for n in state["networks"] if n["name"] == NETWORK)
    return {s["name"]: s["endpoints"].get(network["id"]) for s in state["sandboxes"]}


def reported_ipv4(sandbox: spb.Sandbox) -> str:
    return next((e.ipv4_address for e in sandbox.endpoints if e.network == NETWORK), "")


def sandbox_problems(
    sandbox: spb.Sandbox,
    address: str,
    endpoint: dict[str, Any] | None,
    links: dict[str, HostLink],
    network: dict[str, Any],
) -> list[str]:
    netns = Path(sandbox.netns_path).name
    if endpoint is None:
        return [f"{sandbox.name} is listed but has no endpoint on {NETWORK} in the saved state"]
    evidence = f"state endpoint: {json.dumps(endpoint, sort_keys=True)}"
    if not (NETNS_DIR / netns).exists():
        return [f"{sandbox.name}: namespace {netns} is missing; {evidence}"]
    problems = []
    kernel, shown = ipv4_in(netns, "eth0")
    if kernel != {address}:
        problems.append(
            f"{sandbox.name}: eth0 has {sorted(kernel)}, the agent reports {address!r}; "
            f"{evidence}; `ip -n {netns} -o -4 addr show dev eth0`: {shown!r}"
        )
    bridge = network["bridge"]["bridge_name"]
    link = links.get(endpoint["host_interface"])
    if link is None or link.master != bridge:
        problems.append(
            f"{sandbox.name}: host veth {endpoint['host_interface']} is not on bridge {bridge}; "
            f"{evidence}; host link: {link.line if link else 'absent'}"
        )
    return problems


def address_problems(
    addresses: dict[str, str], subnet: IPv4Network, network_id: str, state: dict[str, Any]
) -> list[str]:
    problems = []
    owners: dict[IPv4Interface, list[str]] = {}
    for name, text in addresses.items():
        if not text:
            problems.append(f"{name} is running without an IPv4 address on {NETWORK}")
            continue
        owners.setdefault(ip_interface(text), []).append(name)  # type: ignore[arg-type]
    for address, names in owners.items():
        if len(names) > 1:
            problems.append(f"{address} is reported for several sandboxes: {sorted(names)}")
        if address.network != subnet:
            problems.append(f"{address} of {names} lies outside the subnet {subnet}")
    # The saved IPAM may leave out the addresses in use (kept with the endpoints instead);
    # an address it does record must belong to an endpoint, or it leaked.
    in_use = {a for pool in state["ipam"]["networks"][network_id] for a in pool["in_use"]}
    leaked = in_use - {str(a.ip) for a in owners}
    if leaked:
        problems.append(f"the saved IPAM holds addresses no sandbox has: {sorted(leaked)}")
    return problems


def orphan_problems(links: dict[str, HostLink], endpoints: dict[str, Any]) -> list[str]:
    wanted = {e["host_interface"] for e in endpoints.values() if e is not None}
    return [
        f"orphan veth in the host namespace: {link.line}"
        for name, link in sorted(links.items())
        if name.startswith("bv") and name not in wanted
    ]


def new_leftovers(host: hostns.AgentHost, state: dict[str, Any], seen: list[str]) -> list[str]:
    """Namespaces with the agent's prefix that no sandbox of the state owns."""
    known = {Path(s["netns"]).name for s in state["sandboxes"]} | {host.netns}
    present = {path.name for path in NETNS_DIR.glob(f"{host.prefix}*")}
    return sorted(present - known - set(seen))


def host_links(host: hostns.AgentHost) -> dict[str, HostLink]:
    listing = run(["ip", "-n", host.netns, "-o", "link", "show"])
    assert listing.returncode == 0, listing.stderr
    links = {}
    for line in listing.stdout.splitlines():
        name = line.split(": ")[1].split("@")[0]
        words = line.split()
        master = words[words.index("master") + 1] if "master" in words else None
        links[name] = HostLink(name, master, line.strip())
    return links


def ipv4_in(netns: str, ifname: str) -> tuple[set[str], str]:
    """The IPv4 addresses (with prefix) on ifname inside netns, and what `ip` printed."""
    shown = run(["ip", "-n", netns, "-o", "-4", "addr", "show", "dev", ifname])
    words = shown.stdout.split()
    found = {words[i + 1] for i, word in enumerate(words) if word == "inet"}
    return found, (shown.stdout + shown.stderr).strip()


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


# -- after the restart -----------------------------------------------------------------------


def fresh_connect_problems(
    agent: Agent, round_no: int, rng: random.Random, subnet: IPv4Network, tally: Tally
) -> list[str]:
    """An old sandbox's address is refused to a newcomer; a new sandbox gets an unused
    address in the subnet and pings an old one both ways."""
    client = agent.client
    before = client.sandboxes.ListSandboxes(spb.ListSandboxesRequest(all=True)).sandboxes
    old = rng.choice([s for s in before if s.state == RUNNING])
    used = {reported_ipv4(s) for s in before}
    problems = taken_address_problems(client, f"r{round_no:02d}dup", reported_ipv4(old))
    fresh = client.sandbox(f"r{round_no:02d}new", NETWORK)
    address = reported_ipv4(fresh)
    if not address or address in used or ip_interface(address).network != subnet:
        problems.append(f"new sandbox {fresh.name} got {address!r}; in use: {sorted(used)}")
        return problems
    netns, old_netns = Path(fresh.netns_path).name, Path(old.netns_path).name
    for source, target, shown in (
        (netns, reported_ipv4(old), old.name),
        (old_netns, address, fresh.name),
    ):
        failed = pings(source, target.split("/")[0], tally)
        if failed:
            problems.append(f"no ping from {source} to {shown} ({target}) for {PING_S}s: {failed}")
    return problems


def taken_address_problems(client: NetClient, name: str, taken: str) -> list[str]:
    """Asking for an address another sandbox holds must fail and leave no sandbox."""
    address = taken.split("/")[0]
    try:
        client.sandbox(name, NETWORK, ip=address)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            return [f"asking for the taken {address} got {error.code().name}, not ALREADY_EXISTS"]
    else:
        return [f"IPAM handed out {address} twice: to {name} as well"]
    listed = client.sandboxes.ListSandboxes(spb.ListSandboxesRequest(all=True)).sandboxes
    return (
        [f"the refused create left sandbox {name} behind"]
        if name in {s.name for s in listed}
        else []
    )


def pings(netns: str, address: str, tally: Tally) -> str:
    """Pings until one answers or PING_S pass; what the last failed ping printed, or ""."""
    argv = ["ip", "netns", "exec", netns, "ping", "-c1", "-W1", address]
    deadline = time.monotonic() + PING_S
    attempt = run(argv)
    if attempt.returncode != 0:
        # A new veth pair can take a while (link watch) before the bridge forwards on it.
        tally.ping_retries += 1
    while attempt.returncode != 0 and time.monotonic() < deadline:
        attempt = run(argv)
    return "" if attempt.returncode == 0 else attempt.stdout + attempt.stderr
