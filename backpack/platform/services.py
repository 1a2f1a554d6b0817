"""The services a deployment runs on: where backpacks keep records, events, counters and files.

Nothing configured is the embedded default: SQLite and blobs in each backpack's
directory, events and rate-limit counters in this process. The environment
scales it out (docs/deploy.md):

- `BACKPACK_DATABASE_URL` (postgresql://…): records in PostgreSQL. For
  `serve-instance` the URL names the backpack's database; for `serve` it names
  the cluster, and each backpack gets a database of its own, `backpack_NAME`,
  created with the backpack and dropped with it.
- `BACKPACK_REDIS_URL` (redis://…): the realtime bus and the rate-limit
  counters, shared by every worker. Without Redis, a PostgreSQL deployment
  carries realtime events over LISTEN/NOTIFY.
- `BACKPACK_FILES_URL` (s3://bucket/prefix or a directory): the blob store;
  in a deployment each backpack stores under a prefix of its own.
- `BACKPACK_DEPLOYMENT` (default `backpack`) keeps deployments that share one
  cluster or Redis apart: databases are `DEPLOYMENT_NAME`, Redis keys and
  channels start `DEPLOYMENT:NAME:`. A lone `serve-instance` is named by
  `BACKPACK_NAME`, else by its database.

`check()` tells, before serving, whether each configured service answers, in
a sentence that names the variable to fix.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from backpack.errors import Unavailable
from backpack.urls import redact_url

DATABASE_URL_ENV: Final = "BACKPACK_DATABASE_URL"
REDIS_URL_ENV: Final = "BACKPACK_REDIS_URL"
FILES_URL_ENV: Final = "BACKPACK_FILES_URL"
DEPLOYMENT_ENV: Final = "BACKPACK_DEPLOYMENT"
NAME_ENV: Final = "BACKPACK_NAME"
POOL_ENV: Final = "BACKPACK_DATABASE_POOL"
DEFAULT_POOL: Final = 10
DEFAULT_DEPLOYMENT: Final = "backpack"
_DEPLOYMENT: Final = re.compile(r"[a-z][a-z0-9_]{0,19}")
_CHECK_TIMEOUT: Final = 5.0


class ServiceError(Exception):
    """A configured service is unreachable or misconfigured; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Services:
    database_url: str | None = None
    redis_url: str | None = None
    files_url: str | None = None
    deployment: str = DEFAULT_DEPLOYMENT
    name: str | None = None  # the backpack these are for
    database_pool: int = DEFAULT_POOL  # connections per backpack and process, at most

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Services:
        env = os.environ if environ is None else environ
        database_url = env.get(DATABASE_URL_ENV) or None
        services = cls(
            database_url=database_url,
            redis_url=env.get(REDIS_URL_ENV) or None,
            files_url=env.get(FILES_URL_ENV) or None,
            deployment=env.get(DEPLOYMENT_ENV) or DEFAULT_DEPLOYMENT,
            name=env.get(NAME_ENV) or (database_url and urlsplit(database_url).path.strip("/")),
            database_pool=_pool_size(env.get(POOL_ENV)),
        )
        services.validate()
        return services

    def validate(self) -> None:
        """Refuse URLs of the wrong kind (a typo should not fall back to the default)."""
        if not _DEPLOYMENT.fullmatch(self.deployment):
            raise ServiceError(
                f"{DEPLOYMENT_ENV} must be 1 to 20 lower-case letters, digits or '_', "
                "starting with a letter."
            )
        if self.database_url is not None:
            scheme = urlsplit(self.database_url).scheme
            if scheme not in ("postgresql", "postgres"):
                raise ServiceError(
                    f"{DATABASE_URL_ENV} must be a postgresql:// URL, "
                    f"not '{redact_url(self.database_url)}'."
                )
        if self.redis_url is not None:
            scheme = urlsplit(self.redis_url).scheme
            if scheme not in ("redis", "rediss", "unix"):
                raise ServiceError(
                    f"{REDIS_URL_ENV} must be a redis://, rediss:// or unix:// URL, "
                    f"not '{redact_url(self.redis_url)}'."
                )

    @property
    def embedded(self) -> bool:
        return self.database_url is None and self.redis_url is None

    @property
    def bus_url(self) -> str | None:
        """Redis pub/sub when there is Redis, else PostgreSQL's LISTEN/NOTIFY, else in process."""
        return self.redis_url or self.database_url

    @property
    def prefix(self) -> str:
        """Names this backpack's channels and counters on services shared by a deployment
        (at most 64 characters: PostgreSQL's NOTIFY channels are short)."""
        if not self.name:
            return f"{self.deployment}:"
        name = self.name
        if len(name) > 40:
            name = hashlib.sha256(name.encode()).hexdigest()[:24]
        return f"{self.deployment}:{name}:"

    def database_name(self, name: str) -> str:
        """Backpack names are `[a-z][a-z0-9-]{1,39}`: quoted, a valid PostgreSQL identifier."""
        return f"{self.deployment}_{name}"

    def for_backpack(self, name: str) -> Services:
        """The services of backpack `name` in a deployment: its own database and files prefix."""
        return replace(
            self,
            name=name,
            database_url=(
                None
                if self.database_url is None
                else with_database(self.database_url, self.database_name(name))
            ),
            files_url=None if self.files_url is None else _join(self.files_url, name),
        )

    async def check(self) -> None:
        """Raise ServiceError unless every configured service answers."""
        if self.database_url is not None:
            await _check_postgres(self.database_url)
        if self.redis_url is not None:
            await _check_redis(self.redis_url)

    # a deployment's per-backpack databases (on the cluster URL, never a backpack's own)

    def url_of(self, database: str) -> str:
        if self.database_url is None:
            raise Unavailable("No PostgreSQL is configured: set BACKPACK_DATABASE_URL.")
        return with_database(self.database_url, database)

    async def create_database(self, database: str) -> None:
        await self._admin(f'CREATE DATABASE "{database}"')

    async def drop_database(self, database: str) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    async def rename_database(self, old: str, new: str) -> None:
        await self._admin(f'ALTER DATABASE "{old}" RENAME TO "{new}"')

    async def rename_database_if_exists(self, old: str, new: str) -> None:
        await self._admin(
            "DO $$ BEGIN IF EXISTS (SELECT FROM pg_database WHERE datname = "
            f'\'{old}\') THEN ALTER DATABASE "{old}" RENAME TO "{new}"; END IF; END $$'
        )

    async def _admin(self, sql: str) -> None:
        if self.database_url is None:
            raise Unavailable("No PostgreSQL is configured: set BACKPACK_DATABASE_URL.")
        await _admin(self.database_url, sql)


