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
from typing import Final

from backpack import __version__
from backpack.api.app import error_response, request_id_of
from backpack.api.http import Receive, Response, Scope, Send, json_response
from backpack.errors import BackpackError, MethodNotAllowed, NotFound
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


class DeploymentApp:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.admin_api = AdminApi(control)
        self.console = ConsoleFiles()
        self._suffix = "." + control.addressing.domain.lower()
        self._hosts: dict[bytes, str | None] = {}  # Host header → backpack name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        name = self._host_name(scope)
        if name is not None:
            # The hot path, an API request by host to a backpack running in this process:
            # straight to its app (the same as through the endpoint, one call fewer).
            endpoint = self.control.runtime.endpoint(name)
            app = None if endpoint is None else endpoint.app
            if app is not None:
                path: str = scope["path"]
                if path == "/api" or path.startswith("/api/"):
                    await app(scope, receive, send)
                    return
            await self._by_host(name, scope, receive, send)
            return
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

    def _host_name(self, scope: Scope) -> str | None:
        """NAME when the request's Host is NAME.DOMAIN (any port), else None."""
        for key, value in scope["headers"]:
            if key == b"host":
                cache = self._hosts
                try:
                    return cache[value]
                except KeyError:
                    pass
                host: str = bytes(value).decode("latin-1").lower().rsplit(":", 1)[0]
                name: str | None = None
                if host.endswith(self._suffix):
                    name = host[: -len(self._suffix)]
                    if not name or "." in name:
                        name = None
                if len(cache) >= _HOST_CACHE:
                    cache.clear()
                cache[bytes(value)] = name
                return name
        return None

    async def _by_host(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.control.runtime.endpoint(name)
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
        endpoint: Endpoint | None = self.control.runtime.endpoint(name)
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
