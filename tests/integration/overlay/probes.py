"""Traffic between sandboxes of different test hosts, run by `ip netns exec` inside the
sandboxes (not through the agents, so a dead agent or Redis cannot stop a probe), and the
checks the overlay tests share. Every probe retries against a deadline instead of sleeping.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from berth.api.network.v1 import network_service_pb2 as npb
from tests.support.cluster import HOST_TTL_S, Cluster, ClusterHost, OverlayClient
from tests.support.processes import poll

# Only root is a reason to skip: a missing tool (make setup installs them) is a failure.
needs_cluster = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
PY = sys.executable
REACH_S = 10.0  # how long a new endpoint may take to become reachable from another host
ECHO_INTERVAL_S = 0.02  # the echo stream's pace (plus a round trip)
HOST_TTL_ECHOES = int((HOST_TTL_S + 1.0) / ECHO_INTERVAL_S)  # echoes that take over a TTL
_SUBNETS = itertools.count(1)

TCP_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello"); c.close()
"""

UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"echo:" + data, peer)
"""

TCP_CLIENT = """
import socket, sys, time
address, port, until = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        with socket.create_connection((address, port), timeout=0.5) as s:
            s.settimeout(2)
            if s.recv(16) == b"hello":
                sys.exit(0)
    except OSError:
        pass
    if time.monotonic() > until:
        sys.exit(1)
    time.sleep(0.05)
"""

UDP_CLIENT = """
import os, socket, sys, time
address, port, until = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
token = os.urandom(8).hex().encode()
while True:
    try:
        s.sendto(token, (address, port))
        data, _ = s.recvfrom(2048)
        if data == b"echo:" + token:
            sys.exit(0)
    except OSError:
        pass
    if time.monotonic() > until:
        sys.exit(1)
"""

ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4)
print("ready", flush=True)
while True:  # again after a connection the client gave up while it was being set up
    c, _ = s.accept()
    try:
        while data := c.recv(4096):
            c.sendall(data)
    except OSError:
        pass
    c.close()
"""

# One TCP connection, a 64-byte message echoed every 20 ms until the stop file appears;
# progress (echoes, the longest wait between two and when, in time.time(), it ended) goes
# to a file, the result to stdout.
ECHO_CLIENT = """
import json, os, socket, sys, time
address, port, progress, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
until = time.monotonic() + 15
while True:
    try:
        s = socket.create_connection((address, port), timeout=0.5)
        break
    except OSError:
        if time.monotonic() > until:
            raise
        time.sleep(0.05)
s.settimeout(30)
count, gap, gap_end, error, last = 0, 0.0, 0.0, "", time.monotonic()
def result():
    return {"count": count, "gap": gap, "gap_end": gap_end, "error": error}
def report(path):
    with open(path + ".tmp", "w") as f:
        json.dump(result(), f)
    os.replace(path + ".tmp", path)
try:
    while not os.path.exists(stop):
        s.sendall(b"x" * 64)
        got = b""
        while len(got) < 64:
            chunk = s.recv(64 - len(got))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            got += chunk
        now = time.monotonic()
        if now - last > gap:
            gap, gap_end = now - last, time.time()
        last, count = now, count + 1
        if count % 5 == 0:
            report(progress)
        time.sleep(float(sys.argv[5]))
except Exception as e:
    error = repr(e)
report(progress)
print(json.dumps(result()), flush=True)
"""


def new_subnet() -> str:
    """An overlay subnet no other test of this process uses (inside 10.72.0.0/16)."""
    return f"10.72.{next(_SUBNETS)}.0/24"


def bare(address: str) -> str:
    """ "10.72.1.2/24" -> "10.72.1.2"."""
    return address.split("/")[0]


@contextmanager
def serving(host: ClusterHost, sandbox: str, program: str, port: int) -> Iterator[None]:
    """A server program running in a sandbox, killed afterwards."""
    process = host.popen_in_sandbox(sandbox, PY, "-c", program, str(port))
    try:
        assert process.stdout is not None and process.stderr is not None
        if process.stdout.readline().strip() != "ready":
            process.kill()
            raise AssertionError(f"server in {sandbox} did not start: {process.stderr.read()}")
        yield
    finally:
        process.kill()
        process.wait(timeout=10)


