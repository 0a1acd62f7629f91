"""berth.network.v1.SandboxService over the NetworkAgent."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import grpc.aio

from berth.api.network.v1 import sandbox_service_pb2 as pb
from berth.api.network.v1 import sandbox_service_pb2_grpc as pb_grpc
from berth.common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from berth.network.adapters import processes
from berth.network.agent import NetworkAgent
from berth.network.domain.filters import SANDBOX_KEYS, group, sandbox_matches
from berth.network.domain.model import SandboxState
from berth.network.domain.requests import SandboxRequest
from berth.network.transport import convert


class SandboxServicer(pb_grpc.SandboxServiceServicer):
    def __init__(self, agent: NetworkAgent) -> None:
        self.agent = agent

    def _message(self, sandbox) -> pb.Sandbox:
        return convert.sandbox_message(sandbox, self.agent.state)

    async def CreateSandbox(
        self, request: pb.CreateSandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSandboxResponse:
        sandbox = await self.agent.create_sandbox(
            SandboxRequest(
                name=request.name,
                networks=[
                    (a.network, convert.endpoint_request(a.endpoint_config))
                    for a in request.networks
                ],
                netns_path=request.netns_path,
                hostname=request.hostname,
                dns=list(request.dns),
                dns_search=list(request.dns_search),
                dns_options=list(request.dns_options),
                labels=dict(request.labels),
                port_bindings=convert.port_bindings(request),
                start=request.start,
            )
        )
        return pb.CreateSandboxResponse(sandbox=self._message(sandbox))

    async def InspectSandbox(
        self, request: pb.InspectSandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectSandboxResponse:
        return pb.InspectSandboxResponse(
            sandbox=self._message(self.agent.inspect_sandbox(request.sandbox))
        )

    async def ListSandboxes(
        self, request: pb.ListSandboxesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSandboxesResponse:
        filters = group(((f.key, f.value) for f in request.filters), SANDBOX_KEYS)
        names = {n.id: n.name for n in self.agent.state.networks.values()}
        sandboxes = [
            s
            for s in self.agent.list_sandboxes()
            if (request.all or s.state is SandboxState.RUNNING)
            and sandbox_matches(s, filters, names)
        ]
        return pb.ListSandboxesResponse(sandboxes=[self._message(s) for s in sandboxes])

    async def StartSandbox(
        self, request: pb.StartSandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartSandboxResponse:
        sandbox = await self.agent.start_sandbox(request.sandbox)
        return pb.StartSandboxResponse(sandbox=self._message(sandbox))

    async def StopSandbox(
        self, request: pb.StopSandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopSandboxResponse:
        sandbox = await self.agent.stop_sandbox(request.sandbox)
        return pb.StopSandboxResponse(sandbox=self._message(sandbox))

    async def RemoveSandbox(
        self, request: pb.RemoveSandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveSandboxResponse:
        for ref in request.sandboxes:  # all must exist before any is removed
            self.agent.inspect_sandbox(ref)
        removed = [
            (await self.agent.remove_sandbox(ref, request.force)).name for ref in request.sandboxes
        ]
        return pb.RemoveSandboxResponse(removed_sandboxes=removed)

    async def ExecSandbox(
        self, request: pb.ExecSandboxRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecSandboxResponse]:
        sandbox = self.agent.inspect_sandbox(request.sandbox)
        if not request.argv:
            raise InvalidArgument([FieldViolation("argv", "a command is required")])
        if request.workdir and not _is_dir(request.workdir):
            raise InvalidArgument(
                [FieldViolation("workdir", f"{request.workdir}: no such directory")]
            )
        if request.tty:
            raise InvalidArgument([FieldViolation("tty", "a terminal is not supported yet")])
        if sandbox.state is not SandboxState.RUNNING:
            raise FailedPrecondition(
                f"sandbox {sandbox.name} is not running",
                reason="SANDBOX_NOT_RUNNING",
                metadata={"sandbox": sandbox.name},
            )
        env = dict(item.partition("=")[::2] for item in request.env)
        async for item in processes.stream(
            sandbox.netns, list(request.argv), env=env, workdir=request.workdir, stdin=request.stdin
        ):
            if isinstance(item, int):
                yield pb.ExecSandboxResponse(exit_code=item)
            else:
                name, chunk = item
                yield pb.ExecSandboxResponse(**{name: chunk})

    async def ListPorts(
        self, request: pb.ListPortsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPortsResponse:
        sandbox = self.agent.inspect_sandbox(request.sandbox)
        wanted = convert.PROTOCOL_NAMES.get(request.protocol)
        ports = [
            p
            for p in sandbox.published
            if (not request.container_port or p.container_port == request.container_port)
            and (wanted is None or p.protocol == wanted)
        ]
        return pb.ListPortsResponse(ports=[convert.published_message(p) for p in ports])


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)
