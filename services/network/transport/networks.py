"""berth.network.v1.NetworkService over the NetworkAgent."""

from __future__ import annotations

import grpc.aio

from berth.api.network.v1 import network_service_pb2 as pb
from berth.api.network.v1 import network_service_pb2_grpc as pb_grpc
from berth.network.agent import NetworkAgent
from berth.network.domain.filters import NETWORK_KEYS, group, network_matches
from berth.network.domain.requests import NetworkRequest
from berth.network.transport import convert


class NetworkServicer(pb_grpc.NetworkServiceServicer):
    def __init__(self, agent: NetworkAgent) -> None:
        self.agent = agent

    async def CreateNetwork(
        self, request: pb.CreateNetworkRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateNetworkResponse:
        driver = convert.DRIVER_NAMES.get(request.driver, "bridge")
        convert.check_scope(request.scope, driver)
        network = await self.agent.create_network(
            NetworkRequest(
                name=request.name,
                driver=driver,
                subnets=convert.subnet_requests(request.ipam),
                ipv4=request.ipv4 if request.HasField("ipv4") else True,
                ipv6=request.ipv6,
                internal=request.internal,
                attachable=request.attachable,
                labels=dict(request.labels),
                options=dict(request.options),
            )
        )
        return pb.CreateNetworkResponse(network=convert.network_message(network, self.agent.state))

    async def InspectNetwork(
        self, request: pb.InspectNetworkRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectNetworkResponse:
        network = self.agent.inspect_network(request.network)
        message = convert.network_message(network, self.agent.state)
        peers = self.agent.peers(network)
        message.peers.extend(convert.peer_messages(peers, verbose=request.verbose))
        return pb.InspectNetworkResponse(network=message)

    async def ListNetworks(
        self, request: pb.ListNetworksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListNetworksResponse:
        filters = group(((f.key, f.value) for f in request.filters), NETWORK_KEYS)
        state = self.agent.state
        networks = [
            n
            for n in self.agent.list_networks()
            if network_matches(n, filters, in_use=bool(state.endpoints_on(n.id)))
        ]
        return pb.ListNetworksResponse(
            networks=[convert.network_message(n, state) for n in networks]
        )

    async def RemoveNetwork(
        self, request: pb.RemoveNetworkRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveNetworkResponse:
        refs = list(request.networks)
        if request.force:  # -f: missing networks are not an error
            refs = [ref for ref in refs if self.agent.has_network(ref)]
        for ref in refs:  # all must exist before any is removed
            self.agent.inspect_network(ref)
        removed = [(await self.agent.remove_network(ref)).name for ref in refs]
        return pb.RemoveNetworkResponse(removed_networks=removed)

    async def PruneNetworks(
        self, request: pb.PruneNetworksRequest, context: grpc.aio.ServicerContext
    ) -> pb.PruneNetworksResponse:
        filters = group(((f.key, f.value) for f in request.filters), NETWORK_KEYS)
        removed = await self.agent.prune_networks(
            keep=lambda n: not network_matches(n, filters, in_use=False)
        )
        return pb.PruneNetworksResponse(removed_networks=[n.name for n in removed])

    async def ConnectNetwork(
        self, request: pb.ConnectNetworkRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectNetworkResponse:
        endpoint = await self.agent.connect(
            request.network, request.sandbox, convert.endpoint_request(request.endpoint_config)
        )
        network = self.agent.state.networks[endpoint.network_id]
        sandbox = self.agent.inspect_sandbox(request.sandbox)
        return pb.ConnectNetworkResponse(
            endpoint=convert.endpoint_message(endpoint, network, sandbox)
        )

    async def DisconnectNetwork(
        self, request: pb.DisconnectNetworkRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisconnectNetworkResponse:
        await self.agent.disconnect(request.network, request.sandbox, request.force)
        return pb.DisconnectNetworkResponse()
