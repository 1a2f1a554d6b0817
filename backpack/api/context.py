"""What a backpack's routes share: its services, its key, its settings, credentials and CORS."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from backpack.api.http import Request
from backpack.auth.credentials import Credentials
from backpack.auth.service import AuthService
from backpack.core.access import ANONYMOUS, Caller
from backpack.core.ratelimit import RateLimiter
from backpack.core.records import DataService
from backpack.core.settings import SettingsService
from backpack.errors import Forbidden
from backpack.files.service import FilesService
from backpack.realtime.hub import RealtimeHub
from backpack.types import JSON

SESSION_COOKIE = "bp_session"
_UNSAFE = frozenset(("POST", "PUT", "PATCH", "DELETE"))


@dataclass(frozen=True)
class Limits:
    json_depth: int = 32


@lru_cache(maxsize=256)
def _origin_pattern(allowed: str) -> re.Pattern[str]:
    if allowed == "*":
        return re.compile(r".*")
    escaped = re.escape(allowed).replace(r"\*", r"[0-9]{1,5}")
    return re.compile(escaped)


@dataclass
class InstanceContext:
    data: DataService
    auth: AuthService
    settings: SettingsService
    files: FilesService
    realtime: RealtimeHub
    credentials: Credentials
    limits: Limits = field(default_factory=Limits)
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)

    async def open(self) -> None:
        await self.data.open()
        await self.settings.open()
        await self.auth.open()
        await self.files.open()
        await self.realtime.open()
        await self.rate_limiter.store.open()

    async def close(self) -> None:
        await self.realtime.close()
        await self.rate_limiter.store.close()
        await self.files.close()
        await self.data.close()

    @property
    def secret_key(self) -> str:
        return self.credentials.secret_key

    def rotate_secret_key(self, key: str) -> None:
        """Every credential derived from the old key stops working at once."""
        self.credentials.rotate(key)
        self.files.set_signing_key(key.encode())
        self.data.set_cursor_key(key.encode())
        self.realtime.set_secret_key(key)

    def link(self, request: Request, page: str, token: str) -> str:
        """A link for a mail or an admin: the app's page when settings.app_url is set."""
        base = self.settings.current.app_url or (
            request.origin + (request.scope.get("root_path") or "")
        )
        return f"{base.rstrip('/')}/auth/{page}?token={token}"

    def origin_allowed(self, origin: str, request: Request) -> bool:
        if origin == request.origin:
            return True
        return any(
            _origin_pattern(allowed).fullmatch(origin)
            for allowed in self.settings.current.allowed_origins
        )

    async def caller(self, request: Request) -> Caller:
        token = request.bearer()
        if token is not None:
            caller = self.auth.cached(token) or await self.credentials.caller(token)
            return self._note_user(request, caller)
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return ANONYMOUS
        if request.method in _UNSAFE:
            origin = request.headers.get("origin")
            if origin is None or not self.origin_allowed(origin, request):
                raise Forbidden(
                    "A cookie-authenticated request must come from an allowed origin.",
                    {"origin": (origin or "")[:200]},
                )
        caller = self.auth.cached(cookie) or await self.auth.authenticate(cookie)
        return self._note_user(request, caller)

    @staticmethod
    def _note_user(request: Request, caller: Caller) -> Caller:
        """Remember who made the request, for the request log."""
        if caller.user is not None:
            request.scope["backpack.user"] = caller.user.get("id")
        return caller

    async def body(self, request: Request) -> JSON:
        return await request.json(
            limit=self.settings.current.body_bytes, depth=self.limits.json_depth
        )
