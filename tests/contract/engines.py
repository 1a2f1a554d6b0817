"""One filter, two SQL engines: what the property tests compare with the in-memory evaluator.

tests/contract/conftest.py turns them into the module-scoped `engine` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import apsw

from backpack.core.filter import Node, compile_matcher
from backpack.core.jsonutil import dumps_str, loads
from backpack.storage.postgres.filter_pg import compile_filter_pg, pg_data
from backpack.storage.sqlite.filter_sql import compile_filter_sqlite, register_sqlite_functions
from backpack.types import JSON
from tests.pg import PgLoop

# Selects the ids of `records` that a bound filter matches, in one SQL engine.
Select = Callable[[list[dict[str, JSON]], Node, Mapping[str, str] | None], set[str]]


def sqlite_select(
    records: list[dict[str, JSON]], node: Node, field_types: Mapping[str, str] | None
) -> set[str]:
    conn = apsw.Connection(":memory:")
    register_sqlite_functions(conn)
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID")
    for record in records:
        conn.execute("INSERT INTO t VALUES (?, jsonb(?))", (record["id"], dumps_str(record)))
    sql, params = compile_filter_sqlite(node, field_types=field_types)
    return {str(row[0]) for row in conn.execute(f"SELECT id FROM t WHERE {sql}", params)}


def postgres_select(pg: PgLoop) -> Select:
    def select(
        records: list[dict[str, JSON]], node: Node, field_types: Mapping[str, str] | None
    ) -> set[str]:
        found = compile_filter_pg(node, field_types=field_types)
        rows = [(str(r["id"]), dumps_str(r), pg_data(dumps_str(r))) for r in records]

        async def work() -> list[Any]:
            async with pg.conn.transaction():
                await pg.conn.execute("TRUNCATE t")
                await pg.conn.executemany("INSERT INTO t VALUES ($1, $2, $3::jsonb)", rows)
                return list(
                    await pg.conn.fetch(f"SELECT id, doc FROM t WHERE {found.sql}", *found.params)
                )

        selected = pg.run(work)
        if not found.exact:  # a superset: the adapter re-tests it with the evaluator
            matcher = compile_matcher(node)
            selected = [row for row in selected if matcher(loads(row[1]))]
        return {str(row[0]) for row in selected}

    return select


ENGINES = ["sqlite", "postgres"]
