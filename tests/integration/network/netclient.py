"""A small client for the network agent's API, for tests that drive it over gRPC."""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import network_service_pb2_grpc as npb_grpc
from berth.api.network.v1 import resources_pb2 as rpb
from berth.api.network.v1 import sandbox_service_pb2 as spb
from berth.api.network.v1 import sandbox_service_pb2_grpc as spb_grpc

PY = sys.executable


def tag() -> str:
    return secrets.token_hex(3)


@dataclass
class Exec:
    code: int
    stdout: str
    stderr: str


class NetClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self.networks = npb_grpc.NetworkServiceStub(channel)
        self.sandboxes = spb_grpc.SandboxServiceStub(channel)

    def create_network(self, name: str, **fields: object) -> npb.Network:
        return self.networks.CreateNetwork(npb.CreateNetworkRequest(name=name, **fields)).network

    def subnet(self, name: str) -> str:
        network = self.networks.InspectNetwork(npb.InspectNetworkRequest(network=name)).network
        return network.ipam.config[0].subnet

    def sandbox(self, name: str, *networks: str, ip: str = "", start: bool = True) -> spb.Sandbox:
        attachments = [
            spb.NetworkAttachment(
                network=n, endpoint_config=rpb.EndpointConfig(ip_address=ip if i == 0 else "")
            )
            for i, n in enumerate(networks)
        ]
        return self.sandboxes.CreateSandbox(
            spb.CreateSandboxRequest(name=name, networks=attachments, start=start)
        ).sandbox

    def address(self, sandbox: str, network: str) -> str:
        found = self.sandboxes.InspectSandbox(spb.InspectSandboxRequest(sandbox=sandbox)).sandbox
        endpoint = next(e for e in found.endpoints if e.network == network)
        return endpoint.ipv4_address.split("/")[0]

    def exec(self, sandbox: str, argv: Sequence[str], timeout: float = 30) -> Exec:
        out, err, code = b"", b"", -1
        request = spb.ExecSandboxRequest(sandbox=sandbox, argv=list(argv))
        for reply in self.sandboxes.ExecSandbox(request, timeout=timeout):
            out += reply.stdout
            err += reply.stderr
            if reply.HasField("exit_code"):
                code = reply.exit_code
        return Exec(code, out.decode(), err.decode())

    def pings(self, sandbox: str, address: str, deadline_s: float = 10.0) -> bool:
        """Reachable: one ping answered before the deadline (a brand-new veth can miss
        the very first packet while the kernel finishes setting it up)."""
        stop = time.monotonic() + deadline_s
        while True:
            if self.exec(sandbox, ["ping", "-c1", "-W1", address]).code == 0:
                return True
            if time.monotonic() > stop:
                return False

    def ping_blocked(self, sandbox: str, address: str) -> bool:
        """Unreachable: a ping goes unanswered for a second."""
        return self.exec(sandbox, ["ping", "-c1", "-W1", address]).code != 0

    def tcp_reaches(self, client: str, server: str, address: str, port: int = 8080) -> bool:
        """A TCP server in `server` answers a client in `client` at address:port."""
        with self.tcp_server(server, port):
            # Retried for 4 s: refused while the server starts, or a first SYN lost.
            probe = (
                "import socket,sys,time\n"
                "stop=time.monotonic()+4\n"
                "while time.monotonic()<stop:\n"
                "    try:\n"
                f"        s=socket.create_connection(({address!r},{port}),timeout=0.5)\n"
                "        print(s.recv(16).decode()); sys.exit(0)\n"
                "    except OSError:\n"
                "        time.sleep(0.05)\n"
                "sys.exit(1)\n"
            )
            result = self.exec(client, [PY, "-c", probe], timeout=20)
            if result.code != 0:  # release the waiting server from its own sandbox
                release = f"import socket; socket.create_connection(('127.0.0.1',{port}),timeout=2)"
                self.exec(server, [PY, "-c", release])
        return result.code == 0 and "hello" in result.stdout

    @contextmanager
    def tcp_server(self, sandbox: str, port: int) -> Iterator[None]:
        serve = (
            "import socket\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(('0.0.0.0',{port})); s.listen(); s.settimeout(15)\n"
            "c,_=s.accept(); c.sendall(b'hello'); c.close()\n"
        )
        thread = threading.Thread(target=self.exec, args=(sandbox, [PY, "-c", serve], 20))
        thread.start()
        try:
            yield
        finally:
            thread.join(timeout=25)


@dataclass
class Lookup:
    """What dig reported: the rcode ("NOERROR", "NXDOMAIN", ... or "TIMEOUT" when no
    answer came), the header flags, and the data of the answer records."""

    status: str
    flags: set[str]
    answers: list[str]


