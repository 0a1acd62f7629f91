"""User-defined bridge networks with real sandboxes and real traffic (seeds 001 and 003)."""

from __future__ import annotations

import grpc
import pytest

from berth.api.network.v1 import network_service_pb2 as npb
from berth.api.network.v1 import resources_pb2 as rpb
from berth.api.network.v1 import sandbox_service_pb2 as spb
from tests.integration.network.netclient import NetClient, tag
from tests.support.stack import Stack


def links_in_host(stack: Stack) -> set[str]:
    listing = stack.host.run("ip", "-o", "link", "show").stdout
    return {line.split(": ")[1].split("@")[0] for line in listing.splitlines()}


def test_seed_003_alpine_isolation(net: NetClient) -> None:
    """alpine1/2 on a user-defined network, alpine3 on the default bridge, alpine4 on both."""
    t = tag()
    net.create_network(f"alpine-net-{t}")
    a1, a2, a3, a4 = (f"alpine{i}-{t}" for i in range(1, 5))
    net.sandbox(a1, f"alpine-net-{t}")
    net.sandbox(a2, f"alpine-net-{t}")
    net.sandbox(a3, "bridge")
    net.sandbox(a4, f"alpine-net-{t}", "bridge")
    ip1, ip2 = net.address(a1, f"alpine-net-{t}"), net.address(a2, f"alpine-net-{t}")
    ip3 = net.address(a3, "bridge")
    assert net.pings(a1, ip2)
    assert net.tcp_reaches(a1, a2, ip2)
    assert net.ping_blocked(a1, ip3), "different networks must not reach each other"
    assert not net.tcp_reaches(a3, a1, ip1)
    assert net.pings(a4, ip1) and net.pings(a4, ip3), "a sandbox on two networks reaches both"
    a4_box = net.sandboxes.InspectSandbox(spb.InspectSandboxRequest(sandbox=a4)).sandbox
    assert sorted(e.interface_name for e in a4_box.endpoints) == ["eth0", "eth1"]


def test_inspect_shows_ipam_and_connected_sandboxes(net: NetClient) -> None:
    t = tag()
    created = net.create_network(
        f"isolated_nw-{t}",
        ipam=npb.IPAM(
            config=[
                npb.IPAMConfig(
                    subnet="10.25.0.0/16", ip_range="10.25.3.0/24", gateway="10.25.0.254"
                )
            ]
        ),
        labels={"team": "blue"},
    )
    assert created.ipam.config[0].gateway == "10.25.0.254"
    net.sandbox(f"container2-{t}", f"isolated_nw-{t}")
    net.sandbox(f"container3-{t}", f"isolated_nw-{t}", ip="10.25.3.3")
    inspected = net.networks.InspectNetwork(
        npb.InspectNetworkRequest(network=f"isolated_nw-{t}")
    ).network
    members = {c.name: c.ipv4_address for c in inspected.containers.values()}
    assert members[f"container3-{t}"] == "10.25.3.3/16"
    assert members[f"container2-{t}"].startswith("10.25.3.")
    assert inspected.labels["team"] == "blue"
    assert inspected.driver == npb.DRIVER_BRIDGE and inspected.scope == npb.SCOPE_LOCAL


def test_overlapping_subnet_and_taken_address_are_refused(net: NetClient) -> None:
    t = tag()
    net.create_network(f"first-{t}", ipam=npb.IPAM(config=[npb.IPAMConfig(subnet="10.77.0.0/16")]))
    with pytest.raises(grpc.RpcError) as overlap:
        net.create_network(
            f"second-{t}", ipam=npb.IPAM(config=[npb.IPAMConfig(subnet="10.77.5.0/24")])
        )
    assert overlap.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    net.sandbox(f"one-{t}", f"first-{t}", ip="10.77.0.9")
    with pytest.raises(grpc.RpcError) as taken:
        net.sandbox(f"two-{t}", f"first-{t}", ip="10.77.0.9")
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    listed = net.sandboxes.ListSandboxes(spb.ListSandboxesRequest(all=True)).sandboxes
    assert f"two-{t}" not in {s.name for s in listed}, "a failed create leaves no sandbox"


def test_bad_input_leaves_nothing_behind(net: NetClient, stack: Stack) -> None:
    t = tag()
    before = links_in_host(stack)
    with pytest.raises(grpc.RpcError) as bad_option:
        net.create_network(f"bad-{t}", options={"com.docker.network.driver.mtu": "huge"})
    assert bad_option.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as bad_name:
        net.create_network("bad;name")
    assert bad_name.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    net.create_network(f"good-{t}", ipam=npb.IPAM(config=[npb.IPAMConfig(subnet="10.78.0.0/24")]))
    net.sandbox(f"box-{t}", f"good-{t}")
    after_create = links_in_host(stack)
    with pytest.raises(grpc.RpcError) as outside:
        net.networks.ConnectNetwork(
            npb.ConnectNetworkRequest(
                network="bridge",
                sandbox=f"box-{t}",
                endpoint_config=rpb.EndpointConfig(ip_address="10.78.0.5"),
            )
        )
    assert outside.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert links_in_host(stack) == after_create, "a failed connect leaves no veth"
    names = {n.name for n in net.networks.ListNetworks(npb.ListNetworksRequest()).networks}
    assert f"bad-{t}" not in names
    assert len(after_create - before) == 2  # the new bridge and one veth


