"""`berth sandbox` against an in-process fake SandboxService, and its port-spec parsing."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from typer.testing import CliRunner

from berth.api.network.v1 import resources_pb2 as res
from berth.api.network.v1 import sandbox_service_pb2 as pb
from berth.api.network.v1 import sandbox_service_pb2_grpc as pb_grpc
from berth.cli import sandbox
from berth.cli.connection import Target
from berth.cli.context import connect, connection
from berth.cli.errors import CliError

BOX_ID = "467a7863c3f0277ef8e661b38427737f28099b61fa55622d6c30fb288d88c551"
TCP, UDP = pb.PROTOCOL_TCP, pb.PROTOCOL_UDP


def ago(**delta: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) - timedelta(**delta))
    return stamp


def container3() -> pb.Sandbox:
    """Seed 001's container3: isolated_nw with --ip 172.25.3.3, running, one port."""
    return pb.Sandbox(
        name="container3",
        id=BOX_ID,
        state=pb.SANDBOX_STATE_RUNNING,
        netns_path="/run/netns/container3",
        created_time=ago(minutes=5),
        started_time=ago(minutes=3),
        resolv_conf_path="/etc/netns/container3/resolv.conf",
        endpoints=[
            res.Endpoint(
                network="isolated_nw",
                network_id="1196a4c5af43a21ae38ef34515b6af19236a3fc48122cf585e3f3054d509679b",
                endpoint_id="dffc7ec2915af58cc827d995e6ebdc897342be0420123277103c40ae35579103",
                interface_name="eth0",
                mac_address="02:42:ac:19:03:03",
                ipv4_address="172.25.3.3/16",
                gateway="172.25.0.1",
                static_ip_address="172.25.3.3",
            )
        ],
        port_bindings=[pb.PortBinding(container_port=80, host_port=8080)],
        exposed_ports=[pb.ExposedPort(container_port=53, protocol=UDP)],
        ports=[
            pb.PortBinding(host_ip="0.0.0.0", host_port=8080, container_port=80, protocol=TCP),
            pb.PortBinding(host_ip="::", host_port=8080, container_port=80, protocol=TCP),
        ],
        labels={"app": "web"},
    )


class FakeSandboxService(pb_grpc.SandboxServiceServicer):
    """Records requests; answers from `sandboxes`; names in `missing` are NOT_FOUND."""

    def __init__(self) -> None:
        self.requests: list[object] = []
        self.sandboxes: dict[str, pb.Sandbox] = {}
        self.missing: set[str] = set()
        self.warnings: list[str] = []
        self.exec_chunks: list[pb.ExecSandboxResponse] = []
        self.ports: list[pb.PortBinding] = []

    def _check(self, name: str, context: grpc.ServicerContext) -> None:
        if name in self.missing:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no such sandbox: {name}")

    def CreateSandbox(self, request, context):
        self.requests.append(request)
        return pb.CreateSandboxResponse(
            sandbox=pb.Sandbox(name=request.name, id="cd" * 32), warnings=self.warnings
        )

    def InspectSandbox(self, request, context):
        self.requests.append(request)
        self._check(request.sandbox, context)
        return pb.InspectSandboxResponse(sandbox=self.sandboxes[request.sandbox])

    def ListSandboxes(self, request, context):
        self.requests.append(request)
        return pb.ListSandboxesResponse(sandboxes=list(self.sandboxes.values()))

    def StartSandbox(self, request, context):
        self.requests.append(request)
        self._check(request.sandbox, context)
        return pb.StartSandboxResponse()

    def StopSandbox(self, request, context):
        self.requests.append(request)
        self._check(request.sandbox, context)
        return pb.StopSandboxResponse()

    def RemoveSandbox(self, request, context):
        self.requests.append(request)
        for name in request.sandboxes:
            self._check(name, context)
        return pb.RemoveSandboxResponse(removed_sandboxes=request.sandboxes)

    def ExecSandbox(self, request, context):
        self.requests.append(request)
        self._check(request.sandbox, context)
        yield from self.exec_chunks

    def ListPorts(self, request, context):
        self.requests.append(request)
        return pb.ListPortsResponse(ports=self.ports)


