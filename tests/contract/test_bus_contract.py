"""The event bus contract: every adapter behind `backpack.core.bus.Bus` passes this.

Parametrized over the bus implementations: in process, Redis pub/sub (the
machine's server at 127.0.0.1:6379, a random channel prefix per test) and
PostgreSQL LISTEN/NOTIFY (127.0.0.1:5432, user postgres, a database of this
module's own). An unreachable server fails the tests, never skips them. Each
factory takes the per-subscription buffer size, so the overflow → `Resync`
path is tested too.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from backpack.bus import MemoryBus, open_bus
from backpack.bus.postgres import PostgresBus
from backpack.bus.redis import RedisBus
from backpack.core.bus import Bus, BusSubscription, Delivery, Resync
from tests.pg import PG_SERVER, fresh_database

BusFactory = Callable[[int], Bus]
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def pg_bus_url() -> Iterator[str]:
    with fresh_database("bp_bus_test") as name:
        yield f"{PG_SERVER}/{name}"


@pytest.fixture(params=["memory", "postgres", "redis"])
def make_bus(request: pytest.FixtureRequest) -> BusFactory:
    """Buses of one kind that share their channels (so they see each other's payloads)."""
    prefix = f"bp-test-{secrets.token_hex(6)}:"
    if request.param == "redis":
        return lambda capacity: RedisBus(REDIS_URL, prefix=prefix, capacity=capacity)
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_bus_url")
        return lambda capacity: PostgresBus(url, prefix=prefix, capacity=capacity)
    return lambda capacity: MemoryBus(capacity)


@pytest.fixture
async def bus(make_bus: BusFactory) -> AsyncIterator[Bus]:
    bus = make_bus(1000)
    await bus.open()
    yield bus
    await bus.close()


async def take(subscription: BusSubscription, n: int, timeout: float = 5.0) -> list[Delivery]:
    async def collect() -> list[Delivery]:
        got: list[Delivery] = []
        async for delivery in subscription:
            got.append(delivery)
            if len(got) == n:
                break
        return got

    return await asyncio.wait_for(collect(), timeout)


async def nothing_more(subscription: BusSubscription, wait: float = 0.1) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(subscription.__anext__(), wait)


async def test_every_subscriber_gets_every_payload_unchanged_and_in_order(bus: Bus) -> None:
    first = await bus.subscribe("events")
    second = await bus.subscribe("events")
    payloads = [b"", b"{}", '{"\u00e9": 1}'.encode(), os.urandom(1 << 20), b"\n\x00\xff"]
    for payload in payloads:
        bus.publish("events", payload)
    assert await take(first, len(payloads)) == payloads
    assert await take(second, len(payloads)) == payloads
    await nothing_more(first)


async def test_topics_are_separate(bus: Bus) -> None:
    a = await bus.subscribe("a")
    b = await bus.subscribe("b.c:d-e_f")
    bus.publish("a", b"1")
    bus.publish("b.c:d-e_f", b"2")
    bus.publish("nobody-listens", b"3")
    assert await take(a, 1) == [b"1"]
    assert await take(b, 1) == [b"2"]
    await nothing_more(a)
    await nothing_more(b)


async def test_only_what_is_published_after_subscribing_arrives(bus: Bus) -> None:
    bus.publish("t", b"before")
    subscription = await bus.subscribe("t")
    bus.publish("t", b"after")
    assert await take(subscription, 1) == [b"after"]


async def test_publish_returns_at_once_and_order_holds_per_publisher(bus: Bus) -> None:
    subscription = await bus.subscribe("t")

    async def publisher(name: bytes) -> None:
        for i in range(200):
            bus.publish("t", name + b":%d" % i)
            if i % 50 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(publisher(b"x"), publisher(b"y"))
    got = await take(subscription, 400)
    for name in (b"x", b"y"):
        mine = [d for d in got if isinstance(d, bytes) and d.startswith(name + b":")]
        assert mine == [name + b":%d" % i for i in range(200)]


async def test_a_waiting_subscriber_wakes_up(bus: Bus) -> None:
    subscription = await bus.subscribe("t")
    waiting = asyncio.ensure_future(subscription.__anext__())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    bus.publish("t", b"wake")
    assert await asyncio.wait_for(waiting, 5) == b"wake"


async def test_a_subscriber_that_falls_behind_gets_a_resync(make_bus: BusFactory) -> None:
    bus = make_bus(10)
    await bus.open()
    try:
        slow = await bus.subscribe("t")
        fast = await bus.subscribe("t")
        for i in range(25):
            bus.publish("t", b"%d" % i)
            if i < 20:
                assert await take(fast, 1) == [b"%d" % i]
        # Whatever was lost, the slow one learns about it before newer payloads.
        got = await take(slow, 1)
        assert isinstance(got[0], Resync) and got[0].reason
        rest = []
        while True:
            try:
                rest.append(await asyncio.wait_for(slow.__anext__(), 0.1))
            except TimeoutError:
                break
        assert rest and rest[-1] == b"24"
        assert all(isinstance(d, bytes) for d in rest)
        # The fast one lost nothing.
        assert await take(fast, 5) == [b"%d" % i for i in range(20, 25)]
    finally:
        await bus.close()


async def test_closing_ends_iteration(bus: Bus) -> None:
    one = await bus.subscribe("t")
    other = await bus.subscribe("t")
    waiting = asyncio.ensure_future(take(other, 2))
    await one.close()
    bus.publish("t", b"x")
    assert [d async for d in one] == []
    await asyncio.sleep(0.01)
    await bus.close()
    assert await waiting == [b"x"]  # then iteration ended, short of 2
    bus.publish("t", b"after close")  # harmless
    late = await bus.subscribe("t")
    assert [d async for d in late] == []


async def test_bad_topics_and_payloads_are_refused(bus: Bus) -> None:
    for topic in ("", "a b", "x" * 201, "é"):
        with pytest.raises(ValueError):
            await bus.subscribe(topic)
    with pytest.raises(TypeError):
        bus.publish("t", "text")  # type: ignore[arg-type]


def test_open_bus_chooses_by_url() -> None:
    assert isinstance(open_bus(None), MemoryBus)
    assert isinstance(open_bus("memory://"), MemoryBus)
    assert isinstance(open_bus("redis://localhost:6379"), RedisBus)
    assert isinstance(open_bus("postgresql://postgres@localhost/db"), PostgresBus)
    for url in ("kafka://localhost", "http://localhost"):
        with pytest.raises(ValueError):
            open_bus(url)
