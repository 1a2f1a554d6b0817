"""The PostgreSQL filter compiler and adapter specifics, against a real server.

PostgreSQL runs on 127.0.0.1:5432 (user postgres, trust auth); the module makes a
database of its own, empties it before each test and drops it afterwards.
Without a server these tests fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from backpack.core.filter import Eq, Node, Var, compile_matcher, parse_filter
from backpack.core.jsonutil import dumps_str, loads, normalize
from backpack.core.storage import (
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
    WriteOp,
)
from backpack.errors import NotFound, Unavailable, ValidationFailed
from backpack.storage.postgres import PostgresStorage
from backpack.storage.postgres.adapter import custom_plans
from backpack.storage.postgres.filter_pg import compile_filter_pg, pg_data, pg_escape
from backpack.storage.sqlite.adapter import SqliteStorage
from backpack.types import JSON
from tests.pg import PG_SERVER, fresh_database, pg_admin

FIELD_TYPES = {"score": "number", "title": "string", "done": "boolean"}

# Documents where JSONB is most easily wrong: true vs 1, null vs missing, containers,
# numbers beyond 2**53 (ints vs floats), U+0000 and U+0001, non-object elements.
CORPUS: dict[str, dict[str, JSON]] = {
    "int": {"v": 1, "score": 10, "title": "b", "done": True},
    "float": {"v": 1.5, "score": 2.5, "title": "B", "done": False},
    "true": {"v": True, "score": None, "title": None, "done": None},
    "false": {"v": False, "score": -1},
    "str": {"v": "1", "title": "é"},
    "jsontext": {"v": "[1]", "w": '{"k":1}'},
    "null": {"v": None},
    "missing": {},
    "list": {"v": [1, "a", None, [2, 3], {"k": 1}, True]},
    "scalars": {"v": [5, "x", False]},
    "empty": {"v": []},
    "obj": {"v": {"k": 1, "j": [1, 2]}, "w": {"k": 1}},
    "quoted": {"my-key": [0, 1, {"b_c": "deep"}]},
    "big-float": {"v": 2.0**60, "score": 1e300},
    "big-int": {"v": 2**60, "score": 10**18},
    "near-big": {"v": 1152921504606847000, "score": -(2**63)},
    "nul": {"v": "a\x00b", "title": "a\x00", "w": {"k\x00": "\x01"}},
    "soh": {"v": "a\x01", "title": "a\x01b", "w": ["\x00"]},
    "objkey": {"v": {"0": 5}},
}
FILTERS: list[dict[str, JSON]] = [
    {},
    {"v": 1},
    {"v": True},
    {"v": "1"},
    {"v": None},
    {"v": [1]},
    {"v": [2, 3]},
    {"v": {"k": 1}},
    {"w": {"k": 1}},
    {"v": {"j": [1, 2], "k": 1}},
    {"v": {"$ne": None}},
    {"v": {"$in": [True, "x", [2, 3], None]}},
    {"v": {"$nin": [1, False]}},
    {"v": {"$gt": 0}},
    {"v": {"$lte": True}},
    {"v": {"$lt": "2"}},
    {"v": {"$exists": False}},
    {"v": {"$size": 3}},
    {"v": {"$all": [True, None]}},
    {"v": {"$all": [[2, 3], {"k": 1}]}},
    {"v": {"$elemMatch": {"$gte": 1}}},
    {"v": {"$elemMatch": {"k": 1}}},
    {"v": {"$elemMatch": {"x": None}}},
    {"v.0": 5},
    {"v.0": "1"},
    {"v.0": None},
    {"v.0": {"$exists": True}},
    {"v.1": {"$exists": False}},
    {"v.3.1": 3},
    {"my-key.2.b_c": "deep"},
    {"v": 2**60},
    {"v": 1152921504606847000},
    {"v": 2.0**60},
    {"v": {"$gt": 2**60 - 1}},
    {"v": {"$gte": 2**60}},
    {"v": {"$lt": 1152921504606847000}},
    {"score": {"$gt": 10**18}},
    {"score": 1e300},
    {"score": {"$lt": -(2**63) + 1}},
    {"v": "a\x00b"},
    {"v": {"$gt": "a"}},
    {"v": {"$lt": "a\x01"}},
    {"v": {"$lt": "a\x00c"}},
    {"title": {"$gt": "a"}},
    {"title": {"$lte": "a\x00"}},
    {"title": {"$in": ["a\x00", "b"]}},
    {"w": {"k\x00": "\x01"}},
    {"w": "\x00"},
    {"id": {"$lt": "int\x00"}},
    {"id": {"$gte": "int\x00"}},
    {"id": {"$in": ["int", "obj", 1]}},
    {"v": {"$regex": "^a"}},
    {"v": {"$regex": "b$"}},
    {"v": {"$regex": "^1$"}},
    {"v": {"$regex": "\x00"}},
    {"v": {"$regex": "a.", "$options": "i"}},
    {"title": {"$regex": "^B", "$options": "i"}},
    {"title": {"$not": {"$regex": "(a+)+$"}}},
    {"id": {"$regex": "^(int|float)$"}},
    {"$nor": [{"v": {"$exists": True}}, {"title": "é"}]},
    {"$or": [{"v": True}, {"score": {"$lt": 0}}]},
]


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with fresh_database("bp_filter_pg_test") as name:
        yield name


@pytest.fixture
async def url(pg_database: str) -> str:
    await pg_admin("DROP SCHEMA public CASCADE; CREATE SCHEMA public", pg_database)
    return f"{PG_SERVER}/{pg_database}"


@pytest.fixture
async def conn(url: str) -> AsyncIterator[Any]:
    connection = await asyncpg.connect(url)
    await connection.execute(
        'CREATE TABLE t (id text COLLATE "C" PRIMARY KEY, doc text NOT NULL, data jsonb NOT NULL)'
    )
    yield connection
    await connection.close()


@pytest.fixture
async def storage(url: str) -> AsyncIterator[PostgresStorage]:
    store = PostgresStorage(url, max_size=4)
    await store.open()
    yield store
    await store.close()


def records_of(docs: Mapping[str, Mapping[str, JSON]]) -> list[dict[str, JSON]]:
    out: list[dict[str, JSON]] = []
    for doc_id, doc in docs.items():
        record = normalize({**doc, "id": doc_id})
        assert isinstance(record, dict)
        out.append(record)
    return out


async def insert(conn: Any, records: list[dict[str, JSON]]) -> None:
    rows = [(str(r["id"]), dumps_str(r), pg_data(dumps_str(r))) for r in records]
    await conn.executemany("INSERT INTO t VALUES ($1, $2, $3::jsonb)", rows)


async def select(conn: Any, node: Node, field_types: Mapping[str, str] | None = None) -> set[str]:
    found = compile_filter_pg(node, field_types=field_types)
    rows = await conn.fetch(f"SELECT id, doc FROM t WHERE {found.sql}", *found.params)
    matcher = compile_matcher(node)
    return {str(row[0]) for row in rows if found.exact or matcher(loads(row[1]))}


def evaluate(records: list[dict[str, JSON]], node: Node) -> set[str]:
    matcher = compile_matcher(node)
    return {str(r["id"]) for r in records if matcher(r)}


def doc(record_id: str, version: int = 1, **fields: JSON) -> str:
    return dumps_str({"id": record_id, "version": version, **fields})


async def make(store: Storage, *indexes: IndexDef) -> None:
    await store.apply([PutCollection("items", "{}", tuple(indexes), create=True)])


async def test_corpus_agrees_with_evaluator(conn: Any) -> None:
    records = records_of(CORPUS)
    await insert(conn, records)
    for filter_json in FILTERS:
        node = parse_filter(filter_json)
        expected = evaluate(records, node)
        assert await select(conn, node) == expected, filter_json
        typed = {k: v for k, v in FIELD_TYPES.items() if k not in ("score", "title")}
        assert await select(conn, node, typed) == expected, filter_json


async def test_big_numbers_compare_exactly(conn: Any) -> None:
    records = records_of(CORPUS)
    await insert(conn, records)
    # 2.0**60 is 1152921504606846976 exactly; its shortest text is 1.152921504606847e18.
    assert await select(conn, parse_filter({"v": 2**60})) == {"big-float", "big-int"}
    assert await select(conn, parse_filter({"v": 1152921504606847000})) == {"near-big"}
    assert await select(conn, parse_filter({"v": {"$gt": 2**60}})) == {"near-big"}


def test_escaping_keeps_order_and_equality() -> None:
    texts = ["", "\x00", "\x00\x00", "\x01", "\x01\x00", "\x02", "a", "a\x00", "a\x01", "ab"]
    escaped = [pg_escape(t) for t in texts]
    assert sorted(escaped) == escaped and len(set(escaped)) == len(texts)
    assert all("\x00" not in e for e in escaped)
    assert pg_data('{"a":1.5,"b":"x"}') == '{"a":1.5,"b":"x"}'
    assert loads(pg_data('{"a":1e300,"b":"\\u0000"}')) == {"a": int(1e300), "b": "\x01\x01"}


@pytest.mark.parametrize(
    ("filter_json", "exact"),
    [
        ({"v": {"$regex": "^a"}}, True),
        ({"v": {"$regex": "é$"}}, True),
        ({"v": {"$regex": "^$"}}, True),
        ({"v": {"$regex": "a."}}, False),
        ({"v": {"$regex": "a", "$options": "i"}}, False),
        ({"v": {"$regex": "\x01"}}, False),
        ({"v": {"$not": {"$regex": "(a+)+$"}}}, False),
        ({"score": {"$regex": "a."}}, True),  # a declared number never matches: no re-test
    ],
)
def test_only_literal_regexes_are_exact(filter_json: dict[str, JSON], exact: bool) -> None:
    found = compile_filter_pg(parse_filter(filter_json), field_types=FIELD_TYPES)
    assert found.exact is exact


@pytest.mark.parametrize(
    ("filter_json", "sql_part", "params"),
    [
        ({"id": "x"}, "id = $3::text", ["x"]),
        ({"id": {"$exists": True}}, "TRUE", []),
        ({"score": "5"}, "FALSE", []),
        ({"$and": [{"score": "5"}, {"v": 1}]}, "FALSE", []),
        ({"$or": [{"score": "5"}, {"id": "y"}]}, "id = $3::text", ["y"]),
        ({"title": {"$elemMatch": {"$gt": 1}}}, "FALSE", []),
    ],
)
def test_placeholders_follow_simplification(
    filter_json: dict[str, JSON], sql_part: str, params: list[object]
) -> None:
    found = compile_filter_pg(parse_filter(filter_json), field_types=FIELD_TYPES, first_param=3)
    assert found.sql == sql_part and found.params == params


def test_refuses_unbound_variables_and_unknown_field_types() -> None:
    with pytest.raises(ValueError, match="bind_variables"):
        compile_filter_pg(Eq(("a",), Var("now")))
    with pytest.raises(ValueError, match="bind_variables"):
        compile_filter_pg(parse_filter({"@auth": None}, allow_variables=True))
    with pytest.raises(ValueError, match="not one of"):
        compile_filter_pg(parse_filter({}), field_types={"a": "date"})


async def test_wide_filters(conn: Any) -> None:
    records = records_of({"a": {"n": 7, "s": "x7"}})
    await insert(conn, records)
    assert await select(conn, parse_filter({"n": {"$in": list(range(1000))}})) == {"a"}
    assert await select(conn, parse_filter({"$or": [{"s": f"x{i}"} for i in range(600)]})) == {"a"}
    many = parse_filter({"$and": [{"n": {"$ne": i}} for i in range(600)]})
    assert await select(conn, many) == set()


async def test_declared_index_serves_filter_and_sort(storage: PostgresStorage) -> None:
    await make(storage, IndexDef("s", (IndexKey(("score",)),)))
    await storage.apply(
        [Insert("items", f"r{i:04}", 1, doc(f"r{i:04}", score=i)) for i in range(3000)]
    )
    where = parse_filter({"score": {"$gt": 2990}})
    sort = (IndexKey(("score",)), IndexKey(("id",)))
    query = Query("items", where, sort, 5, field_types={"score": "number"})
    plan = "\n".join(await storage.explain(query))
    assert "bx_r_1__s" in plan and "Seq Scan" not in plan, plan
    page = await storage.query(query)
    assert [loads(d)["score"] for d in page.docs] == [2991, 2992, 2993, 2994, 2995]


@pytest.mark.parametrize("planned", ["for its values", "postgres default"])
async def test_a_sorted_page_keeps_its_index_plan_when_run_again_and_again(
    storage: PostgresStorage, url: str, pg_database: str, planned: str
) -> None:
    """asyncpg prepares every statement, and PostgreSQL's default switches a prepared
    statement to a generic plan after five runs: blind to the values, it misjudged the
    CASE expressions of a filter and sorted every match (20x slower at 10,000 records).
    Page queries run in `custom_plans`, where the sixth run is planned for its values too."""
    await make(storage, IndexDef("s", (IndexKey(("score",)),)))
    await storage.apply(
        [
            Insert("items", f"r{i:05}", 1, doc(f"r{i:05}", score=i % 1000, done=i % 2 == 0))
            for i in range(10_000)
        ]
    )
    await pg_admin("ANALYZE", pg_database)
    query = Query(
        "items",
        parse_filter({"score": {"$gt": 500}, "done": True}),
        (IndexKey(("score",), True), IndexKey(("id",), True)),
        20,
    )
    found = compile_filter_pg(query.where)
    sql, params = storage._page_sql(query, '"r_1"', found)
    assert params == [500, "true", "[true]"]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"PREPARE page AS {sql} LIMIT 21")
        run = "EXECUTE page(500, 'true', '[true]')"
        if planned == "for its values":
            async with custom_plans(conn):
                for _ in range(6):
                    await conn.execute(run)
                plan = "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + run))
            assert await conn.fetchval("SHOW plan_cache_mode") == "auto"  # the session's
        else:
            for _ in range(6):
                await conn.execute(run)
            plan = "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + run))
    finally:
        await conn.close()
    index_plan = "Index Scan Backward using bx_r_1__s" in plan and "Sort" not in plan
    assert index_plan == (planned == "for its values"), plan


async def test_statistics_follow_the_writes(storage: PostgresStorage, url: str) -> None:
    """The adapter ANALYZEs a table it filled (PostgreSQL's autovacuum may be off, as on
    this project's machines): without statistics a sorted page was a sort of every match."""
    await make(storage, IndexDef("s", (IndexKey(("score",)),)))
    for start in range(0, 2000, 500):
        await storage.apply(
            [
                Insert("items", f"r{i:05}", 1, doc(f"r{i:05}", score=i))
                for i in range(start, start + 500)
            ]
        )
    conn = await asyncpg.connect(url)
    try:
        for _ in range(100):
            analyzed = await conn.fetchval(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'r_1'"
            )
            if analyzed is not None:
                break
            await asyncio.sleep(0.05)
        assert analyzed is not None
        assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'r_1'") >= 500
    finally:
        await conn.close()


async def test_rechecked_queries_page_and_count(storage: PostgresStorage) -> None:
    await make(storage)
    names = ["apple", "banana", "cherry", "avocado", "grape", "apricot", "kiwi", "almond"]
    await storage.apply(
        [Insert("items", f"r{i}", 1, doc(f"r{i}", name=n, n=i)) for i, n in enumerate(names)]
    )
    where = parse_filter({"name": {"$regex": "^a.*o", "$options": "i"}})
    sort = (IndexKey(("n",), True), IndexKey(("id",), True))
    seen: list[str] = []
    after = None
    while True:
        page = await storage.query(Query("items", where, sort, 1, after=after, count=True))
        assert page.total == 3
        seen += [loads(d)["name"] for d in page.docs]
        if page.last_key is None:
            break
        after = page.last_key
    assert seen == ["almond", "apricot", "avocado"]
    offset = await storage.query(Query("items", where, sort, 5, offset=1))
    assert [loads(d)["name"] for d in offset.docs] == ["apricot", "avocado"]
    assert await storage.get("items", "r0", where) is None
    assert await storage.get("items", "r3", where) is not None
    many = await storage.get_many("items", ["r0", "r3", "r7", "zz"], where)
    assert sorted(many) == [doc("r3", name="avocado", n=3), doc("r7", name="almond", n=7)]


async def test_documents_round_trip_verbatim(storage: PostgresStorage) -> None:
    await make(storage)
    text = dumps_str({"id": "a", "big": 1e300, "f": 2.0**60, "s": "x\x00\x01y", "k\x00": [1.5]})
    await storage.apply([Insert("items", "a", 1, text)])
    found = await storage.get("items", "a", parse_filter({"s": {"$gt": "x\x00"}}))
    assert found is not None and found.doc == text
    assert await storage.get("items", "a", parse_filter({"f": 1152921504606847000})) is None
    assert await storage.get("items", "a", parse_filter({"f": 2**60})) is not None
    assert await storage.get("items", "a", parse_filter({"big": 1e300})) is not None
    assert await storage.get("items", "a\x00") is None


async def test_sort_order_matches_sqlite(storage: PostgresStorage, tmp_path: Path) -> None:
    values: list[JSON] = [None, True, False, 0, 1, 1.5, -3, "", "a", "B", "é", [1], {"k": 1}]
    ops = [Insert("items", f"r{i:02}", 1, doc(f"r{i:02}", v=v)) for i, v in enumerate(values)]
    ops.append(Insert("items", "rmissing", 1, doc("rmissing")))
    sqlite = SqliteStorage(str(tmp_path / "s.db"))
    await sqlite.open()
    try:
        for store in (storage, sqlite):
            await make(store)
            await store.apply(ops)
        for descending in (False, True):
            sort = (IndexKey(("v",), descending), IndexKey(("id",), descending))
            query = Query("items", parse_filter({}), sort, 100)
            pg_page, lite_page = await storage.query(query), await sqlite.query(query)
            assert pg_page.docs == lite_page.docs
    finally:
        await sqlite.close()


async def test_unique_index_ignores_nulls(storage: PostgresStorage) -> None:
    await make(storage, IndexDef("u", (IndexKey(("k",)), IndexKey(("j",))), unique=True))
    await storage.apply([Insert("items", i, 1, doc(i, k=None, j=1)) for i in "abc"])
    await storage.apply([Insert("items", "d", 1, doc("d", k=[1, {"x": 2}], j=1))])
    with pytest.raises(UniqueViolation) as raised:
        await storage.apply([Insert("items", "e", 1, doc("e", k=[1, {"x": 2}], j=1))])
    assert raised.value.details == {"index": "u"} and raised.value.op_index == 0
    await storage.apply([Update("items", "a", 1, 2, doc("a", 2, k=[1, {"x": 2}], j=2))])


async def test_failed_batch_leaves_nothing(storage: PostgresStorage) -> None:
    ops: list[WriteOp] = [
        PutCollection("items", "{}", (), create=True),
        Insert("items", "a", 1, doc("a")),
        Delete("items", "zz"),
    ]
    with pytest.raises(StaleWrite) as raised:
        await storage.apply(ops)
    assert raised.value.op_index == 2
    assert await storage.load_collections() == []
    with pytest.raises(NotFound):
        await storage.get("items", "a")


async def test_check_existing_streams_every_row(storage: PostgresStorage) -> None:
    await make(storage)
    await storage.apply([Insert("items", f"r{i:04}", 1, doc(f"r{i:04}", n=i)) for i in range(1200)])
    seen: list[str] = []

    def check(rows: Iterator[tuple[str, str]]) -> None:
        for record_id, text in rows:
            seen.append(record_id)
            if loads(text)["n"] == 1100:
                raise ValidationFailed("no", {record_id: "n is 1100"})

    with pytest.raises(ValidationFailed):
        await storage.apply([PutCollection("items", '{"v": 2}', (), False, check)])
    assert seen == [f"r{i:04}" for i in range(1101)]
    assert [c.meta for c in await storage.load_collections()] == ["{}"]


async def test_workers_sharing_a_database_see_each_others_collections(url: str) -> None:
    first, second = PostgresStorage(url, max_size=2), PostgresStorage(url, max_size=2)
    await first.open()
    await second.open()
    try:
        await make(first)
        await first.apply([Insert("items", "a", 1, doc("a"))])
        assert await second.get("items", "a") is not None  # unknown name: reloaded
        await second.apply([DropCollection("items")])
        with pytest.raises(NotFound):
            await first.get("items", "a")  # a stale table: reloaded, then gone
        await make(second)
        await first.apply([Insert("items", "b", 1, doc("b"))])  # the new table
        assert await second.get("items", "b") is not None
    finally:
        await first.close()
        await second.close()


async def test_unreachable_server_is_unavailable() -> None:
    store = PostgresStorage("postgresql://postgres:secret@127.0.0.1:1/nothing")
    with pytest.raises(Unavailable) as raised:
        await store.open()
    assert "127.0.0.1:1" in raised.value.message and "secret" not in raised.value.message
    with pytest.raises(Unavailable):
        await store.get("items", "a")


async def test_connection_lost_mid_request_is_unavailable(
    storage: PostgresStorage, url: str
) -> None:
    await make(storage)
    await storage.apply([Insert("items", "a", 1, doc("a"))])
    blocker = await asyncpg.connect(url)
    try:
        table = await blocker.fetchval("SELECT tbl FROM _collections WHERE name = 'items'")
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(f'SELECT * FROM "{table}" WHERE id = $1 FOR UPDATE', "a")
        write = asyncio.create_task(storage.apply([Update("items", "a", 1, 2, doc("a", 2, n=1))]))
        waiting = (
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        for _ in range(100):
            pids = [row[0] for row in await blocker.fetch(waiting)]
            if pids:
                break
            await asyncio.sleep(0.05)
        assert pids, "the write never waited for the row lock"
        await blocker.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", pids)
        with pytest.raises(Unavailable) as raised:
            await write
        assert raised.value.status == 503
        await tx.rollback()
    finally:
        await blocker.close()
    # The pool replaces the lost connection: service resumes.
    await storage.apply([Update("items", "a", 1, 2, doc("a", 2, n=2))])
    found = await storage.get("items", "a")
    assert found is not None and loads(found.doc)["n"] == 2


async def test_index_on_a_path_with_an_array_position(storage: PostgresStorage) -> None:
    index = IndexDef("t0", (IndexKey(("tags", 0)),), unique=True)
    await make(storage, index)
    await storage.apply([Insert("items", "a", 1, doc("a", tags=["x", "y"]))])
    await storage.apply([Insert("items", "b", 1, doc("b", tags="x"))])  # no tags.0
    with pytest.raises(UniqueViolation):
        await storage.apply([Insert("items", "c", 1, doc("c", tags=["x"]))])
    sort = (IndexKey(("tags", 0), True), IndexKey(("id",), True))
    page = await storage.query(Query("items", parse_filter({}), sort, 10))
    assert [loads(d)["id"] for d in page.docs] == ["a", "b"]


async def test_reads_survive_lost_idle_connections(storage: PostgresStorage, url: str) -> None:
    await make(storage)
    await storage.apply([Insert("items", "a", 1, doc("a"))])
    admin = await asyncpg.connect(url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'backpack'"
        )
    finally:
        await admin.close()
    assert killed >= 1
    assert await storage.get("items", "a") is not None  # retried on a fresh connection
    await storage.apply([Insert("items", "b", 1, doc("b"))])
