"""The SQLite filter compiler, run against real in-memory apsw tables."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import apsw
import pytest

from backpack.core.filter import (
    Eq,
    Var,
    VariableContext,
    bind_variables,
    compile_matcher,
    parse_filter,
)
from backpack.core.jsonutil import dumps_str, normalize
from backpack.storage.sqlite.filter_sql import (
    compile_filter_sqlite,
    register_sqlite_functions,
    sqlite_json_path,
    sqlite_value_expr,
)
from backpack.types import JSON, Path

TABLE = "CREATE TABLE t (id TEXT PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID"

# Documents chosen to tell the engines apart where SQL is most easily wrong:
# JSON true vs 1, null vs missing, containers vs their text, non-object elements.
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
}
FIELD_TYPES = {"score": "number", "title": "string", "done": "boolean"}

FILTERS: list[dict[str, JSON]] = [
    {},
    {"v": 1},
    {"v": True},
    {"v": False},
    {"v": "1"},
    {"v": None},
    {"v": [1]},
    {"v": [2, 3]},
    {"v": []},
    {"v": {"k": 1}},
    {"w": {"k": 1}},
    {"v": {"j": [1, 2], "k": 1}},
    {"v": {"$ne": None}},
    {"v": {"$ne": 1}},
    {"v": {"$in": [True, "x", [2, 3], None]}},
    {"v": {"$nin": [1, False]}},
    {"v": {"$gt": 0}},
    {"v": {"$lte": True}},
    {"v": {"$gte": False}},
    {"v": {"$lt": "2"}},
    {"v": {"$exists": False}},
    {"v": {"$size": 3}},
    {"v": {"$all": [True, None]}},
    {"v": {"$all": [[2, 3], {"k": 1}]}},
    {"v": {"$all": []}},
    {"v": {"$all": [1, [1, 2]]}},
    {"w": {"$elemMatch": {"$eq": 1}}},
    {"v": {"$elemMatch": {"$gte": 1}}},
    {"v": {"$elemMatch": {"$not": {"$exists": True}}}},
    {"v": {"$elemMatch": {"$size": 2}}},
    {"v": {"$elemMatch": {"$elemMatch": {"$gt": 2}}}},
    {"v": {"$elemMatch": {"k": 1}}},
    {"v": {"$elemMatch": {"x": {"$exists": False}}}},
    {"v": {"$elemMatch": {"x": None}}},
    {"v": {"$regex": "^1"}},
    {"v": {"$regex": "A", "$options": "i"}},
    {"v": {"$not": {"$regex": "1"}}},
    {"v": {"$not": {"$gt": 1}}},
    {"v.k": 1},
    {"v.3.1": 3},
    {"v.4.k": {"$gte": 1}},
    {"my-key.2.b_c": "deep"},
    {"my-key": {"$elemMatch": {"b_c": {"$regex": "^d"}}}},
    {"score": {"$gt": 0}},
    {"score": {"$gt": True}},
    {"score": None},
    {"score": {"$ne": 10}},
    {"score": {"$in": [10, "10", None]}},
    {"score": {"$size": 0}},
    {"title": {"$regex": "^b", "$options": "i"}},
    {"title": {"$lt": "a"}},
    {"title": {"$nin": ["b", None]}},
    {"done": False},
    {"done": {"$lt": True}},
    {"done": {"$not": {"$eq": True}}},
    {"id": "int"},
    {"id": {"$in": ["int", "obj", 1]}},
    {"id": {"$gte": "s"}},
    {"id": None},
    {"id": {"$regex": "^(int|float)$"}},
    {"$or": [{"v": True}, {"score": {"$lt": 0}}]},
    {"$nor": [{"v": {"$exists": True}}, {"title": "é"}]},
    {"$and": [{"v": {"$ne": None}}, {"v": {"$not": {"$size": 0}}}]},
]


@pytest.fixture
def conn() -> Iterator[apsw.Connection]:
    connection = apsw.Connection(":memory:")
    register_sqlite_functions(connection)
    connection.execute(TABLE)
    yield connection
    connection.close()


def _insert(conn: apsw.Connection, docs: Mapping[str, Mapping[str, JSON]]) -> None:
    for doc_id, doc in docs.items():
        conn.execute(
            "INSERT INTO t VALUES (?, jsonb(?))",
            (doc_id, dumps_str(normalize({**doc, "id": doc_id}))),
        )


def _select(
    conn: apsw.Connection,
    filter_json: dict[str, JSON],
    field_types: Mapping[str, str] | None = None,
) -> set[str]:
    sql, params = compile_filter_sqlite(parse_filter(filter_json), field_types=field_types)
    return {row[0] for row in conn.execute(f"SELECT id FROM t WHERE {sql}", params)}


def _evaluate(filter_json: dict[str, JSON]) -> set[str]:
    matcher = compile_matcher(parse_filter(filter_json))
    return {doc_id for doc_id, doc in CORPUS.items() if matcher({**doc, "id": doc_id})}


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ((), "$"),
        (("score",), "$.score"),
        (("a", "b_c", "D9"), "$.a.b_c.D9"),
        (("my-key", 2), '$."my-key"[2]'),
        (("a", 0, "-x"), None),
        (("a'b",), None),
        (("a", -1), None),
        (("a", True), None),
    ],
)
def test_sqlite_json_path(path: Path, rendered: str | None) -> None:
    if rendered is None:
        with pytest.raises(ValueError, match="not a valid field path segment"):
            sqlite_json_path(path)
    else:
        assert sqlite_json_path(path) == rendered


def test_sqlite_value_expr() -> None:
    assert sqlite_value_expr(("id",)) == "id"
    assert sqlite_value_expr(("score",)) == "json_extract(doc, '$.score')"
    assert sqlite_value_expr(("my-key", 0), "data") == "json_extract(data, '$.\"my-key\"[0]')"


@pytest.mark.parametrize("filter_json", FILTERS, ids=[dumps_str(f) for f in FILTERS])
def test_sqlite_agrees_with_evaluator(conn: apsw.Connection, filter_json: dict[str, JSON]) -> None:
    _insert(conn, CORPUS)
    expected = _evaluate(filter_json)
    assert _select(conn, filter_json) == expected
    assert _select(conn, filter_json, FIELD_TYPES) == expected


@pytest.mark.parametrize(
    ("filter_json", "expected"),
    [
        ({"v": True}, {"true", "list"}),
        ({"v": 1}, {"int", "list"}),
        ({"v": [1]}, set()),
        ({"v": None}, {"null", "missing", "list", "quoted"}),
        ({"v": {"$elemMatch": {"x": {"$exists": False}}}}, {"list"}),
        ({"score": {"$ne": 10}}, set(CORPUS) - {"int"}),
    ],
)
def test_expected_rows(
    conn: apsw.Connection, filter_json: dict[str, JSON], expected: set[str]
) -> None:
    _insert(conn, CORPUS)
    assert _select(conn, filter_json) == expected
    assert _select(conn, filter_json, FIELD_TYPES) == expected


@pytest.mark.parametrize(
    ("filter_json", "sql", "params"),
    [
        ({"score": {"$gt": 500}}, "json_extract(doc, '$.score') > ?", [500]),
        ({"score": 5}, "json_extract(doc, '$.score') = ?", [5]),
        ({"title": {"$in": ["a", "b"]}}, "json_extract(doc, '$.title') IN (?, ?)", ["a", "b"]),
        ({"done": True}, "json_extract(doc, '$.done') = ?", [True]),
        ({"score": "5"}, "0", []),
        ({"score": {"$regex": "5"}}, "0", []),
        ({"title": {"$elemMatch": {"$gt": 1}}}, "0", []),
        ({"id": "x"}, "id = ?", ["x"]),
        ({"id": {"$exists": True}}, "1", []),
    ],
)
def test_declared_fields_compile_to_plain_terms(
    filter_json: dict[str, JSON], sql: str, params: list[object]
) -> None:
    assert compile_filter_sqlite(parse_filter(filter_json), field_types=FIELD_TYPES) == (
        sql,
        params,
    )


def test_declared_field_uses_expression_index(conn: apsw.Connection) -> None:
    conn.execute(f"CREATE INDEX ix ON t({sqlite_value_expr(('score',))})")
    _insert(conn, {f"r{i}": {"score": i} for i in range(1000)})
    conn.execute("ANALYZE")
    sql, params = compile_filter_sqlite(
        parse_filter({"score": {"$gt": 500}}), field_types={"score": "number"}
    )
    plan = " ".join(
        str(row[-1])
        for row in conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM t WHERE {sql}", params)
    )
    assert plan.startswith("SEARCH t USING") and "INDEX ix (<expr>>?)" in plan
    assert len(list(conn.execute(f"SELECT id FROM t WHERE {sql}", params))) == 499


def test_id_uses_primary_key(conn: apsw.Connection) -> None:
    sql, params = compile_filter_sqlite(parse_filter({"id": "r1"}))
    plan = " ".join(
        str(row[-1])
        for row in conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM t WHERE {sql}", params)
    )
    assert "PRIMARY KEY" in plan


def test_catastrophic_regex_is_linear(conn: apsw.Connection) -> None:
    _insert(conn, {"long": {"s": "a" * 50000 + "b"}, "short": {"s": "aa"}})
    started = time.perf_counter()
    assert _select(conn, {"s": {"$regex": "(a+)+$"}}) == {"short"}
    assert time.perf_counter() - started < 3.0  # a backtracking engine would take hours


def test_wide_filters_stay_within_sqlite_limits(conn: apsw.Connection) -> None:
    _insert(conn, {"a": {"n": 7, "s": "x7"}})
    many: dict[str, JSON] = {"n": {"$in": list(range(1000))}}
    wide: dict[str, JSON] = {"$or": [{"s": f"x{i}"} for i in range(600)]}
    assert _select(conn, many) == {"a"}
    assert _select(conn, wide) == {"a"}
    assert _select(conn, {"$and": [{"n": {"$ne": i}} for i in range(600)]}) == set()


def test_bound_rule_filter(conn: apsw.Connection) -> None:
    _insert(conn, {"mine": {"owner": "u1"}, "theirs": {"owner": "u2"}, "orphan": {"owner": None}})
    rule = parse_filter(
        {"$or": [{"owner": "@auth.id"}, {"@auth.role": "admin"}]}, allow_variables=True
    )
    cases: list[tuple[dict[str, JSON] | None, set[str]]] = [
        ({"id": "u1", "role": "user"}, {"mine"}),
        ({"id": "u9", "role": "admin"}, {"mine", "theirs", "orphan"}),
        (None, set()),
    ]
    for auth, expected in cases:
        bound = bind_variables(rule, VariableContext(auth=auth, now="2026-01-01T00:00:00.000Z"))
        sql, params = compile_filter_sqlite(bound)
        assert {row[0] for row in conn.execute(f"SELECT id FROM t WHERE {sql}", params)} == expected


def test_doc_column_is_configurable() -> None:
    sql, _ = compile_filter_sqlite(parse_filter({"a": {"$gt": 1}}), doc_column="data")
    assert "json_extract(data, '$.a')" in sql and "doc" not in sql


def test_refuses_unbound_variables_and_unknown_field_types() -> None:
    with pytest.raises(ValueError, match="bind_variables"):
        compile_filter_sqlite(Eq(("a",), Var("now")))
    with pytest.raises(ValueError, match="bind_variables"):
        compile_filter_sqlite(parse_filter({"@auth": None}, allow_variables=True))
    with pytest.raises(ValueError, match="not one of"):
        compile_filter_sqlite(parse_filter({}), field_types={"a": "date"})


def test_bp_regexp(conn: apsw.Connection) -> None:
    rows = conn.execute(
        "SELECT bp_regexp('^a', '', 'abc'), bp_regexp('^A', 'i', 'abc'), "
        "bp_regexp('^A', '', 'abc'), bp_regexp('1', '', 1), bp_regexp('x', '', NULL)"
    )
    assert list(rows) == [(1, 1, 0, 0, 0)]
