"""SQLite-specific behaviour: query plans, durability settings, heavy reads off the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import apsw
import pytest

from backpack.core import jsonutil
from backpack.core.filter import MATCH_ALL, parse_filter
from backpack.core.storage import IndexDef, IndexKey, Insert, PutCollection, Query
from backpack.errors import NotFound
from backpack.storage.sqlite.adapter import SqliteStorage


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    storage = SqliteStorage(str(tmp_path / "db.sqlite"))
    await storage.open()
    index = IndexDef("score", (IndexKey(("score",)),))
    await storage.apply([PutCollection("items", "{}", (index,), create=True)])
    docs = [
        jsonutil.dumps_str({"id": f"r{i:04d}", "score": i % 1000, "done": i % 2 == 0})
        for i in range(2000)
    ]
    await storage.apply([Insert("items", f"r{i:04d}", 1, d) for i, d in enumerate(docs)])
    yield storage
    await storage.close()


async def test_indexed_filter_and_sort_use_the_index(store: SqliteStorage) -> None:
    query = Query(
        "items",
        parse_filter({"score": {"$gt": 500}, "done": True}),
        (IndexKey(("score",), True), IndexKey(("id",), True)),
        20,
        field_types={"score": "number", "done": "boolean"},
    )
    plan = " | ".join(await store.explain(query))
    assert "USING INDEX" in plan and "score" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # the index also gives the order
    page = await store.query(query)
    scores = [jsonutil.loads(d)["score"] for d in page.docs]
    assert scores == sorted(scores, reverse=True) and min(scores) > 500


async def test_unindexed_filter_scans(store: SqliteStorage) -> None:
    query = Query("items", parse_filter({"done": True}), (IndexKey(("id",)),), 5)
    plan = " | ".join(await store.explain(query))
    assert "SCAN" in plan


async def test_database_is_in_wal_mode(store: SqliteStorage) -> None:
    conn = apsw.Connection(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"


async def test_heavy_read_leaves_the_loop_free(store: SqliteStorage) -> None:
    many = [
        Insert("items", f"x{i:05d}", 1, jsonutil.dumps_str({"id": f"x{i:05d}", "s": "a" * 50}))
        for i in range(20000)
    ]
    await store.apply(many)
    heavy = Query(
        "items", parse_filter({"s": {"$regex": "b"}}), (IndexKey(("id",)),), 5, count=True
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    page = await store.query(heavy)
    elapsed = time.monotonic() - started
    task.cancel()
    assert page.total == 0
    # The loop kept running while the query ran on a reader thread.
    assert ticks >= max(1, int(elapsed * 1000 / 10)), (ticks, elapsed)


async def test_match_all_count(store: SqliteStorage) -> None:
    page = await store.query(Query("items", MATCH_ALL, (IndexKey(("id",)),), 1, count=True))
    assert page.total == 2000


async def test_concurrent_writes_share_commits(store: SqliteStorage) -> None:
    before_commits, before_units = store.commits, store.committed_units
    writes = [
        store.apply([Insert("items", f"g{i}", 1, jsonutil.dumps_str({"id": f"g{i}"}))])
        for i in range(200)
    ]
    await asyncio.gather(*writes)
    units = store.committed_units - before_units
    commits = store.commits - before_commits
    assert units == 200
    assert commits < 200  # group commit: several writers acknowledged by one fsync


async def test_reads_do_not_wait_for_a_writer(store: SqliteStorage) -> None:
    blocker = apsw.Connection(store.path)
    blocker.set_busy_timeout(0)
    blocker.execute("BEGIN IMMEDIATE")
    blocker.execute("INSERT INTO _sequence (name, value) VALUES ('blocker', 1)")
    try:
        started = time.monotonic()
        page = await store.query(Query("items", MATCH_ALL, (IndexKey(("id",)),), 5, count=True))
        assert page.total == 2000
        assert await store.get("items", "r0001") is not None
        assert time.monotonic() - started < 1.0
        pending = asyncio.ensure_future(
            store.apply([Insert("items", "late", 1, jsonutil.dumps_str({"id": "late"}))])
        )
        await asyncio.sleep(0.2)
        assert not pending.done()  # the writer waits for the lock; readers did not
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await pending
    assert await store.get("items", "late") is not None


async def test_a_read_that_races_a_collection_drop_is_not_found(tmp_path: Path) -> None:
    store = SqliteStorage(str(tmp_path / "race.db"))
    await store.open()
    try:
        await store.apply([PutCollection("gone", "{}", (), create=True)])
        await store.apply([Insert("gone", "a", 1, jsonutil.dumps_str({"id": "a"}))])
        # The table disappears between the adapter's lookup and the read (as when a
        # DELETE of the collection commits while a request for it is in flight).
        other = apsw.Connection(str(tmp_path / "race.db"))
        (table,) = other.execute("SELECT tbl FROM _collections WHERE name = 'gone'").fetchone()
        other.execute(f'DROP TABLE "{table}"')
        other.close()
        with pytest.raises(NotFound):
            await store.get("gone", "a")
        with pytest.raises(NotFound):
            await store.query(Query("gone", MATCH_ALL, (IndexKey(("id",)),), 10))
    finally:
        await store.close()