def tcp_answers(
    host: ClusterHost, sandbox: str, address: str, port: int, within: float = REACH_S
) -> bool:
    """A TCP server at address:port says hello to a client in this sandbox in time."""
    argv = [PY, "-c", TCP_CLIENT, address, str(port), str(within)]
    return host.in_sandbox(sandbox, *argv, timeout=within + 10).returncode == 0


def udp_answers(
    host: ClusterHost, sandbox: str, address: str, port: int, within: float = REACH_S
) -> bool:
    argv = [PY, "-c", UDP_CLIENT, address, str(port), str(within)]
    return host.in_sandbox(sandbox, *argv, timeout=within + 10).returncode == 0


def tcp_reaches(
    client: tuple[ClusterHost, str],
    server: tuple[ClusterHost, str],
    address: str,
    port: int = 8080,
    within: float = REACH_S,
) -> bool:
    """A TCP server in `server` (host, sandbox) answers a client in `client` at address."""
    with serving(*server, TCP_SERVER, port):
        return tcp_answers(*client, address, port, within)


def pings(host: ClusterHost, sandbox: str, address: str, within: float = REACH_S) -> bool:
    until = time.monotonic() + within
    while True:
        if host.in_sandbox(sandbox, "ping", "-c1", "-W1", address).returncode == 0:
            return True
        if time.monotonic() > until:
            return False


def ping_blocked(host: ClusterHost, sandbox: str, address: str) -> bool:
    """Unreachable: three pings over two seconds go unanswered."""
    done = host.in_sandbox(sandbox, "ping", "-c3", "-i0.5", "-W2", address)
    return done.returncode != 0


@dataclass
class EchoStream:
    """An established TCP connection between two sandboxes, exchanging data all along."""

    client: subprocess.Popen[str]
    progress: Path
    stop_file: Path

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.progress.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {"count": 0, "gap": 0.0, "gap_end": 0.0, "error": ""}

    def count(self) -> int:
        return int(self.state()["count"])

    def advances(self, echoes: int, timeout: float = 15.0, what: str = "") -> None:
        """Waits until `echoes` more messages went there and back (20 ms apart)."""
        target = self.count() + echoes
        poll(
            lambda: self.count() >= target or self.client.poll() is not None,
            timeout,
            f"{echoes} more echoes on the established connection {what}: {self.state()}",
        )
        assert self.client.poll() is None, f"the stream ended: {self.finish()}"

    def finish(self) -> dict[str, Any]:
        """Stops the client; its count, longest gap (s) and error ("" if none)."""
        self.stop_file.touch()
        try:
            out, err = self.client.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.client.kill()
            out, err = self.client.communicate()
        lines = out.strip().splitlines()
        if not lines:
            return {**self.state(), "error": f"no result; stderr: {err.strip()[-500:]}"}
        return dict(json.loads(lines[-1]))


@contextmanager
def echo_stream(
    client: tuple[ClusterHost, str],
    server: tuple[ClusterHost, str],
    address: str,
    folder: Path,
    port: int = 7000,
) -> Iterator[EchoStream]:
    """Opens the connection (retrying for up to 15 s) and yields once data flows."""
    folder.mkdir(parents=True, exist_ok=True)
    progress, stop_file = folder / "progress.json", folder / "stop"
    server_host, server_sandbox = server
    client_host, client_sandbox = client
    echo = server_host.popen_in_sandbox(server_sandbox, PY, "-c", ECHO_SERVER, str(port))
    talker: subprocess.Popen[str] | None = None
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        argv = [PY, "-c", ECHO_CLIENT, address, str(port), str(progress), str(stop_file)]
        argv.append(str(ECHO_INTERVAL_S))
        talker = client_host.popen_in_sandbox(client_sandbox, *argv)
        stream = EchoStream(talker, progress, stop_file)
        stream.advances(10, timeout=20, what="at the start")
        yield stream
    finally:
        stop_file.touch()
        for process in (talker, echo):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@dataclass
