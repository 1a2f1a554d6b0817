"""/admin/api: the control plane's HTTP API (API.md section 5), admin sessions only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from backpack.api.app import error_response, request_id_of
from backpack.api.http import (
    Param,
    Receive,
    Request,
    Response,
    Route,
    Router,
    Scope,
    Send,
    empty_response,
    json_response,
)
from backpack.core import jsonutil
from backpack.errors import (
    BackpackError,
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from backpack.platform import sites
from backpack.platform.control import SCRATCH_DIR, ControlPlane
from backpack.platform.logs import LogFilter
from backpack.platform.metrics import parse_window, render_prometheus
from backpack.platform.store import Admin
from backpack.types import JSON, JSONObject

log = logging.getLogger("backpack.admin")

PREFIX: Final = "/admin/api"
ADMIN_COOKIE: Final = "bp_admin"
JSON_LIMIT: Final = 64 * 1024
SITE_LIMIT: Final = sites.MAX_BYTES
ARCHIVE_LIMIT: Final = 64 * 1024**3
_UNSAFE: Final = frozenset(("POST", "PUT", "PATCH", "DELETE"))
_READ_CHUNK: Final = 1024 * 1024


def admin_token(request: Request) -> str | None:
    """The admin credential of a request: bearer token, else the `bp_admin` cookie."""
    token = request.bearer()
    if token is not None:
        if not token.startswith("bpa_") or token.startswith("bpa_c."):
            raise Forbidden("Only a control-plane admin session (bpa_…) may use this API.")
        return token
    cookie = request.cookies.get(ADMIN_COOKIE)
    if not cookie:
        return None
    # Unsafe methods and WebSockets (which browsers open from any page) must come from the
    # console's own origin when the cookie is what authenticates them.
    websocket = request.scope["type"] == "websocket"
    if (websocket or request.method in _UNSAFE) and request.headers.get("origin") != _own_origin(
        request
    ):
        raise Forbidden("A cookie-authenticated request must come from the console's origin.")
    return cookie


def _own_origin(request: Request) -> str:
    scheme = request.scope.get("scheme", "http")
    if request.scope["type"] == "websocket":
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{scheme}://{request.headers.get('host', '')}"


def _cookie(request: Request, token: str, max_age: int) -> tuple[bytes, bytes]:
    parts = [f"{ADMIN_COOKIE}={token}", "Path=/admin", "HttpOnly", "SameSite=Strict"]
    parts.append(f"Max-Age={max_age}")
    if request.scope.get("scheme") == "https":
        parts.append("Secure")
    return b"set-cookie", "; ".join(parts).encode()


async def _body_to_file(request: Request, target: Path, limit: int) -> None:
    """Stream the request body into `target`; PayloadTooLarge past `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is larger than {limit} bytes.", {"limit": limit})
    size = 0
    with target.open("wb") as handle:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("The client went away before the upload ended.")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The body is larger than {limit} bytes.", {"limit": limit})
            if chunk:
                await asyncio.to_thread(handle.write, chunk)
            if not message.get("more_body", False):
                break
    if size == 0:
        raise BadRequest("The body is empty; send the archive as the request body.")


async def _file_stream(path: Path) -> AsyncIterator[bytes]:
    """The bytes of `path`, then the file is deleted."""
    try:
        with path.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, _READ_CHUNK):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


class AdminApi:
    """The routes of /admin/api and GET /metrics, with the contract's error handling."""

    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.scratch = control.data_dir / SCRATCH_DIR
        self.router = Router(self._routes())

    async def admin(self, request: Request) -> Admin:
        token = admin_token(request)
        if token is None:
            raise Unauthorized("Sign in as an admin first (POST /admin/api/login).")
        return await self.control.admins.authenticate(token)

    async def body(self, request: Request) -> JSONObject:
        value = await request.json(limit=JSON_LIMIT, depth=8)
        if not isinstance(value, dict):
            raise BadRequest("Send a JSON object.")
        return value

    def _scratch_file(self, suffix: str) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=self.scratch)
        os.close(fd)
        return Path(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        try:
            route, params = self.router.match(scope["method"], scope["path"])
            response = await route.handler(Request(scope, receive, params))
        except BackpackError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("admin request %s failed", request_id.decode())
            response = error_response(
                BackpackError(
                    "Something went wrong on our side.", {"request_id": request_id.decode()}
                )
            )
        await response.send(send, [(b"x-request-id", request_id), (b"cache-control", b"no-store")])

    # the routes

    def _routes(self) -> list[Route]:
        control = self.control
        admins = control.admins

        async def setup_status(request: Request) -> Response:
            return json_response({"needed": await admins.setup_needed()})

        async def setup(request: Request) -> Response:
            body = await self.body(request)
            admin = await admins.setup(body.get("email"), body.get("password"))
            _, token = await admins.login(
                body.get("email"), body.get("password"), request.client_ip
            )
            return self._session_response(request, admin, token, 201)

        async def login(request: Request) -> Response:
            body = await self.body(request)
            admin, token = await admins.login(
                body.get("email"), body.get("password"), request.client_ip
            )
            return self._session_response(request, admin, token, 200)

        async def logout(request: Request) -> Response:
            token = admin_token(request)
            if token is not None:
                await admins.logout(token)
            response = empty_response()
            response.headers.append(_cookie(request, "", 0))
            return response

        async def me(request: Request) -> Response:
            return json_response((await self.admin(request)).to_json())

        async def list_admins(request: Request) -> Response:
            await self.admin(request)
            return json_response({"items": [a.to_json() for a in await admins.list_admins()]})

        async def invite_admin(request: Request) -> Response:
            await self.admin(request)
            body = await self.body(request)
            admin = await admins.invite(body.get("email"), body.get("password"))
            return json_response(admin.to_json(), 201)

        async def delete_admin(request: Request) -> Response:
            await self.admin(request)
            await admins.delete(request.path_params["id"])
            return empty_response()

        async def list_instances(request: Request) -> Response:
            await self.admin(request)
            return json_response({"items": await control.list_instances(request.origin)})

        async def create_instance(request: Request) -> Response:
            await self.admin(request)
            body = await self.body(request)
            return json_response(
                await control.create_instance(body.get("name"), request.origin), 201
            )

        async def get_instance(request: Request) -> Response:
            await self.admin(request)
            return json_response(await control.get_instance(name_of(request), request.origin))

        async def patch_instance(request: Request) -> Response:
            await self.admin(request)
            body = await self.body(request)
            unknown = sorted(set(body) - {"status"})
            if unknown:
                raise BadRequest(
                    f"Only 'status' can be changed, not {', '.join(unknown)[:200]}.",
                    {"fields": list[JSON](unknown[:20])},
                )
            status = body.get("status")
            name = name_of(request)
            if status == "running":
                return json_response(await control.start_instance(name, request.origin))
            if status == "stopped":
                return json_response(await control.stop_instance(name, request.origin))
            if status is None:
                return json_response(await control.get_instance(name, request.origin))
            raise BadRequest("status must be 'running' or 'stopped'.")

        async def delete_instance(request: Request) -> Response:
            await self.admin(request)
            await control.delete_instance(name_of(request), request.query.get("confirm"))
            return empty_response()

        def action(verb: str) -> Route:
            async def handler(request: Request) -> Response:
                await self.admin(request)
                name, origin = name_of(request), request.origin
                if verb == "start":
                    return json_response(await control.start_instance(name, origin))
                if verb == "stop":
                    return json_response(await control.stop_instance(name, origin))
                return json_response(await control.restart_instance(name, origin))

            return Route("POST", f"{PREFIX}/instances/{{name}}/{verb}", handler, verb, "instances")

        async def keys(request: Request) -> Response:
            await self.admin(request)
            return json_response(await control.secret_key(name_of(request)))

        async def rotate(request: Request) -> Response:
            await self.admin(request)
            return json_response(await control.rotate_key(name_of(request)))

        async def token(request: Request) -> Response:
            await self.admin(request)
            return json_response(await control.console_token(name_of(request), request.origin))

        async def metrics(request: Request) -> Response:
            await self.admin(request)
            window = parse_window(request.query.get("window", "1h"))
            series = (await control.metrics_of(name_of(request))).series(window)
            return json_response(series)

        async def logs(request: Request) -> Response:
            await self.admin(request)
            name = name_of(request)
            await control.instance(name)
            limit = _limit(request.query.get("limit"))
            matcher = LogFilter.from_query(request.query)
            items = control.runtime.logs(name, request.query.get("after"), limit, matcher)
            return json_response({"items": items})

        async def make_backup(request: Request) -> Response:
            await self.admin(request)
            name = name_of(request)
            await control.instance(name)
            out = self._scratch_file(".tar")
            try:
                await control.runtime.backup(name, out)
            except BaseException:
                out.unlink(missing_ok=True)
                raise
            size = out.stat().st_size
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            headers = [
                (
                    b"content-disposition",
                    f'attachment; filename="{name}-{stamp}.backpack.tar"'.encode(),
                ),
            ]
            return Response(200, b"", b"application/x-tar", headers, _file_stream(out), size)

        async def restore(request: Request) -> Response:
            await self.admin(request)
            name = name_of(request)
            archive = self._scratch_file(".tar")
            try:
                await _body_to_file(request, archive, ARCHIVE_LIMIT)
                result = await control.restore_instance(name, archive, request.origin)
            finally:
                archive.unlink(missing_ok=True)
            return json_response(result)

        async def get_site(request: Request) -> Response:
            await self.admin(request)
            instance = await control.instance(name_of(request))
            info = await asyncio.to_thread(sites.site_info, instance.directory / "site")
            if info is None:
                raise NotFound("This backpack has no site; publish one with PUT.")
            return json_response(info.to_json())

        async def put_site(request: Request) -> Response:
            await self.admin(request)
            instance = await control.instance(name_of(request))
            archive = self._scratch_file(".zip")
            try:
                await _body_to_file(request, archive, SITE_LIMIT)
                info = await asyncio.to_thread(
                    sites.publish_site, instance.directory / "site", archive
                )
            finally:
                archive.unlink(missing_ok=True)
            instance.log.event("site_published", "A new site was published.", files=info.files)
            return json_response(info.to_json())

        async def delete_site(request: Request) -> Response:
            await self.admin(request)
            instance = await control.instance(name_of(request))
            if not await asyncio.to_thread(sites.remove_site, instance.directory / "site"):
                raise NotFound("This backpack has no site.")
            instance.log.event("site_removed", "The site was removed.")
            return empty_response()

        name_param = Param("name", "path", {"type": "string"}, "The backpack's name", True)
        i = f"{PREFIX}/instances/{{name}}"
        return [
            Route("GET", f"{PREFIX}/setup", setup_status, "Is first-run setup needed?", "admins"),
            Route("POST", f"{PREFIX}/setup", setup, "Create the first admin", "admins"),
            Route("POST", f"{PREFIX}/login", login, "Sign in as an admin", "admins"),
            Route("POST", f"{PREFIX}/logout", logout, "Sign out", "admins"),
            Route("GET", f"{PREFIX}/me", me, "The signed-in admin", "admins"),
            Route("GET", f"{PREFIX}/admins", list_admins, "Admins", "admins"),
            Route("POST", f"{PREFIX}/admins", invite_admin, "Add an admin", "admins"),
            Route("DELETE", f"{PREFIX}/admins/{{id}}", delete_admin, "Remove an admin", "admins"),
            Route("GET", f"{PREFIX}/instances", list_instances, "Backpacks", "instances"),
            Route("POST", f"{PREFIX}/instances", create_instance, "Create", "instances"),
            Route("GET", i, get_instance, "A backpack", "instances", (name_param,)),
            Route("PATCH", i, patch_instance, "Start or stop", "instances", (name_param,)),
            Route("DELETE", i, delete_instance, "Delete", "instances", (name_param,)),
            action("start"),
            action("stop"),
            action("restart"),
            Route("GET", f"{i}/keys", keys, "Its secret key", "keys", (name_param,)),
            Route("POST", f"{i}/keys/rotate", rotate, "Rotate its key", "keys", (name_param,)),
            Route("POST", f"{i}/token", token, "A console token", "keys", (name_param,)),
            Route("GET", f"{i}/metrics", metrics, "Time series", "monitoring", (name_param,)),
            Route("GET", f"{i}/logs", logs, "Request and event log", "monitoring", (name_param,)),
            Route("POST", f"{i}/backup", make_backup, "Download a backup", "backups"),
            Route("POST", f"{i}/restore", restore, "Restore from a backup", "backups"),
            Route("GET", f"{i}/site", get_site, "The published site", "sites"),
            Route("PUT", f"{i}/site", put_site, "Publish a site (zip)", "sites"),
            Route("DELETE", f"{i}/site", delete_site, "Unpublish the site", "sites"),
        ]

    def _session_response(
        self, request: Request, admin: Admin, token: str, status: int
    ) -> Response:
        max_age = int(self.control.admins.session_ttl.total_seconds())
        return json_response(
            {"admin": admin.to_json(), "token": token}, status, [_cookie(request, token, max_age)]
        )

    async def prometheus(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /metrics: every backpack's counters in Prometheus text format (admins only)."""
        request = Request(scope, receive, {})
        try:
            if scope["method"] not in ("GET", "HEAD"):
                raise BadRequest("Use GET /metrics.")
            await self.admin(request)
            text = render_prometheus(self.control.all_metrics())
            response = Response(200, text.encode(), b"text/plain; version=0.0.4; charset=utf-8")
        except BackpackError as exc:
            response = error_response(exc)
        await response.send(send, [(b"x-request-id", request_id_of(scope))])

    async def log_stream(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        """WebSocket …/logs/stream: new log entries as JSON text frames."""
        request = Request(scope, receive, {})
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            token = request.query.get("token") or admin_token(request)
            if token is None:
                raise Unauthorized("Sign in as an admin first.")
            await self.control.admins.authenticate(token)
            instance = await self.control.instance(name)
            matcher = LogFilter.from_query(request.query)
        except BackpackError as exc:
            await send(
                {"type": "websocket.close", "code": 4000 + exc.status, "reason": exc.message[:100]}
            )
            return
        await send({"type": "websocket.accept"})
        subscription = instance.follow_log(request.query.get("after"), matcher)

        async def pump() -> None:
            async for entry in subscription:
                await send({"type": "websocket.send", "text": jsonutil.dumps(entry).decode()})
            await send({"type": "websocket.close", "code": 1013, "reason": "too slow"})

        pumping = asyncio.create_task(pump())
        try:
            while True:
                incoming = await receive()
                if incoming["type"] == "websocket.disconnect":
                    break
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pumping
            instance.unfollow_log(subscription)


def name_of(request: Request) -> str:
    return request.path_params["name"]


def _limit(text: str | None) -> int:
    if text is None:
        return 100
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise BadRequest("limit must be a whole number from 1 to 1000.")
    return int(text)
