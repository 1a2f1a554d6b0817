"""Fixed-window rate limiting by key (an IP, an account, or both)."""

from __future__ import annotations

import math
import time
from typing import Protocol

from backpack.errors import RateLimited


class RateLimitStore(Protocol):
    def hit(self, key: str, window: float) -> tuple[int, float]:
        """Count one hit on `key`; return the hits in the current window and its end."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class MemoryRateLimitStore:
    """Counters in this process (the Redis store shares them across workers)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._windows: dict[str, tuple[float, int]] = {}
        self._max_keys = max_keys

    def hit(self, key: str, window: float) -> tuple[int, float]:
        now = time.monotonic()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= window:
            start, count = now, 0
        if len(self._windows) >= self._max_keys and key not in self._windows:
            self._windows = {k: v for k, v in self._windows.items() if now - v[0] < window}
        self._windows[key] = (start, count + 1)
        return count + 1, start + window

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RateLimiter:
    def __init__(self, store: RateLimitStore | None = None) -> None:
        self.store = store or MemoryRateLimitStore()

    def check(self, key: str, per_minute: int, what: str) -> None:
        """Count a hit; raise RateLimited once `key` went over `per_minute` (0 = no limit)."""
        if per_minute <= 0:
            return
        count, ends = self.store.hit(key, 60.0)
        if count > per_minute:
            retry = max(1, math.ceil(ends - time.monotonic()))
            raise RateLimited(f"Too many {what}; try again in {retry} s.", retry)
