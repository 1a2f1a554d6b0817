"""Record ids: time-ordered, URL-safe, 1..64 characters."""

from __future__ import annotations

import os
import random
import re
import time

from backpack.errors import BadRequest

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

_last_ms = 0
_counter = 0
# Ids need uniqueness, not secrecy: a seeded generator saves a getrandom() call per id.
_random = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(16)))


def _encode(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id() -> str:
    """16 characters: 8 of milliseconds, 8 of a per-millisecond counter and randomness.

    Ids created by one process sort in creation order; ids from different
    processes in the same millisecond still differ by their random part.
    """
    global _last_ms, _counter
    now = int(time.time() * 1000)
    if now <= _last_ms:
        now = _last_ms
        _counter += 1
    else:
        _last_ms = now
        _counter = _random.randrange(62**4 // 2)
    rand = _random.randrange(62**4)
    return _encode(now, 8) + _encode(_counter, 4) + _encode(rand, 4)


def check_id(value: object, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise BadRequest(
            f"The {what} must be 1 to 64 characters of letters, digits, '_' and '-'.",
            {"field": what},
        )
    return value