def test_rm_refused_while_attached_then_works(net: NetClient, stack: Stack) -> None:
    t = tag()
    network = net.create_network(f"busy-{t}")
    net.sandbox(f"user-{t}", f"busy-{t}")
    with pytest.raises(grpc.RpcError) as busy:
        net.networks.RemoveNetwork(npb.RemoveNetworkRequest(networks=[f"busy-{t}"]))
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "active endpoints" in busy.value.details()
    net.networks.DisconnectNetwork(
        npb.DisconnectNetworkRequest(network=f"busy-{t}", sandbox=f"user-{t}")
    )
    net.networks.RemoveNetwork(npb.RemoveNetworkRequest(networks=[f"busy-{t}"]))
    assert f"br-{network.id[:12]}" not in links_in_host(stack)


def test_stop_frees_addresses_and_start_reapplies_the_static_one(net: NetClient) -> None:
    t = tag()
    net.create_network(f"life-{t}", ipam=npb.IPAM(config=[npb.IPAMConfig(subnet="10.79.0.0/24")]))
    net.sandbox(f"fixed-{t}", f"life-{t}", ip="10.79.0.50")
    net.sandbox(f"peer-{t}", f"life-{t}")
    net.sandboxes.StopSandbox(spb.StopSandboxRequest(sandbox=f"fixed-{t}"))
    assert net.ping_blocked(f"peer-{t}", "10.79.0.50")
    net.sandboxes.StartSandbox(spb.StartSandboxRequest(sandbox=f"fixed-{t}"))
    assert net.address(f"fixed-{t}", f"life-{t}") == "10.79.0.50"
    assert net.pings(f"peer-{t}", "10.79.0.50")
    net.sandboxes.StopSandbox(spb.StopSandboxRequest(sandbox=f"fixed-{t}"))
    net.sandbox(f"thief-{t}", f"life-{t}", ip="10.79.0.50")
    with pytest.raises(grpc.RpcError) as taken:
        net.sandboxes.StartSandbox(spb.StartSandboxRequest(sandbox=f"fixed-{t}"))
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    stopped = net.sandboxes.InspectSandbox(spb.InspectSandboxRequest(sandbox=f"fixed-{t}"))
    assert stopped.sandbox.state == spb.SANDBOX_STATE_STOPPED


def test_internal_network_has_no_way_out(net: NetClient) -> None:
    t = tag()
    net.create_network(f"inside-{t}", internal=True)
    net.sandbox(f"secret-{t}", f"inside-{t}")
    net.sandbox(f"other-{t}", "bridge")
    assert net.ping_blocked(f"secret-{t}", net.address(f"other-{t}", "bridge"))
    route = net.exec(f"secret-{t}", ["ip", "route"]).stdout
    assert "default" not in route


def test_exec_streams_output_and_exit_code(net: NetClient) -> None:
    t = tag()
    net.sandbox(f"shell-{t}", "bridge")
    result = net.exec(f"shell-{t}", ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    interfaces = net.exec(f"shell-{t}", ["ip", "-o", "addr"]).stdout
    assert "eth0" in interfaces and net.address(f"shell-{t}", "bridge") in interfaces


def test_ipv6_networks_get_a_ula_subnet_and_ipv6_only_works(net: NetClient) -> None:
    t = tag()
    dual = net.create_network(f"dual-{t}", ipv6=True)
    subnets = [c.subnet for c in dual.ipam.config]
    assert any(s.startswith("fd") and s.endswith("/64") for s in subnets), subnets
    net.sandbox(f"six-a-{t}", f"dual-{t}")
    net.sandbox(f"six-b-{t}", f"dual-{t}")
    box = net.sandboxes.InspectSandbox(spb.InspectSandboxRequest(sandbox=f"six-b-{t}")).sandbox
    six = box.endpoints[0].ipv6_address.split("/")[0]
    assert six.startswith("fd")
    assert net.pings(f"six-a-{t}", six)
    only = net.create_network(
        f"v6only-{t}",
        ipv6=True,
        ipv4=False,
        ipam=npb.IPAM(config=[npb.IPAMConfig(subnet="fd42:7:7::/64")]),
    )
    assert [c.subnet for c in only.ipam.config] == ["fd42:7:7::/64"]
    net.sandbox(f"only-{t}", f"v6only-{t}")
    alone = net.sandboxes.InspectSandbox(spb.InspectSandboxRequest(sandbox=f"only-{t}")).sandbox
    assert alone.endpoints[0].ipv4_address == ""
    assert alone.endpoints[0].ipv6_address.startswith("fd42:7:7::")
