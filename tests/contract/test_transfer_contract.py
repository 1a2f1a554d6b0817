"""Every storage adapter dumps a consistent snapshot, and a copy between any two is exact.

A backpack is filled through its real services (collections with schemas and
unique indexes, records, a user with a session, settings) on one engine, copied
to the other (and to its own kind), and must then read back identically through
the services on the target: records, versions, unique constraints, the user's
password and session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from backpack.core.access import SECRET_KEY
from backpack.core.filter import MATCH_ALL
from backpack.core.storage import Insert, Storage, StoredCollection
from backpack.core.transfer import copy_records, count_all, fingerprint
from backpack.errors import Conflict
from backpack.platform.instance import build_instance, new_secret_key, open_storage
from backpack.platform.services import Services
from backpack.storage.sqlite.adapter import SqliteStorage
from tests.pg import PG_SERVER, fresh_database, pg_admin

KEY = new_secret_key()
ENGINES = ("sqlite", "postgres")


@pytest.fixture(scope="module")
def databases() -> Iterator[list[str]]:
    with fresh_database("bp_transfer_a") as first, fresh_database("bp_transfer_b") as second:
        yield [first, second]


@pytest.fixture
def services(databases: list[str]) -> Callable[[str, int], Awaitable[Services]]:
    """The services of an engine; `slot` picks one of the module's two PostgreSQL databases."""

    async def make(engine: str, slot: int) -> Services:
        if engine == "sqlite":
            return Services()
        database = databases[slot]
        await pg_admin("DROP SCHEMA public CASCADE; CREATE SCHEMA public", database)
        return Services(database_url=f"{PG_SERVER}/{database}")

    return make


async def fill(folder: Path, services: Services) -> str:
    """A small but complete backpack: schema, unique index, records, a user and a session."""
    ctx = build_instance(folder, KEY, services)
    await ctx.open()
    try:
        data = ctx.data
        await data.create_collection(
            SECRET_KEY,
            {
                "name": "notes",
                "schema": {"fields": {"title": {"type": "string", "required": True}}},
                "indexes": [{"fields": ["title"], "unique": True}],
            },
        )
        for number in range(1_234):
            body = {"title": f"note {number}", "n": number, "x": number / 7, "tag": "é✓"}
            await data.create_record(SECRET_KEY, "notes", body)
        await data.create_record(SECRET_KEY, "auto_made", {"nested": {"a": [1, None, True]}})
        record = await data.create_record(SECRET_KEY, "notes", {"title": "edited"})
        await data.update_record(
            SECRET_KEY, "notes", str(record["id"]), {"title": "edited twice"}, merge=True
        )
        user = await ctx.auth.create_user(
            SECRET_KEY, {"email": "ada@example.com", "password": "correct horse"}
        )
        await ctx.auth.start_session(user, "tests", "127.0.0.1")
        return str(record["id"])
    finally:
        await ctx.close()


@pytest.fixture
async def opened() -> AsyncIterator[list[Storage]]:
    """Storages a test opened; closed at its end."""
    stores: list[Storage] = []
    yield stores
    for store in stores:
        await store.close()


async def open_on(folder: Path, services: Services, stores: list[Storage]) -> Storage:
    store = open_storage(folder, services)
    await store.open()
    stores.append(store)
    return store


@pytest.mark.parametrize("source_engine", ENGINES)
@pytest.mark.parametrize("target_engine", ENGINES)
async def test_copy_is_exact_between_engines(
    source_engine: str,
    target_engine: str,
    services: Callable[[str, int], Awaitable[Services]],
    opened: list[Storage],
    tmp_path: Path,
) -> None:
    source_services = await services(source_engine, 0)
    target_services = await services(target_engine, 1)
    edited = await fill(tmp_path / "source", source_services)
    source = await open_on(tmp_path / "source", source_services, opened)
    target = await open_on(tmp_path / "target", target_services, opened)
    copied: list[int] = []

    summaries = await copy_records(source, target, progress=copied.append)
    counts = {name: summary.records for name, summary in summaries.items()}

    assert counts["notes"] == 1_235 and counts["auto_made"] == 1
    assert counts["_users"] == 1 and counts["_sessions"] == 1
    assert sum(copied) == sum(counts.values())
    before = await fingerprint(source)
    assert summaries == before
    assert await fingerprint(target) == before
    assert await count_all(target) == sum(counts.values())
    await target.close()
    opened.remove(target)

    # The copy works through the services: login, unique index, versions, schema.
    ctx = build_instance(tmp_path / "target", KEY, target_services)
    await ctx.open()
    try:
        await ctx.auth.login({"email": "ada@example.com", "password": "correct horse"}, "t", "ip")
        assert (await ctx.data.get_record(SECRET_KEY, "notes", edited)).version == 2
        with pytest.raises(Conflict):
            await ctx.data.create_record(SECRET_KEY, "notes", {"title": "note 7"})
        collection = ctx.data.get_collection(SECRET_KEY, "notes")
        assert collection.schema is not None
    finally:
        await ctx.close()


async def test_copy_refuses_a_target_with_data(opened: list[Storage], tmp_path: Path) -> None:
    await fill(tmp_path / "a", Services())
    source = await open_on(tmp_path / "a", Services(), opened)
    target = await open_on(tmp_path / "a", Services(), opened)
    before = await fingerprint(source)
    with pytest.raises(Conflict):
        await copy_records(source, target)
    assert await fingerprint(source) == before


@pytest.mark.parametrize("engine", ENGINES)
async def test_dump_is_a_snapshot_while_writes_go_on(
    engine: str,
    services: Callable[[str, int], Awaitable[Services]],
    opened: list[Storage],
    tmp_path: Path,
) -> None:
    chosen = await services(engine, 0)
    await fill(tmp_path / "b", chosen)
    store = await open_on(tmp_path / "b", chosen, opened)
    writer = await open_on(tmp_path / "b", chosen, opened)
    seen = 0
    written = 0
    async for item in store.dump(chunk=100):
        if isinstance(item, StoredCollection):
            continue
        if item[0].collection == "notes":
            seen += len(item)
            # A write after the dump began is not in it, however far the dump has got.
            written += 1
            doc = f'{{"id":"late{written}","title":"late {written}","version":1}}'
            await writer.apply([Insert("notes", f"late{written}", 1, doc)])
    assert seen == 1_235
    assert written > 1
    assert (await fingerprint(store))["notes"].records == 1_235 + written


async def test_abandoned_dump_stops_its_reader(opened: list[Storage], tmp_path: Path) -> None:
    await fill(tmp_path / "c", Services())
    store = SqliteStorage(str(tmp_path / "c" / "backpack.db"))
    await store.open()
    opened.append(store)
    dump = store.dump(chunk=10)
    async for _ in dump:
        break
    await asyncio.wait_for(dump.aclose(), 5)  # the reader thread ends; nothing hangs
    assert MATCH_ALL is not None
