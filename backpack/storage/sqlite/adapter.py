"""The embedded storage adapter: one SQLite file per backpack, in WAL mode.

Reads run on the event loop's own connection while they are cheap; a query
that runs past a small budget of VM steps is interrupted and re-run on a
reader thread, so one heavy query never stalls the loop. WAL means readers
never wait for the writer.

All writes go through one writer thread. It drains every write waiting in its
queue into one transaction (each caller's ops in a savepoint of their own, so
one caller's failure does not fail the others) and commits with
`synchronous=FULL`: one fsync acknowledges the whole group. Throughput grows
with concurrency while every acknowledged write is durable.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import apsw

from backpack.core.filter import Node
from backpack.core.storage import (
    AlreadyExists,
    DropCollection,
    IndexDef,
    IndexKey,
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
from backpack.core.storage import Delete as DeleteOp
from backpack.errors import BackpackError, NotFound, Unavailable
from backpack.storage.sqlite.filter_sql import (
    compile_filter_sqlite,
    register_sqlite_functions,
    sqlite_json_path,
    sqlite_value_expr,
)
from backpack.types import JSON

T = TypeVar("T")

_MAX_GROUP = 512  # writes committed together at most
_INLINE_STEP_CHUNK = 1000  # VM instructions between progress-handler calls
_INLINE_BUDGET = 40  # chunks an inline read may run before it moves to a thread
_MAX_CACHED_COUNTS = 1024
_DUMP_AHEAD = 4  # chunks a dump reads ahead of its consumer
_ROW_OPS = (Insert, Update, DeleteOp)


def _connect(path: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.set_busy_timeout(10_000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-16000")
    register_sqlite_functions(conn)
    return conn


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _index_sql(table: str, index: IndexDef) -> str:
    parts: list[str] = []
    for key in index.keys:
        expr = sqlite_value_expr(key.path)
        parts.append(expr + (" DESC" if key.descending else ""))
        if index.unique and expr != "id":
            # 1 and true extract to the same SQLite value; the JSON type keeps them apart.
            parts.append(f"json_type(doc, '{sqlite_json_path(key.path)}')")
    unique = "UNIQUE " if index.unique else ""
    name = _quote(f"bx_{table}__{index.name}")
    return f"CREATE {unique}INDEX {name} ON {_quote(table)} ({', '.join(parts)})"


@dataclass
class _WriteUnit:
    ops: Sequence[WriteOp]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    error: BaseException | None = None


class SqliteStorage:
    def __init__(self, path: str) -> None:
        self.path = path
        self._tables: dict[str, str] = {}
        self._read_conn: apsw.Connection | None = None
        self._budget_left = 0
        self._counts: dict[tuple[str | None, tuple[Any, ...]], int] = {}
        self._counts_version = -1
        self._local = threading.local()
        self._thread_conns: list[apsw.Connection] = []
        self._readers: ThreadPoolExecutor | None = None
        self._writes: queue.SimpleQueue[_WriteUnit | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self.commits = 0  # transactions committed (each one fsync)
        self.committed_units = 0  # apply() calls they acknowledged

    # lifecycle

    async def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = _connect(self.path)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _collections ("
            "name TEXT PRIMARY KEY NOT NULL, tbl TEXT NOT NULL UNIQUE, meta TEXT NOT NULL"
            ") WITHOUT ROWID"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _sequence (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
        )
        self._tables = {
            str(name): str(tbl) for name, tbl in conn.execute("SELECT name, tbl FROM _collections")
        }
        conn.set_progress_handler(self._progress, _INLINE_STEP_CHUNK)
        self._read_conn = conn
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bp-sqlite-read")
        self._writer = threading.Thread(
            target=self._write_loop, args=(_connect(self.path),), name="bp-sqlite-write"
        )
        self._writer.daemon = True
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            self._writes.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        for conn in self._thread_conns:
            conn.close()
        self._thread_conns.clear()
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None

    # reads

    def _progress(self) -> bool:
        self._budget_left -= 1
        return self._budget_left < 0

    def _thread_conn(self) -> apsw.Connection:
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
            self._thread_conns.append(conn)
        return conn

    async def _read(self, work: Callable[[apsw.Connection], T]) -> T:
        conn = self._read_conn
        if conn is None:
            raise Unavailable("The database is closed.")
        self._budget_left = _INLINE_BUDGET
        try:
            try:
                return work(conn)
            except apsw.InterruptError:
                pass
            return await asyncio.get_running_loop().run_in_executor(
                self._readers, lambda: work(self._thread_conn())
            )
        except apsw.SQLError as exc:
            # A read that raced the drop of its collection finds the table gone.
            if "no such table" in str(exc):
                raise NotFound("The collection does not exist (it was just deleted).") from None
            raise

    def _table(self, collection: str) -> str:
        try:
            return self._tables[collection]
        except KeyError:
            raise NotFound(f"Collection '{collection}' does not exist.") from None

    async def load_collections(self) -> list[StoredCollection]:
        """Every collection; also refreshes the table map (another process may have changed
        the collections)."""

        def work(conn: apsw.Connection) -> list[StoredCollection]:
            rows = conn.execute("SELECT name, tbl, meta FROM _collections ORDER BY name")
            found = rows.fetchall()
            self._tables = {str(name): str(table) for name, table, _ in found}
            return [StoredCollection(str(name), str(meta)) for name, _, meta in found]

        return await self._read(work)

    async def dump(self, chunk: int = 500) -> AsyncIterator[StoredCollection | list[Insert]]:
        """One read transaction on a connection of its own, in a thread; `_DUMP_AHEAD` chunks
        wait at most, so memory stays flat whatever the database's size."""
        items: queue.Queue[StoredCollection | list[Insert] | BaseException | None]
        items = queue.Queue(maxsize=_DUMP_AHEAD)
        stop = threading.Event()

        def put(item: StoredCollection | list[Insert] | BaseException | None) -> None:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def produce() -> None:
            conn = _connect(self.path)
            try:
                conn.execute("BEGIN")
                rows = conn.execute("SELECT name, tbl, meta FROM _collections ORDER BY name")
                for name, table, meta in rows.fetchall():
                    put(StoredCollection(str(name), str(meta)))
                    batch: list[Insert] = []
                    sql = f"SELECT id, version, json(doc) FROM {_quote(str(table))} ORDER BY id"
                    for record_id, version, doc in conn.execute(sql):
                        batch.append(Insert(str(name), str(record_id), int(version), str(doc)))
                        if len(batch) >= chunk:
                            put(batch)
                            batch = []
                    if batch:
                        put(batch)
                conn.execute("COMMIT")
                put(None)
            except BaseException as exc:
                put(exc)
            finally:
                conn.close()

        loop = asyncio.get_running_loop()
        producer = threading.Thread(target=produce, name="bp-sqlite-dump", daemon=True)
        producer.start()
        try:
            while True:
                item = await loop.run_in_executor(None, items.get)
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            await loop.run_in_executor(None, producer.join)

    async def get(
        self,
        collection: str,
        record_id: str,
        where: Node | None = None,
        field_types: Mapping[str, str] | None = None,
    ) -> StoredDoc | None:
        table = _quote(self._table(collection))
        sql = f"SELECT json(doc), version FROM {table} WHERE id = ?"
        params: list[Any] = [record_id]
        if where is not None:
            where_sql, where_params = compile_filter_sqlite(where, field_types=field_types)
            sql += f" AND ({where_sql})"
            params.extend(where_params)

        def work(conn: apsw.Connection) -> StoredDoc | None:
            for doc, version in conn.execute(sql, params):
                return StoredDoc(doc, version)
            return None

        return await self._read(work)

    async def get_many(
        self,
        collection: str,
        record_ids: Sequence[str],
        where: Node | None = None,
        field_types: Mapping[str, str] | None = None,
    ) -> list[str]:
        if not record_ids:
            return []
        table = _quote(self._table(collection))
        marks = ",".join("?" * len(record_ids))
        sql = f"SELECT json(doc) FROM {table} WHERE id IN ({marks})"
        params: list[Any] = list(record_ids)
        if where is not None:
            where_sql, where_params = compile_filter_sqlite(where, field_types=field_types)
            sql += f" AND ({where_sql})"
            params.extend(where_params)

        def work(conn: apsw.Connection) -> list[str]:
            return [row[0] for row in conn.execute(sql, params)]

        return await self._read(work)

    def _query_sql(self, query: Query) -> tuple[str, list[Any], str, list[Any]]:
        """SQL and parameters for one page (limit + 1 rows) and for its total."""
        table = _quote(self._table(query.collection))
        where_sql, params = compile_filter_sqlite(query.where, field_types=query.field_types)
        keys = query.sort  # the domain ends every sort with a unique key (id)
        exprs = [sqlite_value_expr(key.path) for key in keys]
        order = ", ".join(
            e + (" DESC" if k.descending else "") for e, k in zip(exprs, keys, strict=True)
        )
        conditions = [f"({where_sql})"]
        page_params: list[Any] = list(params)
        if query.after is not None:
            keyset_sql, keyset_params = _keyset_after(exprs, keys, query.after)
            conditions.append(keyset_sql)
            page_params.extend(keyset_params)
        select = ", ".join(["json(doc)", *exprs])
        sql = (
            f"SELECT {select} FROM {table} WHERE {' AND '.join(conditions)} "
            f"ORDER BY {order} LIMIT ? OFFSET ?"
        )
        page_params.extend([query.limit + 1, query.offset])
        return sql, page_params, f"SELECT count(*) FROM {table} WHERE {where_sql}", params

    async def explain(self, query: Query) -> list[str]:
        """SQLite's plan for the page query (for operators and tests)."""
        sql, params, _, _ = self._query_sql(query)

        def work(conn: apsw.Connection) -> list[str]:
            return [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]

        return await self._read(work)

    async def query(self, query: Query) -> Page:
        sql, page_params, total_sql, params = self._query_sql(query)
        count_sql = total_sql if query.count else None
        count_key = (count_sql, tuple(params))
        known_total = self._cached_count(count_key) if count_sql is not None else None
        version = self._counts_version

        def work(conn: apsw.Connection) -> Page:
            rows = conn.execute(sql, page_params).fetchall()
            last_key: tuple[JSON, ...] | None = None
            if len(rows) > query.limit:
                rows = rows[: query.limit]
                last_key = tuple(rows[-1][1:])
            total = known_total
            if count_sql is not None and total is None:
                (counted,) = conn.execute(count_sql, params).fetchall()[0]
                total = int(str(counted))
            return Page([str(row[0]) for row in rows], last_key, total)

        page = await self._read(work)
        if count_sql is not None and known_total is None and page.total is not None:
            self._remember_count(count_key, page.total, version)
        return page

    def _cached_count(self, key: tuple[str | None, tuple[Any, ...]]) -> int | None:
        """A total counted since the last commit to the database (by anyone), if any.

        Counting means visiting every matching row, while the page itself stops
        after `limit`; list screens ask for the same total again and again.
        SQLite's data_version changes whenever another connection commits, so
        a cached total can never outlive the data it counted.
        """
        assert self._read_conn is not None
        (version,) = self._read_conn.execute("PRAGMA data_version").fetchall()[0]
        if version != self._counts_version:
            self._counts.clear()
            self._counts_version = int(str(version))
        return self._counts.get(key)

    def _remember_count(
        self, key: tuple[str | None, tuple[Any, ...]], total: int, version: int
    ) -> None:
        if version != self._counts_version:
            return
        if len(self._counts) >= _MAX_CACHED_COUNTS:
            self._counts.clear()
        self._counts[key] = total

    # writes

    async def apply(self, ops: Sequence[WriteOp]) -> None:
        if self._writer is None:
            raise Unavailable("The database is closed.")
        loop = asyncio.get_running_loop()
        unit = _WriteUnit(ops, loop, loop.create_future())
        self._writes.put(unit)
        await unit.future

    def _write_loop(self, conn: apsw.Connection) -> None:
        try:
            while True:
                first = self._writes.get()
                if first is None:
                    return
                group = [first]
                stop = False
                while len(group) < _MAX_GROUP:
                    try:
                        item = self._writes.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    group.append(item)
                self._commit_group(conn, group)
                if stop:
                    return
        finally:
            conn.close()

    def _commit_group(self, conn: apsw.Connection, group: list[_WriteUnit]) -> None:
        tables = dict(self._tables)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if any(_names_unknown(unit.ops, tables) for unit in group):
                # Another process (a worker beside this one) may have made or dropped a
                # collection: holding the write lock, read the map again.
                tables = _table_map(conn)
            for unit in group:
                if len(unit.ops) == 1 and isinstance(unit.ops[0], _ROW_OPS):
                    # One row statement: SQLite undoes a failed statement by itself.
                    try:
                        self._apply_op(conn, unit.ops[0], tables)
                    except BackpackError as exc:
                        exc.op_index = 0
                        unit.error = exc
                    continue
                staged = dict(tables)
                conn.execute("SAVEPOINT unit")
                try:
                    for index, op in enumerate(unit.ops):
                        try:
                            self._apply_op(conn, op, staged)
                        except BackpackError as exc:
                            exc.op_index = index
                            raise
                except BaseException as exc:  # the unit fails alone; the group goes on
                    conn.execute("ROLLBACK TO unit")
                    unit.error = exc
                else:
                    tables = staged
                conn.execute("RELEASE unit")
            conn.execute("COMMIT")
        except apsw.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = Unavailable(f"The database could not commit: {exc}.")
            for unit in group:
                unit.error = unit.error or failure
        else:
            self._tables = tables
            self.commits += 1
            self.committed_units += len(group)
        by_loop: dict[asyncio.AbstractEventLoop, list[_WriteUnit]] = {}
        for unit in group:
            by_loop.setdefault(unit.loop, []).append(unit)
        for loop, units in by_loop.items():  # one wake-up per loop, not one per write
            loop.call_soon_threadsafe(_settle, units)

    def _apply_op(self, conn: apsw.Connection, op: WriteOp, tables: dict[str, str]) -> None:
        match op:
            case Insert(collection, record_id, version, doc):
                table = _quote(_lookup(tables, collection))
                try:
                    conn.execute(
                        f"INSERT INTO {table} (id, version, doc) VALUES (?, ?, jsonb(?))",
                        (record_id, version, doc),
                    )
                except apsw.ConstraintError as exc:
                    raise _constraint_error(exc, record_id) from None
            case Update(collection, record_id, expected, version, doc):
                table = _quote(_lookup(tables, collection))
                try:
                    conn.execute(
                        f"UPDATE {table} SET version = ?, doc = jsonb(?) "
                        "WHERE id = ? AND version = ?",
                        (version, doc, record_id, expected),
                    )
                except apsw.ConstraintError as exc:
                    raise _constraint_error(exc, record_id) from None
                if conn.changes() != 1:
                    raise StaleWrite(f"Record '{record_id}' changed since it was read.")
            case DeleteOp(collection, record_id, expected):
                table = _quote(_lookup(tables, collection))
                if expected is None:
                    conn.execute(f"DELETE FROM {table} WHERE id = ?", (record_id,))
                else:
                    conn.execute(
                        f"DELETE FROM {table} WHERE id = ? AND version = ?", (record_id, expected)
                    )
                if conn.changes() != 1:
                    raise StaleWrite(f"Record '{record_id}' changed since it was read.")
            case PutCollection():
                self._put_collection(conn, op, tables)
            case DropCollection(name):
                table = _lookup(tables, name)
                conn.execute(f"DROP TABLE {_quote(table)}")
                conn.execute("DELETE FROM _collections WHERE name = ?", (name,))
                del tables[name]

    def _put_collection(
        self, conn: apsw.Connection, op: PutCollection, tables: dict[str, str]
    ) -> None:
        if op.create:
            if op.name in tables:
                raise AlreadyExists(f"Collection '{op.name}' already exists.")
            conn.execute(
                "INSERT INTO _sequence (name, value) VALUES ('tables', 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1"
            )
            number = conn.execute("SELECT value FROM _sequence WHERE name = 'tables'").fetchall()
            table = f"r_{number[0][0]}"
            conn.execute(
                f"CREATE TABLE {_quote(table)} ("
                "id TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL, doc BLOB NOT NULL"
                ") WITHOUT ROWID"
            )
            conn.execute(
                "INSERT INTO _collections (name, tbl, meta) VALUES (?, ?, ?)",
                (op.name, table, op.meta),
            )
            tables[op.name] = table
        else:
            table = _lookup(tables, op.name)
            conn.execute("UPDATE _collections SET meta = ? WHERE name = ?", (op.meta, op.name))
        if op.check_existing is not None:
            rows: Iterator[tuple[str, str]] = iter(
                conn.execute(f"SELECT id, json(doc) FROM {_quote(table)} ORDER BY id")
            )
            op.check_existing(rows)
        wanted = {f"bx_{table}__{index.name}": index for index in op.indexes}
        present = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                "AND name LIKE 'bx\\_%' ESCAPE '\\'",
                (table,),
            )
        }
        for name in present - wanted.keys():
            conn.execute(f"DROP INDEX {_quote(name)}")
        for name in wanted.keys() - present:
            index = wanted[name]
            try:
                conn.execute(_index_sql(table, index))
            except apsw.ConstraintError:
                paths = ", ".join(".".join(map(str, k.path)) for k in index.keys)
                raise UniqueViolation(
                    f"Existing records already share values of ({paths}); "
                    "the unique index cannot be built.",
                    {"fields": [".".join(map(str, k.path)) for k in index.keys]},
                ) from None


