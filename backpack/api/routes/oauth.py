"""/api/auth/providers and /api/auth/oauth: sign-in through OAuth 2 / OpenID Connect providers."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

from backpack.api import schemas
from backpack.api.context import InstanceContext
from backpack.api.http import Param, Request, Response, Route, json_response
from backpack.api.routes.auth import _cookie
from backpack.auth.oauth import STATE_SECONDS, OAuthFlow
from backpack.errors import BadRequest

BINDING_COOKIE = "bp_oauth"
_BINDING = re.compile(r"[A-Za-z0-9_-]{43}")
_NO_STORE = (b"cache-control", b"no-store")

PROVIDER_LIST = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "type"],
                "properties": {
                    "name": {"type": "string"},
                    "type": {"enum": ["oidc", "github", "google"]},
                },
            },
        }
    },
}


def _redirect(location: str, headers: list[tuple[bytes, bytes]]) -> Response:
    return Response(
        302, b"", content_type=None, headers=[(b"location", location.encode()), _NO_STORE, *headers]
    )


def _binding_cookie(request: Request, value: str) -> tuple[bytes, bytes]:
    """Ties a sign-in to the browser that started it; only the sign-in paths ever see it."""
    path = (request.scope.get("root_path") or "") + "/api/auth/oauth"
    parts = [f"{BINDING_COOKIE}={value}", f"Path={path}", f"Max-Age={STATE_SECONDS}"]
    parts += ["HttpOnly", "SameSite=Lax"]
    if request.scope.get("scheme") == "https":
        parts.append("Secure")
    return b"set-cookie", "; ".join(parts).encode()


def routes(ctx: InstanceContext) -> list[Route]:
    flow = OAuthFlow(ctx.auth)

    def redirect_target(request: Request) -> str | None:
        """Where to send the browser after sign-in: a path here, or a URL on an allowed origin."""
        value = request.query.get("redirect")
        if not value:
            return None
        refused = BadRequest(
            "redirect must be a path on this backpack or a URL on one of its allowed origins, "
            "without a fragment.",
            {"field": "redirect"},
        )
        # Printable ASCII only, and no backslash: browsers read /\\host as //host.
        if len(value) > 2000 or not re.fullmatch(r"[\x21-\x5b\x5d-\x7e]+", value) or "#" in value:
            raise refused
        if value.startswith("/"):
            if value.startswith("//"):
                raise refused  # protocol-relative: another host
            return value
        try:
            parts = urlsplit(value)
        except ValueError:
            raise refused from None
        origin = f"{parts.scheme}://{parts.netloc}"
        if parts.scheme not in ("http", "https") or "@" in parts.netloc:
            raise refused
        if not parts.netloc or not ctx.origin_allowed(origin, request):
            raise refused
        return value

    async def providers(request: Request) -> Response:
        return json_response({"items": flow.providers()})

    async def start(request: Request) -> Response:
        ctx.rate_limiter.check(
            f"oauth:{request.client_ip}", ctx.settings.current.auth_per_minute, "sign-in attempts"
        )
        provider = flow.provider(request.path_params["provider"])
        redirect = redirect_target(request)
        binding = request.cookies.get(BINDING_COOKIE, "")
        if not _BINDING.fullmatch(binding):
            binding = secrets.token_urlsafe(32)
        base = request.origin + (request.scope.get("root_path") or "")
        callback = f"{base}/api/auth/oauth/{provider.name}/callback"
        url = await flow.start(provider, callback, redirect, binding)
        return _redirect(url, [_binding_cookie(request, binding)])

    async def callback(request: Request) -> Response:
        provider = flow.provider(request.path_params["provider"])
        grant, redirect = await flow.finish(
            provider,
            request.query,
            request.cookies.get(BINDING_COOKIE),
            request.headers.get("user-agent", ""),
            request.client_ip,
        )
        session = _cookie(request, grant.token, grant.expires)
        if redirect is None:
            return json_response({"user": grant.user, "token": grant.token}, 200, [session])
        # In the fragment, so the token never reaches a server's logs or a Referer.
        return _redirect(f"{redirect}#token={grant.token}", [session])

    tag = "auth"
    name = Param("provider", "path", {"type": "string"}, "Provider name", required=True)
    return [
        Route(
            "GET",
            "/api/auth/providers",
            providers,
            "The enabled OAuth 2 / OpenID Connect sign-in providers",
            tag,
            responses={200: PROVIDER_LIST},
            auth=False,
        ),
        Route(
            "GET",
            "/api/auth/oauth/{provider}",
            start,
            "Start signing in with a provider (redirects to it)",
            tag,
            params=(
                name,
                Param(
                    "redirect",
                    "query",
                    {"type": "string"},
                    "Where to go after sign-in: a path here or a URL on an allowed origin",
                ),
            ),
            responses={302: None},
            auth=False,
        ),
        Route(
            "GET",
            "/api/auth/oauth/{provider}/callback",
            callback,
            "Where the provider sends the browser back; signs in",
            tag,
            params=(
                name,
                Param("code", "query", {"type": "string"}, "Authorization code"),
                Param("state", "query", {"type": "string"}, "The state sent to the provider"),
                Param("error", "query", {"type": "string"}, "The provider's refusal"),
            ),
            responses={200: schemas.AUTH_GRANT, 302: None},
            auth=False,
        ),
    ]
