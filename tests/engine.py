"""The services the tests' real servers run on: `BACKPACK_TEST_ENGINE`.

- `sqlite` (the default): the embedded default, everything in the data directory.
- `postgres`: PostgreSQL at 127.0.0.1:5432 and Redis at :6379 (tests/pg.py). A
  `serve-instance` data directory gets a database of its own; a `backpack serve`
  data directory gets a deployment name of its own (`t` + 10 hex digits), so
  its backpacks' databases (`tXXXXXXXXXX_NAME`) and Redis keys never collide
  with another test's. The same directory keeps them across restarts, so a
  restarted server or a CLI command on it sees the same data.

`drop_all()` drops every database the session made and deletes its Redis keys.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

import pytest

from tests.pg import PG_SERVER, pg_admin, pg_connect, run_elsewhere

ENGINE_ENV: Final = "BACKPACK_TEST_ENGINE"
ENGINES: Final = ("sqlite", "postgres")
REDIS_URL: Final = "redis://127.0.0.1:6379/0"
INSTANCE_DEPLOYMENT: Final = "backpack"  # serve-instance's default BACKPACK_DEPLOYMENT


def _engine() -> str:
    value = os.environ.get(ENGINE_ENV) or "sqlite"
    if value not in ENGINES:
        raise pytest.UsageError(f"{ENGINE_ENV} must be one of {', '.join(ENGINES)}, not {value!r}")
    return value


ENGINE: Final = _engine()
POSTGRES: Final = ENGINE == "postgres"
LABEL: Final = "postgres+redis" if POSTGRES else "sqlite (embedded)"

_instance_databases: dict[Path, str] = {}  # serve-instance data dir → its database
_deployments: dict[Path, str] = {}  # serve data dir → its BACKPACK_DEPLOYMENT


def instance_database(data_dir: Path) -> str:
    """The database of the `serve-instance` on `data_dir` (made on first use)."""
    key = data_dir.resolve()
    name = _instance_databases.get(key)
    if name is None:
        name = f"ti{secrets.token_hex(5)}"
        run_elsewhere(lambda: pg_admin(f'CREATE DATABASE "{name}"'))
        _instance_databases[key] = name
    return name


def instance_env(data_dir: Path) -> dict[str, str]:
    """What `serve-instance` (or `users …`) on `data_dir` needs in its environment."""
    if not POSTGRES:
        return {}
    return {
        "BACKPACK_DATABASE_URL": f"{PG_SERVER}/{instance_database(data_dir)}",
        "BACKPACK_REDIS_URL": REDIS_URL,
    }


def deployment_name(data_dir: Path) -> str:
    """The BACKPACK_DEPLOYMENT of the `backpack serve` on `data_dir`."""
    return _deployments.setdefault(data_dir.resolve(), "t" + secrets.token_hex(5))


def deployment_env(data_dir: Path) -> dict[str, str]:
    """What `backpack serve` (or `instances …`, `admins …`) on `data_dir` needs."""
    if not POSTGRES:
        return {}
    return {
        "BACKPACK_DATABASE_URL": f"{PG_SERVER}/postgres",
        "BACKPACK_REDIS_URL": REDIS_URL,
        "BACKPACK_DEPLOYMENT": deployment_name(data_dir),
    }


def backpack_database(data_dir: Path, name: str) -> str:
    """The database of backpack `name` in the deployment on `data_dir`."""
    return f"{deployment_name(data_dir)}_{name}"


async def _drop_databases() -> list[str]:
    conn = await pg_connect("postgres")
    try:
        names = set(_instance_databases.values())
        for deployment in _deployments.values():
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", deployment + r"\_%"
            )
            names.update(str(row[0]) for row in rows)
        for name in sorted(names):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return sorted(names)
    finally:
        await conn.close()


async def _delete_redis_keys() -> None:
    from redis.asyncio import Redis

    patterns = [f"{INSTANCE_DEPLOYMENT}:{name}:*" for name in _instance_databases.values()]
    patterns += [f"{deployment}:*" for deployment in _deployments.values()]
    client = Redis.from_url(REDIS_URL)
    try:
        for pattern in patterns:
            keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
            if keys:
                await client.delete(*keys)
    finally:
        await client.aclose()


def drop_all() -> list[str]:
    """Drop every database this session made (deployments' backpacks included); their names."""
    if not POSTGRES or not (_instance_databases or _deployments):
        return []
    dropped = run_elsewhere(_drop_databases)
    run_elsewhere(_delete_redis_keys)
    _instance_databases.clear()
    _deployments.clear()
    return dropped