@pytest.fixture
def fake() -> Iterator[FakeSandboxService]:
    servicer = FakeSandboxService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_SandboxServiceServicer_to_server(servicer, server)
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


def run(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(sandbox.app, list(args), input=input)


def bindings(spec: str) -> list[tuple[str, int, int, int]]:
    return [
        (b.host_ip, b.host_port, b.container_port, b.protocol)
        for b in sandbox.parse_port_spec(spec)
    ]


# -p/--publish parsing (the rules of PortBinding in sandbox_service.proto)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", [("", 0, 80, TCP)]),
        ("8080:80", [("", 8080, 80, TCP)]),
        ("127.0.0.1::80/udp", [("127.0.0.1", 0, 80, UDP)]),
        ("[::1]:8080:80", [("::1", 8080, 80, TCP)]),
        ("8000-8001:80-81", [("", 8000, 80, TCP), ("", 8001, 81, TCP)]),
        ("80/tcp", [("", 0, 80, TCP)]),
        ("80/UDP", [("", 0, 80, UDP)]),
        ("80/", [("", 0, 80, TCP)]),
        ("0.0.0.0:8080:80", [("0.0.0.0", 8080, 80, TCP)]),
        ("[::]::53/udp", [("::", 0, 53, UDP)]),
        ("::1:8080:80", [("::1", 8080, 80, TCP)]),
        ("[2001:db8::1]:9000-9001:90-91/udp", [
            ("2001:db8::1", 9000, 90, UDP), ("2001:db8::1", 9001, 91, UDP)
        ]),
        ("127.0.0.1::7000-7002", [
            ("127.0.0.1", 0, 7000, TCP), ("127.0.0.1", 0, 7001, TCP), ("127.0.0.1", 0, 7002, TCP)
        ]),
        ("0:80", [("", 0, 80, TCP)]),
        ("65535:65535", [("", 65535, 65535, TCP)]),
    ],
)  # fmt: skip
def test_publish_specs(spec: str, expected: list[tuple[str, int, int, int]]) -> None:
    assert bindings(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no port specified"),
        ("8080:", "no port specified"),
        ("/tcp", "no port specified"),
        ("abc", "invalid containerPort"),
        ("0", "invalid containerPort"),
        ("65536", "invalid containerPort"),
        ("-80", "invalid containerPort"),
        ("81-80", "invalid containerPort"),
        ("80-", "invalid containerPort"),
        ("x:80", "invalid hostPort"),
        ("70000:80", "invalid hostPort"),
        ("127.0.0.1:80", "invalid hostPort"),
        ("8000-8002:80-81", "invalid ranges"),
        ("8000-8001:80", "invalid hostPort"),
        ("8000:80-81", "invalid ranges"),
        ("300.0.0.1:80:80", "invalid IP address"),
        ("localhost:80:80", "invalid IP address"),
        ("[::1:8080:80", "invalid IP address"),
        ("[nope]:8080:80", "invalid IP address"),
        ("fe80::1%eth0:80:80", "invalid IP address"),
        ("80/sctp", "invalid proto"),
        ("80/tcp/udp", "more than one"),
        ("127.0.0.1:8080:80:90", "invalid IP address"),
    ],
)
def test_publish_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(CliError, match=message):
        sandbox.parse_port_spec(spec)


def test_expose_specs() -> None:
    exposed = [(p.container_port, p.protocol) for p in sandbox.parse_expose("7000-7001/udp")]
    assert exposed == [(7000, UDP), (7001, UDP)]
    assert [(p.container_port, p.protocol) for p in sandbox.parse_expose("80")] == [(80, TCP)]
    for bad in ("", "x", "0", "80/icmp", "2-1"):
        with pytest.raises(CliError):
            sandbox.parse_expose(bad)


# --network


