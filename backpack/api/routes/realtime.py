"""GET /api/realtime: the WebSocket endpoint, on raw ASGI (protocol: docs/realtime.md).

This layer only translates: it checks the upgrade (Origin for cookies), picks
the credential, accepts, and turns ASGI messages into calls on the hub. A
plain HTTP GET is answered with 400 and listed in the OpenAPI document, which
has no words for WebSockets.
"""

from __future__ import annotations

import asyncio
import logging

from backpack.api import schemas
from backpack.api.context import SESSION_COOKIE, InstanceContext
from backpack.api.http import Receive, Request, Response, Route, Scope, Send
from backpack.errors import BadRequest
from backpack.realtime.connection import POLICY, Connection
from backpack.realtime.hub import RealtimeHub

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


def _credential(ctx: InstanceContext, scope: Scope, receive: Receive) -> tuple[str | None, str]:
    """The upgrade's token (?token= or the session cookie), and why to refuse it ("" if not)."""
    # Browsers send the page's Origin on upgrades; our own origin is http(s), not ws(s).
    http_scheme = "https" if scope.get("scheme") == "wss" else "http"
    request = Request({**scope, "scheme": http_scheme}, receive, {})
    try:
        query = request.query
    except BadRequest:
        query = {}
    token = query.get("token") or None
    if token is not None:
        return token, ""
    cookie = request.cookies.get(SESSION_COOKIE) or None
    origin = request.headers.get("origin")
    if cookie is not None and origin is not None and not ctx.origin_allowed(origin, request):
        return cookie, "cookie credentials from an origin that is not allowed"
    return cookie, ""


class _Socket:
    """The ASGI side of one connection (two bound methods cost less than two closures)."""

    __slots__ = ("send",)

    def __init__(self, send: Send) -> None:
        self.send = send

    async def text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        await self.send({"type": "websocket.close", "code": code, "reason": reason})


async def serve(ctx: InstanceContext, scope: Scope, receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    token, refusal = _credential(ctx, scope, receive)
    # The server keeps the scope as long as the socket: its headers are not needed again.
    scope["headers"] = []
    await send({"type": "websocket.accept"})
    if refusal:
        await send({"type": "websocket.close", "code": POLICY, "reason": refusal})
        return
    hub = ctx.realtime
    socket = _Socket(send)
    conn = Connection(socket.text, socket.close, hub.limits)
    # This task reads; the connection cancels it once it has sent its close frame (or
    # given up on it), when no disconnect may ever come from a peer that stopped reading.
    conn.reader = asyncio.current_task()
    try:
        await hub.connect(conn, token)
        while not conn.finished and await _read_one(hub, conn, receive):
            pass
    except asyncio.CancelledError:
        if not conn.finished:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    except Exception:
        log.exception("realtime connection %s failed", conn.id)
    finally:
        conn.reader = None
        await hub.disconnect(conn)


async def _read_one(hub: RealtimeHub, conn: Connection, receive: Receive) -> bool:
    """Handle the next message; False once the peer is gone. (Its own frame, so that an
    idle connection does not keep its last message referenced.)"""
    event = await receive()
    kind = event["type"]
    if kind == "websocket.disconnect":
        return False
    if kind == "websocket.receive":
        text = event.get("text")
        if text is not None:
            await hub.handle_text(conn, text)
        else:
            hub.handle_binary(conn, event.get("bytes") or b"")
    return True
