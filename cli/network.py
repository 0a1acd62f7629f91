"""`berth network`: Docker's `docker network` verbs (seeds 001, 002, 003) against berth.

create, connect, disconnect, inspect, ls, rm and prune take Docker's arguments and print
what Docker prints: the new network's id, a JSON array for inspect, a table for ls, one
line per removed network. The helpers at the top (Go-style boolean flags, KEY=VALUE
lists, filters, `--format` templates, tables, timestamps) are shared with `berth sandbox`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import grpc
import typer
from google.protobuf.timestamp_pb2 import Timestamp
from typer.core import TyperCommand

from berth.api.network.v1 import network_service_pb2 as pb
from berth.api.network.v1 import network_service_pb2_grpc as pb_grpc
from berth.api.network.v1 import resources_pb2
from berth.cli.context import connection
from berth.cli.errors import EXIT_FAILURE, CliError, describe_rpc_error

ID_WIDTH = 12

# --------------------------------------------------------------------------------------
# Shared helpers (also used by berth.cli.sandbox)
# --------------------------------------------------------------------------------------

_GO_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_GO_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


class DockerCommand(TyperCommand):
    """A command whose boolean flags also take Go's `--flag=true|false` form.

    Docker's flags are Go `pflag` booleans: `--ipv4=false`, `--internal=true`. Click flags
    take no value, so such an argument is rewritten before parsing: to the flag itself when
    true, to its `--no-` form (or nothing, false being the default) when false.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        flags: dict[str, Any] = {}
        for param in self.params:
            if getattr(param, "is_bool_flag", False):
                for opt in param.opts:
                    if opt.startswith("--"):
                        flags[opt] = param
        rewritten: list[str] = []
        for index, arg in enumerate(args):
            if arg == "--":
                rewritten.extend(args[index:])
                break
            name, eq, value = arg.partition("=")
            param = flags.get(name) if eq else None
            if param is None:
                rewritten.append(arg)
            elif value in _GO_TRUE:
                rewritten.append(param.opts[0])
            elif value in _GO_FALSE:
                if param.secondary_opts:
                    rewritten.append(param.secondary_opts[0])
            else:
                raise typer.BadParameter(
                    f'invalid argument "{value}" for "{name}" flag: want true or false',
                    ctx=ctx,
                    param_hint=f"'{name}'",
                )
        return super().parse_args(ctx, rewritten)


def new_app(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text, no_args_is_help=True)


def parse_map(
    values: Iterable[str] | None, flag: str, *, need_value: bool = False
) -> dict[str, str]:
    """`KEY=VALUE` arguments as a dict (`KEY` alone gives an empty value unless need_value)."""
    result: dict[str, str] = {}
    for item in values or []:
        key, eq, value = item.partition("=")
        if not key.strip() or (need_value and not eq):
            raise CliError(f"invalid {flag} {item!r}: want KEY=VALUE")
        result[key.strip()] = value
    return result


def parse_filters(values: Iterable[str] | None) -> list[resources_pb2.Filter]:
    """`-f/--filter key=value` arguments, as Docker parses them (`label!=x` -> key "label!")."""
    filters = []
    for item in values or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise CliError(f"bad format of filter (expected name=value): {item}")
        filters.append(resources_pb2.Filter(key=key.strip().lower(), value=value.strip()))
    return filters


def parse_link(text: str) -> resources_pb2.Link:
    """`--link NAME[:ALIAS]` as Docker parses it."""
    if not text:
        raise CliError("empty string specified for links")
    parts = text.split(":")
    if len(parts) > 2 or not parts[0].lstrip("/"):
        raise CliError(f"bad format for links: {text}")
    name = parts[0].lstrip("/")
    alias = parts[1] if len(parts) == 2 else ""
    if len(parts) == 2 and not alias:
        raise CliError(f"bad format for links: {text}")
    return resources_pb2.Link(name=name, alias=alias)


