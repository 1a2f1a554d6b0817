"""The storage contract: every adapter behind `backpack.core.storage.Storage` passes this.

Parametrized over adapters. PostgreSQL runs on 127.0.0.1:5432 (user postgres,
trust auth); the module makes a database of its own, empties it before each
test and drops it afterwards. Without a server these tests fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backpack.core import jsonutil
from backpack.core.filter import MATCH_ALL, parse_filter
from backpack.core.storage import (
    AlreadyExists,
    Delete,
    DropCollection,
    IndexDef,
    IndexKey,
    Insert,
    PutCollection,
    Query,
    StaleWrite,
    Storage,
    UniqueViolation,
    Update,
)
from backpack.errors import NotFound, ValidationFailed
from backpack.storage.postgres import PostgresStorage
from backpack.storage.sqlite.adapter import SqliteStorage
from tests.pg import PG_SERVER, fresh_database, pg_admin


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with fresh_database("bp_storage_test") as name:
        yield name


async def sqlite_factory(request: pytest.FixtureRequest, tmp: Path) -> Storage:
    return SqliteStorage(str(tmp / "contract.db"))


async def postgres_factory(request: pytest.FixtureRequest, tmp: Path) -> Storage:
    database: str = request.getfixturevalue("pg_database")
    await pg_admin("DROP SCHEMA public CASCADE; CREATE SCHEMA public", database)
    return PostgresStorage(f"{PG_SERVER}/{database}", max_size=4)


ADAPTERS = {"sqlite": sqlite_factory, "postgres": postgres_factory}


@pytest.fixture(params=sorted(ADAPTERS))
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store = await ADAPTERS[request.param](request, tmp_path)
    await store.open()
    yield store
    await store.close()


def doc(record_id: str, version: int = 1, **fields: object) -> str:
    return jsonutil.dumps_str({"id": record_id, "version": version, **fields})


async def make(store: Storage, name: str = "items", *indexes: IndexDef) -> None:
    await store.apply([PutCollection(name, "{}", tuple(indexes), create=True)])


async def test_insert_get_update_delete(storage: Storage) -> None:
    await make(storage)
    await storage.apply([Insert("items", "a", 1, doc("a", n=1))])
    found = await storage.get("items", "a")
    assert found is not None and found.version == 1 and jsonutil.loads(found.doc)["n"] == 1
    await storage.apply([Update("items", "a", 1, 2, doc("a", 2, n=2))])
    with pytest.raises(StaleWrite):
        await storage.apply([Update("items", "a", 1, 2, doc("a", 2, n=3))])
    found = await storage.get("items", "a")
    assert found is not None and jsonutil.loads(found.doc)["n"] == 2
    with pytest.raises(StaleWrite):
        await storage.apply([Delete("items", "a", 1)])
    await storage.apply([Delete("items", "a", 2)])
    assert await storage.get("items", "a") is None


async def test_duplicate_ids_and_unknown_collections(storage: Storage) -> None:
    await make(storage)
    await storage.apply([Insert("items", "a", 1, doc("a"))])
    with pytest.raises(AlreadyExists):
        await storage.apply([Insert("items", "a", 1, doc("a"))])
    with pytest.raises(NotFound):
        await storage.apply([Insert("nope", "a", 1, doc("a"))])
    with pytest.raises(AlreadyExists):
        await make(storage)


async def test_apply_is_all_or_nothing(storage: Storage) -> None:
    await make(storage)
    await storage.apply([Insert("items", "a", 1, doc("a"))])
    with pytest.raises(AlreadyExists):
        await storage.apply([Insert("items", "b", 1, doc("b")), Insert("items", "a", 1, doc("a"))])
    assert await storage.get("items", "b") is None


async def test_concurrent_units_fail_alone(storage: Storage) -> None:
    await make(storage, "items", IndexDef("u", (IndexKey(("k",)),), unique=True))
    results = await asyncio.gather(
        *(storage.apply([Insert("items", f"r{i}", 1, doc(f"r{i}", k=i % 5))]) for i in range(50)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 5
    assert all(isinstance(r, UniqueViolation) for r in results if r is not None)
    page = await storage.query(Query("items", MATCH_ALL, (IndexKey(("id",)),), 100, count=True))
    assert page.total == 5


async def test_concurrent_creates_each_get_their_own_answer(storage: Storage) -> None:
    """Creates that arrive together may be written together (PostgreSQL groups them into one
    statement): each still gets its own answer, and a failing one takes no other down."""
    await make(storage)
    await make(storage, "others")
    await storage.apply([Insert("items", "taken", 1, doc("taken"))])
    ops = []
    for i in range(120):
        match i % 6:
            case 0:
                ops.append(Insert("nope", f"n{i}", 1, doc(f"n{i}")))
            case 1:
                ops.append(Insert("items", "taken", 1, doc("taken", n=i)))
            case 2 | 3:
                ops.append(Insert("others", f"o{i}", 1, doc(f"o{i}", n=i)))
            case _:
                ops.append(Insert("items", f"i{i}", 1, doc(f"i{i}", n=i)))
    results = await asyncio.gather(*(storage.apply([op]) for op in ops), return_exceptions=True)
    for i, result in enumerate(results):
        expected = {0: NotFound, 1: AlreadyExists}.get(i % 6)
        if expected is None:
            assert result is None, (i, result)
        else:
            assert isinstance(result, expected), (i, result)
    items = await storage.query(Query("items", MATCH_ALL, (IndexKey(("id",)),), 200, count=True))
    others = await storage.query(Query("others", MATCH_ALL, (IndexKey(("id",)),), 200, count=True))
    assert (items.total, others.total) == (1 + 40, 40)
    taken = await storage.get("items", "taken")
    assert taken is not None and "n" not in jsonutil.loads(taken.doc)
    found = await storage.get("others", "o3")
    assert found is not None and jsonutil.loads(found.doc)["n"] == 3


async def test_concurrent_gets_each_get_their_own_answer(storage: Storage) -> None:
    """Gets that arrive together may be read together (PostgreSQL reads them with one
    query): each still gets its own record, or None, or its own error."""
    await make(storage)
    await make(storage, "others")
    await storage.apply([Insert("items", f"i{i}", 1, doc(f"i{i}", n=i)) for i in range(30)])
    await storage.apply([Insert("others", f"i{i}", 2, doc(f"i{i}", n=-i)) for i in range(10)])
    wanted: list[tuple[str, str]] = []
    for i in range(200):
        match i % 5:
            case 0:
                wanted.append(("items", f"i{i % 30}"))
            case 1:
                wanted.append(("others", f"i{i % 12}"))  # i10, i11: missing there
            case 2:
                wanted.append(("items", f"missing{i}"))
            case 3:
                wanted.append(("nope", "i1"))
            case _:
                wanted.append(("items", "i7"))  # the same record, many times at once
    wanted.append(("items", "i1\x00"))
    results = await asyncio.gather(
        *(storage.get(collection, rid) for collection, rid in wanted), return_exceptions=True
    )
    for (collection, rid), result in zip(wanted, results, strict=True):
        if collection == "nope":
            assert isinstance(result, NotFound), result
        elif rid.startswith("missing") or "\x00" in rid:
            assert result is None
        elif collection == "others" and rid in ("i10", "i11"):
            assert result is None  # there are 10 of those
        else:
            assert not isinstance(result, BaseException) and result is not None, (rid, result)
            n = int(rid[1:])
            assert jsonutil.loads(result.doc) == jsonutil.loads(
                doc(rid, n=n if collection == "items" else -n)
            )
            assert result.version == (1 if collection == "items" else 2)
    # Under a filter, concurrent gets keep to it, each on its own record.
    where = parse_filter({"n": {"$gte": 15}})
    got = await asyncio.gather(*(storage.get("items", f"i{i}", where) for i in range(30)))
    assert [found is not None for found in got] == [i >= 15 for i in range(30)]


async def test_unique_index_tells_types_apart(storage: Storage) -> None:
    await make(storage, "items", IndexDef("u", (IndexKey(("k",)),), unique=True))
    await storage.apply([Insert("items", "a", 1, doc("a", k=1))])
    await storage.apply([Insert("items", "b", 1, doc("b", k=True))])
    await storage.apply([Insert("items", "c", 1, doc("c", k="1"))])
    await storage.apply([Insert("items", "d", 1, doc("d")), Insert("items", "e", 1, doc("e"))])
    with pytest.raises(UniqueViolation):
        await storage.apply([Insert("items", "f", 1, doc("f", k=1))])


async def test_query_filter_sort_keyset(storage: Storage) -> None:
    await make(storage)
    ops = [Insert("items", f"r{i:02d}", 1, doc(f"r{i:02d}", n=i % 4)) for i in range(20)]
    await storage.apply(ops)
    where = parse_filter({"n": {"$gte": 2}})
    sort = (IndexKey(("n",), True), IndexKey(("id",), True))
    seen: list[str] = []
    after = None
    while True:
        page = await storage.query(Query("items", where, sort, 3, after=after, count=True))
        assert page.total == 10
        seen += [jsonutil.loads(d)["id"] for d in page.docs]
        if page.last_key is None:
            break
        after = page.last_key
    expected = sorted(
        (f"r{i:02d}" for i in range(20) if i % 4 >= 2),
        key=lambda i: (int(i[1:]) % 4, i),
        reverse=True,
    )
    assert seen == expected


async def test_keyset_with_missing_values(storage: Storage) -> None:
    await make(storage)
    await storage.apply(
        [Insert("items", f"r{i}", 1, doc(f"r{i}", **({"n": i} if i % 2 else {}))) for i in range(8)]
    )
    for descending in (False, True):
        sort = (IndexKey(("n",), descending), IndexKey(("id",), descending))
        everything = await storage.query(Query("items", MATCH_ALL, sort, 100))
        walked: list[str] = []
        after = None
        while True:
            page = await storage.query(Query("items", MATCH_ALL, sort, 2, after=after))
            walked += page.docs
            if page.last_key is None:
                break
            after = page.last_key
        assert walked == everything.docs and len(walked) == 8


async def test_get_many_and_where(storage: Storage) -> None:
    await make(storage)
    await storage.apply([Insert("items", i, 1, doc(i, public=i != "b")) for i in "abc"])
    docs = await storage.get_many("items", ["a", "b", "zz"], parse_filter({"public": True}))
    assert [jsonutil.loads(d)["id"] for d in docs] == ["a"]
    assert await storage.get("items", "b", parse_filter({"public": True})) is None


async def test_collections_persist_and_drop(storage: Storage, tmp_path: Path) -> None:
    await make(storage, "one")
    await storage.apply([PutCollection("one", '{"v": 2}', (), create=False)])
    stored = {c.name: c.meta for c in await storage.load_collections()}
    assert stored == {"one": '{"v": 2}'}
    await storage.apply([DropCollection("one")])
    assert await storage.load_collections() == []
    with pytest.raises(NotFound):
        await storage.get("one", "a")


async def test_check_existing_refuses_change(storage: Storage) -> None:
    await make(storage)
    await storage.apply([Insert("items", "a", 1, doc("a", n="x"))])

    def refuse(rows: Iterator[tuple[str, str]]) -> None:
        for record_id, _ in rows:
            raise ValidationFailed("no", {record_id: "bad"})

    with pytest.raises(ValidationFailed):
        await storage.apply([PutCollection("items", '{"v": 9}', (), False, refuse)])
    assert {c.meta for c in await storage.load_collections()} == {"{}"}


async def test_unique_index_over_duplicates_refused(storage: Storage) -> None:
    await make(storage)
    await storage.apply([Insert("items", i, 1, doc(i, k=1)) for i in "ab"])
    index = IndexDef("u", (IndexKey(("k",)),), unique=True)
    with pytest.raises(UniqueViolation):
        await storage.apply([PutCollection("items", "{}", (index,), False)])
    await storage.apply([Insert("items", "c", 1, doc("c", k=1))])


async def test_counts_follow_every_write(storage: Storage) -> None:
    await make(storage)
    count = Query("items", parse_filter({"k": 1}), (IndexKey(("id",)),), 1, count=True)
    assert (await storage.query(count)).total == 0
    await storage.apply([Insert("items", "a", 1, doc("a", k=1))])
    assert (await storage.query(count)).total == 1
    assert (await storage.query(count)).total == 1
    await storage.apply([Insert("items", "b", 1, doc("b", k=1))])
    assert (await storage.query(count)).total == 2
    await storage.apply([Update("items", "a", 1, 2, doc("a", 2, k=2))])
    assert (await storage.query(count)).total == 1
