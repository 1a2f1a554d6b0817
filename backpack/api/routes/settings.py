"""/api/settings (secret key): the backpack's runtime settings."""

from __future__ import annotations

from backpack.api import schemas
from backpack.api.context import InstanceContext
from backpack.api.http import Request, Response, Route, json_response


def routes(ctx: InstanceContext) -> list[Route]:
    async def get_settings(request: Request) -> Response:
        return json_response(ctx.settings.get(await ctx.caller(request)))

    async def update_settings(request: Request) -> Response:
        caller = await ctx.caller(request)
        return json_response(await ctx.settings.update(caller, await ctx.body(request)))

    return [
        Route(
            "GET",
            "/api/settings",
            get_settings,
            "Settings (secrets masked)",
            "settings",
            responses={200: schemas.SETTINGS},
        ),
        Route(
            "PATCH",
            "/api/settings",
            update_settings,
            "Change settings; they apply at once",
            "settings",
            body={"type": "object"},
            responses={200: schemas.SETTINGS},
        ),
    ]