def check_ip(value: str, flag: str, version: int | None = None) -> str:
    """A bare IP address (of the given version), or a CliError naming the flag."""
    try:
        if "%" in value:
            raise ValueError(value)
        address = ipaddress.ip_address(value)
    except ValueError:
        raise CliError(f"invalid {flag} address: {value!r}") from None
    if version is not None and address.version != version:
        raise CliError(f"invalid {flag} address: {value!r} is not an IPv{version} address")
    return value


def enum_text(enum: Any, value: int, prefix: str) -> str:
    """A proto enum value's text form: the suffix of its name in lower case."""
    if value == 0:
        return ""
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def short_id(identifier: str, no_trunc: bool = False) -> str:
    return identifier if no_trunc else identifier[:ID_WIDTH]


def timestamp_datetime(stamp: Timestamp | None) -> datetime | None:
    if stamp is None or (stamp.seconds == 0 and stamp.nanos == 0):
        return None
    return datetime.fromtimestamp(stamp.seconds, UTC)


def go_time(stamp: Timestamp | None) -> str:
    """A timestamp as Go's RFC3339Nano prints it in UTC ("0001-01-01T00:00:00Z" if unset)."""
    moment = timestamp_datetime(stamp)
    if moment is None or stamp is None:
        return "0001-01-01T00:00:00Z"
    fraction = f"{stamp.nanos:09d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def go_time_string(stamp: Timestamp | None) -> str:
    """A timestamp as Go's time.String() prints it (Docker's `CreatedAt` column)."""
    moment = timestamp_datetime(stamp)
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def human_duration(seconds: float) -> str:
    """Docker's go-units HumanDuration ("Less than a second", "3 minutes", "About an hour")."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = whole // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def since(stamp: Timestamp | None, now: datetime | None = None) -> str:
    """How long ago a timestamp was, Docker-style ("5 minutes"); empty when unset."""
    moment = timestamp_datetime(stamp)
    if moment is None or stamp is None:
        return ""
    now = now or datetime.now(UTC)
    elapsed = (now - moment).total_seconds() - stamp.nanos / 1e9
    return human_duration(max(elapsed, 0.0))


def tabulate(rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines laid out as Docker's tabwriter does (min width 10, padding 3, last cell free)."""
    widths: dict[int, int] = {}
    for row in rows:
        for column, cell in enumerate(row[:-1]):
            widths[column] = max(widths.get(column, 10), len(cell) + 3)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[column]) for column, cell in enumerate(row[:-1])]
        lines.append("".join([*cells, *(row[-1:])]).rstrip())
    return lines


def write_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


def warn(messages: Iterable[str]) -> None:
    for message in messages:
        sys.stderr.write(f"WARNING: {message}\n")


def report_rpc_error(error: grpc.RpcError) -> None:
    """Print a failed call the way `berth` prints any failure, and carry on."""
    sys.stderr.write(f"berth: {describe_rpc_error(error, connection().target.host)}\n")
    sys.stderr.flush()


def for_each(
    names: Sequence[str], call: Callable[[str], None], *, skip_missing: bool = False
) -> None:
    """One call per name, each failure reported as it happens; exit 1 if any failed.

    With skip_missing, a name that does not exist is passed over silently, as Docker's
    `network rm -f` does.
    """
    failed = False
    for name in names:
        try:
            call(name)
        except grpc.RpcError as error:
            if skip_missing and _code(error) == grpc.StatusCode.NOT_FOUND:
                continue
            report_rpc_error(error)
            failed = True
        sys.stdout.flush()
    if failed:
        raise typer.Exit(EXIT_FAILURE)


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    return error.code() if hasattr(error, "code") else None


# `--format` Go templates: the subset people use with Docker ({{.Field}}, {{json .}},
# {{.A.B}}, {{join .List ", "}}, {{index .Map "key"}}, {{upper .X}}, {{lower .X}}).
_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)


