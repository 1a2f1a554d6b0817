"""GET /api/sdk.js: the JavaScript SDK as an ES module.

The one source is sdks/js/src/index.js. A wheel carries it as
backpack/sdk/index.js (pyproject's force-include); a checkout, or an editable
install, reads it where it is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from backpack.api.context import InstanceContext
from backpack.api.http import Request, Response, Route

_PACKAGE = Path(__file__).resolve().parents[2]
SDK_PATHS = (_PACKAGE / "sdk" / "index.js", _PACKAGE.parent / "sdks" / "js" / "src" / "index.js")
CONTENT_TYPE = b"text/javascript; charset=utf-8"


def routes(ctx: InstanceContext) -> list[Route]:
    source = next(path for path in SDK_PATHS if path.is_file()).read_bytes()
    etag = f'"{hashlib.sha256(source).hexdigest()[:32]}"'
    headers = [
        (b"etag", etag.encode()),
        (b"cache-control", b"no-cache"),
        (b"x-content-type-options", b"nosniff"),
    ]

    async def sdk(request: Request) -> Response:
        extra: list[tuple[bytes, bytes]] = []
        origin = request.headers.get("origin")
        if origin is not None and not ctx.origin_allowed(origin, request):
            # The code is public: any page may import it as a module script. (Allowed
            # origins get their own Access-Control-Allow-Origin from the app.)
            extra.append((b"access-control-allow-origin", b"*"))
        if etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
            return Response(304, content_type=None, headers=[*headers, *extra])
        return Response(200, source, content_type=CONTENT_TYPE, headers=[*headers, *extra])

    return [
        Route(
            "GET",
            "/api/sdk.js",
            sdk,
            "The JavaScript SDK as an ES module (import { createClient } from '…/api/sdk.js')",
            "meta",
            responses={200: "binary", 304: None},
            auth=False,
        )
    ]
