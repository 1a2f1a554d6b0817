"""What a backpack's routes share: its services, its key, its settings, credentials and CORS."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from functools import lru_cache

from backpack.api.http import Request
from backpack.auth.service import AuthService
from backpack.core.access import ANONYMOUS, SECRET_KEY, Caller
from backpack.core.ratelimit import RateLimiter
from backpack.core.records import DataService
from backpack.core.settings import SettingsService
from backpack.errors import Forbidden, Unauthorized
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
    secret_key: str
    limits: Limits = field(default_factory=Limits)
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)

    async def open(self) -> None:
        await self.data.open()
        await self.settings.open()
        await self.auth.open()
        await self.files.open()
        await self.realtime.open()

    async def close(self) -> None:
        await self.realtime.close()
        await self.files.close()
        await self.data.close()

    def origin_allowed(self, origin: str, request: Request) -> bool:
        if origin == request.origin:
            return True
        return any(
            _origin_pattern(allowed).fullmatch(origin)
            for allowed in self.settings.current.allowed_origins
        )

    async def caller(self, request: Request) -> Caller:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise Unauthorized("Send credentials as 'Authorization: Bearer <token>'.")
            if token.startswith("bpk_"):
                if hmac.compare_digest(token.encode(), self.secret_key.encode()):
                    return SECRET_KEY
                raise Unauthorized("The secret key is not valid for this backpack.")
            if token.startswith("bps_"):
                return await self.auth.authenticate(token)
            raise Unauthorized("The token is not a Backpack credential (bps_ or bpk_).")
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
        return await self.auth.authenticate(cookie)

    async def body(self, request: Request) -> JSON:
        return await request.json(
            limit=self.settings.current.body_bytes, depth=self.limits.json_depth
        )
