"""`berth sandbox`: the network namespaces that play the role of Docker's containers.

create is `docker create` (or `docker run -d` with `--start`) reduced to networking, with
Docker's `--network`, `--ip`, `--alias`, `--link`, `-p`, `-P`, `--expose`, `--dns...`
flags; ls is `docker ps`, inspect `docker inspect`, exec `docker exec`, port `docker port`.
"""

from __future__ import annotations

import csv
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from berth.api.network.v1 import resources_pb2
from berth.api.network.v1 import sandbox_service_pb2 as pb
from berth.api.network.v1 import sandbox_service_pb2_grpc as pb_grpc
from berth.cli.context import connection
from berth.cli.errors import CliError
from berth.cli.network import (
    DockerCommand,
    check_ip,
    endpoint_config,
    enum_text,
    for_each,
    go_time,
    go_time_string,
    inspect_each,
    new_app,
    parse_filters,
    parse_map,
    print_formatted,
    short_id,
    since,
    write_lines,
)
from berth.cli.network import (
    warn as print_warnings,
)

app = new_app("Manage sandboxes (network namespaces in the role of containers)")

StrList = list[str] | None

PROTOCOLS = {"tcp": pb.PROTOCOL_TCP, "udp": pb.PROTOCOL_UDP}
LS_HEADERS = {
    "ID": "SANDBOX ID",
    "Names": "NAMES",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Status": "STATUS",
    "State": "STATE",
    "Ports": "PORTS",
    "Networks": "NETWORKS",
    "Labels": "LABELS",
    "Netns": "NETNS",
}
LS_COLUMNS = ("ID", "RunningFor", "Status", "Ports", "Networks", "Names")


def stub() -> pb_grpc.SandboxServiceStub:
    return connection().stub(pb_grpc.SandboxServiceStub)


# --------------------------------------------------------------------------------------
# Port specs: -p/--publish [HOSTIP:][HOSTPORT:]CTRPORT[/tcp|udp], --expose PORT[/PROTO]
# --------------------------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]+")


def parse_port_range(text: str) -> tuple[int, int]:
    """`80` or `8000-8010` (Docker's nat.ParsePortRange); ValueError when malformed."""
    if not text:
        raise ValueError("empty string specified for ports")
    start_text, dash, end_text = text.partition("-")
    if not dash:
        end_text = start_text
    if not _DIGITS.fullmatch(start_text) or not _DIGITS.fullmatch(end_text):
        raise ValueError(text)
    start, end = int(start_text), int(end_text)
    if start > 65535 or end > 65535 or end < start:
        raise ValueError(text)
    return start, end


def split_proto(text: str) -> tuple[str, int]:
    """`PORT[/PROTO]` -> (PORT, protocol enum); tcp when no protocol is given."""
    port, slash, proto = text.partition("/")
    if "/" in proto:
        raise CliError(f"invalid port spec {text!r}: more than one '/'")
    name = proto.lower() if slash and proto else "tcp"
    if name not in PROTOCOLS:
        raise CliError(f"invalid proto: {proto} (berth publishes tcp and udp)")
    return port, PROTOCOLS[name]


def parse_port_spec(spec: str) -> list[pb.PortBinding]:
    """One `-p` argument as PortBindings, one per port of a range.

    80                 -> {container_port: 80}
    8080:80            -> {host_port: 8080, container_port: 80}
    127.0.0.1::80/udp  -> {host_ip: "127.0.0.1", container_port: 80, protocol: UDP}
    [::1]:8080:80      -> {host_ip: "::1", host_port: 8080, container_port: 80}
    8000-8001:80-81    -> two bindings, 8000->80 and 8001->81
    """
    raw, protocol = split_proto(spec)
    parts = raw.split(":")
    container_text = parts[-1]
    host_ip, host_text = "", ""
    if len(parts) == 2:
        host_text = parts[0]
    elif len(parts) >= 3:
        host_ip, host_text = ":".join(parts[:-2]), parts[-2]

    if host_ip.startswith("["):
        if not host_ip.endswith("]"):
            raise CliError(f"invalid IP address: {host_ip} (missing ']')")
        host_ip = host_ip[1:-1]
    if host_ip:
        try:
            if "%" in host_ip:
                raise ValueError(host_ip)
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise CliError(f"invalid IP address: {host_ip}") from None
    if not container_text:
        raise CliError(f"no port specified: {spec}<empty>")
    try:
        start, end = parse_port_range(container_text)
    except ValueError:
        raise CliError(f"invalid containerPort: {container_text}") from None
    if start == 0:
        raise CliError(f"invalid containerPort: {container_text} (ports are 1-65535)")
    host_start = host_end = 0
    if host_text:
        try:
            host_start, host_end = parse_port_range(host_text)
        except ValueError:
            raise CliError(f"invalid hostPort: {host_text}") from None
        if host_end - host_start != end - start:
            if end != start:
                raise CliError(
                    "invalid ranges specified for container and host Ports: "
                    f"{container_text} and {host_text}"
                )
            raise CliError(
                f"invalid hostPort: {host_text} (a host port range needs a container port "
                "range of the same size)"
            )
    return [
        pb.PortBinding(
            host_ip=host_ip,
            host_port=host_start + offset if host_text else 0,
            container_port=start + offset,
            protocol=protocol,
        )
        for offset in range(end - start + 1)
    ]


