"""The machine's PostgreSQL for tests: 127.0.0.1:5432, user postgres, trust auth.

Each test module that needs it makes a fresh database (`fresh_database`) and
drops it at the end. An unreachable server fails the test with a clear
message: these tests are part of `make test` and never skip.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import pytest

T = TypeVar("T")
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


def run_elsewhere(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a loop of its own (module fixtures live outside the tests' loops)."""

    async def main() -> T:
        return await work()

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, main()).result()


async def pg_connect(database: str) -> Any:
    """A connection to `database` as the superuser; fails the test if the server is down."""
    try:
        return await asyncpg.connect(f"{PG_SERVER}/{database}", timeout=10)
    except OSError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} (user postgres): {exc}")
    except asyncpg.PostgresError as exc:
        pytest.fail(f"PostgreSQL at {PG_SERVER} refused a connection to {database!r}: {exc}")


async def pg_admin(sql: str, database: str = "postgres") -> None:
    """Run `sql` as the superuser in `database`."""
    conn = await pg_connect(database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty database named `prefix_<random>` for the block; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    run_elsewhere(lambda: pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        run_elsewhere(lambda: pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class PgLoop:
    """One connection to `database` (`conn`) on a loop in a thread of its own, for synchronous
    tests; a context manager that closes both."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.conn: Any = None

    def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work()` on the loop and wait for its result."""

        async def main() -> T:
            return await work()

        return asyncio.run_coroutine_threadsafe(main(), self.loop).result()

    def __enter__(self) -> PgLoop:
        self.thread.start()
        try:
            self.conn = self.run(lambda: pg_connect(self.database))
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            self.run(self.conn.close)
        finally:
            self._stop()

    def _stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def database_exists(database: str) -> bool:
    async def work() -> bool:
        conn = await pg_connect("postgres")
        try:
            found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            return found is not None
        finally:
            await conn.close()

    return run_elsewhere(work)


def databases_named(prefix: str) -> set[str]:
    """The databases whose names start with `prefix`."""

    async def work() -> set[str]:
        conn = await pg_connect("postgres")
        try:
            sql = "SELECT datname FROM pg_database WHERE starts_with(datname, $1)"
            return {str(row[0]) for row in await conn.fetch(sql, prefix)}
        finally:
            await conn.close()

    return run_elsewhere(work)


def drop_databases_named(prefix: str) -> None:
    """Drop every database whose name starts with `prefix`."""
    for name in databases_named(prefix):
        run_elsewhere(lambda name=name: pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
