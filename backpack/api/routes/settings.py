"""/api/settings (secret key): the backpack's runtime settings."""

from __future__ import annotations

from backpack.api import schemas
from backpack.api.context import InstanceContext
from backpack.api.http import Request, Response, Route, empty_response, json_response
from backpack.auth.mail import require_smtp, send_mail, test_mail
from backpack.core.access import require_admin
from backpack.core.schema import is_email
from backpack.errors import ValidationFailed


def routes(ctx: InstanceContext) -> list[Route]:
    async def get_settings(request: Request) -> Response:
        return json_response(ctx.settings.get(await ctx.caller(request)))

    async def update_settings(request: Request) -> Response:
        caller = await ctx.caller(request)
        return json_response(await ctx.settings.update(caller, await ctx.body(request)))

    async def send_test_mail(request: Request) -> Response:
        caller = await ctx.caller(request)
        require_admin(caller, "send test mails")
        body = await ctx.body(request)
        to = body.get("to") if isinstance(body, dict) else None
        if not isinstance(to, str) or not is_email(to):
            raise ValidationFailed("Say where to send it.", {"to": "must be an email address"})
        subject, text, html = test_mail()
        await send_mail(require_smtp(ctx.settings.current.smtp), to, subject, text, html)
        return empty_response()

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
        Route(
            "POST",
            "/api/settings/test-mail",
            send_test_mail,
            "Send a test mail through the configured SMTP server",
            "settings",
            body={
                "type": "object",
                "properties": {"to": {"type": "string"}},
                "required": ["to"],
            },
            responses={204: None},
        ),
    ]
