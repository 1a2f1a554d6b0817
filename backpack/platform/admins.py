"""Control-plane admins: first-run setup, sign-in with `bpa_` session tokens, invites.

Admins are not users of any backpack; they live in the control store. Sign-in
attempts are rate limited per client address and per email, like a
backpack's own sign-in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from backpack.auth.passwords import check_password, hash_password, verify_password
from backpack.auth.service import normalize_email
from backpack.auth.tokens import new_token, token_hash
from backpack.core.ids import check_id
from backpack.core.ratelimit import RateLimiter
from backpack.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from backpack.platform.store import Admin, ControlStore

ADMIN_SESSION: Final = "bpa_"
SESSION_TTL: Final = timedelta(days=7)
LOGIN_PER_MINUTE: Final = 10
_WRONG: Final = "Wrong email or password."
_INVALID: Final = "The admin session is invalid or has expired."


def _utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, the contract's time format."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class AdminService:
    def __init__(
        self,
        store: ControlStore,
        *,
        clock: Callable[[], datetime] = _utc_now,
        session_ttl: timedelta = SESSION_TTL,
        rate_limiter: RateLimiter | None = None,
        login_per_minute: int = LOGIN_PER_MINUTE,
    ) -> None:
        self.store = store
        self.clock = clock
        self.session_ttl = session_ttl
        self.rate_limiter = rate_limiter or RateLimiter()
        self.login_per_minute = login_per_minute

    async def setup_needed(self) -> bool:
        return await self.store.count_admins() == 0

    async def setup(self, email: object, password: object) -> Admin:
        """The first admin; Conflict once any admin exists (of two racing setups, one wins)."""
        email, password_hash = await self._credentials(email, password)
        try:
            return await self.store.create_admin(email, password_hash, only_if_none=True)
        except Conflict as error:
            raise Conflict("Setup is done: an admin exists already. Sign in instead.") from error

    async def invite(self, email: object, password: object) -> Admin:
        """Another admin; Conflict if the email has one."""
        email, password_hash = await self._credentials(email, password)
        return await self.store.create_admin(email, password_hash)

    async def _credentials(self, email: object, password: object) -> tuple[str, str]:
        normalized = normalize_email(email)
        return normalized, await hash_password(check_password(password))

    async def login(self, email: object, password: object, client: str) -> tuple[Admin, str]:
        """The admin and a new `bpa_` session token; Unauthorized alike for any wrong part."""
        self.rate_limiter.check(
            f"admin-login-ip:{client}", self.login_per_minute, "sign-in attempts from this address"
        )
        if not isinstance(email, str) or not isinstance(password, str):
            raise ValidationFailed(
                "Send an email and a password.",
                {
                    field: "is required"
                    for field, value in (("email", email), ("password", password))
                    if not isinstance(value, str)
                },
            )
        email = email.strip().lower()
        self.rate_limiter.check(
            f"admin-login-email:{email[:254]}", self.login_per_minute, "sign-in attempts"
        )
        found = await self.store.admin_by_email(email) if len(email) <= 254 else None
        # Unknown emails are checked against a dummy hash: both answers take as long.
        ok = await verify_password(found[1] if found else None, password[:1024])
        if found is None or not ok:
            raise Unauthorized(_WRONG)
        admin = found[0]
        now = self.clock()
        await self.store.delete_expired_sessions(format_time(now))
        token = new_token(ADMIN_SESSION)
        await self.store.create_session(
            token_hash(token), admin.id, format_time(now + self.session_ttl)
        )
        return admin, token

    async def authenticate(self, token: str) -> Admin:
        """The admin a `bpa_` token stands for; Unauthorized if unknown, expired or ended.

        Not cached: admin requests are few, and a logout or deletion in any worker
        then takes effect at once.
        """
        if not token.startswith(ADMIN_SESSION) or len(token) > 100:
            raise Unauthorized(_INVALID)
        admin = await self.store.session_admin(token_hash(token), format_time(self.clock()))
        if admin is None:
            raise Unauthorized(_INVALID)
        return admin

    async def logout(self, token: str) -> None:
        if token.startswith(ADMIN_SESSION) and len(token) <= 100:
            await self.store.delete_session(token_hash(token))

    async def list_admins(self) -> list[Admin]:
        return await self.store.list_admins()

    async def delete(self, admin_id: str) -> None:
        """Delete an admin and end its sessions (yourself too); never the last one: Conflict."""
        check_id(admin_id, "admin id")
        if not await self.store.delete_admin(admin_id, keep_last=True):
            raise NotFound(f"Admin '{admin_id}' was not found.")