def _settle(units: list[_WriteUnit]) -> None:
    for unit in units:
        if unit.future.cancelled():
            continue
        if unit.error is None:
            unit.future.set_result(None)
        else:
            unit.future.set_exception(unit.error)


def _table_map(conn: apsw.Connection) -> dict[str, str]:
    return {str(n): str(t) for n, t in conn.execute("SELECT name, tbl FROM _collections")}


def _names_unknown(ops: Sequence[WriteOp], tables: Mapping[str, str]) -> bool:
    """Whether `ops` name a collection the map does not know, or create one."""
    for op in ops:
        if isinstance(op, PutCollection):
            if op.create or op.name not in tables:
                return True
        elif isinstance(op, DropCollection):
            if op.name not in tables:
                return True
        elif op.collection not in tables:
            return True
    return False


def _lookup(tables: Mapping[str, str], collection: str) -> str:
    try:
        return tables[collection]
    except KeyError:
        raise NotFound(f"Collection '{collection}' does not exist.") from None


def _constraint_error(exc: apsw.ConstraintError, record_id: str) -> BackpackError:
    # SQLite names the primary key as "<table>.id" and an expression index as "index '<name>'".
    text = str(exc)
    if text.rstrip().endswith(".id"):
        return AlreadyExists(f"A record with id '{record_id}' already exists.")
    index = text.split("index '", 1)[1].rstrip("'") if "index '" in text else ""
    index = index.split("__", 1)[-1]
    return UniqueViolation(
        "Another record already has this value in a unique field.", {"index": index}
    )


def _keyset_after(
    exprs: Sequence[str], keys: Sequence[IndexKey], after: Sequence[JSON]
) -> tuple[str, list[Any]]:
    """Rows strictly after `after` in the order of `keys` (SQLite order: NULL first)."""
    ors: list[str] = []
    params: list[Any] = []
    for i, (expr, key) in enumerate(zip(exprs, keys, strict=True)):
        terms: list[str] = []
        for prev_expr, value in zip(exprs[:i], after[:i], strict=True):
            if value is None:
                terms.append(f"{prev_expr} IS NULL")
            else:
                terms.append(f"{prev_expr} = ?")
                params.append(value)
        value = after[i]
        if key.descending:
            if value is None:
                continue  # nothing sorts after NULL going down
            terms.append(f"({expr} < ? OR {expr} IS NULL)")
            params.append(value)
        elif value is None:
            terms.append(f"{expr} IS NOT NULL")
        else:
            terms.append(f"{expr} > ?")
            params.append(value)
        ors.append("(" + " AND ".join(terms) + ")")
    return "(" + (" OR ".join(ors) or "0") + ")", params
