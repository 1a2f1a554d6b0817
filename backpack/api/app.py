"""The ASGI application of one backpack."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from backpack.api.context import InstanceContext
from backpack.api.http import Receive, Request, Response, Route, Router, Scope, Send, json_response
from backpack.api.routes import collections, health, meta, records
from backpack.errors import BackpackError, MethodNotAllowed, RateLimited

log = logging.getLogger("backpack.api")

_REQUEST_ID_OK = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.")


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if 0 < len(value) <= 64 and set(value.decode("latin-1")) <= _REQUEST_ID_OK:
                return bytes(value)
            break
    return os.urandom(8).hex().encode()


def error_response(exc: BackpackError) -> Response:
    response = json_response(exc.body(), exc.status)
    if isinstance(exc, MethodNotAllowed):
        response.headers.append((b"allow", str(exc.details["allow"]).encode()))
    elif isinstance(exc, RateLimited):
        response.headers.append((b"retry-after", str(exc.retry_after).encode()))
    return response


class BackpackApp:
    """Dispatches HTTP requests to routes; every failure becomes the contract's error body."""

    def __init__(self, ctx: InstanceContext) -> None:
        self.ctx = ctx
        self.routes: list[Route] = []
        self.routes += health.routes(ctx)
        self.routes += collections.routes(ctx)
        self.routes += records.routes(ctx)
        self.routes += meta.routes(ctx, self._route_table)
        self.router = Router(self.routes)

    def _route_table(self) -> Sequence[Route]:
        return self.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _request_id(scope)
        try:
            route, params = self.router.match(scope["method"], scope["path"])
            response = await route.handler(Request(scope, receive, params))
        except BackpackError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("request %s failed", request_id.decode())
            response = error_response(
                BackpackError(
                    "Something went wrong on our side.", {"request_id": request_id.decode()}
                )
            )
        await response.send(send, [(b"x-request-id", request_id)])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.ctx.data.open()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.ctx.data.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
