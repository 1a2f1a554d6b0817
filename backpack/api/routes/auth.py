"""/api/auth: sign-up, sign-in, the signed-in user, sessions, verification and reset mail."""

from __future__ import annotations

from datetime import datetime

from backpack.api import schemas
from backpack.api.context import SESSION_COOKIE, InstanceContext
from backpack.api.http import Param, Request, Response, Route, empty_response, json_response
from backpack.auth.mail import require_smtp, reset_mail, send_mail, verification_mail
from backpack.auth.service import SessionGrant, normalize_email
from backpack.errors import Unauthorized


def _cookie(request: Request, value: str, expires: datetime | None) -> tuple[bytes, bytes]:
    path = request.scope.get("root_path") or "/"
    parts = [f"{SESSION_COOKIE}={value}", f"Path={path}", "HttpOnly", "SameSite=Lax"]
    if expires is None:
        parts.append("Max-Age=0")
    else:
        parts.append(f"Expires={expires.strftime('%a, %d %b %Y %H:%M:%S GMT')}")
    if request.scope.get("scheme") == "https":
        parts.append("Secure")
    return b"set-cookie", "; ".join(parts).encode()


def _grant_response(request: Request, grant: SessionGrant, status: int) -> Response:
    return json_response(
        {"user": grant.user, "token": grant.token},
        status,
        [_cookie(request, grant.token, grant.expires)],
    )


def routes(ctx: InstanceContext) -> list[Route]:
    auth = ctx.auth

    def limit(key: str, what: str) -> None:
        ctx.rate_limiter.check(key, ctx.settings.current.auth_per_minute, what)

    link = ctx.link

    async def signup(request: Request) -> Response:
        limit(f"signup:{request.client_ip}", "sign-ups from this address")
        grant = await auth.signup(
            await ctx.body(request), request.headers.get("user-agent", ""), request.client_ip
        )
        return _grant_response(request, grant, 201)

    async def login(request: Request) -> Response:
        body = await ctx.body(request)
        limit(f"login:{request.client_ip}", "sign-in attempts from this address")
        if isinstance(body, dict) and isinstance(body.get("email"), str):
            limit(f"login:{str(body['email']).strip().lower()[:254]}", "sign-in attempts")
        grant = await auth.login(body, request.headers.get("user-agent", ""), request.client_ip)
        return _grant_response(request, grant, 200)

    async def logout(request: Request) -> Response:
        response = empty_response()
        response.headers.append(_cookie(request, "", None))
        try:
            caller = await ctx.caller(request)
        except Unauthorized:
            return response  # already signed out; still clear the cookie
        await auth.logout(caller)
        return response

    async def me(request: Request) -> Response:
        return json_response(await auth.me(await ctx.caller(request)))

    async def update_me(request: Request) -> Response:
        caller = await ctx.caller(request)
        return json_response(await auth.update_me(caller, await ctx.body(request)))

    async def sessions(request: Request) -> Response:
        return json_response({"items": await auth.sessions(await ctx.caller(request))})

    async def revoke_session(request: Request) -> Response:
        await auth.revoke_session(await ctx.caller(request), request.path_params["id"])
        return empty_response()

    async def request_verification(request: Request) -> Response:
        caller = await ctx.caller(request)
        user = await auth.me(caller)
        limit(f"verify:{user['id']}", "verification mails")
        if user["verified"]:
            return empty_response()
        smtp = require_smtp(ctx.settings.current.smtp)
        token = await auth.issue_token(user, "verify")
        subject, text, html = verification_mail(link(request, "verify", token))
        await send_mail(smtp, str(user["email"]), subject, text, html)
        return empty_response()

    async def confirm_verification(request: Request) -> Response:
        limit(f"confirm:{request.client_ip}", "confirmation attempts")
        return json_response(await auth.confirm_verification(await ctx.body(request)))

    async def request_reset(request: Request) -> Response:
        body = await ctx.body(request)
        limit(f"reset:{request.client_ip}", "password reset requests from this address")
        email = normalize_email(body.get("email") if isinstance(body, dict) else None)
        limit(f"reset:{email}", "password reset requests")
        smtp = require_smtp(ctx.settings.current.smtp)
        user = await auth.user_by_email(email)
        if user is not None:  # the answer is the same either way: no account enumeration
            token = await auth.issue_token(user, "reset")
            subject, text, html = reset_mail(link(request, "reset", token))
            await send_mail(smtp, email, subject, text, html)
        return empty_response()

    async def confirm_reset(request: Request) -> Response:
        limit(f"confirm:{request.client_ip}", "confirmation attempts")
        await auth.confirm_reset(await ctx.body(request))
        return empty_response()

    tag = "auth"
    credentials = {"type": "object", "required": ["email", "password"]}
    grant = schemas.AUTH_GRANT
    return [
        Route(
            "POST",
            "/api/auth/signup",
            signup,
            "Create an account and sign in",
            tag,
            body=credentials,
            responses={201: grant},
        ),
        Route(
            "POST",
            "/api/auth/login",
            login,
            "Sign in with email and password",
            tag,
            body=credentials,
            responses={200: grant},
        ),
        Route(
            "POST",
            "/api/auth/logout",
            logout,
            "Sign out (revokes this session)",
            tag,
            responses={204: None},
        ),
        Route("GET", "/api/auth/me", me, "The signed-in user", tag, responses={200: schemas.USER}),
        Route(
            "PATCH",
            "/api/auth/me",
            update_me,
            "Change your data, email or password",
            tag,
            body={"type": "object"},
            responses={200: schemas.USER},
        ),
        Route(
            "GET",
            "/api/auth/sessions",
            sessions,
            "Your active sessions",
            tag,
            responses={200: schemas.SESSION_LIST},
        ),
        Route(
            "DELETE",
            "/api/auth/sessions/{id}",
            revoke_session,
            "Sign out one session",
            tag,
            params=(Param("id", "path", {"type": "string"}, "Session id", required=True),),
            responses={204: None},
        ),
        Route(
            "POST",
            "/api/auth/verify/request",
            request_verification,
            "Mail yourself an address confirmation link",
            tag,
            responses={204: None},
        ),
        Route(
            "POST",
            "/api/auth/verify/confirm",
            confirm_verification,
            "Confirm an address with the mailed token",
            tag,
            body={"type": "object", "required": ["token"]},
            responses={200: schemas.USER},
        ),
        Route(
            "POST",
            "/api/auth/password/request",
            request_reset,
            "Mail a password reset link (always 204)",
            tag,
            body={"type": "object", "required": ["email"]},
            responses={204: None},
        ),
        Route(
            "POST",
            "/api/auth/password/confirm",
            confirm_reset,
            "Set a new password with the mailed token",
            tag,
            body={"type": "object", "required": ["token", "password"]},
            responses={204: None},
        ),
    ]