def parse_expose(spec: str) -> list[pb.ExposedPort]:
    """One `--expose PORT[-PORT][/PROTO]` as ExposedPorts, one per port."""
    port, protocol = split_proto(spec)
    try:
        start, end = parse_port_range(port)
    except ValueError:
        raise CliError(f"invalid range format for --expose: {spec}") from None
    if start == 0:
        raise CliError(f"invalid range format for --expose: {spec} (ports are 1-65535)")
    return [pb.ExposedPort(container_port=p, protocol=protocol) for p in range(start, end + 1)]


# --------------------------------------------------------------------------------------
# --network NET, or the long form name=NET,alias=A,ip=...,driver-opt=K=V,gw-priority=N
# --------------------------------------------------------------------------------------

_LONG_SYNTAX = re.compile(r"\w+=\w+(,\w+=\w+)*")


def parse_network_flag(value: str) -> pb.NetworkAttachment:
    """One `--network` argument, in Docker's short or long (CSV) form."""
    if not _LONG_SYNTAX.search(value):
        return pb.NetworkAttachment(network=value)
    try:
        fields = next(csv.reader([value]))
    except (csv.Error, StopIteration):
        raise CliError(f"invalid --network {value!r}") from None
    attachment = pb.NetworkAttachment()
    config = attachment.endpoint_config
    for field in fields:
        key, eq, val = field.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise CliError(f"invalid field {field} in --network {value!r}")
        if key == "name":
            attachment.network = val
        elif key == "alias":
            config.aliases.append(val)
        elif key == "ip":
            config.ip_address = check_ip(val, "ip", 4)
        elif key == "ip6":
            config.ipv6_address = check_ip(val, "ip6", 6)
        elif key == "link-local-ip":
            config.link_local_ips.append(check_ip(val, "link-local-ip"))
        elif key == "driver-opt":
            opt_key, opt_eq, opt_val = val.partition("=")
            if not opt_eq or not opt_key.strip():
                raise CliError("invalid key value pair format in driver options")
            config.driver_opts[opt_key.strip().lower()] = opt_val
        elif key == "gw-priority":
            try:
                config.gw_priority = int(val)
            except ValueError:
                raise CliError(f"invalid gw-priority {val!r} in --network {value!r}") from None
        elif key == "mac-address":
            raise CliError("mac-address is not supported by berth")
        else:
            raise CliError(f"invalid field key {key} in --network {value!r}")
    if not attachment.network:
        raise CliError("network name/id is not specified")
    return attachment


