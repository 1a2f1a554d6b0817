"""One backpack from a data directory: its secret key, its database and its app."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from backpack.api.app import BackpackApp
from backpack.api.context import InstanceContext
from backpack.auth.credentials import Credentials
from backpack.auth.service import AuthService
from backpack.blobs import open_blob_store
from backpack.bus import open_bus
from backpack.core.ratelimit import MemoryRateLimitStore, RateLimiter, RateLimitStore
from backpack.core.records import DataService
from backpack.core.settings import SettingsService
from backpack.core.storage import Storage
from backpack.errors import BadRequest
from backpack.files.service import FilesService
from backpack.fsutil import fsync_dir
from backpack.platform.services import Services
from backpack.realtime.connection import RealtimeLimits
from backpack.realtime.hub import RealtimeHub
from backpack.storage.sqlite.adapter import SqliteStorage

SECRET_KEY_ENV = "BACKPACK_SECRET_KEY"
KEY_FILE = "secret_key"
DATABASE_FILE = "backpack.db"
BLOBS_DIR = "blobs"
_KEY_PATTERN = re.compile(r"bpk_[A-Za-z0-9_-]{32,200}")


@dataclass(frozen=True)
class SecretKey:
    value: str
    generated: bool  # True when made on this start (show it once)


def new_secret_key() -> str:
    return "bpk_" + secrets.token_urlsafe(32)


def load_secret_key(data_dir: Path, environ: dict[str, str] | None = None) -> SecretKey:
    """From BACKPACK_SECRET_KEY, else DIR/secret_key, else a new key stored there with mode 0600."""
    env = os.environ if environ is None else environ
    from_env = env.get(SECRET_KEY_ENV)
    if from_env:
        if not _KEY_PATTERN.fullmatch(from_env):
            raise BadRequest(
                f"{SECRET_KEY_ENV} must be 'bpk_' and 32 or more letters, digits, '_' or '-'."
            )
        return SecretKey(from_env, False)
    path = data_dir / KEY_FILE
    if path.exists():
        value = path.read_text().strip()
        if not _KEY_PATTERN.fullmatch(value):
            raise BadRequest(f"{path} does not hold a valid secret key.")
        return SecretKey(value, False)
    value = new_secret_key()
    store_secret_key(data_dir, value)
    return SecretKey(value, True)


def store_secret_key(data_dir: Path, value: str) -> None:
    """Write DIR/secret_key (mode 0600) atomically and durably."""
    if not _KEY_PATTERN.fullmatch(value):
        raise BadRequest("A secret key is 'bpk_' and 32 or more letters, digits, '_' or '-'.")
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(data_dir)


def open_storage(data_dir: Path, services: Services) -> Storage:
    """The backpack's records: PostgreSQL when configured, else SQLite in its directory."""
    if services.database_url is not None:
        from backpack.storage.postgres import PostgresStorage

        return PostgresStorage(services.database_url, max_size=services.database_pool)
    return SqliteStorage(str(data_dir / DATABASE_FILE))


def rate_limit_store(services: Services, kind: str = "ratelimit:") -> RateLimitStore:
    """Counters shared by every worker (Redis) when there is Redis, else this process's own;
    named `services.prefix` + `kind`."""
    if services.redis_url is not None:
        from backpack.cache.ratelimit import RedisRateLimitStore

        return RedisRateLimitStore(services.redis_url, prefix=services.prefix + kind)
    return MemoryRateLimitStore()


def build_instance(
    data_dir: Path, secret_key: str, services: Services | None = None
) -> InstanceContext:
    """Every service of one backpack, wired to its storage; `open()` it before use.

    `services` defaults to the environment's (backpack.platform.services).
    """
    services = Services.from_env() if services is None else services
    data = DataService(open_storage(data_dir, services), cursor_key=secret_key.encode())
    settings = SettingsService(data)
    auth = AuthService(data, settings)
    blobs = open_blob_store(services.files_url or str(data_dir / BLOBS_DIR))
    files = FilesService(data, blobs, settings, signing_key=secret_key.encode())
    bus = open_bus(services.bus_url, prefix=services.prefix + "bus:")
    realtime = RealtimeHub(data, auth, files, settings, bus, secret_key, RealtimeLimits.from_env())
    credentials = Credentials(auth, secret_key)
    realtime.credentials = credentials
    return InstanceContext(
        data=data,
        auth=auth,
        settings=settings,
        files=files,
        realtime=realtime,
        credentials=credentials,
        rate_limiter=RateLimiter(rate_limit_store(services)),
    )


def build_instance_app(
    data_dir: Path, secret_key: str, services: Services | None = None
) -> BackpackApp:
    return BackpackApp(build_instance(data_dir, secret_key, services))
