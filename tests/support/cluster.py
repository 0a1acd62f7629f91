"""Several test hosts joined into one berth cluster: the multi-host overlay tests' harness.

Topology, every part a namespace the harness makes (never the machine's own):

    <prefix>ul     the underlay: a Linux bridge br0, one veth port per host and for redis
    <prefix>redis  redis-server at 10.71.0.100:6379 (append-only: a restart keeps the data)
    <prefix>h1..N  the test hosts, 10.71.0.1..N/24 on their veth `ul0`, an agent in each

Each host's agent runs with `--netns <prefix>hN --name-prefix <prefix>hN-`, so the sandbox
namespaces it creates start with the cluster's prefix too, and `remove_everything(prefix)`
takes every namespace and /etc/netns folder of the cluster away, even after a failure.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import resources_pb2 as rpb
from berth.api.network.v1 import sandbox_service_pb2 as spb
from berth.api.network.v1 import system_service_pb2 as sys_pb
from berth.api.network.v1 import system_service_pb2_grpc as sys_grpc
from tests.integration.network.netclient import DnsNetClient, endpoint_config
from tests.support.hostns import leftovers, netns_run, remove_everything, unique_prefix
from tests.support.processes import DaemonProcess, start
from tests.support.redis import RedisServer
from tests.support.stack import UNREACHABLE_RESOLVER

UNDERLAY_NET = "10.71.0"  # hosts .1 .. .N, redis .100, all /24
REDIS_ADDRESS = f"{UNDERLAY_NET}.100"
REDIS_PORT = 6379
UNDERLAY_BRIDGE = "br0"
UNDERLAY_DEVICE = "ul0"  # a host's end of its veth to the underlay bridge
VXLAN_PORT = 4789
HEARTBEAT_S = 0.2
HOST_TTL_S = 2.0
RESYNC_S = 2.0
AGENT_START_S = 30.0
MTU_OPTION = "com.docker.network.driver.mtu"
VNI_OPTION = "com.docker.network.driver.overlay.vxlanid_list"


def run(argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """A command whose failure fails the caller, with its stderr in the message."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def ip_json(netns: str, *argv: str) -> list[dict[str, Any]]:
    """`ip -j -n NETNS ...`, parsed; empty when the object (or namespace) does not exist."""
    done = subprocess.run(
        ["ip", "-j", "-n", netns, *argv], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0 or not done.stdout.strip():
        return []
    return list(json.loads(done.stdout))


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo in a failed call's google.rpc.Status, if it carries one."""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


class OverlayClient(DnsNetClient):
    """DnsNetClient with the overlay calls: networks by driver, GetInfo, endpoints."""

    def __init__(self, channel: grpc.Channel) -> None:
        super().__init__(channel)
        self.channel = channel
        self.system = sys_grpc.SystemServiceStub(channel)

    def overlay_network(
        self,
        name: str,
        subnet: str,
        *,
        options: dict[str, str] | None = None,
        timeout: float | None = 30,
    ) -> npb.Network:
        request = npb.CreateNetworkRequest(
            name=name,
            driver=npb.DRIVER_OVERLAY,
            ipam=npb.IPAM(config=[npb.IPAMConfig(subnet=subnet)]),
            attachable=True,
            options=options or {},
        )
        return self.networks.CreateNetwork(request, timeout=timeout).network

    def info(self, timeout: float = 5) -> sys_pb.GetInfoResponse:
        return self.system.GetInfo(sys_pb.GetInfoRequest(), timeout=timeout)

    def inspect_network(self, ref: str, *, verbose: bool = False) -> npb.Network:
        request = npb.InspectNetworkRequest(network=ref, verbose=verbose)
        return self.networks.InspectNetwork(request, timeout=10).network

    def network_list(self) -> list[npb.Network]:
        return list(self.networks.ListNetworks(npb.ListNetworksRequest(), timeout=10).networks)

    def network_names(self) -> set[str]:
        return {n.name for n in self.network_list()}

    def remove_networks(self, *refs: str, force: bool = False) -> None:
        request = npb.RemoveNetworkRequest(networks=list(refs), force=force)
        self.networks.RemoveNetwork(request, timeout=30)

    def attach(
        self,
        sandbox: str,
        network: str,
        *,
        ip: str = "",
        aliases: Sequence[str] = (),
        timeout: float | None = 30,
    ) -> rpb.Endpoint:
        """ConnectNetwork, returning the new endpoint."""
        config = endpoint_config(aliases=aliases)
        config.ip_address = ip
        request = npb.ConnectNetworkRequest(
            network=network, sandbox=sandbox, endpoint_config=config
        )
        return self.networks.ConnectNetwork(request, timeout=timeout).endpoint

    def detach(self, sandbox: str, network: str, *, timeout: float | None = 30) -> None:
        request = npb.DisconnectNetworkRequest(network=network, sandbox=sandbox)
        self.networks.DisconnectNetwork(request, timeout=timeout)

    def sandbox_on(
        self, name: str, network: str, *, ip: str = "", aliases: Sequence[str] = ()
    ) -> rpb.Endpoint:
        """A running sandbox whose only network is `network`; returns that endpoint."""
        config = endpoint_config(aliases=aliases)
        config.ip_address = ip
        request = spb.CreateSandboxRequest(
            name=name,
            networks=[spb.NetworkAttachment(network=network, endpoint_config=config)],
            start=True,
        )
        created = self.sandboxes.CreateSandbox(request, timeout=30).sandbox
        return next(e for e in created.endpoints if e.network == network)

    def bare_sandbox(self, name: str) -> spb.Sandbox:
        """A running sandbox on the default bridge only, to connect to networks later."""
        request = spb.CreateSandboxRequest(name=name, start=True)
        return self.sandboxes.CreateSandbox(request, timeout=30).sandbox

    def inspect_sandbox(self, ref: str) -> spb.Sandbox:
        request = spb.InspectSandboxRequest(sandbox=ref)
        return self.sandboxes.InspectSandbox(request, timeout=10).sandbox

    def endpoint(self, sandbox: str, network_id: str) -> rpb.Endpoint | None:
        """The sandbox's endpoint on that network (by id), or None."""
        found = self.inspect_sandbox(sandbox)
        return next((e for e in found.endpoints if e.network_id == network_id), None)

    def sandbox_list(self) -> list[spb.Sandbox]:
        request = spb.ListSandboxesRequest(all=True)
        return list(self.sandboxes.ListSandboxes(request, timeout=10).sandboxes)

    def remove_tagged_sandboxes(self, t: str) -> None:
        mine = [s.name for s in self.sandbox_list() if s.name.endswith(f"-{t}")]
        if mine:
            self.remove(*mine)

    def remove_tagged_networks(self, t: str) -> None:
        ours = [n.name for n in self.network_list() if n.name.endswith(f"-{t}")]
        if ours:
            self.remove_networks(*ours, force=True)


@dataclass
class ClusterHost:
    """One test host: its namespace, its underlay address and its agent."""

    index: int
    prefix: str  # the cluster's
    root: Path
    redis_url: str | None
    daemon: DaemonProcess | None = None
    starts: int = 0
    _client: OverlayClient | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # short, for assertion messages
        return f"<{self.name} {self.netns} {self.address}>"

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def netns(self) -> str:
        return f"{self.prefix}{self.name}"

    @property
    def agent_prefix(self) -> str:
        """What the agent puts before every namespace it creates."""
        return f"{self.netns}-"

    @property
    def address(self) -> str:
        return f"{UNDERLAY_NET}.{self.index}"

    @property
    def socket(self) -> Path:
        return self.root / "networkd.sock"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "host-resolv.conf"

    # -- the agent --------------------------------------------------------------------

    def agent_args(self) -> list[str]:
        args = [
            "--netns",
            self.netns,
            "--name-prefix",
            self.agent_prefix,
            "--state-dir",
            str(self.state_dir),
            "--resolv-conf",
            str(self.resolv_conf),
            "--host-name",
            self.name,
        ]
        if self.redis_url is None:
            return args
        return [
            *args,
            "--redis-url",
            self.redis_url,
            "--underlay-address",
            self.address,
            "--advertise-address",
            f"unix://{self.socket}",
            "--heartbeat-interval",
            str(HEARTBEAT_S),
            "--host-ttl",
            str(HOST_TTL_S),
            "--resync-interval",
            str(RESYNC_S),
        ]

    def start_agent(self, wait: bool = True) -> None:
        """Starts the agent (same state dir every time); its output goes to agent-hN.log."""
        assert not self.agent_running, f"{self.name}'s agent runs already"
        self.resolv_conf.write_text(UNREACHABLE_RESOLVER)
        self.starts += 1
        self.daemon = start(
            f"agent-{self.name}",
            "berth.network.main",
            self.socket,
            self.agent_args(),
            self.root,
            wait=False,
        )
        if wait:
            self.wait_agent()

    def wait_agent(self, timeout: float = AGENT_START_S) -> None:
        """Until the agent reports SERVING; fails at once, with its log, if it exits."""
        assert self.daemon is not None
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.daemon.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.daemon.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name}'s agent (start #{self.starts}) exited with "
                        f"{self.daemon.process.returncode}:\n{self.log_tail()}"
                    )
                with suppress(grpc.RpcError):
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}'s agent did not serve:\n{self.log_tail()}")
                time.sleep(0.05)

    def log_tail(self, chars: int = 4000) -> str:
        path = self.root / f"agent-{self.name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    @property
    def agent_running(self) -> bool:
        return self.daemon is not None and self.daemon.process.poll() is None

    def kill_agent(self) -> None:
        """SIGKILL: no chance to clean up or to say goodbye to the cluster."""
        if self.daemon is not None and self.daemon.process.poll() is None:
            self.daemon.process.send_signal(signal.SIGKILL)
            self.daemon.process.wait(timeout=10)
        self._drop_client()

    def stop_agent(self) -> None:
        self._drop_client()
        if self.daemon is not None:
            with suppress(subprocess.TimeoutExpired):
                self.daemon.stop(timeout=15)

    def restart_agent(self) -> None:
        """SIGKILL the agent if it runs, then start it again with the same state."""
        self.kill_agent()
        self.start_agent()

    def client(self) -> OverlayClient:
        """A client of this host's agent (a fresh channel after every restart)."""
        if self._client is None:
            assert self.daemon is not None, f"{self.name}'s agent was never started"
            self._client = OverlayClient(grpc.insecure_channel(self.daemon.target))
        return self._client

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.channel.close()
            self._client = None

    # -- the host's namespace -----------------------------------------------------------

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command in the host's namespace (not checked)."""
        return netns_run(self.netns, *argv, timeout=timeout)

    def ip(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """`ip -n HOST ...` (checked)."""
        return run(["ip", "-n", self.netns, *argv])

    def ip_json(self, *argv: str) -> list[dict[str, Any]]:
        """`ip -j -n HOST ...`, parsed; empty when the object does not exist."""
        return ip_json(self.netns, *argv)

    def link(self, device: str) -> dict[str, Any] | None:
        """`ip -d link show DEVICE` in the host's namespace, or None if it is not there."""
        found = self.ip_json("-d", "link", "show", "dev", device)
        return found[0] if found else None

    def fdb(self, device: str) -> list[dict[str, Any]]:
        """`bridge fdb show dev DEVICE` in the host's namespace ([] if no such device)."""
        done = subprocess.run(
            ["bridge", "-j", "-n", self.netns, "fdb", "show", "dev", device],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0 or not done.stdout.strip():
            return []
        return list(json.loads(done.stdout))

    def neighbours(self, device: str) -> list[dict[str, Any]]:
        """`ip neigh show dev DEVICE` in the host's namespace ([] if no such device)."""
        return self.ip_json("neigh", "show", "dev", device)

    def underlay_down(self) -> None:
        self.ip("link", "set", UNDERLAY_DEVICE, "down")

    def underlay_up(self) -> None:
        self.ip("link", "set", UNDERLAY_DEVICE, "up")

    # -- the sandboxes the agent made -----------------------------------------------------

    def sandbox_netns(self, sandbox: str) -> str:
        return f"{self.agent_prefix}{sandbox}"

    def in_sandbox(
        self, sandbox: str, *argv: str, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """A command inside one of this agent's sandboxes, by `ip netns exec` (its
        resolv.conf and hosts mounted over /etc), without going through the agent."""
        return subprocess.run(
            ["ip", "netns", "exec", self.sandbox_netns(sandbox), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen_in_sandbox(self, sandbox: str, *argv: str) -> subprocess.Popen[str]:
        """A background process inside a sandbox; stdout is a pipe of text."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.sandbox_netns(sandbox), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def sandbox_link(self, sandbox: str, device: str) -> dict[str, Any] | None:
        found = ip_json(self.sandbox_netns(sandbox), "link", "show", "dev", device)
        return found[0] if found else None

    def sandbox_addresses(self, sandbox: str) -> list[str]:
        """Every IPv4 address in the sandbox with its prefix length, loopback left out."""
        return [
            f"{info['local']}/{info['prefixlen']}"
            for link in ip_json(self.sandbox_netns(sandbox), "-4", "addr", "show")
            for info in link.get("addr_info", [])
            if link.get("ifname") != "lo"
        ]


@dataclass
class Cluster:
    prefix: str
    root: Path
    redis: RedisServer | None
    hosts: list[ClusterHost]

    @property
    def underlay_netns(self) -> str:
        return f"{self.prefix}ul"

    @property
    def redis_netns(self) -> str:
        return f"{self.prefix}redis"

    @property
    def redis_url(self) -> str:
        return f"redis://{REDIS_ADDRESS}:{REDIS_PORT}/0"

    def host(self, name: str) -> ClusterHost:
        return next(h for h in self.hosts if h.name == name)

    # -- redis ------------------------------------------------------------------------

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.stop()

    def start_redis(self) -> None:
        """Starts redis-server again (with the data it had) unless it runs already."""
        assert self.redis is not None
        if self.redis.process is None or self.redis.process.poll() is not None:
            self.redis.start()

    def redis_cli(self, *command: str) -> str:
        assert self.redis is not None
        return self.redis.cli(*command)

    def redis_hash(self, key: str) -> dict[str, str]:
        """HGETALL: field -> value (values are single-line: JSON or plain strings)."""
        lines = _lines(self._answer("HGETALL", key))
        return dict(zip(lines[0::2], lines[1::2], strict=True))

    def redis_members(self, key: str) -> set[str]:
        return set(_lines(self._answer("SMEMBERS", key)))

    def _answer(self, *command: str) -> str:
        """redis-cli's reply, or an error when there is none (Redis unreachable): an empty
        hash or set still answers one empty line."""
        reply = self.redis_cli(*command)
        if not reply:
            raise RuntimeError(f"no answer from redis to {' '.join(command)}")
        return reply

    def endpoints_in_redis(self, network_id: str) -> dict[str, dict[str, Any]]:
        """berth:endpoints:<id>, endpoint id -> its record."""
        raw = self.redis_hash(f"berth:endpoints:{network_id}")
        return {endpoint_id: json.loads(value) for endpoint_id, value in raw.items()}

    def claims(self, network_id: str) -> dict[str, str]:
        """berth:addresses:<id>, address -> "<host>/<endpoint id>"."""
        return self.redis_hash(f"berth:addresses:{network_id}")

    # -- teardown -----------------------------------------------------------------------

    def close(self) -> None:
        """Stops every process, then removes every namespace and /etc/netns folder."""
        try:
            for host in self.hosts:
                host.stop_agent()
            if self.redis is not None:
                self.redis.stop()
        finally:
            for host in self.hosts:  # a stop that raised must not leave an agent behind
                host.kill_agent()
            remove_everything(self.prefix)

    def leftovers(self) -> list[str]:
        return leftovers(self.prefix)


def _lines(reply: str) -> list[str]:
    """redis-cli's raw reply, one element a line (an empty list prints one empty line)."""
    body = reply.removesuffix("\n")
    return body.split("\n") if body else []


def _plug(prefix: str, netns: str, port: str, address: str) -> None:
    """A namespace joined to the underlay bridge: `port` on the bridge, `ul0` in it."""
    underlay = f"{prefix}ul"
    run(["ip", "netns", "add", netns])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    run(
        [
            "ip",
            "-n",
            underlay,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            UNDERLAY_DEVICE,
            "netns",
            netns,
        ]
    )
    run(["ip", "-n", underlay, "link", "set", port, "master", UNDERLAY_BRIDGE, "up"])
    run(["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", UNDERLAY_DEVICE])
    run(["ip", "-n", netns, "link", "set", UNDERLAY_DEVICE, "up"])


def _build_underlay(prefix: str) -> None:
    underlay = f"{prefix}ul"
    run(["ip", "netns", "add", underlay])
    run(["ip", "-n", underlay, "link", "set", "lo", "up"])
    run(["ip", "-n", underlay, "link", "add", UNDERLAY_BRIDGE, "type", "bridge"])
    run(["ip", "-n", underlay, "link", "set", UNDERLAY_BRIDGE, "up"])


@contextmanager
def running_cluster(
    root: Path, hosts: int = 3, *, redis: bool = True, agents: bool = True
) -> Iterator[Cluster]:
    """`hosts` test hosts on one underlay, a redis-server on it (unless redis=False: the
    agents then run without --redis-url), and an agent in every host (unless agents=False).
    Everything is gone afterwards, whatever happened."""
    prefix = unique_prefix()
    server = (
        RedisServer(REDIS_ADDRESS, REDIS_PORT, root / "redis", netns=f"{prefix}redis")
        if redis
        else None
    )
    cluster = Cluster(prefix, root, server, [])
    try:
        _build_underlay(prefix)
        if server is not None:
            _plug(prefix, cluster.redis_netns, "redis", REDIS_ADDRESS)
            server.start()
        for index in range(1, hosts + 1):
            host_root = root / f"h{index}"
            host_root.mkdir(parents=True, exist_ok=True)
            url = cluster.redis_url if redis else None
            host = ClusterHost(index=index, prefix=prefix, root=host_root, redis_url=url)
            cluster.hosts.append(host)
            _plug(prefix, host.netns, host.name, host.address)
        if agents:
            for host in cluster.hosts:
                host.start_agent(wait=False)
            for host in cluster.hosts:
                host.wait_agent()
        yield cluster
    finally:
        cluster.close()
