"""`ControlStore.bump_instance`: the counters workers watch, alike in SQLite and PostgreSQL.

Two stores on one backing database stand for two workers; every bump of one
counter counts, even when they race.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from backpack.errors import NotFound
from backpack.platform.store import (
    ControlStore,
    InstanceRecord,
    PostgresControlStore,
    SqliteControlStore,
)
from tests.pg import PG_SERVER, fresh_database

NOW = "2026-11-27T19:15:19.123Z"


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with fresh_database("bp_counters_test") as name:
        yield name


@pytest.fixture(params=["sqlite", "postgres"])
async def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[ControlStore, ControlStore]]:
    make: Callable[[], ControlStore]
    if request.param == "sqlite":
        path = tmp_path / "control.db"

        def make() -> ControlStore:
            return SqliteControlStore(path)
    else:
        database: str = request.getfixturevalue("pg_database")

        def make() -> ControlStore:
            return PostgresControlStore(f"{PG_SERVER}/{database}")

    first, second = make(), make()
    await first.open()
    await second.open()
    name = f"counted-{request.node.name[-12:].strip('[]')}"
    await first.insert_instance(InstanceRecord(name, "embedded", "running", NOW, {"kept": "x"}))
    yield first, second
    await first.delete_instance(name)
    await first.close()
    await second.close()


async def test_a_counter_starts_at_zero_and_every_bump_counts(
    two_stores: tuple[ControlStore, ControlStore],
) -> None:
    first, second = two_stores
    (record,) = await first.list_instances()
    assert "generation" not in record.config
    bumped = await first.bump_instance(record.name, "generation")
    assert bumped.config == {"kept": "x", "generation": 1}
    assert bumped.status == "running" and bumped.created == NOW

    await asyncio.gather(
        *(store.bump_instance(record.name, "key_version") for store in (first, second) * 5)
    )
    seen = await second.get_instance(record.name)
    assert seen is not None
    assert seen.config == {"kept": "x", "generation": 1, "key_version": 10}


async def test_bumping_refuses_unknown_instances_and_counters(
    two_stores: tuple[ControlStore, ControlStore],
) -> None:
    first, _ = two_stores
    with pytest.raises(NotFound):
        await first.bump_instance("nobody", "generation")
    with pytest.raises(ValueError):
        await first.bump_instance("nobody", "status")