def test_network_long_syntax() -> None:
    attachment = sandbox.parse_network_flag(
        "name=isolated_nw,ip=172.25.3.3,ip6=2001:db8::3,alias=web,alias=www,"
        '"driver-opt=com.docker.network.endpoint.sysctls=net.ipv4.conf.IFNAME.forwarding=0,'
        'net.ipv4.conf.IFNAME.log_martians=1",gw-priority=-2,link-local-ip=169.254.1.1'
    )
    config = attachment.endpoint_config
    assert attachment.network == "isolated_nw"
    assert (config.ip_address, config.ipv6_address) == ("172.25.3.3", "2001:db8::3")
    assert list(config.aliases) == ["web", "www"]
    assert dict(config.driver_opts) == {
        "com.docker.network.endpoint.sysctls": (
            "net.ipv4.conf.IFNAME.forwarding=0,net.ipv4.conf.IFNAME.log_martians=1"
        )
    }
    assert config.gw_priority == -2
    assert list(config.link_local_ips) == ["169.254.1.1"]
    assert sandbox.parse_network_flag("my-net").network == "my-net"
    for bad in ("ip=1.2.3.4", "name=n,colour=red", "name=n,ip=nope", "name=n,mac-address=x"):
        with pytest.raises(CliError):
            sandbox.parse_network_flag(bad)


# create


