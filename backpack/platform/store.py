"""The control plane's own records: admins, their sessions and the registry of backpacks.

`SqliteControlStore` keeps them in DIR/control.db (the default);
`PostgresControlStore` in a PostgreSQL database, so several workers or hosts
share them. Both pass one contract suite (tests/contract/test_control_store_contract.py).

Emails are stored lower-cased and unique. Sessions are kept by the SHA-256 of
their token, never the token. Times are RFC 3339 UTC strings with milliseconds,
which sort as text, so expiry is a string comparison in either database.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import apsw

from backpack.core import jsonutil
from backpack.core.clock import now_rfc3339
from backpack.core.ids import new_id
from backpack.errors import BadRequest, Conflict, NotFound
from backpack.types import JSONObject
from backpack.urls import redact_url

T = TypeVar("T")

CONTROL_DATABASE_FILE: Final = "control.db"
STATUSES: Final = ("running", "stopped")
COUNTERS: Final = ("generation", "key_version")  # see ControlStore.bump_instance
MAX_EMAIL_LENGTH: Final = 254
MAX_NAME_LENGTH: Final = 255  # instance names; the API allows far fewer
_PG_SCHEMES: Final = ("postgresql://", "postgres://")
_PG_SCHEMA_LOCK: Final = 0x6270_6374_726C  # advisory lock id: one worker creates the tables


@dataclass(frozen=True, slots=True)
class Admin:
    id: str
    email: str
    created: str

    def to_json(self) -> JSONObject:
        return {"id": self.id, "email": self.email, "created": self.created}


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    name: str
    runtime: str
    status: str  # desired status: "running" | "stopped"
    created: str
    config: JSONObject


class ControlStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def count_admins(self) -> int: ...

    async def create_admin(
        self, email: str, password_hash: str, *, only_if_none: bool = False
    ) -> Admin:
        """Conflict if the email is taken, or with `only_if_none` if any admin exists."""
        ...

    async def admin_by_email(self, email: str) -> tuple[Admin, str] | None:
        """The admin and its password hash."""
        ...

    async def admin_by_id(self, admin_id: str) -> Admin | None: ...

    async def list_admins(self) -> list[Admin]:
        """Oldest first."""
        ...

    async def delete_admin(self, admin_id: str, *, keep_last: bool = False) -> bool:
        """Delete an admin and its sessions; with `keep_last`, Conflict if it is the only one."""
        ...

    async def create_session(self, token_hash: str, admin_id: str, expires: str) -> None:
        """NotFound if the admin does not exist (any more)."""
        ...

    async def session_admin(self, token_hash: str, now: str) -> Admin | None:
        """The session's admin; None if the session is unknown or expired at `now`."""
        ...

    async def delete_session(self, token_hash: str) -> None: ...

    async def delete_expired_sessions(self, now: str) -> int: ...

    async def insert_instance(self, record: InstanceRecord) -> None:
        """Conflict if the name exists."""
        ...

    async def list_instances(self) -> list[InstanceRecord]:
        """By name."""
        ...

    async def get_instance(self, name: str) -> InstanceRecord | None: ...

    async def update_instance(
        self, name: str, *, status: str | None = None, config: JSONObject | None = None
    ) -> InstanceRecord:
        """NotFound if there is no such instance."""
        ...

    async def delete_instance(self, name: str) -> bool: ...

    async def bump_instance(self, name: str, counter: str) -> InstanceRecord:
        """Add one to the whole number `counter` of the instance's config (absent: 0), atomically
        (workers read these to restart a backpack or reload its key); NotFound if there is
        no such instance."""
        ...


def open_control_store(data_dir: Path, url: str | None) -> ControlStore:
    """PostgreSQL for a postgresql:// URL, else DIR/control.db; `open()` it before use."""
    if not url:
        return SqliteControlStore(data_dir / CONTROL_DATABASE_FILE)
    if url.startswith(_PG_SCHEMES):
        return PostgresControlStore(url)
    raise BadRequest(
        "The control database URL must start with postgresql:// or postgres:// "
        f"(got {redact_url(url)!r}); leave it unset to keep admins in DIR/{CONTROL_DATABASE_FILE}."
    )


# checks shared by both stores, so they accept and refuse the same values


