"""Network modes and endpoint options: none, host, ICC, NAT vs routed, attach, sysctls."""

from __future__ import annotations

import datetime
import subprocess
import sys

from berth.api.network.v1 import event_service_pb2, event_service_pb2_grpc
from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import resources_pb2 as rpb
from berth.api.network.v1 import sandbox_service_pb2 as spb
from tests.integration.network.netclient import NetClient, tag
from tests.support.hostns import Outside
from tests.support.stack import Stack

PEER = (
    "import socket\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('0.0.0.0',9000)); s.listen(); s.settimeout(10)\n"
    "c,peer=s.accept(); print(peer[0]); c.close()\n"
)


def source_seen_outside(net: NetClient, outside: Outside, sandbox: str) -> str:
    """The source address with which the sandbox's connection arrives at the other host."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", outside.netns, sys.executable, "-c", PEER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        connect = (
            "import socket,time\n"
            "for _ in range(60):\n"
            "    try:\n"
            f"        socket.create_connection(({outside.address!r},9000),timeout=1); break\n"
            "    except ConnectionRefusedError: time.sleep(0.05)\n"
        )
        net.exec(sandbox, [sys.executable, "-c", connect])
        out, _ = server.communicate(timeout=15)
        return out.strip()
    finally:
        server.kill()


def test_none_network_gives_only_loopback(net: NetClient) -> None:
    t = tag()
    box = net.sandbox(f"alone-{t}", "none")
    assert list(box.endpoints) == []
    links = net.exec(f"alone-{t}", ["ip", "-o", "link"]).stdout
    assert [line.split(": ")[1] for line in links.splitlines()] == ["lo"]


def test_host_network_shares_the_hosts_namespace(net: NetClient, stack: Stack) -> None:
    t = tag()
    net.sandbox(f"hosted-{t}", "host")
    inside = net.exec(f"hosted-{t}", ["ip", "-o", "link"]).stdout
    assert "berth0" in inside  # the host namespace's default bridge is visible


def test_icc_false_blocks_sandboxes_but_not_the_gateway(net: NetClient) -> None:
    t = tag()
    network = net.create_network(
        f"noicc-{t}", options={"com.docker.network.bridge.enable_icc": "false"}
    )
    net.sandbox(f"a-{t}", f"noicc-{t}")
    net.sandbox(f"b-{t}", f"noicc-{t}")
    assert net.ping_blocked(f"a-{t}", net.address(f"b-{t}", f"noicc-{t}"))
    assert net.pings(f"a-{t}", network.ipam.config[0].gateway)


def test_nat_mode_masquerades_and_routed_mode_does_not(
    net: NetClient, outside: Outside, stack: Stack
) -> None:
    t = tag()
    net.create_network(f"nat-{t}")
    net.create_network(
        f"routed-{t}", options={"com.docker.network.bridge.gateway_mode_ipv4": "routed"}
    )
    net.sandbox(f"natted-{t}", f"nat-{t}")
    net.sandbox(f"direct-{t}", f"routed-{t}")
    routed_subnet = net.subnet(f"routed-{t}")
    # The other host needs a route back to the routed network, as an operator would add.
    outside.run("ip", "route", "add", routed_subnet, "via", outside.host_address)
    assert source_seen_outside(net, outside, f"natted-{t}") == outside.host_address
    direct = net.address(f"direct-{t}", f"routed-{t}")
    assert source_seen_outside(net, outside, f"direct-{t}") == direct


def test_an_existing_namespace_can_be_attached_and_is_never_deleted(
    net: NetClient, stack: Stack
) -> None:
    t = tag()
    name = f"{stack.host.prefix}ext{t}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        net.sandboxes.CreateSandbox(
            spb.CreateSandboxRequest(
                name=f"ext-{t}",
                netns_path=f"/run/netns/{name}",
                networks=[spb.NetworkAttachment(network="bridge")],
                start=True,
            )
        )
        inside = subprocess.run(
            ["ip", "-n", name, "-o", "addr"], capture_output=True, text=True
        ).stdout
        assert net.address(f"ext-{t}", "bridge") in inside
        net.sandboxes.RemoveSandbox(spb.RemoveSandboxRequest(sandboxes=[f"ext-{t}"], force=True))
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert name in listed
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_driver_opt_sysctls_and_gw_priority(net: NetClient) -> None:
    t = tag()
    net.create_network(f"low-{t}")
    high = net.create_network(f"high-{t}")
    net.sandbox(f"multi-{t}", f"low-{t}")
    net.networks.ConnectNetwork(
        npb.ConnectNetworkRequest(
            network=f"high-{t}",
            sandbox=f"multi-{t}",
            endpoint_config=rpb.EndpointConfig(
                gw_priority=10,
                driver_opts={
                    "com.docker.network.endpoint.sysctls": "net.ipv4.conf.IFNAME.forwarding=1"
                },
            ),
        )
    )
    route = net.exec(f"multi-{t}", ["ip", "route", "get", "192.0.2.1"]).stdout
    assert f"via {high.ipam.config[0].gateway} dev eth1" in route
    forwarding = net.exec(f"multi-{t}", ["cat", "/proc/sys/net/ipv4/conf/eth1/forwarding"])
    assert forwarding.stdout.strip() == "1"


def test_events_report_network_changes(net: NetClient, stack: Stack) -> None:
    t = tag()
    since = datetime.datetime.now(datetime.UTC)
    net.create_network(f"evented-{t}")
    net.sandbox(f"watcher-{t}", f"evented-{t}")
    request = event_service_pb2.StreamEventsRequest(
        filters=[rpb.Filter(key="network", value=f"evented-{t}")]
    )
    request.since.FromDatetime(since)
    request.until.FromDatetime(datetime.datetime.now(datetime.UTC))
    with stack.channel() as channel:
        events = list(event_service_pb2_grpc.EventServiceStub(channel).StreamEvents(request))
    assert [(e.event.type, e.event.action) for e in events] == [
        ("network", "create"),
        ("network", "connect"),
    ]


def test_inhibit_ipv4_leaves_the_bridge_without_an_address(net: NetClient, stack: Stack) -> None:
    t = tag()
    network = net.create_network(
        f"inhibit-{t}",
        options={
            "com.docker.network.bridge.inhibit_ipv4": "true",
            "com.docker.network.bridge.name": f"inh{t}",
        },
        ipam=npb.IPAM(config=[npb.IPAMConfig(subnet="10.81.0.0/24", gateway="10.81.0.1")]),
    )
    bridge = stack.host.run("ip", "-o", "-4", "addr", "show", "dev", f"inh{t}").stdout
    assert "10.81.0.1" not in bridge
    assert network.ipam.config[0].gateway == "10.81.0.1"


def test_link_local_ips_are_added_to_the_interface(net: NetClient) -> None:
    t = tag()
    net.sandbox(f"ll-{t}", "none")
    net.create_network(f"llnet-{t}")
    net.networks.ConnectNetwork(
        npb.ConnectNetworkRequest(
            network=f"llnet-{t}",
            sandbox=f"ll-{t}",
            endpoint_config=rpb.EndpointConfig(link_local_ips=["169.254.7.7"]),
        )
    )
    addresses = net.exec(f"ll-{t}", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert "169.254.7.7/16" in addresses
