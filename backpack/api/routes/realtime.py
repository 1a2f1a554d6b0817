"""GET /api/realtime: the WebSocket endpoint, on raw ASGI (protocol: docs/realtime.md).

This layer only translates: it checks the upgrade (Origin for cookies), picks
the credential, accepts, and turns ASGI messages into calls on the hub. A
plain HTTP GET is answered with 400 and listed in the OpenAPI document, which
has no words for WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from backpack.api import schemas
from backpack.api.context import SESSION_COOKIE, InstanceContext
from backpack.api.http import Receive, Request, Response, Route, Scope, Send
from backpack.errors import BadRequest
from backpack.realtime.connection import POLICY, Connection

PATH = "/api/realtime"
log = logging.getLogger("backpack.realtime")


def routes(ctx: InstanceContext) -> list[Route]:
    async def realtime(request: Request) -> Response:
        raise BadRequest(
            "GET /api/realtime is a WebSocket endpoint: connect with 'Upgrade: websocket'."
        )

    return [
        Route(
            "GET",
            PATH,
            realtime,
            "Realtime changes, channels and presence over a WebSocket (see docs/realtime.md)",
            "realtime",
            params=(),
            responses={101: None, 400: schemas.ERROR},
        )
    ]


async def serve(ctx: InstanceContext, scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    # Browsers send the page's Origin on upgrades; our own origin is http(s), not ws(s).
    http_scheme = "https" if scope.get("scheme") == "wss" else "http"
    request = Request({**scope, "scheme": http_scheme}, receive, {})
    try:
        query = request.query
    except BadRequest:
        query = {}
    token = query.get("token") or None
    refusal = None
    if token is None:
        cookie = request.cookies.get(SESSION_COOKIE) or None
        origin = request.headers.get("origin")
        if cookie is not None and origin is not None and not ctx.origin_allowed(origin, request):
            refusal = "cookie credentials from an origin that is not allowed"
        token = cookie
    await send({"type": "websocket.accept"})
    if refusal is not None:
        await send({"type": "websocket.close", "code": POLICY, "reason": refusal})
        return

    async def send_text(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    async def send_close(code: int, reason: str) -> None:
        await send({"type": "websocket.close", "code": code, "reason": reason})

    hub = ctx.realtime
    conn = Connection(send_text, send_close, hub.limits)

    async def read() -> None:
        try:
            while True:
                event = await receive()
                kind = event["type"]
                if kind == "websocket.disconnect":
                    return
                if kind != "websocket.receive":
                    continue
                text = event.get("text")
                if text is not None:
                    await hub.handle_text(conn, text)
                else:
                    hub.handle_binary(conn, event.get("bytes") or b"")
        except Exception:
            log.exception("realtime connection %s failed", conn.id)

    reader: asyncio.Task[None] | None = None
    try:
        await hub.connect(conn, token)
        reader = asyncio.ensure_future(read())
        finished = asyncio.ensure_future(conn.wait_finished())
        await asyncio.wait((reader, finished), return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        await hub.disconnect(conn)
