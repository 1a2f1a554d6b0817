"""What a backpack's routes share: its services, its key and its limits."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from backpack.api.http import Request
from backpack.core.access import ANONYMOUS, SECRET_KEY, Caller
from backpack.core.records import DataService
from backpack.errors import Unauthorized
from backpack.types import JSON


@dataclass(frozen=True)
class Limits:
    body_bytes: int = 1024 * 1024
    json_depth: int = 32


@dataclass
class InstanceContext:
    data: DataService
    secret_key: str
    limits: Limits = field(default_factory=Limits)

    def caller(self, request: Request) -> Caller:
        header = request.headers.get("authorization")
        if header is None:
            return ANONYMOUS
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Send credentials as 'Authorization: Bearer <token>'.")
        if token.startswith("bpk_"):
            if hmac.compare_digest(token.encode(), self.secret_key.encode()):
                return SECRET_KEY
            raise Unauthorized("The secret key is not valid for this backpack.")
        if token.startswith("bps_"):
            raise Unauthorized("The session token is invalid or has expired.")
        raise Unauthorized("The token is not a Backpack credential (bps_ or bpk_).")

    async def body(self, request: Request) -> JSON:
        return await request.json(limit=self.limits.body_bytes, depth=self.limits.json_depth)