def _go_value(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_go_value(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    return str(value)


def _lookup(data: Any, path: str) -> Any:
    if path == ".":
        return data
    if not path.startswith("."):
        raise CliError(f"template: unsupported argument {path!r}")
    value = data
    for part in path[1:].split("."):
        if not isinstance(value, Mapping):
            raise CliError(f"template: can't evaluate field {part}")
        value = value.get(part)
    return value


def _action(words: list[str], data: Any) -> str:
    if not words:
        raise CliError("template: empty action")
    head, args = words[0], words[1:]
    if head.startswith("."):
        if args:
            raise CliError(f"template: unsupported action {' '.join(words)!r}")
        return _go_value(_lookup(data, head))
    if head == "json" and len(args) == 1:
        return json.dumps(_lookup(data, args[0]), separators=(",", ":"))
    if head == "join" and len(args) == 2:
        items = _lookup(data, args[0]) or []
        return args[1].join(_go_value(item) for item in items)
    if head == "index" and len(args) == 2:
        container = _lookup(data, args[0]) or {}
        return _go_value(container.get(args[1]) if isinstance(container, Mapping) else None)
    if head in ("upper", "lower") and len(args) == 1:
        text = _go_value(_lookup(data, args[0]))
        return text.upper() if head == "upper" else text.lower()
    if head == "println" and len(args) == 1:
        return _go_value(_lookup(data, args[0])) + "\n"
    raise CliError(f"template: unsupported action {{{{{' '.join(words)}}}}}")


def render_template(template: str, data: Any) -> str:
    """Expand a `--format` template against one object (a dict of Docker's field names)."""
    text = template.replace("\\t", "\t").replace("\\n", "\n")

    def expand(match: re.Match[str]) -> str:
        try:
            words = shlex.split(match.group(1))
        except ValueError as error:
            raise CliError(f"template: {error}") from None
        return _action(words, data)

    return _ACTION.sub(expand, text)


def print_formatted(
    fmt: str,
    rows: Sequence[Mapping[str, Any]],
    headers: Mapping[str, str],
    columns: Sequence[str],
) -> None:
    """A list command's `--format`: "json" (one object a line), "table [TEMPLATE]", TEMPLATE.

    headers names the column heading of each field; columns are the fields of plain "table".
    """
    if fmt == "json":
        write_lines(json.dumps(dict(row), sort_keys=True, separators=(",", ":")) for row in rows)
        return
    table = fmt == "table" or fmt.startswith("table ")
    template = fmt.removeprefix("table").strip() if table else fmt
    if table and not template:
        template = "\t".join("{{." + key + "}}" for key in columns)
    lines = [render_template(template, row) for row in rows]
    if table:
        names = {key: headers.get(key, key.upper()) for key in _template_fields(template)}
        lines.insert(0, render_template(template, names))
    if "\t" in template.replace("\\t", "\t"):
        write_lines(tabulate([line.split("\t") for line in lines]))
    else:
        write_lines(lines)


def _template_fields(template: str) -> list[str]:
    return re.findall(r"\.([A-Za-z0-9_]+)", template)


def print_inspect(fmt: str | None, items: Sequence[Any]) -> None:
    """`inspect` output: an indented JSON array, compact with "json", or a template a line."""
    if not fmt:
        sys.stdout.write(json.dumps(list(items), indent=4) + "\n")
    elif fmt == "json":
        sys.stdout.write(json.dumps(list(items), separators=(",", ":")) + "\n")
    else:
        write_lines(render_template(fmt, item) for item in items)
    sys.stdout.flush()


def inspect_each(names: Sequence[str], fetch: Callable[[str], Any], fmt: str | None) -> None:
    """Inspect several objects: print those found, then report the others and exit 1."""
    found: list[Any] = []
    errors: list[grpc.RpcError] = []
    for name in names:
        try:
            found.append(fetch(name))
        except grpc.RpcError as error:
            errors.append(error)
    print_inspect(fmt, found)
    for error in errors:
        report_rpc_error(error)
    if errors:
        raise typer.Exit(EXIT_FAILURE)


def confirm(prompt: str) -> bool:
    """Docker's `[y/N]` prompt: anything but y/yes (EOF included) is no."""
    sys.stdout.write(f"{prompt} [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


# --------------------------------------------------------------------------------------
# berth network
# --------------------------------------------------------------------------------------

app = new_app("Manage networks")

DRIVERS = {
    "bridge": pb.DRIVER_BRIDGE,
    "overlay": pb.DRIVER_OVERLAY,
    "host": pb.DRIVER_HOST,
    "null": pb.DRIVER_NULL,
    "none": pb.DRIVER_NULL,
}
LS_COLUMNS = ("ID", "Name", "Driver", "Scope")
SCOPES = {"local": pb.SCOPE_LOCAL, "global": pb.SCOPE_GLOBAL, "swarm": pb.SCOPE_GLOBAL}
LS_HEADERS = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "IPv4": "IPV4",
    "IPv6": "IPV6",
    "Internal": "INTERNAL",
    "Labels": "LABELS",
    "CreatedAt": "CREATED AT",
}


def stub() -> pb_grpc.NetworkServiceStub:
    return connection().stub(pb_grpc.NetworkServiceStub)


def _network_of(text: str, flag: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise CliError(f"invalid CIDR address for {flag}: {text}") from None


def _address_of(text: str, flag: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        if "%" in text:
            raise ValueError(text)
        return ipaddress.ip_address(text)
    except ValueError:
        raise CliError(f"invalid IP address for {flag}: {text}") from None


def _contains(
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network,
    inner: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    return subnet.version == inner.version and inner.subnet_of(subnet)  # type: ignore[arg-type]


def build_ipam_configs(
    subnets: Sequence[str],
    gateways: Sequence[str],
    ip_ranges: Sequence[str],
    aux_addresses: Sequence[str],
) -> list[pb.IPAMConfig]:
    """Group the address flags into IPAM config entries, as `docker network create` does.

    One entry per `--subnet`; the n-th `--gateway` belongs to the n-th subnet; each
    `--ip-range` and `--aux-address` goes to the subnet that contains it.
    """
    if len(gateways) > len(subnets) or len(ip_ranges) > len(subnets):
        raise CliError("every ip-range or gateway must have a corresponding subnet")
    networks = [_network_of(subnet, "--subnet") for subnet in subnets]
    for i, first in enumerate(networks):
        for second in networks[:i]:
            if first.version == second.version and first.overlaps(second):  # type: ignore[arg-type]
                raise CliError(
                    "multiple overlapping subnet configuration is not supported: "
                    f"{subnets[networks.index(second)]} and {subnets[i]}"
                )
    configs = [pb.IPAMConfig(subnet=subnet) for subnet in subnets]

    for index, gateway in enumerate(gateways):
        address = _address_of(gateway, "--gateway")
        if address not in networks[index]:
            raise CliError(
                f"gateway {gateway} is not in subnet {subnets[index]} "
                "(the n-th --gateway belongs to the n-th --subnet)"
            )
        configs[index].gateway = gateway

    for ip_range in ip_ranges:
        inner = _network_of(ip_range, "--ip-range")
        matches = [i for i, subnet in enumerate(networks) if _contains(subnet, inner)]
        if not matches:
            raise CliError(f"no matching subnet for range {ip_range}")
        config = configs[matches[0]]
        if config.ip_range:
            raise CliError(
                f"cannot configure multiple ranges ({ip_range}, {config.ip_range}) "
                f"on the same subnet ({config.subnet})"
            )
        config.ip_range = ip_range

    for item in aux_addresses:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value:
            raise CliError(f"invalid --aux-address {item!r}: want NAME=IP")
        address = _address_of(value, "--aux-address")
        matches = [i for i, subnet in enumerate(networks) if address in subnet]
        if not matches:
            raise CliError(f"no matching subnet for aux-address {value}")
        config = configs[matches[0]]
        if name.strip() in config.aux_addresses:
            raise CliError(f"duplicate --aux-address name {name.strip()!r}")
        config.aux_addresses[name.strip()] = value
    return configs


# JSON shapes: what `docker network inspect` prints.


def endpoint_resource_json(endpoint: pb.EndpointResource) -> dict[str, Any]:
    return {
        "Name": endpoint.name,
        "EndpointID": endpoint.endpoint_id,
        "MacAddress": endpoint.mac_address,
        "IPv4Address": endpoint.ipv4_address,
        "IPv6Address": endpoint.ipv6_address,
    }


def ipam_config_json(config: pb.IPAMConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {"Subnet": config.subnet}
    if config.gateway:
        entry["Gateway"] = config.gateway
    if config.ip_range:
        entry["IPRange"] = config.ip_range
    if config.aux_addresses:
        entry["AuxiliaryAddresses"] = dict(sorted(config.aux_addresses.items()))
    return entry


def network_json(network: pb.Network) -> dict[str, Any]:
    """One network in Docker's `network inspect` shape (PascalCase keys)."""
    created = network.created_time if network.HasField("created_time") else None
    data: dict[str, Any] = {
        "Name": network.name,
        "Id": network.id,
        "Created": go_time(created),
        "Scope": enum_text(pb.Scope, network.scope, "SCOPE_"),
        "Driver": enum_text(pb.Driver, network.driver, "DRIVER_"),
        "EnableIPv4": network.enable_ipv4,
        "EnableIPv6": network.enable_ipv6,
        "IPAM": {
            "Driver": network.ipam.driver or "default",
            "Options": dict(sorted(network.ipam.options.items())),
            "Config": [ipam_config_json(config) for config in network.ipam.config],
        },
        "Internal": network.internal,
        "Attachable": network.attachable,
        "Containers": {
            key: endpoint_resource_json(value) for key, value in sorted(network.containers.items())
        },
        "Options": dict(sorted(network.options.items())),
        "Labels": dict(sorted(network.labels.items())),
    }
    if network.driver == pb.DRIVER_OVERLAY or network.peers:
        peers = []
        for peer in network.peers:
            entry: dict[str, Any] = {"Name": peer.name, "IP": peer.ip_address}
            if peer.containers:
                entry["Containers"] = {
                    key: endpoint_resource_json(value)
                    for key, value in sorted(peer.containers.items())
                }
            peers.append(entry)
        data["Peers"] = peers
    return data


def network_row(network: pb.Network, no_trunc: bool) -> dict[str, str]:
    """One network as `docker network ls --format` sees it (every value a string)."""
    created = network.created_time if network.HasField("created_time") else None
    return {
        "ID": short_id(network.id, no_trunc),
        "Name": network.name,
        "Driver": enum_text(pb.Driver, network.driver, "DRIVER_"),
        "Scope": enum_text(pb.Scope, network.scope, "SCOPE_"),
        "IPv4": "true" if network.enable_ipv4 else "false",
        "IPv6": "true" if network.enable_ipv6 else "false",
        "Internal": "true" if network.internal else "false",
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(network.labels.items())),
        "CreatedAt": go_time_string(created),
    }


# Commands.

StrList = list[str] | None


@app.command("create", cls=DockerCommand)
def create(
    name: Annotated[str, typer.Argument(help="NETWORK name")],
    driver: Annotated[
        str, typer.Option("-d", "--driver", help="driver: bridge or overlay")
    ] = "bridge",
    subnet: Annotated[StrList, typer.Option("--subnet", help="subnet in CIDR form")] = None,
    gateway: Annotated[
        StrList, typer.Option("--gateway", help="gateway of the n-th subnet")
    ] = None,
    ip_range: Annotated[
        StrList, typer.Option("--ip-range", help="allocate addresses from a sub-range")
    ] = None,
    aux_address: Annotated[
        StrList, typer.Option("--aux-address", help="reserved address NAME=IP")
    ] = None,
    ipv4: Annotated[
        bool | None, typer.Option("--ipv4/--no-ipv4", help="IPv4 (--ipv4=false: IPv6 only)")
    ] = None,
    ipv6: Annotated[bool, typer.Option("--ipv6", help="enable IPv6")] = False,
    internal: Annotated[
        bool, typer.Option("--internal", help="restrict external access to the network")
    ] = False,
    attachable: Annotated[
        bool, typer.Option("--attachable", help="enable manual sandbox attachment")
    ] = False,
    label: Annotated[StrList, typer.Option("--label", help="metadata KEY=VALUE")] = None,
    opt: Annotated[StrList, typer.Option("-o", "--opt", help="driver option KEY=VALUE")] = None,
    ipam_driver: Annotated[
        str | None, typer.Option("--ipam-driver", help="IP address management driver")
    ] = None,
    ipam_opt: Annotated[
        StrList, typer.Option("--ipam-opt", help="IPAM driver option KEY=VALUE")
    ] = None,
    scope: Annotated[
        str | None, typer.Option("--scope", help="network scope: local or global")
    ] = None,
) -> None:
    """Create a network (prints its id)."""
    driver_value = DRIVERS.get(driver.strip().lower())
    if driver_value is None:
        raise CliError(f"unknown network driver {driver!r} (berth has bridge and overlay)")
    scope_value = pb.SCOPE_UNSPECIFIED
    if scope:
        if scope.strip().lower() not in SCOPES:
            raise CliError(f"invalid --scope {scope!r}: want local or global")
        scope_value = SCOPES[scope.strip().lower()]
    configs = build_ipam_configs(subnet or [], gateway or [], ip_range or [], aux_address or [])
    request = pb.CreateNetworkRequest(
        name=name,
        driver=driver_value,
        ipam=pb.IPAM(
            driver=ipam_driver or "",
            options=parse_map(ipam_opt, "--ipam-opt"),
            config=configs,
        ),
        ipv6=ipv6,
        internal=internal,
        attachable=attachable,
        labels=parse_map(label, "--label"),
        options=parse_map(opt, "--opt"),
        scope=scope_value,
    )
    if ipv4 is not None:
        request.ipv4 = ipv4
    response = stub().CreateNetwork(request)
    warn(response.warnings)
    write_lines([response.network.id])


def endpoint_config(
    ip: str | None,
    ip6: str | None,
    aliases: Sequence[str] | None,
    links: Sequence[str] | None,
    link_local_ips: Sequence[str] | None,
    driver_opts: Sequence[str] | None = None,
    gw_priority: int = 0,
) -> resources_pb2.EndpointConfig:
    """The endpoint options shared by `network connect` and `sandbox create`."""
    return resources_pb2.EndpointConfig(
        ip_address=check_ip(ip, "--ip", 4) if ip else "",
        ipv6_address=check_ip(ip6, "--ip6", 6) if ip6 else "",
        aliases=list(aliases or []),
        links=[parse_link(link) for link in links or []],
        link_local_ips=[check_ip(value, "--link-local-ip") for value in link_local_ips or []],
        driver_opts=parse_map(driver_opts, "--driver-opt", need_value=True),
        gw_priority=gw_priority,
    )


@app.command("connect", cls=DockerCommand)
def connect(
    network: Annotated[str, typer.Argument(help="NETWORK name or id")],
    sandbox: Annotated[str, typer.Argument(help="SANDBOX name or id")],
    ip: Annotated[str | None, typer.Option("--ip", help="IPv4 address")] = None,
    ip6: Annotated[str | None, typer.Option("--ip6", help="IPv6 address")] = None,
    alias: Annotated[StrList, typer.Option("--alias", help="network-scoped alias")] = None,
    link: Annotated[
        StrList, typer.Option("--link", help="link to another sandbox NAME[:ALIAS]")
    ] = None,
    link_local_ip: Annotated[
        StrList, typer.Option("--link-local-ip", help="link-local address")
    ] = None,
    driver_opt: Annotated[
        StrList, typer.Option("--driver-opt", help="driver option KEY=VALUE")
    ] = None,
    gw_priority: Annotated[
        int, typer.Option("--gw-priority", help="highest gw-priority gives the default route")
    ] = 0,
) -> None:
    """Connect a sandbox to a network."""
    config = endpoint_config(ip, ip6, alias, link, link_local_ip, driver_opt, gw_priority)
    stub().ConnectNetwork(
        pb.ConnectNetworkRequest(network=network, sandbox=sandbox, endpoint_config=config)
    )


@app.command("disconnect", cls=DockerCommand)
def disconnect(
    network: Annotated[str, typer.Argument(help="NETWORK name or id")],
    sandbox: Annotated[str, typer.Argument(help="SANDBOX name or id")],
    force: Annotated[
        bool, typer.Option("-f", "--force", help="remove a stale endpoint too")
    ] = False,
) -> None:
    """Disconnect a sandbox from a network."""
    stub().DisconnectNetwork(
        pb.DisconnectNetworkRequest(network=network, sandbox=sandbox, force=force)
    )


@app.command("inspect", cls=DockerCommand)
def inspect(
    networks: Annotated[list[str], typer.Argument(help="NETWORK names or ids")],
    fmt: Annotated[
        str | None, typer.Option("-f", "--format", help="json, or a Go-style template")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="every host's endpoints (overlay)")
    ] = False,
) -> None:
    """Display detailed information on one or more networks."""

    def fetch(name: str) -> dict[str, Any]:
        reply = stub().InspectNetwork(pb.InspectNetworkRequest(network=name, verbose=verbose))
        return network_json(reply.network)

    inspect_each(networks, fetch, fmt)


def _list(
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="only display ids")] = False,
    filters: Annotated[
        StrList, typer.Option("-f", "--filter", help="filter KEY=VALUE (repeatable)")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="table, json, or a Go-style template")
    ] = None,
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="do not truncate ids")] = False,
) -> None:
    """List networks."""
    reply = stub().ListNetworks(pb.ListNetworksRequest(filters=parse_filters(filters)))
    if quiet:
        write_lines(short_id(network.id, no_trunc) for network in reply.networks)
        return
    rows = [network_row(network, no_trunc) for network in reply.networks]
    print_formatted(fmt or "table", rows, LS_HEADERS, LS_COLUMNS)


