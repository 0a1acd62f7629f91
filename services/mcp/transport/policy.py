"""berth.mcp.v1.PolicyService over the Policies domain: set and dump the secret policy."""

from __future__ import annotations

import asyncio

import grpc.aio
import structlog

from berth.api.mcp.v1 import policy_service_pb2 as pb
from berth.api.mcp.v1 import policy_service_pb2_grpc as pb_grpc
from berth.mcp.domain.policy import Policies

log = structlog.get_logger("berth.mcp.policy")


class PolicyServicer(pb_grpc.PolicyServiceServicer):
    def __init__(self, policies: Policies) -> None:
        self.policies = policies

    async def SetPolicy(
        self, request: pb.SetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetPolicyResponse:
        policy = await asyncio.to_thread(self.policies.set, request.content)
        _, update_time = await asyncio.to_thread(self.policies.dump)
        log.info("secret policy set", rules=len(policy.rules), peer=context.peer())
        response = pb.SetPolicyResponse(rule_count=len(policy.rules))
        if update_time is not None:
            response.update_time.FromDatetime(update_time)
        return response

    async def DumpPolicy(
        self, request: pb.DumpPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.DumpPolicyResponse:
        content, update_time = await asyncio.to_thread(self.policies.dump)
        response = pb.DumpPolicyResponse(content=content)
        if update_time is not None:
            response.update_time.FromDatetime(update_time)
        return response
