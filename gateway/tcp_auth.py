"""Tokens for the gateway's own methods on TCP (status, hosts, reflection).

Forwarded methods are checked by the Forwarder against their scopes; these need any
valid token. Health stays open so that load balancers and probes can use it.
"""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio

from berth.common.errors import BerthError
from berth.common.interceptors import HandlerInterceptor, behavior_field, drive
from berth.common.status import to_status
from berth.gateway.auth import TokenFile

OPEN_PREFIXES = ("/grpc.health.v1.",)
AUTHORIZATION_KEY = "authorization"


class TokenInterceptor(HandlerInterceptor):
    def __init__(self, tokens: TokenFile, forwarded: set[str]) -> None:
        self.tokens = tokens
        self.forwarded = forwarded

    def applies_to(self, method: str, handler: grpc.RpcMethodHandler) -> bool:
        return method not in self.forwarded and not method.startswith(OPEN_PREFIXES)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        field = behavior_field(handler)
        behavior = getattr(handler, field)

        async def check(context: grpc.aio.ServicerContext) -> None:
            if context.peer().startswith("unix:"):
                return
            metadata = dict(context.invocation_metadata() or ())
            try:
                self.tokens.book().identify(metadata.get(AUTHORIZATION_KEY))
            except BerthError as error:
                await context.abort_with_status(to_status(error, "gateway"))

        if handler.response_streaming:

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context)
                async for item in drive(behavior(request, context)):
                    yield item

            return handler._replace(**{field: streaming})

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await behavior(request, context)

        return handler._replace(**{field: unary})