def build_attachments(
    networks: Sequence[str],
    ip: str | None,
    ip6: str | None,
    aliases: Sequence[str],
    links: Sequence[str],
    link_local_ips: Sequence[str],
) -> list[pb.NetworkAttachment]:
    """The `--network` attachments; `--ip`, `--ip6`, `--alias`, `--link` and
    `--link-local-ip` apply to the first one (the default `bridge` when there is none),
    as Docker applies them."""
    attachments = [parse_network_flag(value) for value in networks]
    legacy = endpoint_config(ip, ip6, aliases, links, link_local_ips)
    if not (ip or ip6 or aliases or links or link_local_ips):
        return attachments
    if not attachments:
        attachments.append(pb.NetworkAttachment(network="bridge"))
    first = attachments[0].endpoint_config
    conflicts = [
        (legacy.aliases and first.aliases, "--alias", "per-network alias"),
        (legacy.links and first.links, "--link", "per-network links"),
        (legacy.ip_address and first.ip_address, "--ip", "per-network IPv4 address"),
        (legacy.ipv6_address and first.ipv6_address, "--ip6", "per-network IPv6 address"),
        (
            legacy.link_local_ips and first.link_local_ips,
            "--link-local-ip",
            "per-network link-local IP addresses",
        ),
    ]
    for clash, flag, what in conflicts:
        if clash:
            raise CliError(f"conflicting options: cannot specify both {flag} and {what}")
    first.MergeFrom(legacy)
    return attachments


# --------------------------------------------------------------------------------------
# What the commands print
# --------------------------------------------------------------------------------------


def state_text(state: int) -> str:
    return enum_text(pb.SandboxState, state, "SANDBOX_STATE_") or "unknown"


def protocol_text(protocol: int) -> str:
    return enum_text(pb.Protocol, protocol, "PROTOCOL_") or "tcp"


def host_address(host_ip: str, host_port: int) -> str:
    """HOSTIP:PORT as `docker port` prints it, IPv6 in brackets ("[::]:8080")."""
    host = host_ip or "0.0.0.0"
    return f"[{host}]:{host_port}" if ":" in host else f"{host}:{host_port}"


def port_key(container_port: int, protocol: int) -> str:
    return f"{container_port}/{protocol_text(protocol)}"


def ports_text(sandbox: pb.Sandbox) -> str:
    """`docker ps`'s PORTS column: bound ports, then exposed ones that are not bound."""
    if sandbox.state != pb.SANDBOX_STATE_RUNNING:
        return ""
    items = [
        f"{host_address(p.host_ip, p.host_port)}->{port_key(p.container_port, p.protocol)}"
        for p in sandbox.ports
    ]
    bound = {(p.container_port, p.protocol or pb.PROTOCOL_TCP) for p in sandbox.ports}
    for exposed in sandbox.exposed_ports:
        if (exposed.container_port, exposed.protocol or pb.PROTOCOL_TCP) not in bound:
            items.append(port_key(exposed.container_port, exposed.protocol))
    return ", ".join(dict.fromkeys(items))


def status_text(sandbox: pb.Sandbox) -> str:
    """`docker ps`'s STATUS column: "Created", "Up 5 minutes", "Stopped"."""
    if sandbox.state == pb.SANDBOX_STATE_RUNNING:
        started = sandbox.started_time if sandbox.HasField("started_time") else None
        return f"Up {since(started)}".rstrip()
    return state_text(sandbox.state).capitalize()


def sandbox_row(sandbox: pb.Sandbox, no_trunc: bool) -> dict[str, str]:
    """One sandbox as `berth sandbox ls --format` sees it (every value a string)."""
    created = sandbox.created_time if sandbox.HasField("created_time") else None
    ago = since(created)
    return {
        "ID": short_id(sandbox.id, no_trunc),
        "Names": sandbox.name,
        "CreatedAt": go_time_string(created),
        "RunningFor": f"{ago} ago" if ago else "",
        "Status": status_text(sandbox),
        "State": state_text(sandbox.state),
        "Ports": ports_text(sandbox),
        "Networks": ",".join(endpoint.network for endpoint in sandbox.endpoints),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(sandbox.labels.items())),
        "Netns": sandbox.netns_path,
    }


def _split_address(text: str) -> tuple[str, int]:
    address, _, prefix = text.partition("/")
    return address, int(prefix) if prefix.isdigit() else 0


