"""The rate-limit store contract: the in-process and the Redis store count alike.

Redis runs at 127.0.0.1:6379 (a random key prefix per test); an unreachable
server fails these tests. The Redis store sends its hits in the background, so
the suite lets it settle (`flush`) where another worker's hits must show.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from backpack.cache.ratelimit import RedisRateLimitStore
from backpack.core.ratelimit import MemoryRateLimitStore, RateLimiter, RateLimitStore
from backpack.errors import RateLimited

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> str:
    return f"bp-rl-test-{secrets.token_hex(6)}:"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[RateLimitStore]:
    if request.param == "memory":
        yield MemoryRateLimitStore()
        return
    redis_store = RedisRateLimitStore(REDIS_URL, prefix=prefix)
    await redis_store.open()
    yield redis_store
    await redis_store.close()


async def settle(store: RateLimitStore) -> None:
    if isinstance(store, RedisRateLimitStore):
        await store.flush()


async def test_hits_count_per_key(store: RateLimitStore) -> None:
    assert [store.hit("a", 60)[0] for _ in range(3)] == [1, 2, 3]
    await settle(store)
    assert store.hit("b", 60)[0] == 1
    assert store.hit("a", 60)[0] == 4


async def test_the_window_end_is_ahead_within_the_window(store: RateLimitStore) -> None:
    _, ends = store.hit("k", 60)
    assert 0 < ends - time.monotonic() <= 60


async def test_a_new_window_counts_from_one(store: RateLimitStore) -> None:
    store.hit("k", 0.3)
    store.hit("k", 0.3)
    await settle(store)
    await asyncio.sleep(0.35)
    count, ends = store.hit("k", 0.3)
    assert count == 1
    assert 0 < ends - time.monotonic() <= 0.3


async def test_the_limiter_refuses_past_the_limit(store: RateLimitStore) -> None:
    limiter = RateLimiter(store)
    for _ in range(3):
        limiter.check("ip:1", 3, "requests")
    with pytest.raises(RateLimited) as refused:
        limiter.check("ip:1", 3, "requests")
    assert refused.value.retry_after >= 1
    limiter.check("ip:2", 3, "requests")  # others are not limited
    for _ in range(10):
        limiter.check("ip:1", 0, "requests")  # 0 means no limit


async def test_workers_share_their_counts(prefix: str) -> None:
    one = RedisRateLimitStore(REDIS_URL, prefix=prefix)
    other = RedisRateLimitStore(REDIS_URL, prefix=prefix)
    await one.open()
    await other.open()
    try:
        for _ in range(5):
            one.hit("login:x", 60)
        await one.flush()
        other.hit("login:x", 60)
        await other.flush()
        assert other.hit("login:x", 60)[0] == 7
        # The background task sends hits without being asked.
        for _ in range(3):
            other.hit("login:x", 60)
        deadline = time.monotonic() + 5
        while one.hit("login:x", 60)[0] < 11:
            assert time.monotonic() < deadline, "the other worker's hits never arrived"
            await asyncio.sleep(0.05)
    finally:
        await one.close()
        await other.close()
    client = Redis.from_url(REDIS_URL)
    try:
        keys = await client.keys(prefix + "*")
        assert len(keys) == 1
        assert 0 < await client.pttl(keys[0]) <= 61_000
    finally:
        await client.aclose()


async def test_an_unreachable_redis_leaves_counting_local() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisRateLimitStore(f"redis://127.0.0.1:{port}/0")
    await store.open()
    limiter = RateLimiter(store)
    for _ in range(2):
        limiter.check("k", 2, "requests")
    await asyncio.sleep(0.2)  # the background task failed meanwhile, quietly
    with pytest.raises(RateLimited):
        limiter.check("k", 2, "requests")
    with pytest.raises(RedisConnectionError):
        await store.flush()
    await asyncio.wait_for(store.close(), 5)


def test_a_bad_url_is_refused() -> None:
    with pytest.raises(ValueError):
        RedisRateLimitStore("http://127.0.0.1:6379")