class KernelWatch:
    """`bridge monitor fdb` and `ip monitor neigh` in a host's namespace, recorded."""

    host: ClusterHost
    device: str
    files: list[Path]

    def deletions(self, *keys: str) -> list[str]:
        """The VXLAN device's own FDB and neighbour entries deleted while watching whose
        line names one of `keys` (MACs, addresses); the bridge's learned ones left out."""
        return [
            line.strip()
            for path in self.files
            for line in path.read_text().splitlines()
            if line.startswith("Deleted ")
            and f"dev {self.device} " in f"{line} "
            and "master" not in line
            and any(key in line.split() for key in keys)
        ]


@contextmanager
def kernel_watch(host: ClusterHost, device: str, folder: Path) -> Iterator[KernelWatch]:
    """Records every FDB and neighbour change in the host's namespace meanwhile."""
    folder.mkdir(parents=True, exist_ok=True)
    commands = {
        "fdb": ["bridge", "-n", host.netns, "monitor", "fdb"],
        "neigh": ["ip", "-n", host.netns, "monitor", "neigh"],
    }
    files = [folder / f"{host.name}-{kind}.txt" for kind in commands]
    processes = []
    try:
        for path, argv in zip(files, commands.values(), strict=True):
            with path.open("w") as out:
                processes.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        yield KernelWatch(host, device, files)
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


def eventually(check: Callable[[], Any], timeout: float = REACH_S, what: str = "it") -> Any:
    """Calls check() until it neither raises AssertionError nor returns False, and returns
    what it returned; after `timeout` seconds re-raises its last AssertionError (so the
    failure says what was still wrong)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result is not False:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def vxlan_device(network: npb.Network) -> str:
    return f"vx-{network.id[:12]}"


def bridge_device(network: npb.Network) -> str:
    return f"bo-{network.id[:12]}"


def remote_entries(host: ClusterHost, network: npb.Network, mac: str, ip: str) -> tuple[Any, Any]:
    """The VXLAN device's own FDB entry for `mac` (not the bridge's, learned on that port:
    `master bo-...`) and the neighbour entry for `ip`, on the host's VXLAN device of the
    network (None where missing)."""
    device = vxlan_device(network)
    own = [e for e in host.fdb(device) if "master" not in e]
    fdb = next((e for e in own if e.get("mac") == mac), None)
    neigh = next((e for e in host.neighbours(device) if e.get("dst") == ip), None)
    return fdb, neigh


def claims_by(cluster: Cluster, network_id: str, host: str) -> dict[str, str]:
    """The address claims of one host: address -> endpoint id."""
    return {
        address: owner.split("/", 1)[1]
        for address, owner in cluster.claims(network_id).items()
        if owner.split("/", 1)[0] == host
    }


def clients(cluster: Cluster) -> list[OverlayClient]:
    return [host.client() for host in cluster.hosts]


def remove_tagged(cluster: Cluster, t: str) -> None:
    """Sandboxes on every live host first, then the (cluster-wide) networks. Best effort:
    what a broken cluster keeps, the module's teardown removes with the namespaces."""
    if cluster.redis is not None:
        cluster.start_redis()
    live = [host for host in cluster.hosts if host.agent_running]
    for host in live:
        try:
            host.client().remove_tagged_sandboxes(t)
        except grpc.RpcError as error:
            print(f"cleanup: sandboxes of {host.name}: {error.code()} {error.details()}")
    if not live:
        return

    def networks_removed() -> bool:
        try:
            live[0].client().remove_tagged_networks(t)
        except grpc.RpcError as error:
            print(f"cleanup: networks of {t}: {error.code()} {error.details()}")
            return False
        return True

    try:
        poll(networks_removed, 10, f"the networks of {t} to be removed")
    except AssertionError as error:
        print(f"cleanup: {error}")
