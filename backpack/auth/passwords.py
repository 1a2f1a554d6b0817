"""Password hashing with argon2id at OWASP's recommended parameters."""

from __future__ import annotations

import asyncio
from typing import Final

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from backpack.errors import ValidationFailed

MIN_LENGTH: Final = 8
MAX_LENGTH: Final = 256

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
HASHER: Final = PasswordHasher(
    time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)
# Unknown accounts are verified against this, so they take as long as known ones.
_DUMMY_HASH: Final = HASHER.hash("not anybody's password, only here for timing")


def check_password(password: object, field: str = "password") -> str:
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationFailed(
            f"A password has {MIN_LENGTH} to {MAX_LENGTH} characters.",
            {field: f"must have {MIN_LENGTH} to {MAX_LENGTH} characters"},
        )
    return password


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(None, HASHER.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored`; with no stored hash, takes as long and says no."""
    return await asyncio.get_running_loop().run_in_executor(None, _verify, stored, password)
