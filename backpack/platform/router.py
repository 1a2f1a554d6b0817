"""The ASGI app of `backpack serve`: every backpack by host and by path, and the control plane.

    Host NAME.DOMAIN            → backpack NAME: /api/… its API, anything else its site
    /i/NAME/…                   → backpack NAME: /i/NAME/api/… its API, /i/NAME/site/… its site
    /admin/api/…                → the control-plane API
    /admin/…                    → the console
    /metrics                    → Prometheus text, for admins
    /api/health                 → the deployment's health

In the path form the backpack sees its own paths (`/api/…`) with `root_path`
`/i/NAME`, so the cookies it sets are scoped to `/i/NAME` and two backpacks on
one origin never see each other's sessions. A site in the path form shares its
origin with the console, so it is served in a CSP sandbox; the host form is
where a site runs as itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, Final

from backpack import __version__
from backpack.api.app import error_response, request_id_of
from backpack.api.http import Receive, Response, Scope, Send, json_response
from backpack.errors import BackpackError, MethodNotAllowed, NotFound
from backpack.heap import freeze_startup_objects
from backpack.platform.admin_api import PREFIX, AdminApi
from backpack.platform.console import ConsoleFiles
from backpack.platform.control import ControlPlane
from backpack.platform.runtime import Endpoint

log = logging.getLogger("backpack.router")

_PATH_SITE_HEADERS: Final = (
    (
        b"content-security-policy",
        b"sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads",
    ),
)
_LOGS_STREAM: Final = "/logs/stream"
_HOST_CACHE: Final = 4096
_UNSEEN: Final = object()  # a Host header not in the cache yet


class DeploymentApp:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.admin_api = AdminApi(control)
        self.console = ConsoleFiles()
        self._suffix = "." + control.addressing.domain.lower()
        self._hosts: dict[bytes, Any] = {}  # Host header → backpack name (or None)
        self._endpoints = control.runtime.endpoints

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: it returns the one that answers (uvicorn awaits it, told
        # the app is ASGI 3), so a request to a backpack costs no coroutine of the router's.
        if scope["type"] == "lifespan":
            return self._lifespan(receive, send)
        name: str | None = None
        for key, value in scope["headers"]:
            if key == b"host":
                name = self._hosts.get(value, _UNSEEN)
                if name is _UNSEEN:
                    name = self._host_name(value)
                break
        if name is None:
            return self._deployment(scope, receive, send)
        # The hot path, an API request by host to a backpack running in this process:
        # straight to its app (the same as through the endpoint, one call fewer).
        endpoint = self._endpoints.get(name)
        if endpoint is not None:
            app = endpoint.app
            if app is not None:
                path: str = scope["path"]
                if path[:5] == "/api/" or path == "/api":  # cheaper than str.startswith
                    return app.__call__(scope, receive, send)  # a method call: cheaper
        return self._by_host(name, scope, receive, send)

    async def _deployment(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request not by a backpack's host: /i/NAME/…, the control plane, the console."""
        kind = scope["type"]
        path = scope["path"]
        if path.startswith("/i/"):
            await self._by_path(path, scope, receive, send)
        elif path == PREFIX or path.startswith(PREFIX + "/"):
            if kind == "websocket":
                await self._admin_socket(path, scope, receive, send)
            else:
                await self.admin_api(scope, receive, send)
        elif kind != "http":
            await send({"type": "websocket.close", "code": 1008})
        elif path == "/admin" or path.startswith("/admin/"):
            await self._console(scope, send)
        elif path == "/metrics":
            await self.admin_api.prometheus(scope, receive, send)
        elif path == "/api/health":
            await json_response({"status": "ok", "version": __version__}).send(send, _ids(scope))
        elif path == "/":
            await Response(302, b"", None, [(b"location", b"/admin/")]).send(send, _ids(scope))
        else:
            message = f"Nothing here at {path[:200]}; backpacks live at /i/NAME."
            await error_response(NotFound(message)).send(send, _ids(scope))

    def _host_name(self, value: bytes) -> str | None:
        """NAME when the Host header `value` is NAME.DOMAIN (any port), else None; cached."""
        host: str = bytes(value).decode("latin-1").lower().rsplit(":", 1)[0]
        name: str | None = None
        if host.endswith(self._suffix):
            name = host[: -len(self._suffix)]
            if not name or "." in name:
                name = None
        cache = self._hosts
        if len(cache) >= _HOST_CACHE:
            cache.clear()
        cache[bytes(value)] = name
        return name

    async def _by_host(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            await _no_backpack(name, scope, send)
            return
        path: str = scope["path"]
        if path == "/api" or path.startswith("/api/"):
            await endpoint(scope, receive, send)
        elif path == "/site" or path.startswith("/site/"):
            await endpoint.site(scope, receive, send, path[5:] or "/")
        else:
            await endpoint.site(scope, receive, send, path)

    async def _by_path(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        name, _, rest = path[3:].partition("/")
        endpoint: Endpoint | None = self._endpoints.get(name)
        if endpoint is None:
            await _no_backpack(name, scope, send)
            return
        prefix = "/i/" + name
        child = dict(scope)
        child["path"] = "/" + rest
        child["root_path"] = scope.get("root_path", "") + prefix
        raw: bytes | None = scope.get("raw_path")
        if raw is not None and raw.startswith(prefix.encode()):
            child["raw_path"] = raw[len(prefix) :] or b"/"
        if rest == "site" or rest.startswith("site/"):
            await endpoint.site(child, receive, send, "/" + rest[5:], _PATH_SITE_HEADERS)
        else:
            await endpoint(child, receive, send)

    async def _admin_socket(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        instances = PREFIX + "/instances/"
        if path.startswith(instances) and path.endswith(_LOGS_STREAM):
            name = path[len(instances) : -len(_LOGS_STREAM)]
            if name and "/" not in name:
                await self.admin_api.log_stream(scope, receive, send, name)
                return
        await send({"type": "websocket.close", "code": 1008})

    async def _console(self, scope: Scope, send: Send) -> None:
        try:
            if scope["method"] not in ("GET", "HEAD"):
                raise MethodNotAllowed("The console's files are read with GET.", {"allow": "GET"})
            etag = next(
                (bytes(v).decode("latin-1") for k, v in scope["headers"] if k == b"if-none-match"),
                None,
            )
            response = self.console.response(scope["path"], etag)
        except BackpackError as exc:
            response = error_response(exc)
        await response.send(send, _ids(scope))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.control.open()
                except Exception as exc:
                    text = exc.message if isinstance(exc, BackpackError) else str(exc)
                    await send({"type": "lifespan.startup.failed", "message": text})
                    return
                freeze_startup_objects()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.control.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _ids(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The X-Request-Id header every response carries."""
    return [(b"x-request-id", request_id_of(scope))]


async def _no_backpack(name: str, scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
    elif scope["type"] == "http":
        shown = name[:60]
        error = NotFound(f"There is no backpack '{shown}'.", {"name": shown})
        await error_response(error).send(send, _ids(scope))
