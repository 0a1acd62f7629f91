"""berth.mcp.v1.SecretService over the Secrets domain: set, list, remove and export secrets.

The vault is synchronous and takes a file lock, so every call runs in a worker thread.
Log lines name secrets and servers, never values.
"""

from __future__ import annotations

import asyncio

import grpc.aio
import structlog

from berth.api.mcp.v1 import secret_service_pb2 as pb
from berth.api.mcp.v1 import secret_service_pb2_grpc as pb_grpc
from berth.mcp.domain.secrets import ExportedSecret, Secrets, SecretView

log = structlog.get_logger("berth.mcp.secrets")


class SecretServicer(pb_grpc.SecretServiceServicer):
    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets

    async def SetSecret(
        self, request: pb.SetSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetSecretResponse:
        view = await asyncio.to_thread(
            self.secrets.set, request.name, request.value, request.provider
        )
        return pb.SetSecretResponse(secret=secret_to_proto(view))

    async def ListSecrets(
        self, request: pb.ListSecretsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSecretsResponse:
        views = await asyncio.to_thread(self.secrets.list)
        return pb.ListSecretsResponse(secrets=[secret_to_proto(view) for view in views])

    async def RemoveSecrets(
        self, request: pb.RemoveSecretsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveSecretsResponse:
        removed = await asyncio.to_thread(self.secrets.remove, list(request.names), request.all)
        return pb.RemoveSecretsResponse(names=removed)

    async def ExportSecrets(
        self, request: pb.ExportSecretsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportSecretsResponse:
        exported = await asyncio.to_thread(self.secrets.export, list(request.servers))
        # Who read which values: the one call that reveals them.
        log.info(
            "secrets exported",
            names=[secret.name for secret in exported],
            servers=list(request.servers) or "enabled",
            peer=context.peer(),
        )
        return pb.ExportSecretsResponse(secrets=[exported_to_proto(s) for s in exported])


def secret_to_proto(view: SecretView) -> pb.Secret:
    info = view.info
    message = pb.Secret(name=info.name, provider=info.provider, servers=list(view.servers))
    message.create_time.FromDatetime(info.create_time)
    message.update_time.FromDatetime(info.update_time)
    return message


def exported_to_proto(secret: ExportedSecret) -> pb.ExportedSecret:
    return pb.ExportedSecret(name=secret.name, value=secret.value, servers=list(secret.servers))