def test_create_sends_everything(fake: FakeSandboxService) -> None:
    result = run(
        "create", "--network", "isolated_nw", "--net", "name=local_alias,alias=scoped-app",
        "--ip", "172.25.3.3", "--ip6", "2001:db8::33", "--alias", "app",
        "--link", "container5:c5", "-p", "8080:80", "--publish", "127.0.0.1::53/udp",
        "-P", "--expose", "9000-9001", "--netns", "/proc/1234/ns/net", "--hostname", "box",
        "--dns", "192.0.2.53", "--dns-search", "example.com", "--dns-option", "ndots:2",
        "--label", "app=web", "--start", "container4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "cd" * 32 + "\n"
    (request,) = fake.requests
    assert request.name == "container4"
    first, second = request.networks
    assert first.network == "isolated_nw"
    assert first.endpoint_config.ip_address == "172.25.3.3"
    assert first.endpoint_config.ipv6_address == "2001:db8::33"
    assert list(first.endpoint_config.aliases) == ["app"]
    assert [(x.name, x.alias) for x in first.endpoint_config.links] == [("container5", "c5")]
    assert second.network == "local_alias"
    assert list(second.endpoint_config.aliases) == ["scoped-app"]
    assert not second.endpoint_config.ip_address
    assert [
        (b.host_ip, b.host_port, b.container_port, b.protocol) for b in request.port_bindings
    ] == [
        ("", 8080, 80, TCP),
        ("127.0.0.1", 0, 53, UDP),
    ]
    assert request.publish_all is True
    assert [p.container_port for p in request.exposed_ports] == [9000, 9001]
    assert request.netns_path == "/proc/1234/ns/net"
    assert request.hostname == "box"
    assert list(request.dns) == ["192.0.2.53"]
    assert list(request.dns_search) == ["example.com"]
    assert list(request.dns_options) == ["ndots:2"]
    assert dict(request.labels) == {"app": "web"}
    assert request.start is True


def test_create_defaults_and_warnings(fake: FakeSandboxService) -> None:
    fake.warnings = ["Published ports are discarded when using host network mode"]
    result = run("create", "--network", "host", "-p", "80", "web")
    assert result.exit_code == 0, result.output
    assert result.stderr == "WARNING: Published ports are discarded when using host network mode\n"
    (request,) = fake.requests
    assert [n.network for n in request.networks] == ["host"]
    assert request.start is False
    assert run("create", "plain").exit_code == 0
    assert list(fake.requests[-1].networks) == []


def test_create_legacy_flags_without_network_go_to_bridge(fake: FakeSandboxService) -> None:
    assert run("create", "--link", "alpine1", "alpine2").exit_code == 0
    (attachment,) = fake.requests[0].networks
    assert attachment.network == "bridge"
    assert [(x.name, x.alias) for x in attachment.endpoint_config.links] == [("alpine1", "")]


@pytest.mark.parametrize(
    "args",
    [
        ["--network", "name=n,ip=10.0.0.2", "--ip", "10.0.0.3"],
        ["--network", "name=n,alias=a", "--alias", "b"],
        ["-p", "bad"],
        ["--expose", "x"],
        ["--ip", "nope"],
        ["--label", "=x"],
    ],
)
def test_create_rejects(fake: FakeSandboxService, args: list[str]) -> None:
    result = run("create", *args, "box")
    assert isinstance(result.exception, CliError), result.output
    assert fake.requests == []


# ls / inspect


def test_ls_table_and_options(fake: FakeSandboxService) -> None:
    fake.sandboxes = {
        "container3": container3(),
        "idle": pb.Sandbox(
            name="idle", id="e" * 64, state=pb.SANDBOX_STATE_CREATED, created_time=ago(hours=3)
        ),
    }
    result = run("ls", "-a", "--filter", "status=running")
    assert result.exit_code == 0, result.output
    request = fake.requests[0]
    assert request.all is True
    assert [(f.key, f.value) for f in request.filters] == [("status", "running")]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SANDBOX", "ID", "CREATED", "STATUS", "PORTS", "NETWORKS", "NAMES"]
    assert lines[1].startswith("467a7863c3f0   5 minutes ago   Up 3 minutes   ")
    assert "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 53/udp" in lines[1]
    assert lines[1].endswith("isolated_nw   container3")
    assert lines[2].startswith("eeeeeeeeeeee   3 hours ago     Created")
    assert lines[2].endswith("idle")
    assert run("ls").stdout.count("\n") == 3
    assert fake.requests[-1].all is False

    assert run("ls", "-q").stdout == "467a7863c3f0\neeeeeeeeeeee\n"
    assert run("ls", "-q", "--no-trunc").stdout.splitlines()[0] == BOX_ID
    row = json.loads(run("ls", "--format", "json").stdout.splitlines()[0])
    assert row["ID"] == "467a7863c3f0"
    assert row["Names"] == "container3"
    assert row["State"] == "running"
    assert row["Networks"] == "isolated_nw"
    assert row["Labels"] == "app=web"
    assert run("ls", "--format", "{{.Names}}:{{.State}}").stdout == (
        "container3:running\nidle:created\n"
    )


def test_inspect_shape(fake: FakeSandboxService) -> None:
    fake.sandboxes["container3"] = container3()
    result = run("inspect", "container3")
    assert result.exit_code == 0, result.output
    (data,) = json.loads(result.stdout)
    assert data["Id"] == BOX_ID
    assert data["Name"] == "container3"
    assert data["State"]["Status"] == "running"
    assert data["State"]["Running"] is True
    assert data["ResolvConfPath"] == "/etc/netns/container3/resolv.conf"
    assert data["Config"]["ExposedPorts"] == {"53/udp": {}}
    assert data["Config"]["Labels"] == {"app": "web"}
    assert data["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert data["NetworkSettings"]["SandboxKey"] == "/run/netns/container3"
    assert data["NetworkSettings"]["Ports"] == {
        "53/udp": None,
        "80/tcp": [
            {"HostIp": "0.0.0.0", "HostPort": "8080"},
            {"HostIp": "::", "HostPort": "8080"},
        ],
    }
    endpoint = data["NetworkSettings"]["Networks"]["isolated_nw"]
    assert endpoint["IPAMConfig"] == {"IPv4Address": "172.25.3.3"}
    assert endpoint["IPAddress"] == "172.25.3.3"
    assert endpoint["IPPrefixLen"] == 16
    assert endpoint["Gateway"] == "172.25.0.1"
    assert endpoint["GlobalIPv6Address"] == ""
    assert endpoint["GlobalIPv6PrefixLen"] == 0
    assert endpoint["MacAddress"] == "02:42:ac:19:03:03"
    assert endpoint["InterfaceName"] == "eth0"

    seed = run("inspect", "--format", "{{json .NetworkSettings.Networks}}", "container3")
    assert json.loads(seed.stdout)["isolated_nw"]["IPAddress"] == "172.25.3.3"


def test_inspect_missing(fake: FakeSandboxService) -> None:
    fake.missing.add("ghost")
    fake.sandboxes["container3"] = container3()
    result = run("inspect", "ghost", "container3")
    assert result.exit_code == 1
    assert [item["Name"] for item in json.loads(result.stdout)] == ["container3"]
    assert result.stderr == "berth: no such sandbox: ghost\n"


# start / stop / rm


@pytest.mark.parametrize("verb", ["start", "stop", "rm", "remove"])
def test_lifecycle_verbs_one_call_per_name(fake: FakeSandboxService, verb: str) -> None:
    fake.missing.add("ghost")
    result = run(verb, "a", "ghost", "b")
    assert result.exit_code == 1
    assert result.stdout == "a\nb\n"
    assert result.stderr == "berth: no such sandbox: ghost\n"
    assert len(fake.requests) == 3


def test_rm_force(fake: FakeSandboxService) -> None:
    assert run("rm", "-f", "a").exit_code == 0
    (request,) = fake.requests
    assert list(request.sandboxes) == ["a"]
    assert request.force is True


# exec


def test_exec_streams_and_exits_with_the_code(fake: FakeSandboxService) -> None:
    fake.exec_chunks = [
        pb.ExecSandboxResponse(stdout=b"hello "),
        pb.ExecSandboxResponse(stderr=b"oops\n"),
        pb.ExecSandboxResponse(stdout=b"world\n"),
        pb.ExecSandboxResponse(exit_code=3),
    ]
    result = run("exec", "-e", "A=1", "-w", "/tmp", "box", "--", "sh", "-c", "echo hi")
    assert result.exit_code == 3
    assert result.stdout == "hello world\n"
    assert result.stderr == "oops\n"
    (request,) = fake.requests
    assert request.sandbox == "box"
    assert list(request.argv) == ["sh", "-c", "echo hi"]
    assert list(request.env) == ["A=1"]
    assert request.workdir == "/tmp"
    assert request.stdin == b""


def test_exec_without_double_dash_and_with_stdin(
    fake: FakeSandboxService, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.exec_chunks = [pb.ExecSandboxResponse(stdout=b"ok", exit_code=0)]
    monkeypatch.setenv("FROM_SHELL", "yes")
    monkeypatch.delenv("UNSET_THING", raising=False)
    result = run(
        "exec", "-i", "-e", "FROM_SHELL", "-e", "UNSET_THING", "box", "ip", "-br", "-e", "addr",
        input=b"payload\x00bytes",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok"
    (request,) = fake.requests
    assert list(request.argv) == ["ip", "-br", "-e", "addr"]
    assert list(request.env) == ["FROM_SHELL=yes"]
    assert request.stdin == b"payload\x00bytes"


def test_exec_errors(fake: FakeSandboxService) -> None:
    fake.exec_chunks = [pb.ExecSandboxResponse(stdout=b"partial")]
    assert isinstance(run("exec", "box", "true").exception, CliError)  # no exit status
    assert isinstance(run("exec", "box", "--").exception, CliError)  # no command
    assert isinstance(run("exec", "-t", "box", "sh").exception, CliError)
    fake.missing.add("ghost")
    assert isinstance(run("exec", "ghost", "true").exception, grpc.RpcError)


# port


def test_port_lists_like_docker(fake: FakeSandboxService) -> None:
    fake.ports = [
        pb.PortBinding(host_ip="0.0.0.0", host_port=8080, container_port=80, protocol=TCP),
        pb.PortBinding(host_ip="::", host_port=8080, container_port=80, protocol=TCP),
        pb.PortBinding(host_ip="127.0.0.1", host_port=5353, container_port=53, protocol=UDP),
    ]
    result = run("port", "web")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n53/udp -> 127.0.0.1:5353\n"
    )
    assert run("port", "web", "80/tcp").stdout == "0.0.0.0:8080\n[::]:8080\n127.0.0.1:5353\n"
    port_request = fake.requests[-1]
    assert (port_request.container_port, port_request.protocol) == (80, TCP)
    run("port", "web", "53")
    assert (fake.requests[-1].container_port, fake.requests[-1].protocol) == (53, 0)


def test_port_errors(fake: FakeSandboxService) -> None:
    assert isinstance(run("port", "web", "80").exception, CliError)  # nothing published
    assert isinstance(run("port", "web", "http").exception, CliError)
    assert isinstance(run("port", "web", "80/sctp").exception, CliError)