app.command("ls", cls=DockerCommand)(_list)
app.command("list", cls=DockerCommand, hidden=True)(_list)


def _remove(
    networks: Annotated[list[str], typer.Argument(help="NETWORK names or ids")],
    force: Annotated[
        bool, typer.Option("-f", "--force", help="do not fail if a network does not exist")
    ] = False,
) -> None:
    """Remove one or more networks."""

    def remove_one(name: str) -> None:
        reply = stub().RemoveNetwork(pb.RemoveNetworkRequest(networks=[name], force=force))
        if reply.removed_networks:  # with -f a missing network is passed over silently
            write_lines([name])  # as typed, like Docker (a name or an id)

    for_each(networks, remove_one, skip_missing=force)


app.command("rm", cls=DockerCommand)(_remove)
app.command("remove", cls=DockerCommand, hidden=True)(_remove)


@app.command("prune", cls=DockerCommand)
def prune(
    force: Annotated[
        bool, typer.Option("-f", "--force", help="do not prompt for confirmation")
    ] = False,
    filters: Annotated[
        StrList, typer.Option("--filter", help="filter KEY=VALUE (until=24h, label=x)")
    ] = None,
) -> None:
    """Remove all unused user-defined networks."""
    request = pb.PruneNetworksRequest(filters=parse_filters(filters))
    if not force and not confirm(
        "WARNING! This will remove all custom networks not used by at least one sandbox.\n"
        "Are you sure you want to continue?"
    ):
        raise CliError("network prune has been cancelled")
    reply = stub().PruneNetworks(request)
    if reply.removed_networks:
        write_lines(["Deleted Networks:", *reply.removed_networks, ""])