def _storable(text: str) -> bool:
    """Whether both databases can hold `text` (PostgreSQL refuses NUL and bad UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text(value: str, what: str, max_length: int | None = None) -> str:
    if not value or not _storable(value):
        raise BadRequest(f"The {what} must be non-empty, valid text without NUL characters.")
    if max_length is not None and len(value) > max_length:
        raise BadRequest(f"The {what} is longer than {max_length} characters.")
    return value


def _email(email: str) -> str:
    return _text(email.strip().lower(), "email", MAX_EMAIL_LENGTH)


def _status(status: str) -> str:
    if status not in STATUSES:
        raise BadRequest(f"An instance status is one of {', '.join(STATUSES)}, not {status!r}.")
    return status


def _config_text(config: JSONObject) -> str:
    if not isinstance(config, dict):
        raise BadRequest("An instance config must be a JSON object.")
    try:
        return jsonutil.dumps_str(config)
    except TypeError as error:  # orjson: not JSON, a non-string key or invalid UTF-8
        raise BadRequest(f"An instance config must be plain JSON: {error}.") from error


def _check_record(record: InstanceRecord) -> str:
    """Validate `record`; return its config as JSON text."""
    _text(record.name, "instance name", MAX_NAME_LENGTH)
    _text(record.runtime, "runtime")
    _text(record.created, "creation time")
    _status(record.status)
    return _config_text(record.config)


def _counter(counter: str) -> str:
    if counter not in COUNTERS:
        raise ValueError(f"not an instance counter: {counter!r}")
    return counter


def _instance(name: str, runtime: str, status: str, created: str, config: str) -> InstanceRecord:
    loaded: JSONObject = jsonutil.loads(config)
    return InstanceRecord(name, runtime, status, created, loaded)


# SQLite

_SQLITE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS admins (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS admin_sessions (
    token_hash TEXT PRIMARY KEY,
    admin_id TEXT NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    created TEXT NOT NULL,
    expires TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS admin_sessions_admin ON admin_sessions (admin_id);
CREATE INDEX IF NOT EXISTS admin_sessions_expires ON admin_sessions (expires);
CREATE TABLE IF NOT EXISTS instances (
    name TEXT PRIMARY KEY,
    runtime TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    config TEXT NOT NULL
) STRICT;
"""
_INSTANCE_COLUMNS: Final = "name, runtime, status, created, config"


