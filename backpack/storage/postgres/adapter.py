"""The scale-out storage adapter: one PostgreSQL database per backpack, through asyncpg.

Each collection is a table of its own, `r_<n>` (named in `_collections`):
`id`, `version`, `doc` (the canonical JSON text, returned verbatim) and
`data` (the same record as JSONB, prepared by `pg_data`, which filters, sorts
and indexes read). A table per collection keeps every index, unique
constraint, drop and planner statistic local to its collection, with no
collection column in front of every key. Declared indexes become expression
indexes over the sort keys of `filter_pg`; unique ones add the JSON type, so
`1`, `true` and `"1"` stay apart and null or missing values never collide.

Many workers may share one database: the collection → table map is cached and
reloaded when a name is unknown or its table is gone. A lost or unreachable
server is `Unavailable` (503); reads are retried once on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

import asyncpg  # type: ignore[import-untyped]
import orjson

from backpack.core.filter import Node, compile_matcher
from backpack.core.storage import (
    AlreadyExists,
    Delete,
    DropCollection,
    IndexDef,
    Insert,
    Page,
    PutCollection,
    Query,
    StaleWrite,
    StoredCollection,
    StoredDoc,
    UniqueViolation,
    Update,
    WriteOp,
)
from backpack.errors import (
    BackpackError,
    BadRequest,
    InvalidQuery,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from backpack.storage.postgres.filter_pg import (
    PgFilter,
    compile_filter_pg,
    pg_data,
    pg_json_value,
    pg_sort_exprs,
    pg_unique_exprs,
    pg_value_expr,
)
from backpack.types import JSON
from backpack.urls import redact_url

T = TypeVar("T")
log = logging.getLogger("backpack.storage.postgres")

_SCHEMA_LOCK: Final = 0x6270_7374_6F72  # advisory lock id: one worker creates the tables
_ACQUIRE_TIMEOUT: Final = 15.0  # seconds a request waits for a free connection
_CONNECT_TIMEOUT: Final = 10.0
_CHECK_CHUNK: Final = 500  # rows fetched at a time for check_existing and re-tested scans
_MAX_GROUP: Final = 256  # single-record creates sent as one statement
_GROUP_FLUSHERS: Final = 2  # grouped statements in flight at once, per process
_MAX_GET_GROUP: Final = 500  # gets by id read with one query
_GET_READERS: Final = 4  # grouped gets in flight at once, per process
_ANALYZE_AFTER: Final = 500  # rows written to a table (and 10% of it) before its ANALYZE
_ROW_OPS = (Insert, Update, Delete)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS _collections (
    name text COLLATE "C" PRIMARY KEY,
    tbl text NOT NULL UNIQUE,
    meta text NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS _tables;
"""
# Errors that mean the server is gone, restarting, refusing or out of resources.
_UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def _lost(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be reached (rather than a refused statement)."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    # asyncpg reports a connection or pool it has closed itself as an InterfaceError, and a
    # connection whose server went away mid-use as an InternalClientError ("cannot switch
    # to state …"): either way the connection is gone, not the statement refused.
    if isinstance(exc, asyncpg.InternalClientError):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "clos" in str(exc)


@contextlib.asynccontextmanager
async def custom_plans(conn: Any) -> AsyncIterator[None]:
    """A read-only transaction whose statements are planned for their values.

    asyncpg prepares every statement, and after five runs PostgreSQL may switch a
    prepared statement to a generic plan. For a page query that plan cannot see the
    values: the filter's CASE expressions over the JSONB then look as if they kept a
    row or two, and the page became a sort of every match, 20x slower at 10,000
    records than walking the declared index the values show. Page queries get
    plans for their values (two more round trips: BEGIN with the setting, COMMIT);
    the cheap, plain statements (a record by id, writes) keep their cached plans.
    """
    await conn.execute("BEGIN READ ONLY; SET LOCAL plan_cache_mode = force_custom_plan")
    try:
        yield
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


class _TableGone(Exception):
    """A cached table was dropped by another process: reload the map and retry."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _index_sql(table: str, index: IndexDef) -> str:
    columns: list[str] = []
    for key in index.keys:
        exprs = pg_unique_exprs(key.path) if index.unique else pg_sort_exprs(key.path)
        columns += [expr + (" DESC" if key.descending else "") for expr in exprs]
    if not index.unique and index.keys[-1].path != ("id",):
        columns.append("id DESC" if index.keys[-1].descending else "id")
    unique = "UNIQUE " if index.unique else ""
    name = _quote(f"bx_{table}__{index.name}")
    return f"CREATE {unique}INDEX {name} ON {_quote(table)} ({', '.join(columns)})"


def _unique_error(exc: Any, record_id: str) -> BackpackError:
    constraint = str(getattr(exc, "constraint_name", "") or "")
    if constraint.endswith("_pkey"):
        return AlreadyExists(f"A record with id '{record_id}' already exists.")
    return UniqueViolation(
        "Another record already has this value in a unique field.",
        {"index": constraint.split("__", 1)[-1]},
    )


def _row_error(exc: Exception, record_id: str) -> BackpackError | None:
    """A core error for a failed row write, or None to let `exc` through."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return _unique_error(exc, record_id)
    if isinstance(exc, asyncpg.exceptions.ProgramLimitExceededError):
        return PayloadTooLarge(f"Record '{record_id}' has a value too large for an index.")
    if isinstance(exc, asyncpg.exceptions.CharacterNotInRepertoireError):
        return BadRequest(f"Record id {record_id!r} holds a character the database refuses.")
    return None


async def _no_session_reset(conn: Any) -> None:
    """The pool's reset on release, after asyncpg's own (which rolls back a transaction left
    open): nothing more. The default would send a reset query (`RESET ALL; CLOSE ALL;
    UNLISTEN *; …`), a second round trip on every request, for session state this adapter
    never sets: no SET, LISTEN or session advisory lock; cursors live in transactions."""


class PostgresStorage:
    def __init__(self, url: str, *, min_size: int = 0, max_size: int = 10) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self._pool: Any = None
        self._tables: dict[str, str] = {}
        self._creates = _Batcher[_PendingInsert, str](
            lambda pending: pending.op.collection,
            self._insert_members,
            "The write was interrupted; it may not have been stored.",
            slots=_GROUP_FLUSHERS,
            size=_MAX_GROUP,
        )
        self._gets = _Batcher[_PendingGet, tuple[str, str]](
            lambda pending: (pending.collection, pending.sql),
            self._get_members,
            "The read was interrupted; try again.",
            slots=_GET_READERS,
            size=_MAX_GET_GROUP,
        )
        self._written: dict[str, int] = {}  # collection → rows written since its ANALYZE
        self._sizes: dict[str, int] = {}  # collection → rows at its last ANALYZE
        self._analyzer: asyncio.Task[None] | None = None

    # lifecycle

    async def open(self) -> None:
        where = redact_url(self.url)
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=self.min_size,
                max_size=self.max_size,
                timeout=_CONNECT_TIMEOUT,
                server_settings={"application_name": "backpack"},
                reset=_no_session_reset,
            )
        except (*_UNAVAILABLE, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise Unavailable(f"Cannot connect to PostgreSQL at {where}: {exc}") from None
        try:
            async with pool.acquire() as conn:
                encoding = await conn.fetchval("SHOW server_encoding")
                if encoding != "UTF8":
                    raise Unavailable(
                        f"The PostgreSQL database at {where} uses {encoding}; Backpack needs UTF8."
                    )
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                    await conn.execute(_SCHEMA)
                rows = await conn.fetch("SELECT name, tbl FROM _collections")
        except BaseException as exc:
            await pool.close()
            if _lost(exc) or isinstance(exc, asyncpg.PostgresError):
                raise Unavailable(f"Cannot prepare PostgreSQL at {where}: {exc}") from None
            raise
        self._tables = {str(row[0]): str(row[1]) for row in rows}
        self._pool = pool

    async def close(self) -> None:
        if self._analyzer is not None and not self._analyzer.done():
            self._analyzer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._analyzer
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except TimeoutError:
                pool.terminate()

    async def _run(self, work: Callable[[Any], Awaitable[T]], *, retry: bool) -> T:
        """`work` on a pooled connection; connection failures become `Unavailable`."""
        for attempt in range(2):
            pool = self._pool
            if pool is None:
                raise Unavailable("The database is closed.")
            try:
                # asyncio.timeout, not acquire(timeout=…): asyncpg would run the acquire,
                # and the release, each in a task of its own (wait_for) on every request.
                async with asyncio.timeout(_ACQUIRE_TIMEOUT):
                    conn = await pool.acquire()
                try:
                    return await work(conn)
                finally:
                    await pool.release(conn)
            except Exception as exc:
                if not _lost(exc):
                    raise
                if isinstance(exc, TimeoutError):
                    raise Unavailable("The database is busy or unreachable; try again.") from None
                await pool.expire_connections()  # the others are likely dead too
                if retry and attempt == 0:
                    continue
                raise Unavailable(
                    f"The database is unavailable: {exc or type(exc).__name__}."
                ) from None
        raise AssertionError("unreachable")

    async def _reload_tables(self) -> None:
        async def work(conn: Any) -> dict[str, str]:
            return {
                str(r[0]): str(r[1]) for r in await conn.fetch("SELECT name, tbl FROM _collections")
            }

        self._tables = await self._run(work, retry=True)

    async def _read(self, collection: str, work: Callable[[Any, str], Awaitable[T]]) -> T:
        """`work(conn, quoted_table)`, reloading the table map once if it is stale."""
        for attempt in range(2):
            table = self._tables.get(collection)
            if table is None and attempt == 0:
                await self._reload_tables()
                table = self._tables.get(collection)
            if table is None:
                raise NotFound(f"Collection '{collection}' does not exist.")
            try:
                return await self._run(_bind(work, _quote(table)), retry=True)
            except asyncpg.UndefinedTableError:
                if attempt:
                    raise NotFound(f"Collection '{collection}' does not exist.") from None
                await self._reload_tables()
        raise AssertionError("unreachable")

    # reads

    async def load_collections(self) -> list[StoredCollection]:
        async def work(conn: Any) -> list[Any]:
            return list(await conn.fetch("SELECT name, tbl, meta FROM _collections ORDER BY name"))

        rows = await self._run(work, retry=True)
        self._tables = {str(row[0]): str(row[1]) for row in rows}
        return [StoredCollection(str(row[0]), str(row[2])) for row in rows]

    async def dump(self, chunk: int = 500) -> AsyncIterator[StoredCollection | list[Insert]]:
        """One read-only REPEATABLE READ transaction: a snapshot while writes go on."""
        pool = self._pool
        if pool is None:
            raise Unavailable("The database is closed.")
        try:
            snapshot = {"isolation": "repeatable_read", "readonly": True}
            async with (
                pool.acquire(timeout=_ACQUIRE_TIMEOUT) as conn,
                conn.transaction(**snapshot),
            ):
                collections = "SELECT name, tbl, meta FROM _collections ORDER BY name"
                for name, table, meta in await conn.fetch(collections):
                    yield StoredCollection(str(name), str(meta))
                    batch: list[Insert] = []
                    sql = f"SELECT id, version, doc FROM {_quote(table)} ORDER BY id"
                    async for row in conn.cursor(sql, prefetch=chunk):
                        batch.append(Insert(str(name), str(row[0]), int(row[1]), str(row[2])))
                        if len(batch) >= chunk:
                            yield batch
                            batch = []
                    if batch:
                        yield batch
        except Exception as exc:
            if _lost(exc):
                raise Unavailable(f"The database is unavailable: {exc}.") from None
            raise

    async def get(
        self,
        collection: str,
        record_id: str,
        where: Node | None = None,
        field_types: Mapping[str, str] | None = None,
    ) -> StoredDoc | None:
        if "\x00" in record_id:
            return None
        found = _where(where, field_types, 2)
        if found.params:  # a filter with values of its own (a rule naming the caller)

            async def work(conn: Any, table: str) -> Any:
                sql = f"SELECT doc, version FROM {table} WHERE id = $1 AND {found.sql}"
                return await conn.fetchrow(sql, record_id, *found.params)

            row = await self._read(collection, work)
        else:
            pending = _PendingGet(
                collection, found.sql, record_id, asyncio.get_running_loop().create_future()
            )
            row = await self._gets.join(pending)
        if row is None or not _recheck(found, where, row[0]):
            return None
        return StoredDoc(row[0], int(row[1]))

    async def _get_members(self, members: list[_PendingGet]) -> None:
        """One query for gets of one collection under one filter; settle each get."""
        ids = list(dict.fromkeys(pending.record_id for pending in members))
        sql = members[0].sql

        async def work(conn: Any, table: str) -> list[Any]:
            if len(ids) == 1:
                query = f"SELECT id, doc, version FROM {table} WHERE id = $1 AND {sql}"
                return list(await conn.fetch(query, ids[0]))
            query = f"SELECT id, doc, version FROM {table} WHERE id = ANY($1::text[]) AND {sql}"
            return list(await conn.fetch(query, ids))

        rows = {row[0]: (row[1], row[2]) for row in await self._read(members[0].collection, work)}
        for pending in members:
            if not pending.future.done():
                pending.future.set_result(rows.get(pending.record_id))

    async def get_many(
        self,
        collection: str,
        record_ids: Sequence[str],
        where: Node | None = None,
        field_types: Mapping[str, str] | None = None,
    ) -> list[str]:
        ids = [i for i in dict.fromkeys(record_ids) if "\x00" not in i]
        if not ids:
            return []
        found = _where(where, field_types, 2)

        async def work(conn: Any, table: str) -> list[Any]:
            sql = f"SELECT doc FROM {table} WHERE id = ANY($1::text[]) AND {found.sql}"
            return list(await conn.fetch(sql, ids, *found.params))

        rows = await self._read(collection, work)
        return [row[0] for row in rows if _recheck(found, where, row[0])]

    def _page_sql(self, query: Query, table: str, found: PgFilter) -> tuple[str, list[Any]]:
        """The page query (keyset included, no LIMIT) and its parameters."""
        if query.after is not None and len(query.after) != len(query.sort):
            raise InvalidQuery("The cursor does not fit this query.")
        params: list[Any] = list(found.params)
        columns: list[tuple[str, bool]] = []
        bounds: list[str] = []
        outputs: list[str] = []
        for i, key in enumerate(query.sort):
            exprs = pg_sort_exprs(key.path)
            columns += [(expr, key.descending) for expr in exprs]
            outputs.append("id" if exprs == ("id",) else f"({pg_value_expr(key.path)})::text")
            if query.after is None:
                continue
            params.append(_after_value(query.after[i], exprs == ("id",)))
            placeholder = f"${len(params)}::" + ("text" if exprs == ("id",) else "jsonb")
            bounds += [placeholder] if exprs == ("id",) else list(pg_sort_exprs((), placeholder))
        conditions = [found.sql]
        if query.after is not None:
            conditions.append(_keyset_after(columns, bounds))
        order = ", ".join(expr + (" DESC" if desc else "") for expr, desc in columns)
        sql = (
            f"SELECT doc, {', '.join(outputs)} FROM {table} "
            f"WHERE {' AND '.join(conditions)} ORDER BY {order}"
        )
        return sql, params

    async def explain(self, query: Query) -> list[str]:
        """PostgreSQL's plan for the page query (for operators and tests)."""
        found = compile_filter_pg(query.where, field_types=query.field_types)

        async def work(conn: Any, table: str) -> list[str]:
            sql, params = self._page_sql(query, table, found)
            n = len(params)
            rows = await conn.fetch(
                f"EXPLAIN {sql} LIMIT ${n + 1} OFFSET ${n + 2}",
                *params,
                query.limit + 1,
                query.offset,
            )
            return [str(row[0]) for row in rows]

        return await self._read(query.collection, work)

    async def query(self, query: Query) -> Page:
        found = compile_filter_pg(query.where, field_types=query.field_types)
        if found.exact:
            return await self._read(query.collection, lambda c, t: self._exact(c, t, query, found))
        return await self._read(query.collection, lambda c, t: self._rechecked(c, t, query, found))

    async def _exact(self, conn: Any, table: str, query: Query, found: PgFilter) -> Page:
        sql, params = self._page_sql(query, table, found)
        n = len(params)
        async with custom_plans(conn):
            rows = await conn.fetch(
                f"{sql} LIMIT ${n + 1} OFFSET ${n + 2}", *params, query.limit + 1, query.offset
            )
            total = None
            if query.count:
                count_sql = f"SELECT count(*) FROM {table} WHERE {found.sql}"
                total = int(await conn.fetchval(count_sql, *found.params))
        last_key: tuple[JSON, ...] | None = None
        if len(rows) > query.limit:
            rows = rows[: query.limit]
            last_key = tuple(rows[-1][1:])
        return Page([row[0] for row in rows], last_key, total)

    async def _rechecked(self, conn: Any, table: str, query: Query, found: PgFilter) -> Page:
        """A page whose SQL filter is a superset: scan it, keeping rows the evaluator accepts."""
        matcher = compile_matcher(query.where)
        sql, params = self._page_sql(query, table, found)
        rows: list[Any] = []
        skip = query.offset
        async with custom_plans(conn):
            async for row in conn.cursor(sql, *params, prefetch=_CHECK_CHUNK):
                if not matcher(orjson.loads(row[0])):
                    continue
                if skip:
                    skip -= 1
                    continue
                rows.append(row)
                if len(rows) > query.limit:
                    break
            total = None
            if query.count:
                total = 0
                count_sql = f"SELECT doc FROM {table} WHERE {found.sql}"
                async for row in conn.cursor(count_sql, *found.params, prefetch=_CHECK_CHUNK):
                    total += matcher(orjson.loads(row[0]))
        last_key: tuple[JSON, ...] | None = None
        if len(rows) > query.limit:
            rows = rows[: query.limit]
            last_key = tuple(rows[-1][1:])
        return Page([row[0] for row in rows], last_key, total)

    # writes

    async def apply(self, ops: Sequence[WriteOp]) -> None:
        if not ops:
            return
        if len(ops) == 1 and isinstance(ops[0], Insert):
            await self._insert_grouped(ops[0])
            return
        changes = await self._writing(lambda conn: self._apply(conn, ops))
        for name, table in changes.items():
            if table is None:
                self._tables.pop(name, None)
            else:
                self._tables[name] = table
        for op in ops:
            if isinstance(op, _ROW_OPS):
                self._note_written(op.collection, 1)
            elif isinstance(op, PutCollection) and op.indexes and not op.create:
                self._note_written(op.name, _ANALYZE_AFTER)  # new expressions to measure

    async def _writing(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """`work` on a pooled connection; once more, after reloading the table map, if a
        table it writes to changed under it (another worker dropped and made it again)."""
        for attempt in range(2):
            try:
                return await self._run(work, retry=False)
            except _TableGone:
                if attempt:
                    raise Unavailable("The collection's table changed during the write.") from None
                await self._reload_tables()
        raise AssertionError("unreachable")

    # Group commit of creates. Many clients creating records at once would each cost a
    # statement, a commit and a WAL flush; instead, creates that arrive while earlier ones are
    # being written wait and go together as one multi-row INSERT (one commit, one flush), as
    # the SQLite adapter's writer groups its units. A create that finds a writing slot free
    # writes at once, in its own task, with whatever waits; one that finds both slots busy
    # waits for a writer to take it, and a writer that is done with its own create hands what
    # is left to a background task. (Doing every write in a background task made a lone
    # create wait behind a busy event loop: realtime delivery p99 went from 60 to 850 ms.)
    # If the grouped statement fails (a duplicate id or unique value), each create of the
    # group is sent again on its own, so each gets its own answer and only the faulty ones
    # fail. Gets of a record by id are grouped the same way (`_Batcher`): those that arrive
    # while earlier ones are being read go together as one `id = ANY(…)` query.

    async def _insert_grouped(self, op: Insert) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._creates.join(_PendingInsert(op, future))

    async def _insert_members(self, members: list[_PendingInsert]) -> None:
        await self._writing(functools.partial(self._insert_rows, members=members))
        for member in members:
            future = member.future
            if future.done() and not future.cancelled() and not future.exception():
                self._note_written(member.op.collection, 1)

    async def _insert_rows(self, conn: Any, members: list[_PendingInsert]) -> None:
        """Insert the members' rows (one collection's); settle each member's future."""
        try:
            if len(members) > 1:
                table = _quote(await self._table(conn, members[0].op.collection, {}))
                columns: tuple[list[Any], ...] = ([], [], [], [])
                for pending in members:
                    op = pending.op
                    for column, value in zip(
                        columns, (op.id, op.version, op.doc, pg_data(op.doc)), strict=True
                    ):
                        column.append(value)
                try:
                    await conn.execute(
                        f"INSERT INTO {table} (id, version, doc, data) SELECT i, v, d, j::jsonb "
                        "FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) "
                        "AS u(i, v, d, j)",
                        *columns,
                    )
                except asyncpg.PostgresError as exc:
                    if isinstance(exc, asyncpg.UndefinedTableError) or _lost(exc):
                        raise
                else:
                    _settle(members, None)
                    return
            for pending in members:  # one at a time: each its own answer
                try:
                    await self._apply_op(conn, pending.op, {}, 0)
                except (BackpackError, asyncpg.PostgresError) as exc:
                    if isinstance(exc, asyncpg.UndefinedTableError) or _lost(exc):
                        raise
                    _settle([pending], exc)
                else:
                    _settle([pending], None)
        except asyncpg.UndefinedTableError:
            raise _TableGone() from None

    # Planner statistics. A page query's plan depends on them (how many rows a filter keeps
    # decides between walking a declared index in order and sorting every match); without
    # them, a freshly filled table was read 15x slower. PostgreSQL's autovacuum keeps them
    # when it runs, but it may be off or slow to come by: each process also ANALYZEs a
    # table it has written 500 rows (and a tenth of the table) to, one table at a time, in
    # the background.

    def _note_written(self, collection: str, rows: int) -> None:
        written = self._written.get(collection, 0) + rows
        self._written[collection] = written
        if written < max(_ANALYZE_AFTER, self._sizes.get(collection, 0) // 10):
            return
        if self._analyzer is None or self._analyzer.done():
            self._analyzer = asyncio.get_running_loop().create_task(self._analyze(collection))

    async def _analyze(self, collection: str) -> None:
        self._written.pop(collection, None)
        table = self._tables.get(collection)
        if table is None:
            return

        async def work(conn: Any) -> int:
            await conn.execute(f"ANALYZE {_quote(table)}")
            rows = await conn.fetchval(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass", _quote(table)
            )
            return int(rows or 0)

        try:
            self._sizes[collection] = await self._run(work, retry=False)
        except Exception as exc:  # statistics are an optimisation: a failure only waits
            log.warning("ANALYZE of collection %s failed: %s", collection, exc)

    async def _apply(self, conn: Any, ops: Sequence[WriteOp]) -> dict[str, str | None]:
        """Apply `ops` in one transaction; the collection → table changes it made."""
        changes: dict[str, str | None] = {}
        try:
            if len(ops) == 1 and isinstance(ops[0], _ROW_OPS):
                await self._apply_op(conn, ops[0], changes, 0)
                return changes
            async with conn.transaction():
                for index, op in enumerate(ops):
                    await self._apply_op(conn, op, changes, index)
        except asyncpg.UndefinedTableError:
            raise _TableGone() from None
        return changes

    async def _table(self, conn: Any, name: str, changes: Mapping[str, str | None]) -> str:
        if name in changes:
            table = changes[name]
        else:
            table = self._tables.get(name)
            if table is None:
                table = await conn.fetchval("SELECT tbl FROM _collections WHERE name = $1", name)
                if table is not None:
                    self._tables[name] = str(table)
        if table is None:
            raise NotFound(f"Collection '{name}' does not exist.")
        return str(table)

    async def _apply_op(
        self, conn: Any, op: WriteOp, changes: dict[str, str | None], index: int
    ) -> None:
        try:
            await self._write(conn, op, changes)
        except BackpackError as exc:
            exc.op_index = index
            raise
        except asyncpg.PostgresError as exc:
            record_id = op.id if isinstance(op, _ROW_OPS) else ""
            error = _row_error(exc, record_id)
            if error is None:
                raise
            error.op_index = index
            raise error from None

    async def _write(self, conn: Any, op: WriteOp, changes: dict[str, str | None]) -> None:
        match op:
            case Insert(collection, record_id, version, doc):
                table = _quote(await self._table(conn, collection, changes))
                data = pg_data(doc)
                args = [record_id, version, doc] + ([] if data is doc else [data])
                sql = (
                    f"INSERT INTO {table} (id, version, doc, data) "
                    f"VALUES ($1, $2, $3::text, ${len(args)}::text::jsonb)"
                )
                await conn.execute(sql, *args)
            case Update(collection, record_id, expected, version, doc):
                table = _quote(await self._table(conn, collection, changes))
                data = pg_data(doc)
                if data is doc:
                    sql = (
                        f"UPDATE {table} SET version = $1, doc = $2::text, data = $2::text::jsonb "
                        "WHERE id = $3 AND version = $4"
                    )
                    status = await conn.execute(sql, version, doc, record_id, expected)
                else:
                    sql = (
                        f"UPDATE {table} SET version = $1, doc = $2, data = $5::jsonb "
                        "WHERE id = $3 AND version = $4"
                    )
                    status = await conn.execute(sql, version, doc, record_id, expected, data)
                if status != "UPDATE 1":
                    raise StaleWrite(f"Record '{record_id}' changed since it was read.")
            case Delete(collection, record_id, expected):
                table = _quote(await self._table(conn, collection, changes))
                if expected is None:
                    status = await conn.execute(f"DELETE FROM {table} WHERE id = $1", record_id)
                else:
                    status = await conn.execute(
                        f"DELETE FROM {table} WHERE id = $1 AND version = $2", record_id, expected
                    )
                if status != "DELETE 1":
                    raise StaleWrite(f"Record '{record_id}' changed since it was read.")
            case PutCollection():
                await self._put_collection(conn, op, changes)
            case DropCollection(name):
                table = await self._table(conn, name, changes)
                await conn.execute(f"DROP TABLE IF EXISTS {_quote(table)}")
                await conn.execute("DELETE FROM _collections WHERE name = $1", name)
                changes[name] = None

    async def _put_collection(
        self, conn: Any, op: PutCollection, changes: dict[str, str | None]
    ) -> None:
        if op.create:
            if changes.get(op.name) is not None:
                raise AlreadyExists(f"Collection '{op.name}' already exists.")
            try:
                async with conn.transaction():  # a savepoint: the error must not end the unit
                    table = str(
                        await conn.fetchval(
                            "INSERT INTO _collections (name, tbl, meta) "
                            "VALUES ($1, 'r_' || nextval('_tables'), $2) RETURNING tbl",
                            op.name,
                            op.meta,
                        )
                    )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"Collection '{op.name}' already exists.") from None
            await conn.execute(
                f'CREATE TABLE {_quote(table)} (id text COLLATE "C" PRIMARY KEY, '
                "version bigint NOT NULL, doc text NOT NULL, data jsonb NOT NULL)"
            )
            changes[op.name] = table
        else:
            table = await self._table(conn, op.name, changes)
            # Writers wait until this commits, so check_existing sees every record.
            await conn.execute(f"LOCK TABLE {_quote(table)} IN SHARE ROW EXCLUSIVE MODE")
            await conn.execute(
                "UPDATE _collections SET meta = $1 WHERE name = $2", op.meta, op.name
            )
        if op.check_existing is not None:
            await self._check_existing(conn, table, op)
        wanted = {f"bx_{table}__{index.name}": index for index in op.indexes}
        present = {
            str(row[0])
            for row in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = $1 AND indexname LIKE 'bx\\_%'",
                table,
            )
        }
        for name in present - wanted.keys():
            await conn.execute(f"DROP INDEX {_quote(name)}")
        for name in wanted.keys() - present:
            index = wanted[name]
            try:
                async with conn.transaction():
                    await conn.execute(_index_sql(table, index))
            except asyncpg.UniqueViolationError:
                paths = [".".join(map(str, k.path)) for k in index.keys]
                raise UniqueViolation(
                    f"Existing records already share values of ({', '.join(paths)}); "
                    "the unique index cannot be built.",
                    {"fields": list(paths)},
                ) from None
            except asyncpg.exceptions.ProgramLimitExceededError:
                raise PayloadTooLarge(
                    "Existing records hold values too large for this index."
                ) from None

    async def _check_existing(self, conn: Any, table: str, op: PutCollection) -> None:
        """Run the check in a thread, feeding it rows fetched on this loop chunk by chunk."""
        assert op.check_existing is not None
        loop = asyncio.get_running_loop()
        cursor = await conn.cursor(f"SELECT id, doc FROM {_quote(table)} ORDER BY id")

        def rows() -> Iterator[tuple[str, str]]:
            while True:
                chunk = asyncio.run_coroutine_threadsafe(cursor.fetch(_CHECK_CHUNK), loop).result()
                if not chunk:
                    return
                for row in chunk:
                    yield str(row[0]), str(row[1])

        await asyncio.to_thread(op.check_existing, rows())


class _PendingInsert:
    """A create waiting to be written with others (`PostgresStorage._insert_grouped`)."""

    __slots__ = ("future", "op")

    def __init__(self, op: Insert, future: asyncio.Future[None]) -> None:
        self.op = op
        self.future = future


class _PendingGet:
    """A get by id waiting to be read with others (`PostgresStorage.get`): its future gets
    the row's (doc, version), or None."""

    __slots__ = ("collection", "future", "record_id", "sql")

    def __init__(
        self, collection: str, sql: str, record_id: str, future: asyncio.Future[Any]
    ) -> None:
        self.collection = collection
        self.sql = sql
        self.record_id = record_id
        self.future = future


class _Member(Protocol):
    @property
    def future(self) -> asyncio.Future[Any]: ...


M = TypeVar("M", bound=_Member)
K = TypeVar("K")


class _Batcher(Generic[M, K]):
    """Requests that arrive while earlier ones are in flight go together in one statement.

    A member that finds one of the `slots` free runs batches in its own task (its own
    request, so a lone request waits for nothing) until it is answered, taking what waits
    with it; one that finds every slot busy waits for a batch to take it, and a slot's
    holder that is done hands what is left to a background task. A batch is split by
    `key`; `run(members)` answers each member of one key through its future, and an error
    it raises answers its members instead.
    """

    def __init__(
        self,
        key: Callable[[M], K],
        run: Callable[[list[M]], Awaitable[None]],
        interrupted: str,
        *,
        slots: int,
        size: int,
    ) -> None:
        self._key = key
        self._run = run
        self._interrupted = interrupted
        self._slots = slots
        self._size = size
        self._waiting: list[M] = []
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def join(self, member: M) -> Any:
        """`member`'s answer (its future's result)."""
        self._waiting.append(member)
        if self._busy < self._slots:
            self._busy += 1
            try:
                while not member.future.done() and self._waiting:
                    await self._run_once()
            finally:
                self._busy -= 1
            if self._waiting and self._busy < self._slots:
                self._busy += 1
                task = asyncio.get_running_loop().create_task(self._drain())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return await member.future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                await self._run_once()
        finally:
            self._busy -= 1

    async def _run_once(self) -> None:
        batch = [m for m in self._waiting[: self._size] if not m.future.done()]
        del self._waiting[: self._size]
        by_key: dict[K, list[M]] = {}
        for member in batch:
            by_key.setdefault(self._key(member), []).append(member)
        try:
            for members in by_key.values():
                try:
                    await self._run(members)
                except Exception as exc:  # each member's answer, not the runner's
                    _settle(members, exc)
        except BaseException:
            # The running request was cancelled (the server shutting down): the others of
            # its batch must not wait for ever; a write in flight may or may not be stored,
            # as when a connection is lost.
            _settle(batch, Unavailable(self._interrupted))
            raise


def _settle(members: Sequence[_Member], error: BaseException | None) -> None:
    for pending in members:
        if pending.future.done():
            continue
        if error is None:
            pending.future.set_result(None)
        else:
            pending.future.set_exception(error)


def _bind(work: Callable[[Any, str], Awaitable[T]], table: str) -> Callable[[Any], Awaitable[T]]:
    return lambda conn: work(conn, table)


def _where(where: Node | None, field_types: Mapping[str, str] | None, first: int) -> PgFilter:
    if where is None:
        return PgFilter("TRUE", [], True)
    return compile_filter_pg(where, field_types=field_types, first_param=first)


def _recheck(found: PgFilter, where: Node | None, doc: str) -> bool:
    if found.exact or where is None:
        return True
    return compile_matcher(where)(orjson.loads(doc))


def _after_value(value: JSON, is_id: bool) -> str:
    """A cursor value as a parameter: the id's text, or the JSONB text `last_key` holds."""
    if is_id:
        if not isinstance(value, str):
            raise InvalidQuery("The cursor does not fit this query.")
        return value
    if value is None:
        return "null"
    if isinstance(value, str):
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidQuery("The cursor does not fit this query.") from None
        return value
    return pg_json_value(value)


def _keyset_after(columns: Sequence[tuple[str, bool]], bounds: Sequence[str]) -> str:
    """Rows strictly after `bounds` in the order of `columns` (none is ever NULL)."""
    if len({desc for _, desc in columns}) == 1:
        op = "<" if columns[0][1] else ">"
        left = ", ".join(expr for expr, _ in columns)
        return f"(({left}) {op} ({', '.join(bounds)}))"
    ors: list[str] = []
    for i, ((expr, desc), bound) in enumerate(zip(columns, bounds, strict=True)):
        terms = [f"{prev} = {b}" for (prev, _), b in zip(columns[:i], bounds[:i], strict=True)]
        terms.append(f"{expr} {'<' if desc else '>'} {bound}")
        ors.append("(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(ors) + ")"
