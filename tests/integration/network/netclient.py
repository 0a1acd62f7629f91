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
