"""Opaque tokens: a kind prefix and 256 random bits; only their SHA-256 is ever stored."""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

SESSION: Final = "bps_"
VERIFY: Final = "bpv_"
RESET: Final = "bpr_"


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def public_id() -> str:
    return secrets.token_urlsafe(12)
