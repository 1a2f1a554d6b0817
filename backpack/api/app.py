"""The ASGI application of one backpack."""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence

from backpack.api.context import InstanceContext
from backpack.api.http import (
    NO_GROUP,
    Receive,
    Request,
    RequestRecord,
    Response,
    Route,
    Router,
    Scope,
    Send,
    empty_response,
    json_response,
)
from backpack.api.routes import (
    auth,
    collections,
    files,
    health,
    meta,
    oauth,
    realtime,
    records,
    sdk,
    settings,
    users,
)
from backpack.errors import (
    BackpackError,
    Forbidden,
    MethodNotAllowed,
    RangeNotSatisfiable,
    RateLimited,
)
from backpack.heap import freeze_startup_objects

log = logging.getLogger("backpack.api")

_REQUEST_ID_OK = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.")


# Request ids label log lines; they need not be secret, only distinct.
_request_ids = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _request_ids.seed(os.urandom(16)))


def request_id_of(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if 0 < len(value) <= 64 and set(value.decode("latin-1")) <= _REQUEST_ID_OK:
                return bytes(value)
            break
    return f"{_request_ids.getrandbits(64):016x}".encode()


_CORS_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


_PREFIX = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)+")  # no empty, . or .. segment


def check_forwarded_prefix(prefix: str) -> str:
    """`prefix` without a trailing slash, if it is a clean path prefix (`/i/todo`)."""
    prefix = prefix.rstrip("/")
    if not _PREFIX.fullmatch(prefix) or len(prefix) > 200:
        raise ValueError(f"{prefix[:60]!r} is not a path prefix like /i/todo.")
    return prefix


