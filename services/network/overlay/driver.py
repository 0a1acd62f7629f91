"""The agent's side of overlay networks: what it asks of the cluster store and of its
VXLAN datapath when a network is created or removed, an endpoint comes or goes, or the
cluster tells it that something changed elsewhere.

The cluster store is the truth for overlay networks and for the endpoints of other hosts;
each agent is the truth for its own endpoints and says so again at every resync, so a
cluster store that lost or missed something converges back. The agent calls in here
under its lock, with its state; nothing here takes the lock itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_address
from typing import Any

import structlog

from berth.common.errors import AlreadyExists, FailedPrecondition
from berth.network.adapters.cluster_store import ClusterStore
from berth.network.adapters.vxlan import Vxlan
from berth.network.domain import endpoints as endpoint_rules
from berth.network.domain.model import (
    BridgeOptions,
    Driver,
    Endpoint,
    IPAddress,
    IPInterface,
    Network,
    Sandbox,
)
from berth.network.domain.overlay import (
    VNI_OPTION,
    ClusterEndpoint,
    bridge_name,
    check_unique,
    choose_vni,
    claim_host,
    claim_owner,
    overlay_options,
    peers_of,
    remote_endpoints,
    vxlan_name,
)
from berth.network.domain.requests import NetworkRequest
from berth.network.domain.state import NetworkState, decode_network, encode
from berth.network.domain.validation import check_labels, check_name
from berth.network.overlay.link import ClusterLink

log = structlog.get_logger("berth.network.overlay")

NO_CLUSTER = (
    "overlay networks need a cluster: start the agent with --redis-url redis://HOST:PORT "
    "(or BERTH_REDIS_URL) on every host"
)


def no_cluster() -> FailedPrecondition:
    return FailedPrecondition(NO_CLUSTER, reason="NO_CLUSTER")


class OverlayDriver:
    def __init__(
        self, *, store: ClusterStore, link: ClusterLink, vxlan: Vxlan, host_name: str
    ) -> None:
        self.store = store
        self.link = link
        self.vxlan = vxlan
        self.host = host_name

    @property
    def underlay_address(self) -> str:
        return self.vxlan.underlay_address

    # ---- networks --------------------------------------------------------------------------

    async def create_network(
        self, state: NetworkState, request: NetworkRequest, network_id: str, avoid: list[Any]
    ) -> Network:
        """Plan the network here, then add it to the cluster where its name and VNI are
        checked against every other host's networks, atomically."""
        self.link.require()
        name = check_name(request.name)
        options = overlay_options(request.options)
        labels = check_labels(request.labels)
        subnets = state.ipam.plan(
            list(request.subnets), ipv4=request.ipv4, ipv6=request.ipv6, avoid=avoid
        )
        draft = request.network(
            network_id=network_id,
            name=name,
            driver=Driver.OVERLAY,
            bridge=BridgeOptions(bridge_name=bridge_name(network_id), mtu=options.mtu),
            subnets=subnets,
            labels=labels,
        )

        def build(existing: dict[str, dict[str, Any]]) -> dict[str, Any]:
            check_unique(draft, existing.values())
            draft.vni = choose_vni((n["vni"] for n in existing.values()), options.vni)
            draft.options = {**dict(request.options), VNI_OPTION: str(draft.vni)}
            return encode(draft)

        record = await self.store.create_network(build, self.host)
        network = decode_network(record)
        self.adopt(state, network)
        return network

    async def remove_network(self, network: Network) -> None:
        self.link.require()
        holders = await self.store.remove_network(network.id, self.host)
        if holders:
            where = sorted({f"{e.sandbox} on {e.host}" for e in holders})
            raise FailedPrecondition(
                f"error while removing network: network {network.name} id {network.id} "
                f"has active endpoints ({', '.join(where)})",
                reason="NETWORK_IN_USE",
                metadata={
                    "network": network.name,
                    "hosts": ",".join(sorted({e.host for e in holders})),
                },
            )

    def adopt(self, state: NetworkState, network: Network) -> bool:
        """Take a cluster network into the local state; False when it cannot be used
        here (its subnet overlaps one of this host's networks)."""
        try:
            state.ipam.add_network(network.id, network.subnets)
        except (AlreadyExists, FailedPrecondition, ValueError) as error:
            log.warning("overlay network unusable here", network=network.name, error=str(error))
            return False
        state.networks[network.id] = network
        return True

    def drop(self, state: NetworkState, network_id: str) -> None:
        state.networks.pop(network_id, None)
        state.ipam.remove_network(network_id)
        state.remote.pop(network_id, None)

    async def refresh_networks(self, state: NetworkState) -> tuple[list[Network], list[Network]]:
        """Make the local copies match the cluster's; (added, removed). A network the
        store lost while this host has running endpoints on it is put back."""
        records = await self.store.networks()
        added = [
            network
            for network in (decode_network(r) for r in records.values())
            if network.id not in state.networks and self.adopt(state, network)
        ]
        removed = []
        for network in [n for n in state.networks.values() if n.overlay]:
            if network.id in records:
                continue
            in_use = bool(state.running_endpoints_on(network.id))
            if in_use and await self.store.restore_network(encode(network), self.host):
                log.info("put a lost overlay network back", network=network.name)
                continue
            removed.append(network)
        for network in removed:
            self.drop(state, network.id)
        return added, removed

    # ---- endpoints -------------------------------------------------------------------------

    async def claim_addresses(
        self, state: NetworkState, network: Network, endpoint: Endpoint
    ) -> list[IPInterface]:
        """Addresses for the endpoint, each claimed in the cluster (a claim another host
        won first sends the search on to the next free address)."""
        self.link.require()
        owner = claim_owner(self.host, endpoint.id)
        claims = await self.store.claims(network.id)
        state.ipam.set_in_use(network.id, (ip_address(a) for a in claims))
        taken: list[IPInterface] = []
        try:
            for version, static in ((4, endpoint.static_ipv4), (6, endpoint.static_ipv6)):
                address = await self._claim_one(state, network, version, static, owner)
                if address is not None:
                    taken.append(address)
        except BaseException:
            await self.release(network.id, [a.ip for a in taken], owner)
            raise
        return taken

    async def _claim_one(
        self,
        state: NetworkState,
        network: Network,
        version: int,
        static: IPAddress | None,
        owner: str,
    ) -> IPInterface | None:
        field = endpoint_rules.address_field(network, version)
        if field is None:
            return None
        while True:
            address = state.ipam.allocate(network.id, version, static, field=field)
            if await self.store.claim(network.id, str(address.ip), owner):
                return address
            if static is not None:
                state.ipam.release(network.id, address.ip)
                raise AlreadyExists(
                    f"address {static} is already in use on network {network.name} "
                    "(by a sandbox on another host)",
                    reason="ADDRESS_IN_USE",
                    metadata={"network": network.name, "address": str(static)},
                )

    async def release(self, network_id: str, addresses: Iterable[IPAddress], owner: str) -> None:
        await self.store.release(network_id, [str(a) for a in addresses], owner)

    async def attach(self, state: NetworkState, network: Network) -> None:
        """The network's bridge and VXLAN device on this host, knowing every remote
        endpoint there is now."""
        await self.ensure_datapath(network)
        endpoints = await self.store.endpoints(network.id)
        await self.refresh_endpoints(state, network, endpoints, program=True)

    async def ensure_datapath(self, network: Network) -> None:
        assert network.bridge is not None
        await self.vxlan.ensure(
            bridge=network.bridge.bridge_name,
            vxlan=vxlan_name(network.id),
            vni=network.vni,
            mtu=network.bridge.mtu,
            addresses=endpoint_rules.gateway_interfaces(network),
        )

    async def detach(self, network: Network) -> None:
        assert network.bridge is not None
        await self.vxlan.remove(bridge=network.bridge.bridge_name, vxlan=vxlan_name(network.id))

    def record(self, sandbox: Sandbox, endpoint: Endpoint) -> ClusterEndpoint:
        return ClusterEndpoint(
            id=endpoint.id,
            network_id=endpoint.network_id,
            host=self.host,
            underlay_address=self.underlay_address,
            sandbox=sandbox.name,
            sandbox_id=sandbox.id,
            mac_address=endpoint.mac_address,
            ipv4=endpoint.ipv4,
            ipv6=endpoint.ipv6,
            aliases=tuple(endpoint.aliases),
        )

    async def announce(self, sandbox: Sandbox, endpoint: Endpoint) -> None:
        if not await self.store.put_endpoint(self.record(sandbox, endpoint)):
            raise FailedPrecondition(
                f"network {endpoint.network_id} was removed from the cluster meanwhile",
                reason="NETWORK_REMOVED",
                metadata={"network_id": endpoint.network_id},
            )

    async def withdraw(self, endpoint: Endpoint, addresses: list[IPAddress]) -> None:
        """Best effort: while the store is unreachable, the next resync finishes it."""
        if not self.link.connected:
            return
        try:
            await self.store.remove_endpoint(endpoint.network_id, endpoint.id, self.host)
            await self.release(endpoint.network_id, addresses, claim_owner(self.host, endpoint.id))
        except Exception as error:  # the resync retries
            log.warning("endpoint withdrawal left to the next resync", error=str(error))

    async def refresh_endpoints(
        self,
        state: NetworkState,
        network: Network,
        endpoints: list[ClusterEndpoint] | None = None,
        *,
        program: bool = False,
    ) -> bool:
        """Learn the other hosts' endpoints on `network`, and program them here if this
        host has endpoints there; whether anything changed."""
        if endpoints is None:
            endpoints = await self.store.endpoints(network.id)
        remote = sorted(remote_endpoints(endpoints, self.host), key=lambda e: e.id)
        changed = remote != state.remote.get(network.id, [])
        state.remote[network.id] = remote
        if program or state.running_endpoints_on(network.id):
            assert network.bridge is not None
            await self.vxlan.set_peers(
                vxlan_name(network.id), peers_of(remote), bridge=network.bridge.bridge_name
            )
        return changed

    async def reassert(self, state: NetworkState, network: Network) -> list[ClusterEndpoint]:
        """Make the store hold exactly this host's endpoints on `network` and their
        address claims; returns every endpoint on the network afterwards."""
        mine = {e.id: (s, e) for s, e in state.running_endpoints_on(network.id)}
        stored = await self.store.endpoints(network.id)
        for endpoint in stored:
            if endpoint.host == self.host and endpoint.id not in mine:
                await self.store.remove_endpoint(network.id, endpoint.id, self.host)
        await self._release_orphan_claims(network, set(mine))
        have = {e.id for e in stored if e.host == self.host}
        for endpoint_id, (sandbox, endpoint) in mine.items():
            if endpoint_id not in have:
                await self._reclaim(network, sandbox, endpoint)
        return [e for e in stored if e.host != self.host] + [
            self.record(s, e) for s, e in mine.values()
        ]

    async def _release_orphan_claims(self, network: Network, mine: set[str]) -> None:
        for address, owner in (await self.store.claims(network.id)).items():
            endpoint_id = owner.partition("/")[2]
            if claim_host(owner) == self.host and endpoint_id not in mine:
                await self.store.release(network.id, [address], owner)

    async def _reclaim(self, network: Network, sandbox: Sandbox, endpoint: Endpoint) -> None:
        owner = claim_owner(self.host, endpoint.id)
        for address in (endpoint.ipv4, endpoint.ipv6):
            if address is not None and not await self.store.claim(
                network.id, str(address.ip), owner
            ):
                log.error(
                    "an address of this host's endpoint is held by another host",
                    network=network.name,
                    sandbox=sandbox.name,
                    address=str(address.ip),
                )
        await self.announce(sandbox, endpoint)

    def peers(self, state: NetworkState, network: Network) -> dict[str, list[ClusterEndpoint]]:
        """Hosts with endpoints on the network (this one included) and their endpoints."""
        by_host: dict[str, list[ClusterEndpoint]] = {}
        for sandbox, endpoint in state.running_endpoints_on(network.id):
            by_host.setdefault(self.host, []).append(self.record(sandbox, endpoint))
        for endpoint in state.remote.get(network.id, []):
            by_host.setdefault(endpoint.host, []).append(endpoint)
        return by_host