class SqliteControlStore:
    """DIR/control.db in WAL mode; every call runs on one thread with its own connection.

    Writes take SQLite's write lock up front (BEGIN IMMEDIATE), so check-then-write
    steps are atomic even against another process on the same file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: apsw.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="control-store")
        await self._run(self._connect)

    async def close(self) -> None:
        if self._thread is None:
            return
        await self._run(self._disconnect)
        self._thread.shutdown()
        self._thread = None

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Password hashes live here: only the owner may read the file (and its WAL).
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = apsw.Connection(str(self.path))
        conn.set_busy_timeout(10_000)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        with conn:
            conn.execute(_SQLITE_SCHEMA)
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, work: Callable[[], T]) -> T:
        if self._thread is None:
            raise RuntimeError("The control store is not open.")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    def _db(self) -> apsw.Connection:
        if self._conn is None:
            raise RuntimeError("The control store is not open.")
        return self._conn

    async def _read(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return await self._run(lambda: self._db().execute(sql, params).fetchall())

    async def _write(self, work: Callable[[apsw.Connection], T]) -> T:
        def transaction() -> T:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(transaction)

    # admins

    async def count_admins(self) -> int:
        rows = await self._read("SELECT count(*) FROM admins")
        return int(rows[0][0])

    async def create_admin(
        self, email: str, password_hash: str, *, only_if_none: bool = False
    ) -> Admin:
        admin = Admin(new_id(), _email(email), now_rfc3339())
        _text(password_hash, "password hash")

        def insert(conn: apsw.Connection) -> None:
            if only_if_none and conn.execute("SELECT 1 FROM admins LIMIT 1").fetchall():
                raise Conflict("An admin already exists.")
            try:
                conn.execute(
                    "INSERT INTO admins (id, email, password_hash, created) VALUES (?, ?, ?, ?)",
                    (admin.id, admin.email, password_hash, admin.created),
                )
            except apsw.ConstraintError as error:
                raise Conflict(f"An admin with the email {admin.email!r} exists.") from error

        await self._write(insert)
        return admin

    async def admin_by_email(self, email: str) -> tuple[Admin, str] | None:
        email = email.strip().lower()
        if not _storable(email):
            return None
        rows = await self._read(
            "SELECT id, email, created, password_hash FROM admins WHERE email = ?", email
        )
        return (Admin(*rows[0][:3]), rows[0][3]) if rows else None

    async def admin_by_id(self, admin_id: str) -> Admin | None:
        if not _storable(admin_id):
            return None
        rows = await self._read("SELECT id, email, created FROM admins WHERE id = ?", admin_id)
        return Admin(*rows[0]) if rows else None

    async def list_admins(self) -> list[Admin]:
        rows = await self._read("SELECT id, email, created FROM admins ORDER BY created, id")
        return [Admin(*row) for row in rows]

    async def delete_admin(self, admin_id: str, *, keep_last: bool = False) -> bool:
        if not _storable(admin_id):
            return False

        def delete(conn: apsw.Connection) -> bool:
            if not conn.execute("SELECT 1 FROM admins WHERE id = ?", (admin_id,)).fetchall():
                return False
            if keep_last and conn.execute("SELECT count(*) FROM admins").fetchall()[0][0] == 1:
                raise Conflict("The last admin cannot be deleted.")
            conn.execute("DELETE FROM admins WHERE id = ?", (admin_id,))
            return True

        return await self._write(delete)

    # sessions

    async def create_session(self, token_hash: str, admin_id: str, expires: str) -> None:
        _text(token_hash, "token hash", MAX_NAME_LENGTH)
        _text(expires, "expiry time")
        if not _storable(admin_id):
            raise NotFound(f"Admin {admin_id!r} was not found.")
        created = now_rfc3339()

        def insert(conn: apsw.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO admin_sessions (token_hash, admin_id, created, expires)"
                    " VALUES (?, ?, ?, ?)",
                    (token_hash, admin_id, created, expires),
                )
            except apsw.ConstraintError as error:
                if not conn.execute("SELECT 1 FROM admins WHERE id = ?", (admin_id,)).fetchall():
                    raise NotFound(f"Admin {admin_id!r} was not found.") from error
                raise Conflict("That session exists already.") from error

        await self._write(insert)

    async def session_admin(self, token_hash: str, now: str) -> Admin | None:
        if not (_storable(token_hash) and _storable(now)):
            return None
        rows = await self._read(
            "SELECT a.id, a.email, a.created FROM admin_sessions s"
            " JOIN admins a ON a.id = s.admin_id WHERE s.token_hash = ? AND s.expires > ?",
            token_hash,
            now,
        )
        return Admin(*rows[0]) if rows else None

    async def delete_session(self, token_hash: str) -> None:
        if not _storable(token_hash):
            return
        await self._write(
            lambda conn: conn.execute(
                "DELETE FROM admin_sessions WHERE token_hash = ?", (token_hash,)
            )
        )

    async def delete_expired_sessions(self, now: str) -> int:
        _text(now, "time")

        def delete(conn: apsw.Connection) -> int:
            conn.execute("DELETE FROM admin_sessions WHERE expires <= ?", (now,))
            return int(conn.changes())

        return await self._write(delete)

    # instances

    async def insert_instance(self, record: InstanceRecord) -> None:
        config = _check_record(record)

        def insert(conn: apsw.Connection) -> None:
            try:
                conn.execute(
                    f"INSERT INTO instances ({_INSTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    (record.name, record.runtime, record.status, record.created, config),
                )
            except apsw.ConstraintError as error:
                raise Conflict(f"An instance named {record.name!r} exists.") from error

        await self._write(insert)

    async def list_instances(self) -> list[InstanceRecord]:
        rows = await self._read(f"SELECT {_INSTANCE_COLUMNS} FROM instances ORDER BY name")
        return [_instance(*row) for row in rows]

    async def get_instance(self, name: str) -> InstanceRecord | None:
        if not _storable(name):
            return None
        rows = await self._read(f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE name = ?", name)
        return _instance(*rows[0]) if rows else None

    async def update_instance(
        self, name: str, *, status: str | None = None, config: JSONObject | None = None
    ) -> InstanceRecord:
        new_status = None if status is None else _status(status)
        new_config = None if config is None else _config_text(config)
        if not _storable(name):
            raise NotFound(f"Instance {name!r} was not found.")

        def update(conn: apsw.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                "UPDATE instances SET status = coalesce(?, status), config = coalesce(?, config)"
                f" WHERE name = ? RETURNING {_INSTANCE_COLUMNS}",
                (new_status, new_config, name),
            ).fetchall()

        rows = await self._write(update)
        if not rows:
            raise NotFound(f"Instance {name!r} was not found.")
        return _instance(*rows[0])

    async def delete_instance(self, name: str) -> bool:
        if not _storable(name):
            return False

        def delete(conn: apsw.Connection) -> bool:
            conn.execute("DELETE FROM instances WHERE name = ?", (name,))
            return bool(conn.changes())

        return await self._write(delete)

    async def bump_instance(self, name: str, counter: str) -> InstanceRecord:
        path = "$." + _counter(counter)
        if not _storable(name):
            raise NotFound(f"Instance {name!r} was not found.")

        def bump(conn: apsw.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                "UPDATE instances SET config = json_set(config, ?,"
                " coalesce(json_extract(config, ?), 0) + 1)"
                f" WHERE name = ? RETURNING {_INSTANCE_COLUMNS}",
                (path, path, name),
            ).fetchall()

        rows = await self._write(bump)
        if not rows:
            raise NotFound(f"Instance {name!r} was not found.")
        return _instance(*rows[0])


# PostgreSQL

_PG_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS admins (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_sessions (
    token_hash TEXT PRIMARY KEY,
    admin_id TEXT NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    created TEXT NOT NULL,
    expires TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS admin_sessions_admin ON admin_sessions (admin_id);
CREATE INDEX IF NOT EXISTS admin_sessions_expires ON admin_sessions (expires);
CREATE TABLE IF NOT EXISTS instances (
    name TEXT PRIMARY KEY,
    runtime TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    config TEXT NOT NULL
);
"""


