"""The control plane: admins, the registry of backpacks and what is done to them.

HTTP-free: platform/admin_api.py translates requests to these calls, the CLI
calls them directly. The registry (the control store) says which backpacks
exist and whether they should run; the runtime runs them.

Under `backpack serve --workers N` each worker has a control plane of its own
on the one registry. A change made through one worker is written to the
registry first; every worker reconciles its runtime with the registry a few
times a second: it starts new backpacks, stops stopped ones, forgets deleted
ones, restarts one whose `generation` counter moved (restored, restarted) and
reloads the key of one whose `key_version` moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from backpack.auth.credentials import mint_console_token
from backpack.core.clock import now_rfc3339
from backpack.core.ratelimit import RateLimiter
from backpack.errors import BackpackError, BadRequest, NotFound
from backpack.platform.admins import AdminService
from backpack.platform.engines import POSTGRES, read_engine
from backpack.platform.instance import load_secret_key, new_secret_key, rate_limit_store
from backpack.platform.metrics import InstanceMetrics
from backpack.platform.names import check_name
from backpack.platform.runtime import (
    FAILED,
    RUNNING,
    STOPPED,
    EmbeddedInstance,
    EmbeddedRuntime,
    Stats,
    Status,
)
from backpack.platform.services import Services
from backpack.platform.store import ControlStore, InstanceRecord
from backpack.types import JSONObject

log = logging.getLogger("backpack.control")

INSTANCES_DIR: Final = "instances"
SCRATCH_DIR: Final = "tmp"
CONSOLE_TOKEN_TTL: Final = 15 * 60  # seconds
SAMPLE_INTERVAL: Final = 60.0  # seconds between gauge samples (records, users, storage …)
FLUSH_INTERVAL: Final = 1.0  # seconds between log and metrics flushes to disk
RECONCILE_INTERVAL: Final = 0.3  # seconds between a worker's looks at the registry
GENERATION: Final = "generation"  # config counters (ControlStore.bump_instance)
KEY_VERSION: Final = "key_version"
PROVISIONING: Final = "provisioning"  # config flag while a worker creates the backpack
RELEASE_TIMEOUT: Final = 5.0  # seconds to wait for the other workers to close a backpack


@dataclass(frozen=True, slots=True)
class _Marks:
    """What a worker last applied of a registry record."""

    status: str
    generation: int
    key_version: int

    @classmethod
    def of(cls, record: InstanceRecord) -> _Marks:
        def counter(key: str) -> int:
            value = record.config.get(key, 0)
            return value if isinstance(value, int) else 0

        return cls(record.status, counter(GENERATION), counter(KEY_VERSION))


@dataclass(frozen=True, slots=True)
class Addressing:
    """How backpacks are reached from outside: `NAME.DOMAIN[:PORT]` and `/i/NAME`."""

    domain: str = "localhost"
    port: int = 8000
    scheme: str = "http"

    def host_url(self, name: str) -> str:
        default = (self.scheme, self.port) in (("http", 80), ("https", 443))
        port = "" if default else f":{self.port}"
        return f"{self.scheme}://{name}.{self.domain}{port}"


class ControlPlane:
    def __init__(
        self,
        data_dir: Path,
        store: ControlStore,
        *,
        addressing: Addressing | None = None,
        sample_interval: float = SAMPLE_INTERVAL,
        services: Services | None = None,
        runtime: EmbeddedRuntime | None = None,
        worker: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.addressing = addressing or Addressing()
        self.services = services or Services()
        # Sign-in attempts count across workers (Redis), like a backpack's own limits. "_" is
        # in no backpack name: the counters are apart from every backpack's.
        limits = rate_limit_store(self.services, "_control:ratelimit:")
        self.admins = AdminService(store, rate_limiter=RateLimiter(limits))
        self.worker = worker  # `serve --workers`: this process's number (None: the only one)
        self.runtime = runtime or EmbeddedRuntime(
            data_dir / INSTANCES_DIR, self._is_admin_token, services=self.services, worker=worker
        )
        self.sample_interval = sample_interval
        self._stats: dict[str, Stats] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._serving = False  # in the CLI the registry, not the runtime, tells the status
        self._applied: dict[str, _Marks] = {}  # workers: the registry as this one last saw it
        self._locks: dict[str, asyncio.Lock] = {}  # workers: one change at a time per backpack

    async def _is_admin_token(self, token: str) -> bool:
        try:
            await self.admins.authenticate(token)
        except BackpackError:
            return False
        return True

    # lifecycle

    async def open(self, *, serve: bool = True) -> None:
        """Open the registry and bring every backpack back as it was.

        Without `serve` (the CLI), backpacks are known but not started, and no
        background sampling runs.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if serve and self.worker is None:  # workers: the supervisor did, once for all
            await asyncio.to_thread(remove_leftovers, self.data_dir)
        await self.store.open()
        await self.admins.rate_limiter.store.open()
        self._serving = serve
        if serve and self.worker is not None:
            await self.reconcile()
            self._tasks = [
                asyncio.create_task(self._every(self.sample_interval, self.sample)),
                asyncio.create_task(self._every(FLUSH_INTERVAL, self.flush)),
                asyncio.create_task(self._every(RECONCILE_INTERVAL, self.reconcile)),
            ]
            return
        for record in await self.store.list_instances():
            self.runtime.attach(record.name)
            if serve and record.status == RUNNING:
                await self.runtime.start(record.name)
        if not serve:
            return
        self._tasks = [
            asyncio.create_task(self._every(self.sample_interval, self.sample)),
            asyncio.create_task(self._every(FLUSH_INTERVAL, self.flush)),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.runtime.close()
        await self.admins.rate_limiter.store.close()
        await self.store.close()

    async def _every(self, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception:
                log.exception("periodic control-plane work failed")

    async def sample(self) -> None:
        """Record every running backpack's gauges (records, users, storage, connections)."""
        for record in await self.store.list_instances():
            if self.runtime.status(record.name).state == RUNNING:
                await self._refresh_stats(record.name)

    async def flush(self) -> None:
        # On the event loop: the log and the metrics are not thread-safe, and a flush is
        # an append of what a second or so of requests wrote (no fsync).
        for name in self.runtime.names():
            try:
                _flush(self.runtime.instance(name))
            except FileNotFoundError:
                if self.worker is None:
                    raise
                # Another worker deleted the backpack; this one forgets it at its next look.

    async def reconcile(self) -> None:
        """Bring this worker's runtime in line with the registry (another worker changed it)."""
        records = {record.name: record for record in await self.store.list_instances()}
        for name in self.runtime.names():
            if name not in records and not self._lock(name).locked():
                async with self._lock(name):
                    await self.runtime.forget(name)
                self._forget(name)
        for record in records.values():
            if record.config.get(PROVISIONING):
                continue  # a worker is creating it
            lock = self._lock(record.name)
            if lock.locked() or self._applied.get(record.name) == _Marks.of(record):
                continue
            async with lock:
                await self._apply(record)

    async def _apply(self, record: InstanceRecord) -> None:
        """Make this worker's copy of the backpack what `record` says (its lock held)."""
        name, marks = record.name, _Marks.of(record)
        applied = self._applied.get(name)
        self._applied[name] = marks
        if applied is None or applied.generation != marks.generation:
            if applied is None:
                self.runtime.attach(name)
            else:
                await self.runtime.stop(name)
            if record.status == RUNNING:
                await self.runtime.start(name)
        elif applied.status != marks.status:
            if record.status == RUNNING:
                await self.runtime.start(name)
            else:
                await self.runtime.stop(name)
        elif applied.key_version != marks.key_version:
            instance = self.runtime.instance(name)
            if instance.ctx is not None:
                key = await asyncio.to_thread(load_secret_key, instance.directory, {})
                instance.ctx.rotate_secret_key(key.value)

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def _changing(self, name: str) -> AsyncIterator[None]:
        """Hold backpack `name`'s lock for this worker's own change, so `reconcile` keeps off."""
        if self.worker is None:
            yield
            return
        async with self._lock(name):
            yield

    async def _release(self, name: str) -> None:
        """Workers: have every worker close backpack `name` (it is about to be deleted or
        replaced): mark it stopped, stop it here, and wait until the others let go of its
        database (PostgreSQL), or for two looks of theirs (SQLite)."""
        if self.worker is None:
            return
        record = await self.store.update_instance(name, status=STOPPED)
        await self.runtime.stop(name)
        self._applied[name] = _Marks.of(record)
        if (
            self.services.database_url is None
            or read_engine(self.data_dir / INSTANCES_DIR / name) != POSTGRES
        ):
            await asyncio.sleep(2 * RECONCILE_INTERVAL + 0.1)
            return
        database = self.services.database_name(name)
        deadline = time.monotonic() + RELEASE_TIMEOUT
        while time.monotonic() < deadline and await _sessions(self.services.database_url, database):
            await asyncio.sleep(0.05)

    def _forget(self, name: str) -> None:
        self._applied.pop(name, None)
        self._stats.pop(name, None)
        self._locks.pop(name, None)

    async def _settled(self, record: InstanceRecord, counter: str | None = None) -> None:
        """After this worker's change: tell the others (bump `counter`), note it as applied."""
        if self.worker is None:
            return
        if counter is not None:
            record = await self.store.bump_instance(record.name, counter)
        self._applied[record.name] = _Marks.of(record)

    async def _refresh_stats(self, name: str) -> Stats:
        stats = await self.runtime.stats(name)
        self._stats[name] = stats
        self.runtime.instance(name).metrics.set_gauges(
            realtime_connections=stats.realtime_connections,
            records=stats.records,
            users=stats.users,
            storage_bytes=stats.storage_bytes,
        )
        return stats

    # instances

    async def _record(self, name: str) -> InstanceRecord:
        record = await self.store.get_instance(name) if isinstance(name, str) else None
        if record is None:
            raise NotFound(f"There is no backpack '{str(name)[:60]}'.", {"name": str(name)[:60]})
        return record

    async def _known(self, name: str, *, locked: bool = False) -> InstanceRecord:
        """The record of `name`; a worker first catches up with it if another changed it
        since this one last looked (`locked`: the caller holds the backpack's lock)."""
        record = await self._record(name)
        if self.worker is None or record.config.get(PROVISIONING):
            return record
        if self._applied.get(record.name) != _Marks.of(record):
            if locked:
                await self._apply(record)
            else:
                async with self._lock(record.name):
                    if self._applied.get(record.name) != _Marks.of(record):
                        await self._apply(record)
        return record

    async def list_instances(self, origin: str) -> list[JSONObject]:
        return [self._json(record, origin) for record in await self.store.list_instances()]

    async def get_instance(self, name: str, origin: str) -> JSONObject:
        record = await self._known(name)
        if self._runs(name):
            await self._refresh_stats(name)
        return self._json(record, origin)

    def _runs(self, name: str) -> bool:
        known = self.runtime.endpoint(name) is not None
        return known and self.runtime.status(name).state == RUNNING

    async def create_instance(self, name: object, origin: str) -> JSONObject:
        checked = check_name(name)
        async with self._changing(checked):
            record = await self._provision(checked, lambda: self.runtime.create(checked))
        await self._refresh_stats(checked)
        log.info("created backpack %s", checked)
        return self._json(record, origin)

    async def _provision(self, name: str, make: Callable[[], Awaitable[None]]) -> InstanceRecord:
        """Register the new backpack `name`, `make()` it (create or restore), and unregister it
        again if that fails. Other workers leave it alone until it is made."""
        config: JSONObject = {PROVISIONING: True} if self.worker is not None else {}
        record = InstanceRecord(name, self.runtime.name, RUNNING, now_rfc3339(), config)
        await self.store.insert_instance(record)  # of two creates of one name, one wins here
        try:
            await make()
        except BaseException:
            await self.store.delete_instance(name)
            raise
        if self.worker is not None:
            record = await self.store.update_instance(name, config={})
            await self._settled(record)
        return record

    async def delete_instance(self, name: str, confirm: str | None) -> None:
        await self._record(name)
        if confirm != name:
            raise BadRequest(
                f"Deleting removes every byte of '{name}': confirm with ?confirm={name}.",
                {"confirm": name},
            )
        async with self._changing(name):
            await self._release(name)
            await self.runtime.remove(name)
            await self.store.delete_instance(name)
        self._forget(name)
        log.info("deleted backpack %s", name)

    async def start_instance(self, name: str, origin: str) -> JSONObject:
        await self._record(name)
        async with self._changing(name):
            await self._known(name, locked=True)
            record = await self.store.update_instance(name, status=RUNNING)
            await self.runtime.start(name)
            await self._settled(record)
        return self._json(record, origin)

    async def stop_instance(self, name: str, origin: str) -> JSONObject:
        await self._record(name)
        async with self._changing(name):
            await self._known(name, locked=True)
            record = await self.store.update_instance(name, status=STOPPED)
            await self.runtime.stop(name)
            await self._settled(record)
        return self._json(record, origin)

    async def restart_instance(self, name: str, origin: str) -> JSONObject:
        await self._record(name)
        async with self._changing(name):
            await self._known(name, locked=True)
            record = await self.store.update_instance(name, status=RUNNING)
            await self.runtime.stop(name)
            await self.runtime.start(name)
            await self._settled(record, GENERATION)
        return self._json(record, origin)

    async def restore_instance(self, name: str, archive: Path, origin: str) -> JSONObject:
        """Rebuild backpack `name` (new, or replacing the current one) from a backup archive."""
        checked = check_name(name)
        async with self._changing(checked):
            record = await self.store.get_instance(checked)
            if record is None:
                restore = self.runtime.restore
                record = await self._provision(checked, lambda: restore(checked, archive))
            else:
                await self._release(checked)
                try:
                    await self.runtime.restore(checked, archive)
                finally:  # restored, or (refused) as it was: running everywhere again
                    record = await self.store.update_instance(checked, status=RUNNING)
                    await self.runtime.start(checked)
                    await self._settled(record, GENERATION)
        await self._refresh_stats(checked)
        return self._json(record, origin)

    def _json(self, record: InstanceRecord, origin: str) -> JSONObject:
        # A worker may not know yet a backpack another one is creating.
        known = self._serving and self.runtime.endpoint(record.name) is not None
        status = self.runtime.status(record.name) if known else Status(record.status)
        stats = self._stats.get(record.name)
        path_base = f"{origin}/i/{record.name}"
        host_base = self.addressing.host_url(record.name)
        body: JSONObject = {
            "name": record.name,
            "status": status.state,
            "runtime": record.runtime,
            "urls": {
                "api": path_base,
                "site": f"{path_base}/site/",
                "host": host_base,
                "host_site": f"{host_base}/",
            },
            "created": record.created,
            "stats": stats.to_json() if stats is not None else None,
        }
        if status.state == FAILED:
            body["reason"] = status.reason
        return body

    # keys and tokens

    async def secret_key(self, name: str) -> JSONObject:
        await self._known(name)
        return {"secret_key": await self.runtime.secret_key(name)}

    async def rotate_key(self, name: str) -> JSONObject:
        await self._record(name)
        key = new_secret_key()
        async with self._changing(name):
            record = await self._known(name, locked=True)
            await self.runtime.rotate_key(name, key)
            await self._settled(record, KEY_VERSION)  # the other workers reload it
        return {"secret_key": key}

    async def console_token(self, name: str, origin: str) -> JSONObject:
        await self._known(name)
        key = await self.runtime.secret_key(name)
        now = time.time()
        token = mint_console_token(key, CONSOLE_TOKEN_TTL, now)
        return {
            "token": token,
            "expires_in": CONSOLE_TOKEN_TTL,
            "api": f"{origin}/i/{name}",
        }

    # monitoring

    async def metrics_of(self, name: str) -> InstanceMetrics:
        await self._known(name)
        instance = self.runtime.instance(name)
        instance.drain()
        return instance.metrics

    def all_metrics(self) -> Mapping[str, InstanceMetrics]:
        instances = [self.runtime.instance(name) for name in self.runtime.names()]
        for instance in instances:
            instance.drain()
        return {instance.name: instance.metrics for instance in instances}

    async def instance(self, name: str) -> EmbeddedInstance:
        await self._known(name)
        return self.runtime.instance(name)


def remove_leftovers(data_dir: Path) -> None:
    """What an interrupted upload, backup or restore left: scratch files and dot-folders."""
    shutil.rmtree(data_dir / SCRATCH_DIR, ignore_errors=True)
    root = data_dir / INSTANCES_DIR
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.name.startswith("."):  # never a backpack: names start with a letter
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_dir():
            for inner in entry.glob(".backup-*"):
                shutil.rmtree(inner, ignore_errors=True)


async def _sessions(cluster_url: str, database: str) -> int:
    """How many sessions PostgreSQL has open on `database`."""
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(cluster_url, timeout=10)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
    finally:
        await conn.close()
    return count


def _flush(instance: EmbeddedInstance) -> None:
    instance.drain()
    instance.metrics.flush()
    instance.log.flush()