def endpoint_json(endpoint: resources_pb2.Endpoint) -> dict[str, Any]:
    """One endpoint as Docker's `.NetworkSettings.Networks[NAME]` (seed 001)."""
    ipv4, ipv4_len = _split_address(endpoint.ipv4_address)
    ipv6, ipv6_len = _split_address(endpoint.ipv6_address)
    ipam: dict[str, Any] | None = None
    if endpoint.static_ip_address or endpoint.static_ipv6_address or endpoint.link_local_ips:
        ipam = {}
        if endpoint.static_ip_address:
            ipam["IPv4Address"] = endpoint.static_ip_address
        if endpoint.static_ipv6_address:
            ipam["IPv6Address"] = endpoint.static_ipv6_address
        if endpoint.link_local_ips:
            ipam["LinkLocalIPs"] = list(endpoint.link_local_ips)
    return {
        "IPAMConfig": ipam,
        "Links": [f"{link.name}:{link.alias or link.name}" for link in endpoint.links] or None,
        "Aliases": list(endpoint.aliases) or None,
        "DriverOpts": dict(sorted(endpoint.driver_opts.items())) or None,
        "GwPriority": endpoint.gw_priority,
        "NetworkID": endpoint.network_id,
        "EndpointID": endpoint.endpoint_id,
        "Gateway": endpoint.gateway,
        "IPAddress": ipv4,
        "IPPrefixLen": ipv4_len,
        "IPv6Gateway": endpoint.ipv6_gateway,
        "GlobalIPv6Address": ipv6,
        "GlobalIPv6PrefixLen": ipv6_len,
        "MacAddress": endpoint.mac_address,
        "DNSNames": list(endpoint.dns_names) or None,
        "InterfaceName": endpoint.interface_name,
    }


def _bindings(ports: Sequence[pb.PortBinding], asked: bool) -> dict[str, list[dict[str, str]]]:
    result: dict[str, list[dict[str, str]]] = {}
    for port in ports:
        host_port = str(port.host_port) if port.host_port else ""
        result.setdefault(port_key(port.container_port, port.protocol), []).append(
            {
                "HostIp": port.host_ip if asked else (port.host_ip or "0.0.0.0"),
                "HostPort": host_port,
            }
        )
    return result


def sandbox_json(sandbox: pb.Sandbox) -> dict[str, Any]:
    """One sandbox in the shape of `docker inspect` (the parts a network namespace has)."""
    created = sandbox.created_time if sandbox.HasField("created_time") else None
    started = sandbox.started_time if sandbox.HasField("started_time") else None
    ports: dict[str, Any] = {}
    if sandbox.state == pb.SANDBOX_STATE_RUNNING:
        ports = {port_key(p.container_port, p.protocol): None for p in sandbox.exposed_ports}
        ports |= _bindings(sandbox.ports, asked=False)
    return {
        "Id": sandbox.id,
        "Name": sandbox.name,
        "Created": go_time(created),
        "State": {
            "Status": state_text(sandbox.state),
            "Running": sandbox.state == pb.SANDBOX_STATE_RUNNING,
            "StartedAt": go_time(started),
        },
        "ResolvConfPath": sandbox.resolv_conf_path,
        "Config": {
            "Hostname": sandbox.hostname,
            "ExposedPorts": {
                port_key(p.container_port, p.protocol): {} for p in sandbox.exposed_ports
            },
            "Labels": dict(sorted(sandbox.labels.items())),
        },
        "HostConfig": {
            "PortBindings": _bindings(sandbox.port_bindings, asked=True),
            "PublishAllPorts": sandbox.publish_all,
            "Dns": list(sandbox.dns),
            "DnsSearch": list(sandbox.dns_search),
            "DnsOptions": list(sandbox.dns_options),
        },
        "NetworkSettings": {
            "SandboxKey": sandbox.netns_path,
            "SandboxAttached": sandbox.attached,
            "Ports": ports,
            "Networks": {
                endpoint.network: endpoint_json(endpoint) for endpoint in sandbox.endpoints
            },
        },
    }


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------


