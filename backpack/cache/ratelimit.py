"""Rate-limit counters shared by every worker through Redis, off the request path.

`hit` stays synchronous (`RateLimiter.check` runs inside request handling):
it answers from this process's view, the total Redis last reported for the
key's window plus the hits not sent yet. A task sends the pending hits
(`INCRBY` + `PEXPIRE`, pipelined) and reads the totals back, so the other
workers' hits count here within about one round trip. Windows are aligned to
wall-clock time, so every worker agrees on where a window starts. While Redis
is unreachable each process goes on counting on its own, and sends its hits
once Redis is back (a batch whose answer was lost may then count twice: the
limit errs on the strict side).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("backpack.ratelimit")

DEFAULT_PREFIX: Final = "backpack:ratelimit:"
RETRY_FIRST: Final = 0.1
RETRY_MOST: Final = 5.0
_TRANSPORT_ERRORS: Final = (RedisError, OSError, TimeoutError)


@dataclass(slots=True)
class _Window:
    ends: float  # wall-clock time
    milliseconds: int  # the window's length, for the key's expiry
    shared: int = 0  # the total Redis last reported, our sent hits included
    pending: int = 0  # our hits not in Redis yet


class RedisRateLimitStore:
    """`RedisRateLimitStore("redis://host:6379/0")`; `open()` starts sharing, `close()` ends it."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, max_keys: int = 100_000) -> None:
        self.prefix = prefix
        self.max_keys = max_keys
        # No retries inside redis-py: a resent INCRBY would count twice.
        self._redis = Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        self._windows: dict[str, _Window] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def hit(self, key: str, window: float) -> tuple[int, float]:
        now = time.time()
        index = int(now // window)
        name = f"{self.prefix}{window:g}:{index}:{key}"
        state = self._windows.get(name)
        if state is None:
            if len(self._windows) >= self.max_keys:
                self._forget_ended(now)
            ends = (index + 1) * window
            state = self._windows[name] = _Window(ends, int(window * 1000) + 1000)
        state.pending += 1
        self._dirty.add(name)
        self._wake.set()
        return state.shared + state.pending, time.monotonic() + (state.ends - now)

    def _forget_ended(self, now: float) -> None:
        self._windows = {k: w for k, w in self._windows.items() if w.ends > now}
        self._dirty &= self._windows.keys()

    async def open(self) -> None:
        self._task = asyncio.create_task(self._send_forever())

    async def flush(self) -> None:
        """Sends the pending hits now and learns the shared totals; raises if Redis fails."""
        async with self._flushing:
            names, self._dirty = self._dirty, set()
            sent = [(name, self._windows[name]) for name in names if name in self._windows]
            counts = [(name, state, state.pending) for name, state in sent if state.pending]
            if not counts:
                return
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for name, state, count in counts:
                        pipe.incrby(name, count)
                        pipe.pexpire(name, state.milliseconds)
                    replies = await pipe.execute()
            except BaseException:
                self._dirty |= names
                raise
            for (_, state, count), total in zip(counts, replies[::2], strict=True):
                state.pending -= count
                state.shared = max(state.shared, int(total))

    async def _send_forever(self) -> None:
        delay = RETRY_FIRST
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                delay = RETRY_FIRST
            except _TRANSPORT_ERRORS as error:
                if self._closed:
                    return
                level = logging.WARNING if delay == RETRY_FIRST else logging.DEBUG
                log.log(
                    level, "Redis rate limits: sending hits failed (%s); counting locally", error
                )
                self._forget_ended(time.time())
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MOST)
                self._wake.set()

    async def close(self) -> None:
        """Sends what is pending (for up to 2 s) and disconnects."""
        # redis-py may turn a cancellation into a ConnectionError: the flag ends the loop too.
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(*_TRANSPORT_ERRORS):
            await asyncio.wait_for(self.flush(), 2)
        await self._redis.aclose()
