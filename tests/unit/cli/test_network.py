"""`berth network` against an in-process fake NetworkService: requests sent, output printed."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from typer.testing import CliRunner

from berth.api.network.v1 import network_service_pb2 as pb
from berth.api.network.v1 import network_service_pb2_grpc as pb_grpc
from berth.cli import network
from berth.cli.connection import Target
from berth.cli.context import connect, connection
from berth.cli.errors import CliError

NET_ID = "06a62f1c73c4e3107c0f555b7a5f163309827bfbbf999840166065a8f35455a8"
SANDBOX_ID = "90e1f3ec71caf82ae776a827e0712a68a110a3f175954e5bd4222fd142ac9428"


def make_network(name: str, net_id: str = NET_ID, **fields: object) -> pb.Network:
    created = Timestamp(seconds=1700000000, nanos=123400000)
    base = pb.Network(
        name=name,
        id=net_id,
        created_time=created,
        scope=pb.SCOPE_LOCAL,
        driver=pb.DRIVER_BRIDGE,
        enable_ipv4=True,
        ipam=pb.IPAM(
            driver="default",
            config=[pb.IPAMConfig(subnet="172.25.0.0/16", gateway="172.25.0.1")],
        ),
    )
    base.MergeFrom(pb.Network(**fields))  # type: ignore[arg-type]
    return base


class FakeNetworkService(pb_grpc.NetworkServiceServicer):
    """Records every request; answers from `networks`; fails names listed in `missing`."""

    def __init__(self) -> None:
        self.requests: list[object] = []
        self.networks: dict[str, pb.Network] = {}
        self.missing: set[str] = set()
        self.warnings: list[str] = []
        self.pruned: list[str] = []

    def _get(self, name: str, context: grpc.ServicerContext) -> pb.Network:
        if name in self.missing or name not in self.networks:
            context.abort(grpc.StatusCode.NOT_FOUND, f"network {name} not found")
        return self.networks[name]

    def CreateNetwork(self, request, context):
        self.requests.append(request)
        created = make_network(request.name, net_id="ab" * 32)
        return pb.CreateNetworkResponse(network=created, warnings=self.warnings)

    def InspectNetwork(self, request, context):
        self.requests.append(request)
        return pb.InspectNetworkResponse(network=self._get(request.network, context))

    def ListNetworks(self, request, context):
        self.requests.append(request)
        return pb.ListNetworksResponse(networks=list(self.networks.values()))

    def RemoveNetwork(self, request, context):
        self.requests.append(request)
        for name in request.networks:
            if name in self.missing:
                context.abort(grpc.StatusCode.NOT_FOUND, f"network {name} not found")
        return pb.RemoveNetworkResponse(removed_networks=request.networks)

    def PruneNetworks(self, request, context):
        self.requests.append(request)
        return pb.PruneNetworksResponse(removed_networks=self.pruned)

    def ConnectNetwork(self, request, context):
        self.requests.append(request)
        if request.network in self.missing:
            context.abort(grpc.StatusCode.NOT_FOUND, f"network {request.network} not found")
        return pb.ConnectNetworkResponse()

    def DisconnectNetwork(self, request, context):
        self.requests.append(request)
        return pb.DisconnectNetworkResponse()


@pytest.fixture
def fake() -> Iterator[FakeNetworkService]:
    servicer = FakeNetworkService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_NetworkServiceServicer_to_server(servicer, server)
    folder = Path(tempfile.mkdtemp(prefix="berth-cli-"))  # short: unix socket paths are short
    socket = folder / "gw.sock"
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    connect(Target(host=f"unix://{socket}"))
    try:
        yield servicer
    finally:
        connection().close()
        server.stop(None)
        shutil.rmtree(folder, ignore_errors=True)


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(network.app, list(args), input=input)


# create


def test_create_groups_ipam_flags_like_docker(fake: FakeNetworkService) -> None:
    result = run(
        "create", "-d", "overlay",
        "--subnet=192.168.0.0/16", "--subnet=192.170.0.0/16",
        "--gateway=192.168.0.100", "--gateway=192.170.0.100",
        "--ip-range=192.168.1.0/24",
        "--aux-address=my-router=192.168.1.5", "--aux-address", "my-switch=192.168.1.6",
        "--aux-address=my-printer=192.170.1.5", "--aux-address=my-nas=192.170.1.6",
        "my-multihost-network",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "ab" * 32 + "\n"
    (request,) = fake.requests
    assert request.name == "my-multihost-network"
    assert request.driver == pb.DRIVER_OVERLAY
    first, second = request.ipam.config
    assert first.subnet == "192.168.0.0/16"
    assert first.gateway == "192.168.0.100"
    assert first.ip_range == "192.168.1.0/24"
    assert dict(first.aux_addresses) == {"my-router": "192.168.1.5", "my-switch": "192.168.1.6"}
    assert second.subnet == "192.170.0.0/16"
    assert second.gateway == "192.170.0.100"
    assert second.ip_range == ""
    assert dict(second.aux_addresses) == {"my-printer": "192.170.1.5", "my-nas": "192.170.1.6"}
    assert not request.HasField("ipv4")


def test_create_every_other_flag(fake: FakeNetworkService) -> None:
    result = run(
        "create", "--driver", "bridge", "--ipv6", "--subnet", "2001:db8:1234::/64",
        "--internal", "--attachable", "--label", "env=prod", "--label", "team",
        "-o", "com.docker.network.bridge.name=br-test",
        "--opt", "com.docker.network.driver.mtu=1400",
        "--ipam-driver", "default", "--ipam-opt", "a=b", "--scope", "local", "net1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (request,) = fake.requests
    assert request.driver == pb.DRIVER_BRIDGE
    assert request.ipv6 and request.internal and request.attachable
    assert request.ipam.config[0].subnet == "2001:db8:1234::/64"
    assert dict(request.labels) == {"env": "prod", "team": ""}
    assert dict(request.options) == {
        "com.docker.network.bridge.name": "br-test",
        "com.docker.network.driver.mtu": "1400",
    }
    assert request.ipam.driver == "default"
    assert dict(request.ipam.options) == {"a": "b"}
    assert request.scope == pb.SCOPE_LOCAL


def test_create_prints_warnings_on_stderr(fake: FakeNetworkService) -> None:
    fake.warnings = ["something to know"]
    result = run("create", "net1")
    assert result.exit_code == 0
    assert result.stderr == "WARNING: something to know\n"
    assert fake.requests[0].driver == pb.DRIVER_BRIDGE


@pytest.mark.parametrize(
    ("args", "ipv4", "ipv6", "internal"),
    [
        (["--ipv6", "--ipv4=false"], False, True, False),
        (["--ipv4=true", "--ipv6=1"], True, True, False),
        (["--ipv4"], True, False, False),
        (["--no-ipv4", "--ipv6"], False, True, False),
        (["--internal=true", "--ipv6=false"], None, False, True),
        (["--internal=false"], None, False, False),
    ],
)
def test_create_go_style_booleans(
    fake: FakeNetworkService, args: list[str], ipv4: bool | None, ipv6: bool, internal: bool
) -> None:
    result = run("create", *args, "v6net")
    assert result.exit_code == 0, result.output
    (request,) = fake.requests
    assert request.name == "v6net"
    assert (request.ipv4 if request.HasField("ipv4") else None) is ipv4
    assert request.ipv6 is ipv6
    assert request.internal is internal


def test_create_bad_boolean_is_a_usage_error(fake: FakeNetworkService) -> None:
    result = run("create", "--ipv4=maybe", "net1")
    assert result.exit_code == 2
    assert "maybe" in result.output
    assert fake.requests == []


def test_create_unknown_driver(fake: FakeNetworkService) -> None:
    result = run("create", "-d", "macvlan", "net1")
    assert isinstance(result.exception, CliError)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("subnets", "gateways", "ranges", "aux", "message"),
    [
        ([], ["10.0.0.1"], [], [], "corresponding subnet"),
        (["10.0.0.0/24"], [], ["10.0.0.0/25", "10.0.1.0/25"], [], "corresponding subnet"),
        (["10.0.0.0/24"], ["10.9.0.1"], [], [], "not in subnet"),
        (["10.0.0.0/24", "10.1.0.0/24"], ["10.1.0.1"], [], [], "not in subnet"),
        (["10.0.0.0/24"], [], ["10.1.0.0/25"], [], "no matching subnet for range"),
        (["10.0.0.0/24"], [], ["10.0.0.0/16"], [], "no matching subnet for range"),
        (["10.0.0.0/24"], [], [], ["r=10.1.0.5"], "no matching subnet for aux-address"),
        (["10.0.0.0/24"], [], [], ["10.0.0.5"], "NAME=IP"),
        (["10.0.0.0/24"], [], [], ["r=not-an-ip"], "invalid IP"),
        (["10.0.0.0/16", "10.0.1.0/24"], [], [], [], "overlapping"),
        (["10.0.0.0/33"], [], [], [], "invalid CIDR"),
        (["10.0.0.0/24", "10.1.0.0/24"], [], ["10.0.0.0/26", "10.0.0.64/26"], [], "multiple"),
        (["10.0.0.0/24"], ["nope"], [], [], "invalid IP"),
    ],
)
def test_ipam_grouping_errors(
    subnets: list[str], gateways: list[str], ranges: list[str], aux: list[str], message: str
) -> None:
    with pytest.raises(CliError, match=message):
        network.build_ipam_configs(subnets, gateways, ranges, aux)


def test_ipam_grouping_mixed_families() -> None:
    configs = network.build_ipam_configs(
        ["172.20.0.0/16", "2001:db8::/64"],
        ["172.20.0.254", "2001:db8::fe"],
        ["2001:db8::/80", "172.20.240.0/20"],
        ["v6host=2001:db8::5", "v4host=172.20.0.5"],
    )
    assert [(c.subnet, c.gateway, c.ip_range, dict(c.aux_addresses)) for c in configs] == [
        ("172.20.0.0/16", "172.20.0.254", "172.20.240.0/20", {"v4host": "172.20.0.5"}),
        ("2001:db8::/64", "2001:db8::fe", "2001:db8::/80", {"v6host": "2001:db8::5"}),
    ]


def test_ipam_grouping_without_subnets_is_empty() -> None:
    assert network.build_ipam_configs([], [], [], []) == []


# connect / disconnect


def test_connect_sends_every_endpoint_option(fake: FakeNetworkService) -> None:
    result = run(
        "connect", "--ip", "172.25.3.3", "--ip6", "2001:db8::33",
        "--alias", "db", "--alias", "mysql", "--link", "container1:c1", "--link", "container5",
        "--link-local-ip", "169.254.10.10", "--gw-priority", "-5",
        "--driver-opt=com.docker.network.endpoint.sysctls="
        "net.ipv4.conf.IFNAME.log_martians=1,net.ipv4.conf.IFNAME.forwarding=0",
        "multi-host-network", "container2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    (request,) = fake.requests
    assert (request.network, request.sandbox) == ("multi-host-network", "container2")
    config = request.endpoint_config
    assert config.ip_address == "172.25.3.3"
    assert config.ipv6_address == "2001:db8::33"
    assert list(config.aliases) == ["db", "mysql"]
    assert [(link.name, link.alias) for link in config.links] == [
        ("container1", "c1"),
        ("container5", ""),
    ]
    assert list(config.link_local_ips) == ["169.254.10.10"]
    assert config.gw_priority == -5
    assert dict(config.driver_opts) == {
        "com.docker.network.endpoint.sysctls": (
            "net.ipv4.conf.IFNAME.log_martians=1,net.ipv4.conf.IFNAME.forwarding=0"
        )
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--ip", "2001:db8::1"],
        ["--ip6", "10.0.0.1"],
        ["--ip", "300.1.1.1"],
        ["--link", "a:b:c"],
        ["--link", ":x"],
        ["--driver-opt", "novalue"],
    ],
)
def test_connect_rejects_bad_values(fake: FakeNetworkService, args: list[str]) -> None:
    result = run("connect", *args, "net", "box")
    assert isinstance(result.exception, CliError)
    assert fake.requests == []


def test_disconnect_force(fake: FakeNetworkService) -> None:
    assert run("disconnect", "-f", "multihost", "redis_db").exit_code == 0
    assert run("disconnect", "isolated_nw", "container3").exit_code == 0
    forced, plain = fake.requests
    assert (forced.network, forced.sandbox, forced.force) == ("multihost", "redis_db", True)
    assert (plain.network, plain.sandbox, plain.force) == ("isolated_nw", "container3", False)


def test_single_call_failure_propagates_the_rpc_error(fake: FakeNetworkService) -> None:
    fake.missing.add("ghost")
    result = run("connect", "ghost", "box")
    assert isinstance(result.exception, grpc.RpcError)  # berth.cli.main prints it, exits 1
    assert result.exception.code() == grpc.StatusCode.NOT_FOUND


def test_inspect_missing_prints_an_empty_array(fake: FakeNetworkService) -> None:
    result = run("inspect", "ghost")
    assert result.exit_code == 1
    assert result.stdout == "[]\n"
    assert result.stderr == "berth: network ghost not found\n"


# inspect


def seed_network() -> pb.Network:
    return make_network(
        "isolated_nw",
        containers={
            SANDBOX_ID: pb.EndpointResource(
                name="container2",
                endpoint_id="11cedac1810e864d6b1589d92da12af66203879ab89f4ccd8c8fdaa9b1c48b1d",
                mac_address="02:42:ac:19:00:02",
                ipv4_address="172.25.0.2/16",
            )
        },
        labels={"b": "2", "a": "1"},
        options={"com.docker.network.bridge.host_binding_ipv4": "172.23.0.1"},
    )


def test_inspect_prints_dockers_shape(fake: FakeNetworkService) -> None:
    fake.networks["isolated_nw"] = seed_network()
    result = run("inspect", "isolated_nw")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('[\n    {\n        "Name": "isolated_nw",\n')
    (data,) = json.loads(result.stdout)
    assert data == {
        "Name": "isolated_nw",
        "Id": NET_ID,
        "Created": "2023-11-14T22:13:20.1234Z",
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv4": True,
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": "172.25.0.0/16", "Gateway": "172.25.0.1"}],
        },
        "Internal": False,
        "Attachable": False,
        "Containers": {
            SANDBOX_ID: {
                "Name": "container2",
                "EndpointID": "11cedac1810e864d6b1589d92da12af66203879ab89f4ccd8c8fdaa9b1c48b1d",
                "MacAddress": "02:42:ac:19:00:02",
                "IPv4Address": "172.25.0.2/16",
                "IPv6Address": "",
            }
        },
        "Options": {"com.docker.network.bridge.host_binding_ipv4": "172.23.0.1"},
        "Labels": {"a": "1", "b": "2"},
    }
    assert list(data["Labels"]) == ["a", "b"]


def test_inspect_ipam_config_every_field_and_overlay_peers(fake: FakeNetworkService) -> None:
    fake.networks["ov"] = make_network(
        "ov",
        driver=pb.DRIVER_OVERLAY,
        scope=pb.SCOPE_GLOBAL,
        ipam=pb.IPAM(
            config=[
                pb.IPAMConfig(
                    subnet="10.1.0.0/16",
                    gateway="10.1.0.1",
                    ip_range="10.1.1.0/24",
                    aux_addresses={"r": "10.1.0.5"},
                )
            ]
        ),
        peers=[
            pb.Peer(
                name="host-b",
                ip_address="192.0.2.2",
                containers={"x" * 64: pb.EndpointResource(name="b1")},
            )
        ],
    )
    result = run("inspect", "-v", "ov")
    assert result.exit_code == 0, result.output
    assert fake.requests[0].verbose is True
    (data,) = json.loads(result.stdout)
    assert (data["Driver"], data["Scope"]) == ("overlay", "global")
    assert data["IPAM"]["Config"][-1] == {
        "Subnet": "10.1.0.0/16",
        "Gateway": "10.1.0.1",
        "IPRange": "10.1.1.0/24",
        "AuxiliaryAddresses": {"r": "10.1.0.5"},
    }
    assert data["Peers"][0]["Name"] == "host-b"
    assert data["Peers"][0]["IP"] == "192.0.2.2"
    assert data["Peers"][0]["Containers"]["x" * 64]["Name"] == "b1"


def test_inspect_several_with_one_missing(fake: FakeNetworkService) -> None:
    fake.networks["a"] = make_network("a")
    fake.networks["b"] = make_network("b", net_id="b" * 64)
    result = run("inspect", "a", "ghost", "b")
    assert result.exit_code == 1
    assert [item["Name"] for item in json.loads(result.stdout)] == ["a", "b"]
    assert result.stderr == "berth: network ghost not found\n"


def test_inspect_formats(fake: FakeNetworkService) -> None:
    fake.networks["a"] = seed_network()
    compact = run("inspect", "--format", "json", "a")
    assert compact.stdout.count("\n") == 1
    assert json.loads(compact.stdout)[0]["Name"] == "isolated_nw"
    template = run("inspect", "-f", "{{.Name}} {{.Id}} {{json .IPAM.Config}}", "a")
    assert template.stdout == (
        f'isolated_nw {NET_ID} [{{"Subnet":"172.25.0.0/16","Gateway":"172.25.0.1"}}]\n'
    )
    more = run("inspect", "-f", '{{index .Labels "a"}}-{{upper .Driver}}-{{.Internal}}', "a")
    assert more.stdout == "1-BRIDGE-false\n"
    bad = run("inspect", "-f", "{{range .Containers}}{{end}}", "a")
    assert isinstance(bad.exception, CliError)


# ls


def three_networks(fake: FakeNetworkService) -> None:
    fake.networks = {
        "bridge": make_network("bridge", net_id="4bb8c9bf4292" + "0" * 52),
        "host": make_network("host", net_id="43575911a2bd" + "1" * 52, driver=pb.DRIVER_HOST),
        "none": make_network("none", net_id="3eb020e70bfd" + "2" * 52, driver=pb.DRIVER_NULL),
        "simple-network": make_network(
            "simple-network", net_id="69568e6336d8" + "3" * 52, labels={"env": "dev"}
        ),
    }


def test_ls_table(fake: FakeNetworkService) -> None:
    three_networks(fake)
    result = run("ls")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "NETWORK ID     NAME             DRIVER    SCOPE",
        "4bb8c9bf4292   bridge           bridge    local",
        "43575911a2bd   host             host      local",
        "3eb020e70bfd   none             null      local",
        "69568e6336d8   simple-network   bridge    local",
    ]
    assert run("list").stdout == result.stdout


def test_ls_quiet_no_trunc_and_filters(fake: FakeNetworkService) -> None:
    three_networks(fake)
    quiet = run("ls", "-q", "-f", "driver=bridge", "--filter", "Label!=env=prod")
    assert quiet.stdout.splitlines()[0] == "4bb8c9bf4292"
    filters = [(f.key, f.value) for f in fake.requests[0].filters]
    assert filters == [("driver", "bridge"), ("label!", "env=prod")]
    full = run("ls", "--no-trunc")
    assert "4bb8c9bf4292" + "0" * 52 in full.stdout
    bad = run("ls", "-f", "driver")
    assert isinstance(bad.exception, CliError)


def test_ls_json_and_templates(fake: FakeNetworkService) -> None:
    three_networks(fake)
    lines = run("ls", "--format", "json").stdout.splitlines()
    first = json.loads(lines[0])
    assert first["ID"] == "4bb8c9bf4292"
    assert first["Name"] == "bridge"
    assert first["Driver"] == "bridge"
    assert first["Scope"] == "local"
    assert first["IPv6"] == "false"
    assert json.loads(lines[3])["Labels"] == "env=dev"
    names = run("ls", "--format", "{{.Name}}").stdout
    assert names == "bridge\nhost\nnone\nsimple-network\n"
    table = run("ls", "--format", "table {{.Name}}\\t{{.Driver}}").stdout.splitlines()
    assert table[0] == "NAME             DRIVER"
    assert table[2] == "host             host"
    plain = run("ls", "--format", "table").stdout
    assert plain == run("ls").stdout


# rm / prune


def test_rm_one_call_per_name_and_reports_each_failure(fake: FakeNetworkService) -> None:
    fake.missing.add("ghost")
    result = run("rm", "a", "ghost", "b")
    assert result.exit_code == 1
    assert result.stdout == "a\nb\n"
    assert result.stderr == "berth: network ghost not found\n"
    assert [list(r.networks) for r in fake.requests] == [["a"], ["ghost"], ["b"]]
    assert run("remove", "-f", "c").exit_code == 0
    assert fake.requests[-1].force is True


def test_rm_force_passes_over_missing_networks_silently(fake: FakeNetworkService) -> None:
    fake.missing.add("ghost")
    result = run("rm", "-f", "ghost", "b")
    assert result.exit_code == 0
    assert result.stdout == "b\n"
    assert result.stderr == ""
    assert [list(r.networks) for r in fake.requests] == [["ghost"], ["b"]]


def test_prune_with_force_skips_the_prompt(fake: FakeNetworkService) -> None:
    fake.pruned = ["n1", "n2"]
    result = run("prune", "-f", "--filter", "until=24h")
    assert result.exit_code == 0
    assert result.stdout == "Deleted Networks:\nn1\nn2\n\n"
    assert [(f.key, f.value) for f in fake.requests[0].filters] == [("until", "24h")]


def test_prune_asks_first(fake: FakeNetworkService) -> None:
    fake.pruned = ["n1"]
    yes = run("prune", input="y\n")
    assert yes.exit_code == 0
    assert yes.stdout.startswith("WARNING! This will remove all custom networks")
    assert "[y/N] Deleted Networks:\nn1\n" in yes.stdout
    no = run("prune", input="n\n")
    assert isinstance(no.exception, CliError)
    eof = run("prune", input="")
    assert isinstance(eof.exception, CliError)
    assert len(fake.requests) == 1


# helpers


def test_human_duration() -> None:
    cases = {
        0.5: "Less than a second",
        1: "1 second",
        59: "59 seconds",
        60: "About a minute",
        3599: "59 minutes",
        3600: "About an hour",
        7200: "2 hours",
        3 * 86400: "3 days",
        20 * 86400: "2 weeks",
        90 * 86400: "3 months",
        800 * 86400: "2 years",
    }
    for seconds, text in cases.items():
        assert network.human_duration(seconds) == text


def test_go_time() -> None:
    assert network.go_time(None) == "0001-01-01T00:00:00Z"
    assert network.go_time(Timestamp(seconds=0)) == "0001-01-01T00:00:00Z"
    assert network.go_time(Timestamp(seconds=1700000000)) == "2023-11-14T22:13:20Z"
    assert network.go_time(Timestamp(seconds=1700000000, nanos=5)) == (
        "2023-11-14T22:13:20.000000005Z"
    )


def test_tabulate_pads_like_tabwriter() -> None:
    assert network.tabulate([["A", "BB", "C"], ["a-long-cell", "b", "c"]]) == [
        "A             BB        C",
        "a-long-cell   b         c",
    ]


def test_double_dash_stops_boolean_rewriting(fake: FakeNetworkService) -> None:
    result = run("create", "--", "--internal=false")
    assert result.exit_code == 0, result.output
    assert fake.requests[0].name == "--internal=false"