@app.command("create", cls=DockerCommand)
def create(
    name: Annotated[str, typer.Argument(help="the sandbox's NAME")],
    network: Annotated[
        StrList,
        typer.Option(
            "--network",
            "--net",
            help="connect to a network: NET, or name=NET,ip=...,alias=...,driver-opt=K=V,"
            "gw-priority=N (repeatable; the first gets eth0)",
        ),
    ] = None,
    ip: Annotated[
        str | None, typer.Option("--ip", help="IPv4 address on the first network")
    ] = None,
    ip6: Annotated[
        str | None, typer.Option("--ip6", help="IPv6 address on the first network")
    ] = None,
    alias: Annotated[
        StrList, typer.Option("--alias", "--network-alias", help="alias on the first network")
    ] = None,
    link: Annotated[
        StrList, typer.Option("--link", help="link to another sandbox NAME[:ALIAS]")
    ] = None,
    link_local_ip: Annotated[
        StrList, typer.Option("--link-local-ip", help="link-local address")
    ] = None,
    publish: Annotated[
        StrList,
        typer.Option("-p", "--publish", help=r"publish \[HOSTIP:]\[HOSTPORT:]CTRPORT\[/tcp|udp]"),
    ] = None,
    publish_all: Annotated[
        bool, typer.Option("-P", "--publish-all", help="publish exposed ports on random ports")
    ] = False,
    expose: Annotated[StrList, typer.Option("--expose", help=r"expose PORT\[/PROTO]")] = None,
    netns: Annotated[
        str | None, typer.Option("--netns", help="attach an existing namespace (path)")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="the sandbox's hostname")
    ] = None,
    dns: Annotated[StrList, typer.Option("--dns", help="upstream DNS server")] = None,
    dns_search: Annotated[StrList, typer.Option("--dns-search", help="DNS search domain")] = None,
    dns_option: Annotated[StrList, typer.Option("--dns-option", help="resolver option")] = None,
    label: Annotated[StrList, typer.Option("--label", help="metadata KEY=VALUE")] = None,
    start: Annotated[bool, typer.Option("--start", help="start it at once")] = False,
) -> None:
    """Create a sandbox (prints its id)."""
    request = pb.CreateSandboxRequest(
        name=name,
        networks=build_attachments(
            network or [], ip, ip6, alias or [], link or [], link_local_ip or []
        ),
        port_bindings=[binding for spec in publish or [] for binding in parse_port_spec(spec)],
        publish_all=publish_all,
        exposed_ports=[port for spec in expose or [] for port in parse_expose(spec)],
        netns_path=netns or "",
        hostname=hostname or "",
        dns=list(dns or []),
        dns_search=list(dns_search or []),
        dns_options=list(dns_option or []),
        labels=parse_map(label, "--label"),
        start=start,
    )
    response = stub().CreateSandbox(request)
    print_warnings(response.warnings)
    write_lines([response.sandbox.id])


def _list(
    all_: Annotated[
        bool, typer.Option("-a", "--all", help="show all sandboxes (default: running)")
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="only display ids")] = False,
    filters: Annotated[
        StrList,
        typer.Option("-f", "--filter", help="filter KEY=VALUE: id, name, label, status, network"),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="table, json, or a Go-style template")
    ] = None,
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="do not truncate ids")] = False,
) -> None:
    """List sandboxes."""
    reply = stub().ListSandboxes(pb.ListSandboxesRequest(filters=parse_filters(filters), all=all_))
    if quiet:
        write_lines(short_id(sandbox.id, no_trunc) for sandbox in reply.sandboxes)
        return
    rows = [sandbox_row(sandbox, no_trunc) for sandbox in reply.sandboxes]
    print_formatted(fmt or "table", rows, LS_HEADERS, LS_COLUMNS)


app.command("ls", cls=DockerCommand)(_list)
app.command("list", cls=DockerCommand, hidden=True)(_list)
app.command("ps", cls=DockerCommand, hidden=True)(_list)


@app.command("inspect", cls=DockerCommand)
def inspect(
    sandboxes: Annotated[list[str], typer.Argument(help="SANDBOX names or ids")],
    fmt: Annotated[
        str | None, typer.Option("-f", "--format", help="json, or a Go-style template")
    ] = None,
) -> None:
    """Display detailed information on one or more sandboxes."""

    def fetch(name: str) -> dict[str, Any]:
        return sandbox_json(stub().InspectSandbox(pb.InspectSandboxRequest(sandbox=name)).sandbox)

    inspect_each(sandboxes, fetch, fmt)


@app.command("start", cls=DockerCommand)
def start(sandboxes: Annotated[list[str], typer.Argument(help="SANDBOX names or ids")]) -> None:
    """Start one or more sandboxes (re-applies static addresses)."""

    def start_one(name: str) -> None:
        stub().StartSandbox(pb.StartSandboxRequest(sandbox=name))
        write_lines([name])

    for_each(sandboxes, start_one)


