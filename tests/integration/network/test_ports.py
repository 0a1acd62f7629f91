"""Port publishing (-p, -P): DNAT from the host's addresses to a sandbox."""

from __future__ import annotations

import sys
import threading

import grpc
import pytest

from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import sandbox_service_pb2 as spb
from tests.integration.network.netclient import NetClient, tag
from tests.support.hostns import Outside
from tests.support.stack import Stack

CONNECT = (
    "import socket,sys,time\n"
    "for _ in range(40):\n"
    "    try:\n"
    "        s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1)\n"
    "        print(s.recv(16).decode()); sys.exit(0)\n"
    "    except ConnectionRefusedError:\n"
    "        time.sleep(0.05)\n"
    "    except OSError:\n"
    "        sys.exit(1)\n"
    "sys.exit(1)\n"
)


def publish(net: NetClient, name: str, network: str, *bindings: spb.PortBinding) -> spb.Sandbox:
    return net.sandboxes.CreateSandbox(
        spb.CreateSandboxRequest(
            name=name,
            networks=[spb.NetworkAttachment(network=network)],
            port_bindings=list(bindings),
            start=True,
        )
    ).sandbox


def tcp(container: int, host: int = 0, host_ip: str = "") -> spb.PortBinding:
    return spb.PortBinding(
        container_port=container, host_port=host, host_ip=host_ip, protocol=spb.PROTOCOL_TCP
    )


def reaches(
    runner: Outside | Stack,
    net: NetClient,
    sandbox: str,
    address: str,
    host_port: int,
    container_port: int,
) -> bool:
    """A server on container_port inside the sandbox answers a client at address:host_port."""
    run = runner.run if isinstance(runner, Outside) else runner.host.run
    with net.tcp_server(sandbox, container_port):
        result = run(sys.executable, "-c", CONNECT, address, str(host_port))
        if result.returncode != 0:
            release = f"import socket; socket.create_connection(('127.0.0.1',{container_port}))"
            net.exec(sandbox, [sys.executable, "-c", release])
    return result.returncode == 0 and "hello" in result.stdout


def test_published_port_is_reachable_from_another_host_and_the_host_itself(
    net: NetClient, stack: Stack, outside: Outside
) -> None:
    t = tag()
    net.create_network(f"web-{t}")
    box = publish(net, f"web-{t}", f"web-{t}", tcp(80, 18080))
    assert [(p.host_port, p.container_port) for p in box.ports] == [(18080, 80)]
    assert reaches(outside, net, f"web-{t}", outside.host_address, 18080, 80)
    assert reaches(stack, net, f"web-{t}", outside.host_address, 18080, 80)


def test_a_random_host_port_is_chosen_and_listed(net: NetClient, outside: Outside) -> None:
    t = tag()
    publish(net, f"rand-{t}", "bridge", tcp(80))
    ports = net.sandboxes.ListPorts(spb.ListPortsRequest(sandbox=f"rand-{t}")).ports
    assert len(ports) == 1 and 32768 <= ports[0].host_port < 61000
    assert reaches(outside, net, f"rand-{t}", outside.host_address, ports[0].host_port, 80)


def test_a_taken_host_port_is_refused_and_nothing_is_left(net: NetClient) -> None:
    t = tag()
    publish(net, f"first-{t}", "bridge", tcp(80, 18181))
    with pytest.raises(grpc.RpcError) as taken:
        publish(net, f"second-{t}", "bridge", tcp(81, 18181))
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "port is already allocated" in taken.value.details()
    names = {
        s.name for s in net.sandboxes.ListSandboxes(spb.ListSandboxesRequest(all=True)).sandboxes
    }
    assert f"second-{t}" not in names


def test_stop_unpublishes_and_start_publishes_again(net: NetClient, outside: Outside) -> None:
    t = tag()
    publish(net, f"cycle-{t}", "bridge", tcp(80, 18282))
    net.sandboxes.StopSandbox(spb.StopSandboxRequest(sandbox=f"cycle-{t}"))
    result = outside.run(sys.executable, "-c", CONNECT, outside.host_address, "18282")
    assert result.returncode != 0
    net.sandboxes.StartSandbox(spb.StartSandboxRequest(sandbox=f"cycle-{t}"))
    assert reaches(outside, net, f"cycle-{t}", outside.host_address, 18282, 80)


def test_host_binding_ipv4_limits_where_ports_are_published(
    net: NetClient, stack: Stack, outside: Outside
) -> None:
    t = tag()
    net.create_network(
        f"bound-{t}", options={"com.docker.network.bridge.host_binding_ipv4": outside.host_address}
    )
    box = publish(net, f"bound-{t}", f"bound-{t}", tcp(80, 18383))
    assert box.ports[0].host_ip == outside.host_address
    gateway = net.networks.InspectNetwork(npb.InspectNetworkRequest(network=f"bound-{t}"))
    other_address = gateway.network.ipam.config[0].gateway  # another address of the host
    assert reaches(outside, net, f"bound-{t}", outside.host_address, 18383, 80)
    refused = stack.host.run(sys.executable, "-c", CONNECT, other_address, "18383")
    assert refused.returncode != 0


def test_udp_and_publish_all_exposed_ports(net: NetClient, outside: Outside) -> None:
    t = tag()
    box = net.sandboxes.CreateSandbox(
        spb.CreateSandboxRequest(
            name=f"udp-{t}",
            networks=[spb.NetworkAttachment(network="bridge")],
            start=True,
            port_bindings=[
                spb.PortBinding(container_port=53, host_port=18553, protocol=spb.PROTOCOL_UDP)
            ],
            publish_all=True,
            exposed_ports=[spb.ExposedPort(container_port=8080, protocol=spb.PROTOCOL_TCP)],
        )
    ).sandbox
    published = {(p.container_port, p.protocol): p.host_port for p in box.ports}
    assert published[(53, spb.PROTOCOL_UDP)] == 18553
    assert 32768 <= published[(8080, spb.PROTOCOL_TCP)] < 61000
    echo = (
        "import socket\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',53))\n"
        "s.settimeout(10); data,peer=s.recvfrom(64); s.sendto(data.upper(),peer)\n"
    )
    ask = (
        "import socket,sys,time\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.3)\n"
        "for _ in range(20):\n"
        "    s.sendto(b'ping',(sys.argv[1],18553))\n"
        "    try: print(s.recvfrom(64)[0].decode()); sys.exit(0)\n"
        "    except OSError: pass\n"
        "sys.exit(1)\n"
    )
    server = threading.Thread(target=net.exec, args=(f"udp-{t}", [sys.executable, "-c", echo], 20))
    server.start()
    answer = outside.run(sys.executable, "-c", ask, outside.host_address)
    server.join(timeout=25)
    assert answer.stdout.strip() == "PING"
    assert reaches(
        outside, net, f"udp-{t}", outside.host_address, published[(8080, spb.PROTOCOL_TCP)], 8080
    )
