"""GET /api/sdk.js: the JavaScript SDK as an ES module.

The canonical source is sdks/js/src/index.js; a copy ships inside the Python
package as backpack/sdk/index.js (tests/unit/test_sdk_copy.py keeps them equal).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from backpack.api.context import InstanceContext
from backpack.api.http import Request, Response, Route

SDK_PATH = Path(__file__).resolve().parent.parent.parent / "sdk" / "index.js"
CONTENT_TYPE = b"text/javascript; charset=utf-8"


def routes(ctx: InstanceContext) -> list[Route]:
    source = SDK_PATH.read_bytes()
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