@app.command("stop", cls=DockerCommand)
def stop(sandboxes: Annotated[list[str], typer.Argument(help="SANDBOX names or ids")]) -> None:
    """Stop one or more sandboxes (interfaces down, dynamic addresses freed)."""

    def stop_one(name: str) -> None:
        stub().StopSandbox(pb.StopSandboxRequest(sandbox=name))
        write_lines([name])

    for_each(sandboxes, stop_one)


def _remove(
    sandboxes: Annotated[list[str], typer.Argument(help="SANDBOX names or ids")],
    force: Annotated[
        bool, typer.Option("-f", "--force", help="stop running sandboxes first")
    ] = False,
) -> None:
    """Remove one or more sandboxes."""

    def remove_one(name: str) -> None:
        stub().RemoveSandbox(pb.RemoveSandboxRequest(sandboxes=[name], force=force))
        write_lines([name])

    for_each(sandboxes, remove_one)


app.command("rm", cls=DockerCommand)(_remove)
app.command("remove", cls=DockerCommand, hidden=True)(_remove)


def exec_env(values: Sequence[str] | None) -> list[str]:
    """`-e KEY=VALUE`, or `-e KEY` to pass this shell's value (skipped when unset)."""
    env = []
    for item in values or []:
        key, eq, _ = item.partition("=")
        if not key:
            raise CliError(f"invalid environment variable: {item}")
        if eq:
            env.append(item)
        elif key in os.environ:
            env.append(f"{key}={os.environ[key]}")
    return env


@app.command(
    "exec",
    context_settings={"allow_interspersed_args": False},
)
def exec_(
    sandbox: Annotated[str, typer.Argument(help="SANDBOX name or id")],
    command: Annotated[list[str], typer.Argument(help="COMMAND [ARG...]")],
    env: Annotated[StrList, typer.Option("-e", "--env", help="set KEY=VALUE")] = None,
    workdir: Annotated[
        str | None, typer.Option("-w", "--workdir", help="working directory")
    ] = None,
    interactive: Annotated[
        bool, typer.Option("-i", "--interactive", help="send stdin to the command")
    ] = False,
    tty: Annotated[bool, typer.Option("-t", "--tty", help="not supported")] = False,
) -> None:
    """Run a command inside a running sandbox (exits with its exit code)."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("exec needs a command: berth sandbox exec SANDBOX -- COMMAND [ARG...]")
    if tty:
        raise CliError("-t/--tty is not supported: output is not a terminal")
    request = pb.ExecSandboxRequest(
        sandbox=sandbox,
        argv=command,
        env=exec_env(env),
        workdir=workdir or "",
        stdin=sys.stdin.buffer.read() if interactive else b"",
    )
    sys.stdout.flush()
    sys.stderr.flush()
    out, err = sys.stdout.buffer, sys.stderr.buffer
    exit_code: int | None = None
    stream = stub().ExecSandbox(request)
    try:
        for message in stream:
            if message.stdout:
                out.write(message.stdout)
                out.flush()
            if message.stderr:
                err.write(message.stderr)
                err.flush()
            if message.HasField("exit_code"):
                exit_code = message.exit_code
    except KeyboardInterrupt:
        stream.cancel()
        raise
    if exit_code is None:
        raise CliError("the command's output ended without an exit status")
    raise typer.Exit(exit_code)


@app.command("port", cls=DockerCommand)
def port(
    sandbox: Annotated[str, typer.Argument(help="SANDBOX name or id")],
    private_port: Annotated[
        str | None, typer.Argument(help=r"PRIVATE_PORT\[/PROTO]", show_default=False)
    ] = None,
) -> None:
    """List a sandbox's published ports, or the host addresses of one of them."""
    request = pb.ListPortsRequest(sandbox=sandbox)
    if private_port:
        number, protocol = split_proto(private_port)
        if not _DIGITS.fullmatch(number) or not 0 < int(number) <= 65535:
            raise CliError(f"invalid port: {private_port}")
        request.container_port = int(number)
        if "/" in private_port:
            request.protocol = protocol
    reply = stub().ListPorts(request)
    if private_port:
        if not reply.ports:
            raise CliError(f"no public port {private_port!r} published for {sandbox}")
        write_lines(host_address(p.host_ip, p.host_port) for p in reply.ports)
    else:
        write_lines(
            f"{port_key(p.container_port, p.protocol)} -> {host_address(p.host_ip, p.host_port)}"
            for p in reply.ports
        )
