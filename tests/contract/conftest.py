"""Fixtures of the contract tests: the SQL engines the property tests compare."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.engines import ENGINES, Select, postgres_select, sqlite_select
from tests.pg import PgLoop, fresh_database


@pytest.fixture(scope="module")
def pg_loop() -> Iterator[PgLoop]:
    """A fresh database with the adapter's table layout, and a connection to it."""
    with fresh_database("bp_engines_test") as name, PgLoop(name) as pg:
        pg.run(
            lambda: pg.conn.execute(
                'CREATE TABLE t (id text COLLATE "C" PRIMARY KEY, doc text NOT NULL, '
                "data jsonb NOT NULL)"
            )
        )
        yield pg


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Select:
    if request.param == "postgres":
        return postgres_select(request.getfixturevalue("pg_loop"))
    return sqlite_select
