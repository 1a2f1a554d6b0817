"""GET /api/health."""

from __future__ import annotations

from backpack import __version__
from backpack.api import schemas
from backpack.api.context import InstanceContext
from backpack.api.http import Request, Response, Route, json_response


def routes(ctx: InstanceContext) -> list[Route]:
    body = {"status": "ok", "version": __version__}

    async def health(request: Request) -> Response:
        return json_response(body)

    return [
        Route(
            "GET",
            "/api/health",
            health,
            "Liveness of this backpack",
            "meta",
            responses={200: schemas.HEALTH},
            auth=False,
        )
    ]
