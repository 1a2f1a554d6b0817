"""A small, fast HTTP layer on raw ASGI: requests, responses, routes.

Routes carry their own OpenAPI description, so the published document is
generated from the table that actually dispatches requests.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from backpack.core import jsonutil
from backpack.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from backpack.types import JSON

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# One answered request as an observed backpack notes it (backpack.api.app.AnsweredRequests):
# (method, path, status, seconds, user id, request id, time.time(), route group: the
# matched route's GROUP_INDEX, or NO_GROUP to take it from the path when counted).
RequestRecord = tuple[str, str, int, float, str | None, str, float, int]
NO_GROUP = -1

# Route groups, by which the control plane counts a backpack's requests.
GROUPS = ("records", "auth", "files", "realtime", "site", "other")
GROUP_INDEX = {name: index for index, name in enumerate(GROUPS)}
_API_GROUPS = {
    "collections": "records",
    "auth": "auth",
    "users": "auth",
    "files": "files",
    "buckets": "files",
    "realtime": "realtime",
}


def route_group(path: str) -> str:
    """The route group of a path relative to the backpack ("/api/…", or the static site)."""
    if path != "/api" and not path.startswith("/api/"):
        return "site"
    end = path.find("/", 5)
    segment = path[5:] if end < 0 else path[5:end]
    if "?" in segment:
        segment = segment.split("?", 1)[0]
    return _API_GROUPS.get(segment, "other")


JSON_TYPE = b"application/json; charset=utf-8"
_JSON_MEDIA_TYPES = ("application/json", "application/merge-patch+json")


class Request:
    __slots__ = ("_headers", "_query", "path_params", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, path_params: dict[str, str]) -> None:
        self.scope = scope
        self.receive = receive
        self.path_params = path_params
        self._headers: dict[str, str] | None = None
        self._query: dict[str, str] | None = None

    @property
    def method(self) -> str:
        method: str = self.scope["method"]
        return method

    @property
    def path(self) -> str:
        path: str = self.scope["path"]
        return path

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in self.scope["headers"]
            }
        return self._headers

    @property
    def cookies(self) -> dict[str, str]:
        jar: dict[str, str] = {}
        for part in self.headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name:
                jar.setdefault(name, value.strip('"'))
        return jar

    def bearer(self) -> str | None:
        """The token of `Authorization: Bearer <token>`; None without the header."""
        header = self.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Send credentials as 'Authorization: Bearer <token>'.")
        return token

    @property
    def client_ip(self) -> str:
        client = self.scope.get("client")
        return str(client[0]) if client else ""

    @property
    def origin(self) -> str:
        """This server's own origin as the client addressed it."""
        scheme = self.scope.get("scheme", "http")
        return f"{scheme}://{self.headers.get('host', '')}"

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            raw = self.scope.get("query_string", b"").decode("latin-1")
            try:
                pairs = parse_qsl(raw, keep_blank_values=True, errors="strict", max_num_fields=100)
            except (ValueError, UnicodeDecodeError):
                raise BadRequest("The query string is malformed.") from None
            self._query = dict(pairs)
        return self._query

    async def body(self, limit: int) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest("Content-Length is not a number.")
            if int(declared) > limit:
                raise PayloadTooLarge(f"The body is larger than {limit} bytes.", {"limit": limit})
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The body is larger than {limit} bytes.", {"limit": limit})
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def json(self, *, limit: int, depth: int) -> JSON:
        content_type = self.headers.get("content-type", "")
        media, _, params = content_type.partition(";")
        if media.strip().lower() not in _JSON_MEDIA_TYPES:
            raise UnsupportedMediaType(
                "Send the body as application/json.", {"content_type": content_type[:100]}
            )
        charset = params.strip().lower()
        if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
            raise UnsupportedMediaType(
                "JSON bodies must be UTF-8.", {"content_type": content_type[:100]}
            )
        raw = await self.body(limit)
        if not raw:
            raise BadRequest("The body is empty; send a JSON object.")
        return jsonutil.parse_body(raw, max_depth=depth)


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: bytes | None = JSON_TYPE
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # A streamed body of `length` bytes, sent instead of `body` (file downloads).
    stream: AsyncIterator[bytes] | None = None
    length: int = 0

    async def send(self, send: Send, extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        headers = [*self.headers, *extra_headers]
        if self.content_type is not None and self.status != 204:
            headers.append((b"content-type", self.content_type))
        body = b"" if self.status in (204, 304) else self.body
        if self.status != 204:
            size = self.length if self.stream is not None else len(body)
            headers.append((b"content-length", str(size).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        if self.stream is None:
            await send({"type": "http.response.body", "body": body})
            return
        async for chunk in self.stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def json_response(
    value: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    return Response(status, jsonutil.dumps(value), headers=headers or [])


def raw_json_response(
    body: bytes, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    return Response(status, body, headers=headers or [])


def empty_response(status: int = 204) -> Response:
    return Response(status, b"", content_type=None)


def not_modified(
    if_none_match: str | None, if_modified_since: str | None, etag: str, modified: float
) -> bool:
    """Whether a conditional GET may be answered 304 (`modified`: a POSIX time).

    If-None-Match wins over If-Modified-Since (RFC 9110); weak tags compare equal.
    """
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return etag in tags or if_none_match.strip() == "*"
    if if_modified_since is None:
        return False
    try:
        when = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False
    return when.tzinfo is not None and int(modified) <= when.timestamp()


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" | "path" | "header"
    schema: Mapping[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "/api/collections/{name}"
    handler: Handler
    summary: str
    tag: str
    params: tuple[Param, ...] = ()
    body: Mapping[str, Any] | None = None  # JSON schema of the request body
    # status → JSON schema of the body, None for no body, "binary" for raw bytes
    responses: Mapping[int, Mapping[str, Any] | str | None] = field(default_factory=dict)
    body_media: str = "application/json"
    auth: bool = True  # accepts the secret key / user credentials
    group: int = field(init=False)  # GROUP_INDEX of the path's route group

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", GROUP_INDEX[route_group(self.path)])


_PARAM = re.compile(r"{([a-z_]+)}")


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self._static: dict[str, dict[str, Route]] = {}
        self._dynamic: list[tuple[re.Pattern[str], dict[str, Route]]] = []
        patterns: dict[str, dict[str, Route]] = {}
        for route in routes:
            if "{" not in route.path:
                self._static.setdefault(route.path, {})[route.method] = route
            else:
                patterns.setdefault(route.path, {})[route.method] = route
        for path, methods in patterns.items():
            regex = "^" + _PARAM.sub(lambda m: f"(?P<{m.group(1)}>[^/]+)", path) + "$"
            self._dynamic.append((re.compile(regex), methods))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        methods = self._static.get(path)
        params: dict[str, str] = {}
        if methods is None:
            for regex, candidates in self._dynamic:
                found = regex.match(path)
                if found is not None:
                    methods = candidates
                    params = found.groupdict()
                    break
        if methods is None:
            raise NotFound(f"No route for {path[:200]}.")
        route = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
        if route is None:
            allowed = ", ".join(sorted(methods))
            raise MethodNotAllowed(
                f"{method} is not allowed here; use {allowed}.", {"allow": allowed}
            )
        return route, params
