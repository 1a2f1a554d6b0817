"""The console's files: backpack/admin_ui (plain ES modules, no build step) and the JS SDK.

    /admin/                 index.html (also for any path without an extension: the
                            console routes in the browser)
    /admin/sdk.js           the JS SDK, the same file every backpack serves at /api/sdk.js
    /admin/<file>           a file of backpack/admin_ui

Files are read once and kept in memory (the whole console is a few hundred KB).
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from backpack.api.http import Response
from backpack.api.routes.sdk import SDK_PATHS
from backpack.errors import NotFound
from backpack.platform.sites import content_type

UI_DIR: Final = Path(__file__).resolve().parents[1] / "admin_ui"
_SECURITY_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob: http: https:; "
        b"connect-src 'self' ws: wss: http: https:; style-src 'self' 'unsafe-inline'; "
        b"frame-ancestors 'none'",
    ),
)


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    content_type: bytes
    etag: bytes


def _load(path: Path) -> _File:
    body = path.read_bytes()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'.encode()
    return _File(body, content_type(path.name).encode(), etag)


class ConsoleFiles:
    def __init__(self, root: Path = UI_DIR) -> None:
        self.root = root
        self._cache: dict[str, _File] = {}

    def _file(self, relative: str) -> _File | None:
        cached = self._cache.get(relative)
        if cached is not None:
            return cached
        if relative == "sdk.js":
            path = next((p for p in SDK_PATHS if p.is_file()), None)
        else:
            clean = posixpath.normpath(relative)
            if clean.startswith((".", "/")) or "\\" in clean or "\0" in clean:
                return None
            path = self.root / clean
        if path is None or not path.is_file():
            return None
        loaded = _load(path)
        self._cache[relative] = loaded
        return loaded

    def response(self, path: str, if_none_match: str | None) -> Response:
        """The answer to GET `path` (below /admin)."""
        relative = path.removeprefix("/admin").lstrip("/")
        found = self._file(relative) if relative else None
        if found is None:
            if posixpath.splitext(relative)[1]:
                raise NotFound(f"The console has no file {relative[:200]}.")
            found = self._file("index.html")
            if found is None:
                raise NotFound("The console is not installed.")
        headers = [(b"etag", found.etag), (b"cache-control", b"no-cache"), *_SECURITY_HEADERS]
        if if_none_match is not None and found.etag.decode() in if_none_match:
            return Response(304, b"", None, headers)
        return Response(200, found.body, found.content_type, headers)
