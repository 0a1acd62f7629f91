"""berth.mcp.v1.OAuthService over the OAuth broker (`berth mcp oauth ...`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc.aio

from berth.api.mcp.v1 import oauth_service_pb2 as pb
from berth.api.mcp.v1 import oauth_service_pb2_grpc as pb_grpc
from berth.common.errors import FieldViolation, InvalidArgument
from berth.mcp.domain.oauth import AppView
from berth.mcp.gateway.oauth import OAuthBroker, Started


class OAuthServicer(pb_grpc.OAuthServiceServicer):
    def __init__(self, broker: OAuthBroker) -> None:
        self.broker = broker

    async def ListOAuthApps(
        self, request: pb.ListOAuthAppsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOAuthAppsResponse:
        views = await asyncio.to_thread(self.broker.list)
        return pb.ListOAuthAppsResponse(apps=[app_to_proto(v) for v in views])

    async def AuthorizeOAuthApp(
        self, request: pb.AuthorizeOAuthAppRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AuthorizeOAuthAppResponse]:
        _needs_app(request.app)
        events: asyncio.Queue[Started] = asyncio.Queue()
        work = asyncio.create_task(
            self.broker.authorize(
                request.app, list(request.scopes), request.redirect_uri, events.put
            )
        )
        try:
            while not work.done():
                waiting = asyncio.create_task(events.get())
                await asyncio.wait({work, waiting}, return_when=asyncio.FIRST_COMPLETED)
                if waiting.done():
                    yield pb.AuthorizeOAuthAppResponse(started=started_to_proto(waiting.result()))
                else:
                    waiting.cancel()
            while not events.empty():
                yield pb.AuthorizeOAuthAppResponse(started=started_to_proto(events.get_nowait()))
            yield pb.AuthorizeOAuthAppResponse(authorized=app_to_proto(work.result()))
        finally:
            # A caller that went away abandons the authorization.
            work.cancel()
            with contextlib.suppress(BaseException):
                await work

    async def CompleteOAuthAuthorization(
        self, request: pb.CompleteOAuthAuthorizationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteOAuthAuthorizationResponse:
        if not request.callback_url:
            raise InvalidArgument(
                [FieldViolation("callback_url", "give the URL the browser was sent back to")]
            )
        view = await self.broker.complete(request.callback_url)
        return pb.CompleteOAuthAuthorizationResponse(app=app_to_proto(view))

    async def RevokeOAuthApp(
        self, request: pb.RevokeOAuthAppRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeOAuthAppResponse:
        _needs_app(request.app)
        return pb.RevokeOAuthAppResponse(app=app_to_proto(await self.broker.revoke(request.app)))


def _needs_app(name: str) -> None:
    if not name:
        raise InvalidArgument([FieldViolation("app", "give the OAuth app's name")])


def app_to_proto(view: AppView) -> pb.OAuthApp:
    message = pb.OAuthApp(
        name=view.name,
        provider=view.provider,
        authorized=view.authorized,
        scopes=list(view.scopes),
        servers=list(view.servers),
        authorization_server=view.authorization_server,
        dynamic_client=view.dynamic_client,
    )
    if view.expire_time is not None:
        message.expire_time.FromDatetime(view.expire_time)
    return message


def started_to_proto(started: Started) -> pb.OAuthAuthorizationStarted:
    message = pb.OAuthAuthorizationStarted(
        authorization_url=started.authorization_url,
        state=started.state,
        redirect_uri=started.redirect_uri,
    )
    message.expire_time.FromDatetime(started.expire_time)
    return message
