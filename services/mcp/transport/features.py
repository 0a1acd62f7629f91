"""berth.mcp.v1.FeatureService."""

from __future__ import annotations

import grpc.aio

from berth.api.mcp.v1 import feature_service_pb2 as pb
from berth.api.mcp.v1 import feature_service_pb2_grpc as pb_grpc
from berth.mcp.domain.features import Feature, FeatureFlags


class FeatureServicer(pb_grpc.FeatureServiceServicer):
    def __init__(self, flags: FeatureFlags) -> None:
        self.flags = flags

    async def ListFeatures(
        self, request: pb.ListFeaturesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListFeaturesResponse:
        return pb.ListFeaturesResponse(features=[_to_proto(f) for f in self.flags.list()])

    async def EnableFeature(
        self, request: pb.EnableFeatureRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnableFeatureResponse:
        return pb.EnableFeatureResponse(feature=_to_proto(self.flags.set(request.name, True)))

    async def DisableFeature(
        self, request: pb.DisableFeatureRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableFeatureResponse:
        return pb.DisableFeatureResponse(feature=_to_proto(self.flags.set(request.name, False)))


def _to_proto(feature: Feature) -> pb.Feature:
    return pb.Feature(name=feature.name, description=feature.description, enabled=feature.enabled)
