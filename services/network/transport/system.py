"""berth.network.v1.SystemService: the agent's version and what it manages."""

from __future__ import annotations

import grpc.aio

from berth.api.network.v1 import system_service_pb2 as pb
from berth.api.network.v1 import system_service_pb2_grpc as pb_grpc
from berth.common.server import Lifecycle
from berth.common.version import version_info
from berth.network.agent import NetworkAgent
from berth.network.domain.model import SandboxState
from berth.network.settings import NetworkdSettings


class SystemServicer(pb_grpc.SystemServiceServicer):
    def __init__(
        self, agent: NetworkAgent, settings: NetworkdSettings, lifecycle: Lifecycle
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.lifecycle = lifecycle

    async def GetVersion(
        self, request: pb.GetVersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetVersionResponse:
        return pb.GetVersionResponse(
            version=version_info("berth-networkd", self.lifecycle.start_time)
        )

    async def GetInfo(
        self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInfoResponse:
        sandboxes = self.agent.list_sandboxes()
        running = sum(s.state is SandboxState.RUNNING for s in sandboxes)
        return pb.GetInfoResponse(
            host_name=self.settings.host_name,
            name_prefix=self.settings.name_prefix,
            state_dir=str(self.settings.state_dir),
            networks=len(self.agent.list_networks()),
            sandboxes=len(sandboxes),
            sandboxes_running=running,
            sandboxes_stopped=len(sandboxes) - running,
            underlay_address=self._underlay(),
            cluster=self._cluster(),
        )

    def _underlay(self) -> str:
        overlay = self.agent.overlay
        return "" if overlay is None else overlay.underlay_address

    def _cluster(self) -> pb.ClusterInfo:
        overlay = self.agent.overlay
        if overlay is None:
            return pb.ClusterInfo(enabled=False, connected=False)
        info = pb.ClusterInfo(enabled=True, connected=overlay.link.connected)
        for name, host in sorted(overlay.link.hosts.items()):
            entry = pb.ClusterHost(
                name=name,
                underlay_address=host.underlay_address,
                agent_address=host.agent_address,
                local=name == overlay.host,
            )
            entry.heartbeat_time.FromDatetime(host.heartbeat_time)
            info.hosts.append(entry)
        return info
