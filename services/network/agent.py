"""The network agent's operations: the rules of the domain applied to the kernel.

Every change runs under one lock, allocates in the domain first, programs the kernel,
and only then commits and persists; a failure rolls back what was done, so a failed
call leaves no kernel object, no allocation and no state entry behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import structlog

from berth.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from berth.network.adapters.links import Links
from berth.network.adapters.netns import NETNS_DIR, create_netns, netns_exists, remove_netns
from berth.network.adapters.nftables import BridgeRules, Nftables, PortForward
from berth.network.adapters.processes import HOST_NETNS
from berth.network.adapters.state_store import StateStore
from berth.network.dns.embedded import EmbeddedDns
from berth.network.domain import endpoints
from berth.network.domain.events import Event, EventLog
from berth.network.domain.model import (
    ANY_IPV4,
    Driver,
    Endpoint,
    IPAddress,
    IPInterface,
    IPNetwork,
    Network,
    PublishedPort,
    Sandbox,
    SandboxState,
    now,
)
from berth.network.domain.overlay import ClusterEndpoint
from berth.network.domain.ports import Claim, check_bindings, choose
from berth.network.domain.requests import EndpointRequest, NetworkRequest, SandboxRequest
from berth.network.domain.resolvconf import server_address
from berth.network.domain.state import NetworkState
from berth.network.domain.validation import (
    bridge_options,
    check_alias,
    check_dns_option,
    check_dns_search,
    check_hostname,
    check_labels,
    check_name,
    endpoint_sysctls,
    new_id,
    parse_ip,
)
from berth.network.overlay.driver import OverlayDriver, no_cluster
from berth.network.overlay.link import Change

log = structlog.get_logger("berth.network")

DEFAULT_BRIDGE = "bridge"
PREDEFINED = ("bridge", "host", "none")


class NetworkAgent:
    def __init__(
        self,
        *,
        state_dir: Path,
        links: Links,
        nftables: Nftables,
        events: EventLog,
        dns: EmbeddedDns,
        name_prefix: str = "",
        default_bridge_name: str = "berth0",
        overlay: OverlayDriver | None = None,
    ) -> None:
        self.store = StateStore(state_dir / "state")
        self.links = links
        self.nftables = nftables
        self.events = events
        self.prefix = name_prefix
        self.default_bridge_name = default_bridge_name
        self.dns = dns
        self.lock = asyncio.Lock()
        self.state = NetworkState()
        self.overlay = overlay

    # -- life ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the state, make the kernel match it, and create the predefined networks."""
        self.state = self.store.load()
        await self.links.enable_forwarding(ipv6=True)
        async with self.lock:
            await self._ensure_predefined()
            await self._reconcile()
            await self._apply_rules()
            self._save_all()
            await self.dns.sync(self.state, touched=self.state.sandboxes.values())

    async def _ensure_predefined(self) -> None:
        if self.state.network_named("host") is None:
            self._add_plain_network("host", Driver.HOST)
        if self.state.network_named("none") is None:
            self._add_plain_network("none", Driver.NULL)
        if self.state.network_named(DEFAULT_BRIDGE) is None:
            request = NetworkRequest(
                name=DEFAULT_BRIDGE,
                options={"com.docker.network.bridge.name": self.default_bridge_name},
            )
            await self._create_bridge_network(request, predefined=True)

    def _add_plain_network(self, name: str, driver: Driver) -> None:
        network = Network(id=new_id(), name=name, driver=driver, bridge=None, predefined=True)
        self.state.networks[network.id] = network

    async def _reconcile(self) -> None:
        """Recreate what the state has and the kernel lost; remove berth's orphan veths."""
        for network in self.state.networks.values():
            if network.overlay:
                await self._reconcile_datapath(network)
            elif network.bridge is not None:
                await self._ensure_bridge(network)
        wanted_veths = set()
        for sandbox in self.state.sandboxes.values():
            if not sandbox.attached and not netns_exists(Path(sandbox.netns).name):
                await create_netns(Path(sandbox.netns).name)
            for endpoint in sandbox.endpoints.values():
                wanted_veths.add(endpoint.host_interface)
        present = await self.links.link_names()
        for name in present - wanted_veths:
            if endpoints.is_berth_veth(name):
                await self.links.remove_endpoint(name)
        for sandbox in self.state.sandboxes.values():
            if sandbox.state is not SandboxState.RUNNING:
                continue
            for endpoint in list(sandbox.endpoints.values()):
                if endpoint.host_interface in present:
                    continue
                if self.state.networks[endpoint.network_id].overlay:
                    await self._replumb_overlay(sandbox, endpoint)
                else:
                    await self._plumb(sandbox, endpoint)

    async def _reconcile_datapath(self, network: Network) -> None:
        if self.overlay is None:
            return
        if self.state.running_endpoints_on(network.id):
            await self.overlay.ensure_datapath(network)
        else:  # left behind by a crash between the last endpoint and its datapath
            await self.overlay.detach(network)

    async def _replumb_overlay(self, sandbox: Sandbox, endpoint: Endpoint) -> None:
        """An overlay endpoint the kernel lost, with the addresses it holds in the cluster
        (the cluster may be out of reach now; the resync re-asserts them)."""
        network = self.state.networks[endpoint.network_id]
        held = [a for a in (endpoint.ipv4, endpoint.ipv6) if a is not None]
        if self.overlay is None or not held:
            log.warning("overlay endpoint left down", sandbox=sandbox.name, network=network.name)
            return
        await self._veth(sandbox, endpoint, network, held)  # its datapath: _reconcile_datapath

    # -- networks --------------------------------------------------------------------

    async def create_network(self, request: NetworkRequest) -> Network:
        async with self.lock:
            if request.driver == "overlay":
                network = await self._create_overlay_network(request)
            else:
                network = await self._create_bridge_network(request, predefined=False)
            self._save(network)
        self._emit("network", "create", network.id, name=network.name, type=network.driver)
        return network

    async def _create_bridge_network(self, request: NetworkRequest, *, predefined: bool) -> Network:
        name = check_name(request.name)
        if self.state.network_named(name) is not None:
            raise AlreadyExists(
                f"network with name {name} already exists",
                reason="NETWORK_EXISTS",
                metadata={"network": name},
            )
        if request.driver != "bridge":
            raise InvalidArgument(
                [
                    FieldViolation(
                        "driver",
                        f"driver {request.driver!r} is not available on this host; use bridge",
                    )
                ]
            )
        network_id = new_id()
        options = bridge_options(request.options, network_id=network_id)
        labels = check_labels(request.labels)
        self._check_bridge_name_free(options.bridge_name)
        avoid = await self._avoided_networks()
        subnets = self.state.ipam.plan(
            list(request.subnets), ipv4=request.ipv4, ipv6=request.ipv6, avoid=avoid
        )
        network = request.network(
            network_id=network_id,
            name=name,
            driver=Driver.BRIDGE,
            bridge=options,
            subnets=subnets,
            labels=labels,
            predefined=predefined,
        )
        if options.bridge_name in await self.links.link_names():
            raise AlreadyExists(
                f"a link named {options.bridge_name} exists already on this host",
                reason="LINK_EXISTS",
                metadata={"bridge": options.bridge_name},
            )
        self.state.ipam.add_network(network.id, subnets)
        self.state.networks[network.id] = network
        self._save(network)  # write-ahead: after a crash from here on, the restart completes it
        try:
            await self._ensure_bridge(network)
            await self._apply_rules()
        except BaseException:
            self.state.networks.pop(network.id, None)
            self.state.ipam.remove_network(network.id)
            await self.links.delete_link(options.bridge_name)
            self._forget(network)
            raise
        return network

    async def _avoided_networks(self) -> list[IPNetwork]:
        """Where new subnets must not go: the host's routes and its resolvers."""
        resolvers = [ip_network(server_address(s)) for s in self.dns.host.read().nameservers]
        return [*await self.links.host_networks(), *resolvers]

    async def _create_overlay_network(self, request: NetworkRequest) -> Network:
        if self.overlay is None:
            raise no_cluster()
        if self.state.network_named(request.name) is not None:
            raise AlreadyExists(
                f"network with name {request.name} already exists",
                reason="NETWORK_EXISTS",
                metadata={"network": request.name},
            )
        avoid = await self._avoided_networks()
        network = await self.overlay.create_network(self.state, request, new_id(), avoid)
        await self._apply_rules()
        return network

    def _check_bridge_name_free(self, bridge_name: str) -> None:
        for other in self.state.networks.values():
            if other.bridge is not None and other.bridge.bridge_name == bridge_name:
                raise AlreadyExists(
                    f"bridge {bridge_name} is used by network {other.name}",
                    reason="BRIDGE_NAME_IN_USE",
                    metadata={"bridge": bridge_name},
                )

    async def _ensure_bridge(self, network: Network) -> None:
        assert network.bridge is not None
        addresses = [] if network.bridge.inhibit_ipv4 else endpoints.gateway_interfaces(network)
        await self.links.ensure_bridge(
            network.bridge.bridge_name, mtu=network.bridge.mtu, addresses=addresses
        )

    def inspect_network(self, ref: str) -> Network:
        return self.state.network(ref)

    def has_network(self, ref: str) -> bool:
        try:
            self.state.network(ref)
        except NotFound:
            return False
        return True

    def list_networks(self) -> list[Network]:
        return sorted(self.state.networks.values(), key=lambda n: n.name)

    async def remove_network(self, ref: str) -> Network:
        async with self.lock:
            network = self.state.network(ref)
            if network.predefined:
                raise FailedPrecondition(
                    f"{network.name} is a pre-defined network and cannot be removed",
                    reason="NETWORK_PREDEFINED",
                    metadata={"network": network.name},
                )
            attached = [s.name for s, _ in self.state.endpoints_on(network.id)]
            if attached:
                raise FailedPrecondition(
                    f"error while removing network: network {network.name} id {network.id} "
                    f"has active endpoints ({', '.join(sorted(attached))})",
                    reason="NETWORK_IN_USE",
                    metadata={"network": network.name, "sandboxes": ",".join(sorted(attached))},
                )
            if network.overlay:
                if self.overlay is None:
                    raise no_cluster()
                await self.overlay.remove_network(network)
                self.overlay.drop(self.state, network.id)
            else:
                del self.state.networks[network.id]
                self.state.ipam.remove_network(network.id)
            await self._apply_rules()
            if network.bridge is not None and not network.overlay:
                await self.links.delete_link(network.bridge.bridge_name)
            self._forget(network)
        self._emit("network", "destroy", network.id, name=network.name, type=network.driver)
        return network

    async def prune_networks(self, keep: Callable[[Network], bool]) -> list[Network]:
        """Remove every unused user-defined network for which keep() is False."""
        removed = []
        for network in self.list_networks():
            unused = not network.predefined and not self.state.endpoints_on(network.id)
            if unused and not keep(network):
                removed.append(await self.remove_network(network.id))
        return removed

    # -- endpoints -------------------------------------------------------------------

    async def connect(
        self, network_ref: str, sandbox_ref: str, request: EndpointRequest
    ) -> Endpoint:
        async with self.lock:
            endpoint = await self._connect(network_ref, sandbox_ref, request)
            sandbox = self.state.sandbox(sandbox_ref)
            self._save(sandbox)
            await self.dns.sync(self.state, touched=[sandbox])
        return endpoint

    async def _connect(
        self, network_ref: str, sandbox_ref: str, request: EndpointRequest
    ) -> Endpoint:
        network = await self._network_for_connect(network_ref)
        sandbox = self.state.sandbox(sandbox_ref)
        if network.bridge is None:
            raise FailedPrecondition(
                f"sandboxes cannot be connected to the {network.name} network",
                reason="NETWORK_NOT_CONNECTABLE",
                metadata={"network": network.name},
            )
        if network.id in sandbox.endpoints:
            raise AlreadyExists(
                f"endpoint with name {sandbox.name} already exists in network {network.name}",
                reason="ENDPOINT_EXISTS",
                metadata={"network": network.name, "sandbox": sandbox.name},
            )
        endpoint = self._new_endpoint(network, sandbox, request)
        sandbox.endpoints[network.id] = endpoint
        try:
            if sandbox.state is SandboxState.RUNNING:
                await self._plumb(sandbox, endpoint)
        except BaseException:
            del sandbox.endpoints[network.id]
            raise
        self._emit(
            "network",
            "connect",
            network.id,
            name=network.name,
            sandbox=sandbox.name,
            sandbox_id=sandbox.id,
        )
        return endpoint

    async def _network_for_connect(self, ref: str) -> Network:
        """The network; an overlay network another host created a moment ago is looked
        up in the cluster before the answer is NotFound."""
        try:
            return self.state.network(ref)
        except NotFound:
            if self.overlay is None or not self.overlay.link.connected:
                raise
        await self._refresh_overlay_networks()
        return self.state.network(ref)

    def _new_endpoint(
        self, network: Network, sandbox: Sandbox, request: EndpointRequest
    ) -> Endpoint:
        field = "endpoint_config"
        static4 = parse_ip(request.ip_address, 4, f"{field}.ip_address")
        static6 = parse_ip(request.ipv6_address, 6, f"{field}.ipv6_address")
        if (static4 or static6) and network.name == DEFAULT_BRIDGE:
            raise InvalidArgument(
                [
                    FieldViolation(
                        f"{field}.ip_address",
                        "user specified IP address is supported on user defined networks only",
                    )
                ]
            )
        for static, name in ((static4, "ip_address"), (static6, "ipv6_address")):
            if static is not None and not any(static in s.subnet for s in network.subnets):
                raise InvalidArgument(
                    [
                        FieldViolation(
                            f"{field}.{name}", f"no configured subnet contains IP address {static}"
                        )
                    ]
                )
        assert network.bridge is not None
        ifname = endpoints.next_ifname(network.bridge.container_iface_prefix, sandbox)
        aliases = [
            check_alias(a, field=f"{field}.aliases[{i}]") for i, a in enumerate(request.aliases)
        ]
        links = {
            check_name(t, field=f"{field}.links[{i}].name", what="sandbox"): check_alias(
                a or t, field=f"{field}.links[{i}].alias"
            )
            for i, (t, a) in enumerate(request.links.items())
        }
        link_local = [
            parse_ip(a, None, f"{field}.link_local_ips[{i}]")
            for i, a in enumerate(request.link_local_ips)
        ]
        return Endpoint(
            id=new_id(),
            network_id=network.id,
            interface=ifname,
            host_interface=endpoints.host_veth_name(),
            mac_address=endpoints.random_mac(),
            static_ipv4=static4,  # type: ignore[arg-type]
            static_ipv6=static6,  # type: ignore[arg-type]
            aliases=aliases,
            links=links,
            link_local_ips=[a for a in link_local if a is not None],
            sysctls=endpoint_sysctls(
                request.driver_opts, ifname=ifname, field=f"{field}.driver_opts"
            ),
            gw_priority=request.gw_priority,
        )

    async def _plumb(self, sandbox: Sandbox, endpoint: Endpoint) -> None:
        """Give the endpoint its addresses and its veth pair; undo both on failure."""
        network = self.state.networks[endpoint.network_id]
        assert network.bridge is not None
        if network.overlay:
            await self._plumb_overlay(sandbox, endpoint, network)
            return
        taken: list[IPInterface] = []
        try:
            endpoint.ipv4 = self._address(network, 4, endpoint.static_ipv4, taken)  # type: ignore[assignment]
            endpoint.ipv6 = self._address(network, 6, endpoint.static_ipv6, taken)  # type: ignore[assignment]
            await self._veth(sandbox, endpoint, network, taken)
        except BaseException:
            for address in taken:
                self.state.ipam.release(network.id, address.ip)
            endpoint.ipv4 = endpoint.ipv6 = None
            await self.links.remove_endpoint(endpoint.host_interface)
            raise

    async def _plumb_overlay(self, sandbox: Sandbox, endpoint: Endpoint, network: Network) -> None:
        """Claim the addresses in the cluster, make the datapath, announce the endpoint."""
        if self.overlay is None:
            raise no_cluster()
        overlay = self.overlay
        first_here = not self.state.running_endpoints_on(network.id)
        taken = await overlay.claim_addresses(self.state, network, endpoint)
        try:
            for address in taken:
                if address.version == 4:
                    endpoint.ipv4 = address  # type: ignore[assignment]
                    endpoint.mac_address = endpoints.mac_for(address.ip)  # type: ignore[arg-type]
                else:
                    endpoint.ipv6 = address  # type: ignore[assignment]
            if first_here:  # later endpoints find it made, its peers kept by the cluster link
                await overlay.attach(self.state, network)
            await self._veth(sandbox, endpoint, network, taken)
            await overlay.announce(sandbox, endpoint)
        except BaseException:
            endpoint.ipv4 = endpoint.ipv6 = None
            await self.links.remove_endpoint(endpoint.host_interface)
            for address in taken:
                self.state.ipam.release(network.id, address.ip)
            await overlay.withdraw(endpoint, [a.ip for a in taken])
            if first_here:
                await overlay.detach(network)
            raise

    async def _veth(
        self, sandbox: Sandbox, endpoint: Endpoint, network: Network, taken: list[IPInterface]
    ) -> None:
        """The endpoint's veth pair from the network's bridge into the sandbox."""
        assert network.bridge is not None
        gateway4, gateway6 = (None, None) if network.internal else endpoints.gateways(network)
        await self.links.create_endpoint(
            bridge=network.bridge.bridge_name,
            host_ifname=endpoint.host_interface,
            netns=sandbox.netns,
            ifname=endpoint.interface,
            mac=endpoint.mac_address,
            mtu=network.bridge.mtu,
            addresses=[*taken, *(endpoints.link_local(a) for a in endpoint.link_local_ips)],
            gateway4=gateway4,
            gateway6=gateway6,
            metric=endpoints.route_metric(endpoint),
            sysctls=endpoint.sysctls,
        )
        if not network.bridge.enable_icc:
            await self.links.set_port_isolated(endpoint.host_interface, True)

    def _address(
        self, network: Network, version: int, static: IPAddress | None, taken: list[IPInterface]
    ) -> IPInterface | None:
        field = endpoints.address_field(network, version)
        if field is None:
            return None
        address = self.state.ipam.allocate(network.id, version, static, field=field)
        taken.append(address)
        return address

    async def _unplumb(self, endpoint: Endpoint) -> None:
        await self.links.remove_endpoint(endpoint.host_interface)
        held = [a.ip for a in (endpoint.ipv4, endpoint.ipv6) if a is not None]
        for address in held:
            self.state.ipam.release(endpoint.network_id, address)
        endpoint.ipv4 = endpoint.ipv6 = None
        network = self.state.networks.get(endpoint.network_id)
        if network is not None and network.overlay and self.overlay is not None:
            await self.overlay.withdraw(endpoint, held)
            if not self.state.running_endpoints_on(network.id):
                await self.overlay.detach(network)

    async def disconnect(self, network_ref: str, sandbox_ref: str, force: bool) -> None:
        async with self.lock:
            network = self.state.network(network_ref)
            sandbox = self._sandbox_for_disconnect(sandbox_ref, network, force)
            if sandbox is None:
                return
            endpoint = sandbox.endpoints.get(network.id)
            if endpoint is None:
                raise FailedPrecondition(
                    f"sandbox {sandbox.name} is not connected to network {network.name}",
                    reason="NOT_CONNECTED",
                    metadata={"network": network.name, "sandbox": sandbox.name},
                )
            await self._unplumb(endpoint)
            del sandbox.endpoints[network.id]
            self._save(sandbox)
            await self.dns.sync(self.state, touched=[sandbox])
        self._emit(
            "network",
            "disconnect",
            network.id,
            name=network.name,
            sandbox=sandbox.name,
            sandbox_id=sandbox.id,
        )

    def _sandbox_for_disconnect(self, ref: str, network: Network, force: bool) -> Sandbox | None:
        """The sandbox; with force, a stale endpoint whose sandbox is gone is cleaned up."""
        try:
            return self.state.sandbox(ref)
        except NotFound:
            if not force:
                raise
        log.info("removing stale endpoint", network=network.name, sandbox=ref)
        return None

    # -- sandboxes -------------------------------------------------------------------

    async def create_sandbox(self, request: SandboxRequest) -> Sandbox:
        async with self.lock:
            sandbox = await self._create_sandbox(request)
            self._save(sandbox)
            await self.dns.sync(self.state, touched=[sandbox])
        self._emit("sandbox", "create", sandbox.id, name=sandbox.name)
        return sandbox

    async def _create_sandbox(self, request: SandboxRequest) -> Sandbox:
        name = check_name(request.name, what="sandbox")
        if self.state.sandbox_named(name) is not None:
            raise AlreadyExists(
                f"sandbox name {name} is already in use",
                reason="SANDBOX_EXISTS",
                metadata={"sandbox": name},
            )
        hostname = check_hostname(request.hostname) if request.hostname else name[:63]
        labels = check_labels(request.labels)
        check_bindings(request.port_bindings)
        dns = [str(parse_ip(s, None, f"dns[{i}]")) for i, s in enumerate(request.dns)]
        dns_search = [
            check_dns_search(d, field=f"dns_search[{i}]") for i, d in enumerate(request.dns_search)
        ]
        dns_options = [
            check_dns_option(o, field=f"dns_options[{i}]")
            for i, o in enumerate(request.dns_options)
        ]
        networks = list(request.networks) or [(DEFAULT_BRIDGE, EndpointRequest())]
        mode = self._special_mode(networks)
        attached = bool(request.netns_path) or mode == "host"
        if request.netns_path:
            _check_netns_path(request.netns_path)
        if mode:
            networks = []
        netns = (
            HOST_NETNS
            if mode == "host"
            else request.netns_path or str(NETNS_DIR / (self.prefix + name))
        )
        if not attached and netns_exists(self.prefix + name):
            raise AlreadyExists(
                f"a network namespace named {self.prefix + name} exists already",
                reason="NETNS_EXISTS",
                metadata={"netns": self.prefix + name},
            )
        sandbox = Sandbox(
            id=new_id(),
            name=name,
            netns=netns,
            attached=attached,
            hostname=hostname,
            labels=labels,
            port_bindings=list(request.port_bindings),
            dns=dns,
            dns_search=dns_search,
            dns_options=dns_options,
        )
        if not attached:
            sandbox.resolv_conf = str(self.dns.resolv_conf_path(sandbox))
        self.state.sandboxes[sandbox.id] = sandbox
        self._save(sandbox)  # write-ahead: after a crash from here on, the restart completes it
        try:
            if not attached:
                await create_netns(self.prefix + name)
            for network_ref, endpoint_request in networks:
                await self._connect(network_ref, sandbox.id, endpoint_request)
            if request.start:
                await self._start(sandbox)
        except BaseException:
            await self._destroy(sandbox)
            self._forget(sandbox)
            raise
        return sandbox

    def _special_mode(self, networks: list[tuple[str, EndpointRequest]]) -> str | None:
        """`host` (the agent's own namespace) or `none` (loopback only), as Docker has them;
        neither combines with other networks."""
        special = [self.state.network(ref) for ref, _ in networks]
        special = [n for n in special if n.driver in (Driver.HOST, Driver.NULL)]
        if not special:
            return None
        if len(networks) > 1:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "networks", f"the {special[0].name} network cannot be combined with others"
                    )
                ]
            )
        return "host" if special[0].driver is Driver.HOST else "none"

    async def start_sandbox(self, ref: str) -> Sandbox:
        async with self.lock:
            sandbox = self.state.sandbox(ref)
            await self._start(sandbox)
            self._save(sandbox)
            await self.dns.sync(self.state, touched=[sandbox])
        self._emit("sandbox", "start", sandbox.id, name=sandbox.name)
        return sandbox

    async def _start(self, sandbox: Sandbox) -> None:
        if sandbox.state is SandboxState.RUNNING:
            return
        done: list[Endpoint] = []
        try:
            for endpoint in sandbox.endpoints.values():
                await self._plumb(sandbox, endpoint)
                done.append(endpoint)
            sandbox.published = self._publish(sandbox)
            sandbox.state = SandboxState.RUNNING
            if sandbox.published:
                await self._apply_rules()
        except BaseException:
            sandbox.published = []
            sandbox.state = SandboxState.STOPPED if sandbox.started else SandboxState.CREATED
            for endpoint in done:
                await self._unplumb(endpoint)
            raise
        sandbox.started = now()

    async def stop_sandbox(self, ref: str) -> Sandbox:
        async with self.lock:
            sandbox = self.state.sandbox(ref)
            await self._stop(sandbox)
            self._save(sandbox)
            await self.dns.sync(self.state, touched=[sandbox])
        self._emit("sandbox", "stop", sandbox.id, name=sandbox.name)
        return sandbox

    async def _stop(self, sandbox: Sandbox) -> None:
        if sandbox.state is not SandboxState.RUNNING:
            return
        sandbox.state = SandboxState.STOPPED
        if sandbox.published:
            sandbox.published = []
            await self._apply_rules()
        for endpoint in sandbox.endpoints.values():
            await self._unplumb(endpoint)

    async def remove_sandbox(self, ref: str, force: bool) -> Sandbox:
        async with self.lock:
            sandbox = self.state.sandbox(ref)
            if sandbox.state is SandboxState.RUNNING and not force:
                raise FailedPrecondition(
                    f"cannot remove running sandbox {sandbox.name}: stop it or use --force",
                    reason="SANDBOX_RUNNING",
                    metadata={"sandbox": sandbox.name},
                )
            await self._destroy(sandbox)
            self._forget(sandbox)
            await self.dns.sync(self.state)
        self._emit("sandbox", "destroy", sandbox.id, name=sandbox.name)
        return sandbox

    async def _destroy(self, sandbox: Sandbox) -> None:
        await self._stop(sandbox)
        self.state.sandboxes.pop(sandbox.id, None)
        self.dns.forget(sandbox)
        if not sandbox.attached:
            await remove_netns(Path(sandbox.netns).name)

    def inspect_sandbox(self, ref: str) -> Sandbox:
        return self.state.sandbox(ref)

    def list_sandboxes(self) -> list[Sandbox]:
        return sorted(self.state.sandboxes.values(), key=lambda s: s.name)

    def _publish(self, sandbox: Sandbox) -> list[PublishedPort]:
        """Host ports for the sandbox's bindings, towards its first address on a network
        that lets traffic in (none on internal networks, as in Docker)."""
        target = self._publish_target(sandbox)
        if not sandbox.port_bindings or target is None:
            return []
        network, address = target
        assert network.bridge is not None
        binding_ip = network.bridge.host_binding_ipv4
        default_ip = None if binding_ip == ANY_IPV4 else binding_ip
        wanted = [(b, b.host_ip or default_ip) for b in sandbox.port_bindings]
        claims = choose(wanted, self._claims(except_for=sandbox))
        return [
            PublishedPort(
                container_port=b.container_port,
                protocol=protocol,
                host_ip=host_ip,
                host_port=port,
                target=address,
                bridge=network.bridge.bridge_name,
            )
            for (b, _), (protocol, host_ip, port) in zip(wanted, claims, strict=True)
        ]

    def _publish_target(self, sandbox: Sandbox) -> tuple[Network, IPAddress] | None:
        for endpoint in endpoints.in_join_order(sandbox):
            network = self.state.networks[endpoint.network_id]
            if endpoint.ipv4 is not None and not network.internal:
                return network, endpoint.ipv4.ip
        return None

    def _claims(self, except_for: Sandbox) -> list[Claim]:
        return [
            (p.protocol, p.host_ip, p.host_port)
            for s in self.state.sandboxes.values()
            if s.id != except_for.id
            for p in s.published
        ]

    # -- the cluster ----------------------------------------------------------------------

    async def on_cluster_change(self, change: Change) -> None:
        """Another host changed a network or its endpoints: read what it is now."""
        assert self.overlay is not None
        async with self.lock:
            network = self.state.networks.get(change.network_id)
            if change.kind == "network" or network is None:
                await self._refresh_overlay_networks()
                network = self.state.networks.get(change.network_id)
            if network is None or change.kind != "endpoints":
                return
            if await self.overlay.refresh_endpoints(self.state, network):
                await self.dns.sync(self.state)

    async def on_cluster_resync(self) -> None:
        """Everything again: the networks, this host's endpoints, the others'."""
        assert self.overlay is not None
        async with self.lock:
            await self._refresh_overlay_networks()
            for network in [n for n in self.state.networks.values() if n.overlay]:
                endpoints = await self.overlay.reassert(self.state, network)
                await self.overlay.refresh_endpoints(self.state, network, endpoints)
            await self.dns.sync(self.state)

    async def _refresh_overlay_networks(self) -> None:
        assert self.overlay is not None
        added, removed = await self.overlay.refresh_networks(self.state)
        for network in added:
            self._save(network)
            self._emit("network", "create", network.id, name=network.name, type=network.driver)
        for network in removed:
            for sandbox, _ in self.state.endpoints_on(network.id):
                del sandbox.endpoints[network.id]  # not running: it held nothing there
                self._save(sandbox)
            self._forget(network)
            self._emit("network", "destroy", network.id, name=network.name, type=network.driver)
        if added or removed:
            await self._apply_rules()

    def peers(self, network: Network) -> dict[str, list[ClusterEndpoint]]:
        if self.overlay is None or not network.overlay:
            return {}
        return self.overlay.peers(self.state, network)

    # -- rules, state, events ----------------------------------------------------------

    async def _apply_rules(self) -> None:
        bridges = [
            BridgeRules(
                bridge=n.bridge.bridge_name,
                subnets=tuple(s.subnet for s in n.subnets),
                internal=n.internal,
                masquerade=n.bridge.enable_ip_masquerade and n.bridge.gateway_mode_ipv4 == "nat",
            )
            for n in self.state.networks.values()
            if n.bridge is not None
        ]
        forwards = [
            PortForward(
                protocol=p.protocol,
                host_ip=p.host_ip,
                host_port=p.host_port,
                target_ip=p.target,
                target_port=p.container_port,
                bridge=p.bridge,
            )
            for s in self.state.sandboxes.values()
            if s.state is SandboxState.RUNNING
            for p in s.published
        ]
        await self.nftables.apply(bridges, forwards)

    def _save(self, changed: Network | Sandbox) -> None:
        """Persist one changed object; the IPAM first, so an address in use is recorded
        before anything refers to it."""
        self.store.save_ipam(self.state.ipam)
        self.store.save(changed)

    def _forget(self, gone: Network | Sandbox) -> None:
        self.store.forget(gone)
        self.store.save_ipam(self.state.ipam)

    def _save_all(self) -> None:
        self.store.save_ipam(self.state.ipam)
        for item in [*self.state.networks.values(), *self.state.sandboxes.values()]:
            self.store.save(item)

    def _emit(self, kind: str, action: str, actor: str, **attributes: Any) -> None:
        self.events.publish(
            Event(
                type=kind,
                action=action,
                actor_id=actor,
                attributes={k: str(v) for k, v in attributes.items()},
            )
        )


def _check_netns_path(path: str) -> None:
    if not Path(path).exists():
        raise InvalidArgument([FieldViolation("netns_path", f"{path} does not exist")])