class ForwardedPrefix:
    """A backpack a proxy also serves under a path prefix (the control plane's `/i/NAME` in
    front of a container, while Traefik serves `NAME.DOMAIN` at the root).

    A request whose X-Forwarded-Prefix ends with `prefix` gets that value as its
    root path, so its session cookie is scoped to the prefix and its links carry it,
    exactly as when the control plane runs the backpack in its own process. Any other
    value is ignored: a client reaching the backpack directly can only choose between
    the two forms it already has.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], prefix: str):
        self.app = app
        self.prefix = check_forwarded_prefix(prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            value = _header(scope, b"x-forwarded-prefix")
            if value is not None:
                value = value.rstrip("/")
                if value.endswith(self.prefix) and _PREFIX.fullmatch(value) and len(value) <= 200:
                    scope = {**scope, "root_path": value}
        await self.app(scope, receive, send)


def error_response(exc: BackpackError) -> Response:
    response = json_response(exc.body(), exc.status)
    if isinstance(exc, MethodNotAllowed):
        response.headers.append((b"allow", str(exc.details["allow"]).encode()))
    elif isinstance(exc, RateLimited):
        response.headers.append((b"retry-after", str(exc.retry_after).encode()))
    elif isinstance(exc, RangeNotSatisfiable):
        response.headers.append((b"content-range", f"bytes */{exc.size}".encode()))
    return response


class AnsweredRequests:
    """The answered HTTP requests of an observed backpack, not yet taken by its observer
    (the control plane's metrics and request log).

    Every request appends one RequestRecord to `records` (`note`; BackpackApp._http inlines
    it, once per request) and calls `full()` once `records` holds `limit`; `full` takes them
    by replacing `records` with a new list.
    """

    __slots__ = ("full", "limit", "records")

    def __init__(self, full: Callable[[], None], limit: int) -> None:
        self.records: list[RequestRecord] = []
        self.limit = limit
        self.full = full

    def note(self, scope: Scope, status: int, started: float) -> None:
        """Note a request answered with `status`, begun at `started` (time.time(): one clock
        for the duration and the log's time, read once more here), its route group to be
        taken from its path."""
        now = time.time()
        records = self.records
        records.append(
            (
                scope["method"],
                scope["path"],
                status,
                now - started,
                scope.get("backpack.user"),
                scope.get("backpack.request_id", ""),
                now,
                NO_GROUP,
            )
        )
        if len(records) >= self.limit:
            self.full()


class BackpackApp:
    """Dispatches HTTP requests to routes; every failure becomes the contract's error body."""

    def __init__(self, ctx: InstanceContext) -> None:
        self.ctx = ctx
        self.routes: list[Route] = []
        self.routes += health.routes(ctx)
        self.routes += collections.routes(ctx)
        self.routes += records.routes(ctx)
        self.routes += auth.routes(ctx)
        self.routes += oauth.routes(ctx)
        self.routes += users.routes(ctx)
        self.routes += files.routes(ctx)
        self.routes += settings.routes(ctx)
        self.routes += realtime.routes(ctx)
        self.routes += sdk.routes(ctx)
        self.routes += meta.routes(ctx, self._route_table)
        self.router = Router(self.routes)
        # Where every answered HTTP request is noted for the control plane's metrics and
        # request log. None when the backpack runs alone.
        self.answered: AnsweredRequests | None = None

    def _route_table(self) -> Sequence[Route]:
        return self.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            if scope["path"] == realtime.PATH:
                await realtime.serve(self.ctx, scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request; when observed, note it in `answered` (as
        AnsweredRequests.note would, inlined: this runs on every request)."""
        answered = self.answered
        started = 0.0 if answered is None else time.time()
        request_id = request_id_of(scope)
        text_id = scope["backpack.request_id"] = request_id.decode()
        method: str = scope["method"]
        path: str = scope["path"]
        group = NO_GROUP  # until a route matches
        status = 500  # the client went away before the answer was sent
        try:
            cors: list[tuple[bytes, bytes]] = []
            try:
                origin = _header(scope, b"origin")
                if origin is not None:
                    cors = self._cors_headers(origin, Request(scope, receive, {}))
                    if method == "OPTIONS" and _header(scope, b"access-control-request-method"):
                        status = await self._preflight(origin, cors, scope, request_id, send)
                        return
                per_minute = self.ctx.settings.current.api_per_minute
                if per_minute:
                    client = scope.get("client")
                    self.ctx.rate_limiter.check(
                        f"api:{client[0] if client else ''}",
                        per_minute,
                        "requests from this address",
                    )
                route, params = self.router.match(method, path)
                group = route.group
                response = await route.handler(Request(scope, receive, params))
            except BackpackError as exc:
                response = error_response(exc)
            except Exception:
                log.exception("request %s failed", text_id)
                response = error_response(
                    BackpackError("Something went wrong on our side.", {"request_id": text_id})
                )
            await response.send(send, [(b"x-request-id", request_id), *cors])
            status = response.status
        finally:
            if answered is not None:
                now = time.time()
                records = answered.records
                user = scope.get("backpack.user")
                records.append((method, path, status, now - started, user, text_id, now, group))
                if len(records) >= answered.limit:
                    answered.full()

    def _cors_headers(self, origin: str, request: Request) -> list[tuple[bytes, bytes]]:
        if not self.ctx.origin_allowed(origin, request):
            return [(b"vary", b"Origin")]
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", b"ETag, X-Request-Id, Retry-After"),
            (b"vary", b"Origin"),
        ]

    async def _preflight(
        self,
        origin: str,
        cors: list[tuple[bytes, bytes]],
        scope: Scope,
        request_id: bytes,
        send: Send,
    ) -> int:
        if len(cors) == 1:
            response = error_response(
                Forbidden(f"Origin {origin[:200]} is not allowed.", {"origin": origin[:200]})
            )
        else:
            response = empty_response()
            requested = _header(scope, b"access-control-request-headers") or ""
            response.headers += [
                (b"access-control-allow-methods", _CORS_METHODS),
                (b"access-control-allow-headers", requested.encode("latin-1")[:1000]),
                (b"access-control-max-age", b"600"),
            ]
        await response.send(send, [(b"x-request-id", request_id), *cors])
        return response.status

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.ctx.open()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                freeze_startup_objects()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.ctx.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
