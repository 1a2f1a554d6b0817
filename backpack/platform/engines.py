"""Which engine holds a backpack's records, and moving them from one engine to the other.

A backpack's directory names its engine in the file `engine`: `sqlite` (its
records in DIR/backpack.db) or `postgres` (in the deployment's cluster, in the
database `Services.database_name(NAME)`). A directory without the file is an
SQLite backpack, as every backpack was before PostgreSQL.

Moving (`backpack instances move`), backing up a PostgreSQL backpack and
restoring into one all go through one path: `copy_verified` replays the
source's snapshot (`Storage.dump`) into an empty target and compares both
fingerprints, so nothing is switched over unless the copy is exact. The
`engine` file is the commit point of a move: until it is rewritten the old copy
is the backpack, and a failed or interrupted move leaves the old copy in use.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from backpack.core.storage import Storage
from backpack.core.transfer import copy_records, count_all, fingerprint
from backpack.errors import BadRequest, Conflict, Unavailable
from backpack.fsutil import fsync_dir
from backpack.platform.backup import Progress as BackupProgress
from backpack.platform.backup import create_backup
from backpack.platform.instance import DATABASE_FILE
from backpack.platform.services import Services
from backpack.storage.sqlite.adapter import SqliteStorage

ENGINE_FILE: Final = "engine"
SQLITE: Final = "sqlite"
POSTGRES: Final = "postgres"
ENGINES: Final = (SQLITE, POSTGRES)

Progress = Callable[[int, int], None]  # (records copied so far, records in all)


def read_engine(directory: Path) -> str:
    try:
        engine = (directory / ENGINE_FILE).read_text().strip()
    except FileNotFoundError:
        return SQLITE
    if engine not in ENGINES:
        raise BadRequest(f"{directory / ENGINE_FILE} names no known engine: '{engine[:40]}'.")
    return engine


def write_engine(directory: Path, engine: str) -> None:
    """Record `engine` for the backpack in `directory`, atomically and durably."""
    temp = directory / (ENGINE_FILE + ".tmp")
    with temp.open("w") as handle:
        handle.write(engine + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, directory / ENGINE_FILE)
    fsync_dir(directory)


def sqlite_files(database: Path) -> list[Path]:
    """The database file and the WAL and shared-memory files beside it."""
    return [database, *(database.with_name(database.name + end) for end in ("-wal", "-shm"))]


async def copy_verified(
    source: Storage, target: Storage, progress: Progress | None = None
) -> dict[str, int]:
    """Copy `source` into the empty `target` and prove the copy exact; records per collection."""
    total = 0 if progress is None else await count_all(source)
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, max(total, done))

    copied = await copy_records(source, target, progress=step)
    landed = await fingerprint(target)
    if landed != copied:
        names = copied.keys() | landed.keys()
        differ = sorted(name for name in names if copied.get(name) != landed.get(name))
        raise Unavailable(
            "The copy does not match its source; nothing was switched over. "
            f"Collections that differ: {', '.join(differ)}."
        )
    return {name: summary.records for name, summary in copied.items()}


async def dump_to_sqlite(source: Storage, database: Path) -> dict[str, int]:
    """Write a verified copy of `source` to the new SQLite file `database`."""
    target = SqliteStorage(str(database))
    await target.open()
    try:
        return await copy_verified(source, target)
    finally:
        await target.close()


async def backup_directory(
    directory: Path,
    out: Path,
    *,
    name: str,
    services: Services,
    live: Storage | None = None,
    progress: BackupProgress | None = None,
) -> None:
    """Archive the backpack whose directory is `directory` (and whose records are where
    `services` say) to `out`, online. SQLite records are snapshot by SQLite itself; records
    in PostgreSQL (`live`: the serving process's own storage, else a connection of its own)
    are copied from one snapshot into an SQLite file of the archive's layout, so every
    backup restores on either engine."""
    if services.database_url is None:
        await asyncio.to_thread(create_backup, directory, out, name=name, progress=progress)
        return
    scratch = Path(tempfile.mkdtemp(prefix=".backup-db-", dir=directory))
    try:
        database = scratch / DATABASE_FILE
        if live is not None:
            await dump_to_sqlite(live, database)
        else:
            from backpack.storage.postgres import PostgresStorage

            store = PostgresStorage(services.database_url, max_size=2)
            await store.open()
            try:
                await dump_to_sqlite(store, database)
            finally:
                await store.close()
        await asyncio.to_thread(
            create_backup, directory, out, name=name, progress=progress, database=database
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


async def load_from_sqlite(
    database: Path, target: Storage, progress: Progress | None = None
) -> dict[str, int]:
    """Copy the SQLite file `database` (e.g. from a backup) into the empty `target`."""
    source = SqliteStorage(str(database))
    await source.open()
    try:
        return await copy_verified(source, target, progress)
    finally:
        await source.close()


async def move(
    directory: Path,
    name: str,
    services: Services,
    to: str,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Move the records of the stopped backpack `name` in `directory` to the engine `to`."""
    if to not in ENGINES:
        raise BadRequest(f"Move to '{to}'? The engines are {', '.join(ENGINES)}.")
    current = read_engine(directory)
    if current == to:
        raise Conflict(f"The backpack '{name}' is on {to} already.", {"engine": to})
    if services.database_url is None:
        raise Unavailable(
            "Moving between engines needs PostgreSQL: set BACKPACK_DATABASE_URL to the cluster."
        )
    database = services.database_name(name)
    sqlite_path = directory / DATABASE_FILE
    postgres = services.for_backpack(name)
    assert postgres.database_url is not None
    from backpack.storage.postgres import PostgresStorage

    if to == POSTGRES:
        await services.create_database(database)
        target = PostgresStorage(postgres.database_url)
        try:
            await target.open()
            try:
                counts = await load_from_sqlite(sqlite_path, target, progress)
            finally:
                await target.close()
        except BaseException:
            await services.drop_database(database)
            raise
        write_engine(directory, POSTGRES)
        for path in sqlite_files(sqlite_path):
            path.unlink(missing_ok=True)
        return counts
    scratch = directory / (DATABASE_FILE + ".moving")
    for path in sqlite_files(scratch):
        path.unlink(missing_ok=True)
    source = PostgresStorage(postgres.database_url)
    await source.open()
    try:
        target_db = SqliteStorage(str(scratch))
        await target_db.open()
        try:
            counts = await copy_verified(source, target_db, progress)
        finally:
            await target_db.close()
    except BaseException:
        for path in sqlite_files(scratch):
            path.unlink(missing_ok=True)
        raise
    finally:
        await source.close()
    wal = sqlite_files(scratch)[1]
    if wal.exists() and wal.stat().st_size:
        raise Unavailable(f"{wal} was not checkpointed; the move was not switched over.")
    for path in sqlite_files(scratch)[1:]:
        path.unlink(missing_ok=True)
    os.replace(scratch, sqlite_path)
    fsync_dir(directory)
    write_engine(directory, SQLITE)
    await services.drop_database(database)
    return counts