def _pool_size(text: str | None) -> int:
    if not text:
        return DEFAULT_POOL
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise ServiceError(f"{POOL_ENV} must be a number of connections from 1 to 1000.")
    return int(text)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def _join(url: str, name: str) -> str:
    if "://" not in url:
        return os.path.join(url, name)
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + "/" + name
    return urlunsplit(parts._replace(path=path))


async def _admin(url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    where = redact_url(url)
    try:
        conn: Any = await asyncpg.connect(url, timeout=_CHECK_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unavailable(f"Cannot connect to PostgreSQL at {where}: {exc}") from None
    try:
        await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        raise Unavailable(f"PostgreSQL at {where} refused '{sql}': {exc}") from None
    finally:
        await conn.close()


async def _check_postgres(url: str) -> None:
    import asyncpg

    where = redact_url(url)
    try:
        conn: Any = await asyncpg.connect(url, timeout=_CHECK_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ServiceError(
            f"{DATABASE_URL_ENV}: PostgreSQL at {where} is unreachable ({exc or 'timed out'})."
        ) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise ServiceError(f"{DATABASE_URL_ENV}: PostgreSQL at {where} refused: {exc}") from None
    try:
        encoding = await conn.fetchval("SHOW server_encoding")
    finally:
        await conn.close()
    if encoding != "UTF8":
        raise ServiceError(
            f"{DATABASE_URL_ENV}: PostgreSQL at {where} uses {encoding}; Backpack needs UTF8."
        )


async def _check_redis(url: str) -> None:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    where = redact_url(url)
    try:
        client = Redis.from_url(
            url, socket_connect_timeout=_CHECK_TIMEOUT, socket_timeout=_CHECK_TIMEOUT
        )
    except ValueError as exc:
        raise ServiceError(f"{REDIS_URL_ENV}: '{where}' is not a Redis URL: {exc}") from None
    try:
        await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        raise ServiceError(
            f"{REDIS_URL_ENV}: Redis at {where} is unreachable ({exc or 'timed out'})."
        ) from None
    finally:
        await client.aclose()
