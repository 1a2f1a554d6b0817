"""Who a bearer token is: the secret key, a console token, an admin session or a user session.

Kinds are told apart by prefix (API.md, Conventions): `bpk_` the backpack's
secret key; `bps_` a user session; `bpa_` a control-plane admin. A `bpa_`
token is either an admin session, checked by the control plane that runs this
backpack (when there is one), or a console token minted by the control plane
for this backpack alone: `bpa_c.EXPIRES.SIGNATURE`, an HMAC of the expiry
under this backpack's secret key, so rotating the key revokes every console
token at once and a token for one backpack is worthless to any other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable

from backpack.auth.service import AuthService
from backpack.core.access import ANONYMOUS, SECRET_KEY, Caller
from backpack.errors import Unauthorized

CONSOLE_PREFIX = "bpa_c."
AdminCheck = Callable[[str], Awaitable[bool]]


def _sign(key: str, expires: int) -> str:
    mac = hmac.new(key.encode(), f"console-token:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def mint_console_token(secret_key: str, ttl_seconds: int, now: float | None = None) -> str:
    """A full-access token for the backpack whose key is `secret_key`, valid `ttl_seconds`."""
    expires = int((time.time() if now is None else now) + ttl_seconds)
    return f"{CONSOLE_PREFIX}{expires}.{_sign(secret_key, expires)}"


class Credentials:
    """Resolves tokens to callers for one backpack; its key can be rotated while it serves."""

    def __init__(self, auth: AuthService, secret_key: str) -> None:
        self.auth = auth
        self.secret_key = secret_key
        # Set by a control plane: does this token belong to one of its admins?
        self.admin_check: AdminCheck | None = None

    def rotate(self, secret_key: str) -> None:
        self.secret_key = secret_key

    async def caller(self, token: str | None) -> Caller:
        if token is None:
            return ANONYMOUS
        if token.startswith("bps_"):
            return await self.auth.authenticate(token)
        if token.startswith("bpk_"):
            if hmac.compare_digest(token.encode(), self.secret_key.encode()):
                return SECRET_KEY
            raise Unauthorized("The secret key is not valid for this backpack.")
        if token.startswith(CONSOLE_PREFIX):
            if self._console_token_valid(token):
                return SECRET_KEY
            raise Unauthorized("The console token is invalid or has expired.")
        if token.startswith("bpa_"):
            if self.admin_check is not None and await self.admin_check(token):
                return SECRET_KEY
            raise Unauthorized("The admin session is not valid here.")
        raise Unauthorized("The token is not a Backpack credential (bps_, bpk_ or bpa_).")

    def _console_token_valid(self, token: str) -> bool:
        expires_text, _, signature = token[len(CONSOLE_PREFIX) :].partition(".")
        if not expires_text.isdigit() or len(expires_text) > 12:
            return False
        expires = int(expires_text)
        good = hmac.compare_digest(signature.encode(), _sign(self.secret_key, expires).encode())
        return good and time.time() < expires