def parse_dig(output: str) -> Lookup:
    """The last answer dig printed (after a retry over TCP, the one that counted)."""
    status, flags, answers = "TIMEOUT", set[str](), list[str]()
    for line in output.splitlines():
        if "->>HEADER<<-" in line:
            status = line.split("status:")[1].split(",")[0].strip()
            answers = []
        elif line.startswith(";; flags:"):
            flags = set(line.removeprefix(";; flags:").split(";")[0].split())
        elif line.strip() and not line.startswith(";"):
            answers.append(line.split()[-1])
    return Lookup(status, flags, answers)


def attachment(
    network: str, *, aliases: Sequence[str] = (), links: dict[str, str] | None = None
) -> spb.NetworkAttachment:
    """`--network NETWORK --alias ... --link TARGET:ALIAS ...`."""
    return spb.NetworkAttachment(
        network=network, endpoint_config=endpoint_config(aliases=aliases, links=links)
    )


def endpoint_config(
    *, aliases: Sequence[str] = (), links: dict[str, str] | None = None
) -> rpb.EndpointConfig:
    """Aliases, and links as target name -> alias."""
    return rpb.EndpointConfig(
        aliases=list(aliases),
        links=[rpb.Link(name=target, alias=alias) for target, alias in (links or {}).items()],
    )


class DnsNetClient(NetClient):
    """NetClient with what the embedded DNS tests need: sandboxes with aliases and links,
    their lifecycle, lookups from inside them, and removal of everything a test made."""

    def user_network(self, name: str, subnet: str, *, internal: bool = False) -> str:
        """A bridge network with embedded DNS on `subnet`; returns its name."""
        ipam = npb.IPAM(config=[npb.IPAMConfig(subnet=subnet)])
        self.create_network(name, ipam=ipam, internal=internal)
        return name

    def create_sandbox(
        self, name: str, *attachments: spb.NetworkAttachment, dns: Sequence[str] = ()
    ) -> spb.Sandbox:
        request = spb.CreateSandboxRequest(
            name=name, networks=list(attachments), dns=list(dns), start=True
        )
        return self.sandboxes.CreateSandbox(request).sandbox

    def connect(
        self,
        sandbox: str,
        network: str,
        *,
        aliases: Sequence[str] = (),
        links: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        request = npb.ConnectNetworkRequest(
            network=network,
            sandbox=sandbox,
            endpoint_config=endpoint_config(aliases=aliases, links=links),
        )
        self.networks.ConnectNetwork(request, timeout=timeout)

    def disconnect(self, sandbox: str, network: str) -> None:
        self.networks.DisconnectNetwork(
            npb.DisconnectNetworkRequest(network=network, sandbox=sandbox)
        )

    def stop(self, sandbox: str) -> None:
        self.sandboxes.StopSandbox(spb.StopSandboxRequest(sandbox=sandbox))

    def start(self, sandbox: str) -> None:
        self.sandboxes.StartSandbox(spb.StartSandboxRequest(sandbox=sandbox))

    def remove(self, *sandboxes: str) -> None:
        request = spb.RemoveSandboxRequest(sandboxes=list(sandboxes), force=True)
        self.sandboxes.RemoveSandbox(request)

    def remove_tagged(self, t: str) -> None:
        """Removes every sandbox and then every network whose name ends in `-t`."""
        listed = self.sandboxes.ListSandboxes(spb.ListSandboxesRequest(all=True)).sandboxes
        mine = [s.name for s in listed if s.name.endswith(f"-{t}")]
        if mine:
            self.remove(*mine)
        networks = self.networks.ListNetworks(npb.ListNetworksRequest()).networks
        ours = [n.name for n in networks if n.name.endswith(f"-{t}")]
        if ours:
            self.networks.RemoveNetwork(npb.RemoveNetworkRequest(networks=ours))

    def dig(self, sandbox: str, *args: str) -> Lookup:
        """dig run in the sandbox against its own resolv.conf; one try of up to 3 s."""
        argv = ["dig", "+time=3", "+tries=1", "+noall", "+comments", "+answer", *args]
        return parse_dig(self.exec(sandbox, argv).stdout)

    def lookup(self, sandbox: str, name: str, qtype: str = "A") -> Lookup:
        return self.dig(sandbox, name, qtype)

    def resolve(self, sandbox: str, name: str) -> list[str]:
        """The IPv4 addresses `name` has for this sandbox, sorted; empty if none."""
        return sorted(self.lookup(sandbox, name).answers)

    def getent_hosts(self, sandbox: str, name: str) -> list[str]:
        """The addresses the C library finds for `name` (hosts file, then DNS)."""
        found = self.exec(sandbox, ["getent", "ahostsv4", name])
        return sorted({line.split()[0] for line in found.stdout.splitlines() if line.strip()})

    def file_in(self, sandbox: str, path: str) -> str:
        """A file as the sandbox's commands see it (resolv.conf and hosts are its own)."""
        return self.exec(sandbox, ["cat", path]).stdout