def _asyncpg() -> Any:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError as error:
        raise BadRequest(
            "A PostgreSQL control database needs asyncpg: pip install 'backpack-baas[postgres]'."
        ) from error
    return asyncpg


class PostgresControlStore:
    """The same records in PostgreSQL (tables created on open), shared by every worker.

    Text columns compare with "C" semantics (`COLLATE "C"`), so ordering and
    expiry comparisons match SQLite's byte order.
    """

    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        self.url = url
        self.max_connections = max_connections
        self._pool: Any = None
        self._pg: Any = None

    async def open(self) -> None:
        pg = _asyncpg()
        try:
            pool = await pg.create_pool(
                self.url, min_size=1, max_size=self.max_connections, timeout=10
            )
        except (OSError, ValueError, TimeoutError, pg.PostgresError, pg.InterfaceError) as error:
            raise BadRequest(
                f"Cannot connect to the control database {redact_url(self.url)}: {error}"
            ) from error
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_SCHEMA_LOCK)
                await conn.execute(_PG_SCHEMA)
        except pg.PostgresError as error:
            await pool.close()
            raise BadRequest(
                f"Cannot create the control tables in {redact_url(self.url)}: {error}"
            ) from error
        self._pg, self._pool = pg, pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _db(self) -> Any:
        if self._pool is None:
            raise RuntimeError("The control store is not open.")
        return self._pool

    # admins

    async def count_admins(self) -> int:
        return int(await self._db().fetchval("SELECT count(*) FROM admins"))

    async def create_admin(
        self, email: str, password_hash: str, *, only_if_none: bool = False
    ) -> Admin:
        admin = Admin(new_id(), _email(email), now_rfc3339())
        _text(password_hash, "password hash")
        async with self._db().acquire() as conn, conn.transaction():
            if only_if_none:
                # Conflicts with itself: two setups run one after the other.
                await conn.execute("LOCK TABLE admins IN SHARE ROW EXCLUSIVE MODE")
                if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM admins)"):
                    raise Conflict("An admin already exists.")
            try:
                await conn.execute(
                    "INSERT INTO admins (id, email, password_hash, created)"
                    " VALUES ($1, $2, $3, $4)",
                    admin.id,
                    admin.email,
                    password_hash,
                    admin.created,
                )
            except self._pg.UniqueViolationError as error:
                raise Conflict(f"An admin with the email {admin.email!r} exists.") from error
        return admin

    async def admin_by_email(self, email: str) -> tuple[Admin, str] | None:
        email = email.strip().lower()
        if not _storable(email):
            return None
        row = await self._db().fetchrow(
            "SELECT id, email, created, password_hash FROM admins WHERE email = $1", email
        )
        return (Admin(row[0], row[1], row[2]), row[3]) if row else None

    async def admin_by_id(self, admin_id: str) -> Admin | None:
        if not _storable(admin_id):
            return None
        row = await self._db().fetchrow(
            "SELECT id, email, created FROM admins WHERE id = $1", admin_id
        )
        return Admin(*row) if row else None

    async def list_admins(self) -> list[Admin]:
        rows = await self._db().fetch(
            'SELECT id, email, created FROM admins ORDER BY created COLLATE "C", id COLLATE "C"'
        )
        return [Admin(*row) for row in rows]

    async def delete_admin(self, admin_id: str, *, keep_last: bool = False) -> bool:
        if not _storable(admin_id):
            return False
        async with self._db().acquire() as conn, conn.transaction():
            if keep_last:
                await conn.execute("LOCK TABLE admins IN SHARE ROW EXCLUSIVE MODE")
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM admins WHERE id = $1)", admin_id
            ):
                return False
            if keep_last and await conn.fetchval("SELECT count(*) FROM admins") == 1:
                raise Conflict("The last admin cannot be deleted.")
            await conn.execute("DELETE FROM admins WHERE id = $1", admin_id)
        return True

    # sessions

    async def create_session(self, token_hash: str, admin_id: str, expires: str) -> None:
        _text(token_hash, "token hash", MAX_NAME_LENGTH)
        _text(expires, "expiry time")
        if not _storable(admin_id):
            raise NotFound(f"Admin {admin_id!r} was not found.")
        try:
            await self._db().execute(
                "INSERT INTO admin_sessions (token_hash, admin_id, created, expires)"
                " VALUES ($1, $2, $3, $4)",
                token_hash,
                admin_id,
                now_rfc3339(),
                expires,
            )
        except self._pg.ForeignKeyViolationError as error:
            raise NotFound(f"Admin {admin_id!r} was not found.") from error
        except self._pg.UniqueViolationError as error:
            raise Conflict("That session exists already.") from error

    async def session_admin(self, token_hash: str, now: str) -> Admin | None:
        if not (_storable(token_hash) and _storable(now)):
            return None
        row = await self._db().fetchrow(
            "SELECT a.id, a.email, a.created FROM admin_sessions s"
            " JOIN admins a ON a.id = s.admin_id"
            ' WHERE s.token_hash = $1 AND s.expires COLLATE "C" > $2',
            token_hash,
            now,
        )
        return Admin(*row) if row else None

    async def delete_session(self, token_hash: str) -> None:
        if _storable(token_hash):
            await self._db().execute("DELETE FROM admin_sessions WHERE token_hash = $1", token_hash)

    async def delete_expired_sessions(self, now: str) -> int:
        _text(now, "time")
        status: str = await self._db().execute(
            'DELETE FROM admin_sessions WHERE expires COLLATE "C" <= $1', now
        )
        return int(status.rsplit(" ", 1)[1])

    # instances

    async def insert_instance(self, record: InstanceRecord) -> None:
        config = _check_record(record)
        try:
            await self._db().execute(
                f"INSERT INTO instances ({_INSTANCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
                record.name,
                record.runtime,
                record.status,
                record.created,
                config,
            )
        except self._pg.UniqueViolationError as error:
            raise Conflict(f"An instance named {record.name!r} exists.") from error

    async def list_instances(self) -> list[InstanceRecord]:
        rows = await self._db().fetch(
            f'SELECT {_INSTANCE_COLUMNS} FROM instances ORDER BY name COLLATE "C"'
        )
        return [_instance(*row) for row in rows]

    async def get_instance(self, name: str) -> InstanceRecord | None:
        if not _storable(name):
            return None
        row = await self._db().fetchrow(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE name = $1", name
        )
        return _instance(*row) if row else None

    async def update_instance(
        self, name: str, *, status: str | None = None, config: JSONObject | None = None
    ) -> InstanceRecord:
        new_status = None if status is None else _status(status)
        new_config = None if config is None else _config_text(config)
        if not _storable(name):
            raise NotFound(f"Instance {name!r} was not found.")
        row = await self._db().fetchrow(
            "UPDATE instances SET status = coalesce($1, status),"
            f" config = coalesce($2, config) WHERE name = $3 RETURNING {_INSTANCE_COLUMNS}",
            new_status,
            new_config,
            name,
        )
        if row is None:
            raise NotFound(f"Instance {name!r} was not found.")
        return _instance(*row)

    async def delete_instance(self, name: str) -> bool:
        if not _storable(name):
            return False
        status: str = await self._db().execute("DELETE FROM instances WHERE name = $1", name)
        return status != "DELETE 0"

    async def bump_instance(self, name: str, counter: str) -> InstanceRecord:
        key = _counter(counter)
        if not _storable(name):
            raise NotFound(f"Instance {name!r} was not found.")
        row = await self._db().fetchrow(
            "UPDATE instances SET config = jsonb_set(config::jsonb, ARRAY[$1::text],"
            " to_jsonb(coalesce((config::jsonb ->> $1)::bigint, 0) + 1))::text"
            f" WHERE name = $2 RETURNING {_INSTANCE_COLUMNS}",
            key,
            name,
        )
        if row is None:
            raise NotFound(f"Instance {name!r} was not found.")
        return _instance(*row)


__all__ = [
    "CONTROL_DATABASE_FILE",
    "COUNTERS",
    "STATUSES",
    "Admin",
    "ControlStore",
    "InstanceRecord",
    "PostgresControlStore",
    "SqliteControlStore",
    "open_control_store",
]
