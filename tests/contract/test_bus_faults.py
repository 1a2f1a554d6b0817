"""Faults of the networked buses: connections killed under them, servers unreachable.

Redis at 127.0.0.1:6379 (a random channel prefix per test) and PostgreSQL at
127.0.0.1:5432 (a database of this module's own); unreachable servers fail the
tests. Connections are killed by name from a separate client, never broadly.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.asyncio import Redis

from backpack.bus.postgres import PostgresBus
from backpack.bus.redis import RedisBus
from backpack.core.bus import Bus, BusSubscription, Delivery, Resync
from tests.contract.test_bus_contract import REDIS_URL
from tests.pg import PG_SERVER, fresh_database, pg_connect

Kill = Callable[[str], Awaitable[None]]  # kills the bus's connection in one role


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with fresh_database("bp_bus_faults") as name:
        yield name


@pytest.fixture(params=["postgres", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture
def prefix() -> str:
    return f"bp-fault-{secrets.token_hex(6)}:"


@pytest.fixture
def make_bus(kind: str, prefix: str, request: pytest.FixtureRequest) -> Callable[[], Bus]:
    """Buses on the same channels, as in two worker processes."""
    if kind == "redis":
        return lambda: RedisBus(REDIS_URL, prefix=prefix)
    database: str = request.getfixturevalue("pg_database")
    return lambda: PostgresBus(f"{PG_SERVER}/{database}", prefix=prefix)


@pytest.fixture
async def buses(make_bus: Callable[[], Bus]) -> AsyncIterator[tuple[Bus, Bus]]:
    first, second = make_bus(), make_bus()
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


@pytest.fixture
def kill(kind: str, prefix: str, request: pytest.FixtureRequest) -> Kill:
    """Kills every connection of the test's buses in a role: "listener" or "publisher"."""
    if kind == "redis":

        async def kill_redis(role: str) -> None:
            name = ("backpack-bus-sub:" if role == "listener" else "backpack-bus-pub:") + prefix
            client = Redis.from_url(REDIS_URL)
            try:
                clients = await client.client_list()
                ids = [c["id"] for c in clients if c["name"] == name]
                assert ids, f"no connection named {name}"
                for client_id in ids:
                    await client.client_kill_filter(_id=client_id)
            finally:
                await client.aclose()

        return kill_redis

    database: str = request.getfixturevalue("pg_database")

    async def kill_postgres(role: str) -> None:
        conn = await pg_connect("postgres")
        try:
            killed = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND application_name = $2",
                database,
                f"backpack-bus-{role}",
            )
            assert killed, f"no {role} connection"
        finally:
            await conn.close()

    return kill_postgres


async def take(subscription: BusSubscription, n: int, timeout: float = 10.0) -> list[Delivery]:
    async def collect() -> list[Delivery]:
        return [await subscription.__anext__() for _ in range(n)]

    return await asyncio.wait_for(collect(), timeout)


async def test_payloads_cross_between_buses_in_order(buses: tuple[Bus, Bus]) -> None:
    one, other = buses
    here = await one.subscribe("t")
    there = await other.subscribe("t")
    payloads = [b"%d" % i for i in range(300)] + [b"x" * 20_000, b"same", b"same"]
    for payload in payloads:
        one.publish("t", payload)
    assert await take(here, len(payloads)) == payloads
    assert await take(there, len(payloads)) == payloads


async def test_a_killed_listener_brings_a_resync_then_new_payloads(
    buses: tuple[Bus, Bus], kill: Kill
) -> None:
    one, other = buses
    subscription = await one.subscribe("t")
    other.publish("t", b"before")
    assert await take(subscription, 1) == [b"before"]
    await kill("listener")
    got = await take(subscription, 1)
    assert isinstance(got[0], Resync) and got[0].reason
    # Once the Resync is out, the subscription is back: nothing published later is lost.
    for i in range(5):
        other.publish("t", b"after %d" % i)
    assert await take(subscription, 5) == [b"after %d" % i for i in range(5)]
    later = await one.subscribe("t")
    other.publish("t", b"new")
    assert await take(later, 1) == [b"new"]


async def test_a_killed_publisher_brings_a_resync_at_the_subscribers(
    buses: tuple[Bus, Bus], kill: Kill
) -> None:
    one, other = buses
    subscription = await other.subscribe("t")
    one.publish("t", b"first")
    assert await take(subscription, 1) == [b"first"]
    await kill("publisher")
    deliveries: list[Delivery] = []
    # The payload sent into the dead connection is lost and reported; later ones arrive.
    for i in range(3):
        one.publish("t", b"%d" % i)
        await asyncio.sleep(0.3)
    while b"2" not in deliveries:
        deliveries += await take(subscription, 1)
    assert any(isinstance(d, Resync) for d in deliveries)
    assert deliveries[-1] == b"2"
    assert [d for d in deliveries if isinstance(d, bytes)] in ([b"1", b"2"], [b"0", b"1", b"2"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("scheme", ["postgres", "redis"])
async def test_an_unreachable_server_never_makes_publish_raise(scheme: str) -> None:
    port = closed_port()
    bus: Bus
    if scheme == "redis":
        bus = RedisBus(f"redis://127.0.0.1:{port}/0", outbox_payloads=100)
    else:
        bus = PostgresBus(f"postgresql://postgres@127.0.0.1:{port}/x", outbox_payloads=100)
    await asyncio.wait_for(bus.open(), 5)
    subscription = await asyncio.wait_for(bus.subscribe("t"), 5)
    for i in range(1000):  # past the outbox's bound
        bus.publish("t", b"%d" % i)
        if i % 100 == 0:
            await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(subscription.__anext__())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await asyncio.wait_for(bus.close(), 5)
    with pytest.raises(StopAsyncIteration):
        await waiting


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RedisBus("http://127.0.0.1:6379")
    with pytest.raises(ValueError):
        PostgresBus(f"{PG_SERVER}/x", prefix="p" * 60)


async def test_long_topics_and_payloads_at_the_notify_limit_travel(
    buses: tuple[Bus, Bus],
) -> None:
    one, other = buses
    long_a, long_b = "a" * 199 + "1", "a" * 199 + "2"
    a = await other.subscribe(long_a)
    b = await other.subscribe(long_b)
    sizes = [7990, 7995, 7999, 8000, 8001, 6000]
    payloads = [b"x" * n for n in sizes] + [b"\xff" * n for n in sizes]
    for payload in payloads:
        one.publish(long_a, payload)
    one.publish(long_b, b"b")
    assert await take(a, len(payloads)) == payloads
    assert await take(b, 1) == [b"b"]


async def test_a_full_outbox_brings_a_resync_then_newer_payloads(
    kind: str, prefix: str, request: pytest.FixtureRequest
) -> None:
    bus: Bus
    if kind == "redis":
        bus = RedisBus(REDIS_URL, prefix=prefix, outbox_payloads=5)
    else:
        database: str = request.getfixturevalue("pg_database")
        bus = PostgresBus(f"{PG_SERVER}/{database}", prefix=prefix, outbox_payloads=5)
    await bus.open()
    try:
        subscription = await bus.subscribe("t")
        for i in range(23):  # no await: the outbox overflows
            bus.publish("t", b"%d" % i)
        got = await take(subscription, 4)
        assert isinstance(got[0], Resync) and got[0].reason
        assert got[1:] == [b"20", b"21", b"22"]
    finally:
        await bus.close()
