"""The runtime seam: where and how each backpack runs.

A runtime creates, starts, stops and removes backpacks and tells their status,
their endpoint and their logs. The control plane speaks only this Protocol, so
the `embedded` runtime (every backpack an ASGI app in this process) and the
container runtimes of later issues are interchangeable; every runtime passes
tests/contract/test_runtime_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol

from backpack.api.app import AnsweredRequests, BackpackApp, error_response, request_id_of
from backpack.api.context import InstanceContext
from backpack.api.http import Receive, Scope, Send
from backpack.errors import BackpackError, Conflict, NotFound, Unavailable
from backpack.heap import release_startup_objects
from backpack.platform.backup import Progress as BackupProgress
from backpack.platform.backup import restore_backup
from backpack.platform.engines import (
    POSTGRES,
    SQLITE,
    Progress,
    backup_directory,
    load_from_sqlite,
    move,
    read_engine,
    sqlite_files,
    write_engine,
)
from backpack.platform.instance import (
    DATABASE_FILE,
    build_instance,
    load_secret_key,
    store_secret_key,
)
from backpack.platform.logs import REQUEST_BATCH, InstanceLog, LogFilter, Subscription
from backpack.platform.metrics import InstanceMetrics, metrics_file
from backpack.platform.services import Services
from backpack.platform.sites import SiteServer
from backpack.types import JSONObject

log = logging.getLogger("backpack.runtime")

RUNNING: Final = "running"
STOPPED: Final = "stopped"
FAILED: Final = "failed"
SITE_DIR: Final = "site"
LOG_DIR: Final = "logs"

AdminCheck = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Stats:
    records: int
    users: int
    files: int
    storage_bytes: int
    realtime_connections: int

    def to_json(self) -> JSONObject:
        return {
            "records": self.records,
            "users": self.users,
            "files": self.files,
            "storage_bytes": self.storage_bytes,
            "realtime_connections": self.realtime_connections,
        }


@dataclass(frozen=True, slots=True)
class Status:
    state: str  # running | stopped | failed
    reason: str | None = None


class Runtime(Protocol):
    name: str

    async def create(self, name: str) -> None:
        """Provision a new backpack (storage, key) and start it; Conflict if it exists."""

    def attach(self, name: str) -> None:
        """Know an existing backpack without starting it (a stopped one, at boot)."""

    def names(self) -> list[str]: ...

    async def start(self, name: str) -> None:
        """Serve the backpack; a failure leaves it `failed` with the reason, not raised."""

    async def stop(self, name: str) -> None:
        """Stop serving (requests get 503); its data stays."""

    async def remove(self, name: str) -> None:
        """Stop and delete every byte of the backpack."""

    def status(self, name: str) -> Status: ...

    # Every backpack's endpoint by name (read-only: the router's lookup, one per request).
    endpoints: Mapping[str, Endpoint]

    def endpoint(self, name: str) -> Endpoint | None:
        """Where requests for the backpack go; None for a backpack this runtime doesn't know."""

    def logs(
        self, name: str, after: str | None, limit: int, matcher: LogFilter
    ) -> list[JSONObject]:
        """Log entries strictly after the cursor `after`, oldest first."""

    async def secret_key(self, name: str) -> str: ...

    async def rotate_key(self, name: str, new_key: str) -> None:
        """Make `new_key` the backpack's only key, at once."""

    async def stats(self, name: str) -> Stats: ...

    async def close(self) -> None:
        """Stop every backpack (their data stays)."""


class Endpoint(Protocol):
    # The backpack's own app while it runs in this process, else None: calling it is the
    # same as calling the endpoint, minus a hop (the router's shortcut).
    app: BackpackApp | None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    async def site(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None: ...


class EmbeddedInstance:
    """One backpack of the embedded runtime: its directory, its app when running, its log."""

    def __init__(
        self,
        name: str,
        directory: Path,
        admin_check: AdminCheck | None,
        services: Services | None = None,
        worker: int | None = None,
    ) -> None:
        self.name = name
        self.directory = directory
        self.services = (services or Services()).for_backpack(name)
        self.ctx: InstanceContext | None = None
        self.app: BackpackApp | None = None
        self.state = STOPPED
        self.reason: str | None = None
        self.metrics = InstanceMetrics(directory / metrics_file(worker), worker=worker)
        self.log = InstanceLog(directory / LOG_DIR, worker=worker)
        # Answered, not yet counted and logged: taken in bulk about once a second, or when
        # REQUEST_BATCH piled up, or at each request while someone follows the log live.
        self.answered = AnsweredRequests(self.drain, REQUEST_BATCH)
        self.site_server = SiteServer(directory / SITE_DIR)
        self._admin_check = admin_check
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self.state == RUNNING:
                return
            ctx: InstanceContext | None = None
            try:
                key = load_secret_key(self.directory, {}).value
                ctx = build_instance(self.directory, key, self.storage_services())
                ctx.credentials.admin_check = self._admin_check
                await ctx.open()
            except Exception as exc:  # any failure of one backpack must not stop the others
                reason = exc.message if isinstance(exc, BackpackError) else str(exc)
                self.state, self.reason = FAILED, reason or type(exc).__name__
                log.warning("backpack %s failed to start: %s", self.name, self.reason)
                self.log.event("failed", f"Failed to start: {self.reason}")
                if ctx is not None:
                    await _close_quietly(ctx)
                return
            app = BackpackApp(ctx)
            app.answered = self.answered
            self.ctx, self.app = ctx, app
            self.state, self.reason = RUNNING, None
            self.log.event("started", "Started.")

    def storage_services(self) -> Services:
        """This backpack's services, its records where its `engine` file says."""
        if read_engine(self.directory) == SQLITE:
            return replace(self.services, database_url=None)
        if self.services.database_url is None:
            raise Unavailable(
                f"The records of '{self.name}' are in PostgreSQL, but BACKPACK_DATABASE_URL "
                "is not set."
            )
        return self.services

    async def stop(self) -> None:
        release_startup_objects()  # this backpack may have been open since start-up
        async with self._lock:
            ctx, self.ctx, self.app = self.ctx, None, None
            if self.state != FAILED:
                self.state, self.reason = STOPPED, None
            if ctx is not None:
                await _close_quietly(ctx)
                self.log.event("stopped", "Stopped.")
            self.drain()
            self.metrics.flush()
            self.log.flush()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app
        if app is None:
            await self._unavailable(scope, send)
            return
        await app(scope, receive, send)  # HTTP requests are noted in self.answered

    @property
    def serving(self) -> bool:
        """Whether requests reach the backpack now (else they are answered 503)."""
        return self.app is not None

    async def site(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        if not self.serving:
            await self._unavailable(scope, send)
            return
        server = self.site_server
        request_id = request_id_of(scope)
        scope["backpack.request_id"] = request_id.decode()
        headers = (*extra_headers, (b"x-request-id", request_id))

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await server(scope, receive, send, path, headers)

        await self._observed(app, scope, receive, send)

    async def _observed(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Run `app` (the site), then record the request like the backpack's own."""
        started = time.time()
        status = 500

        async def observed_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, observed_send)
        finally:
            self.answered.note(scope, status, started)

    def drain(self) -> None:
        """Count and log the requests noted since the last drain (before any read of them)."""
        answered = self.answered
        batch = answered.records
        if batch:
            answered.records = []
            self.metrics.observe_many(batch)
            self.log.requests(batch)

    def follow_log(self, after: str | None, matcher: LogFilter) -> Subscription:
        """Follow the log live: what was answered so far is in the backlog, and from now on
        each request is logged as it ends."""
        self.drain()
        subscription = self.log.subscribe(after, matcher)
        self.answered.limit = 1
        return subscription

    def unfollow_log(self, subscription: Subscription) -> None:
        self.log.unsubscribe(subscription)
        if not self.log.streaming:
            self.answered.limit = REQUEST_BATCH

    async def _unavailable(self, scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})
            return
        if scope["type"] != "http":
            return
        why = f": {self.reason}" if self.state == FAILED and self.reason else ""
        error = Unavailable(
            f"The backpack '{self.name}' is {self.state}{why}.",
            {"backpack": self.name, "status": self.state},
        )
        await error_response(error).send(send, [(b"x-request-id", request_id_of(scope))])


async def _close_quietly(ctx: InstanceContext) -> None:
    try:
        await ctx.close()
    except Exception:
        log.exception("closing a backpack failed")


class EmbeddedRuntime:
    """Every backpack an ASGI app in this process, with its own directory under `root`:
    SQLite file, blobs, secret key, settings, users and event bus. With scale-out
    `services`, each backpack's records are in a PostgreSQL database of its own and its
    events and counters on the deployment's Redis (backpack.platform.services)."""

    name = "embedded"

    def __init__(
        self,
        root: Path,
        admin_check: AdminCheck | None = None,
        *,
        services: Services | None = None,
        worker: int | None = None,
    ) -> None:
        self.root = root
        self.admin_check = admin_check
        self.services = services or Services()
        self.worker = worker  # `serve --workers`: this process's number, for its own log files
        self._instances: dict[str, EmbeddedInstance] = {}
        self.endpoints: Mapping[str, EmbeddedInstance] = self._instances

    def _get(self, name: str) -> EmbeddedInstance:
        instance = self._instances.get(name)
        if instance is None:
            raise NotFound(f"There is no backpack '{name}'.", {"name": name})
        return instance

    def _register(self, name: str) -> EmbeddedInstance:
        instance = self._instances.get(name)
        if instance is None:
            instance = EmbeddedInstance(
                name, self.root / name, self.admin_check, self.services, self.worker
            )
            self._instances[name] = instance
        return instance

    async def create(self, name: str) -> None:
        directory = self.root / name
        # No await until the name is registered: of two creates, the second sees the first.
        if name in self._instances or directory.exists():
            raise Conflict(f"A backpack named '{name}' exists already.", {"name": name})
        _make_directory(directory)
        instance = self._register(name)
        engine = POSTGRES if self.services.database_url is not None else SQLITE
        try:
            await asyncio.to_thread(write_engine, directory, engine)
            if engine == POSTGRES:
                await self.services.create_database(self.services.database_name(name))
        except BaseException:
            await self.remove(name)
            raise
        await instance.start()
        if instance.state == FAILED:
            reason = instance.reason
            await self.remove(name)
            raise Unavailable(f"The backpack '{name}' could not start: {reason}.")

    def attach(self, name: str) -> None:
        self._register(name)

    async def forget(self, name: str) -> None:
        """Stop serving `name` in this process and drop it, leaving its data as it is (another
        worker deleted it: its directory may be gone already)."""
        instance = self._instances.pop(name, None)
        if instance is not None:
            with contextlib.suppress(OSError):
                await instance.stop()
            with contextlib.suppress(OSError):
                instance.log.close()

    def names(self) -> list[str]:
        return list(self._instances)

    async def start(self, name: str) -> None:
        await self._get(name).start()

    async def stop(self, name: str) -> None:
        await self._get(name).stop()

    async def remove(self, name: str) -> None:
        instance = self._instances.pop(name, None)
        if instance is not None:
            await instance.stop()
            instance.log.close()
        if read_engine(self.root / name) == POSTGRES:
            await self.services.drop_database(self.services.database_name(name))
        await asyncio.to_thread(shutil.rmtree, self.root / name, True)

    async def restore(self, name: str, archive: Path) -> None:
        """Make the backpack `name` what the backup `archive` holds, replacing any current one.

        The archive is unpacked and verified beside the backpack first (and, for a
        backpack on PostgreSQL, loaded into a database of its own and compared); the
        current backpack is stopped and swapped out only once that succeeded.
        A restored backpack keeps the engine of the one it replaces; a new one gets
        the deployment's (PostgreSQL when BACKPACK_DATABASE_URL is set).
        """
        tag = secrets.token_hex(4)
        staging = self.root / f".restore-{name}-{tag}"
        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(restore_backup, archive, staging)
        target = self.root / name
        if target.exists():
            engine = read_engine(target)
        else:
            engine = POSTGRES if self.services.database_url is not None else SQLITE
        loaded: str | None = None
        try:
            if engine == POSTGRES:
                loaded = await self._load_database(staging, f"{self.services.deployment}_r{tag}")
            await asyncio.to_thread(write_engine, staging, engine)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise
        old = self._instances.pop(name, None)
        if old is not None:
            await old.stop()
            old.log.close()
        replaced = self.root / f".replaced-{name}-{tag}"
        await asyncio.to_thread(_swap_in, staging, target, replaced)
        if loaded is not None:
            final = self.services.database_name(name)
            retired = f"{self.services.deployment}_o{tag}"
            await self.services.rename_database_if_exists(final, retired)
            await self.services.rename_database(loaded, final)
            await self.services.drop_database(retired)
        instance = self._register(name)
        instance.log.event("restored", "Restored from a backup.")
        await instance.start()

    async def _load_database(self, staging: Path, database: str) -> str:
        """Load the SQLite file of an unpacked backup into the new database `database`."""
        from backpack.storage.postgres import PostgresStorage

        await self.services.create_database(database)
        try:
            store = PostgresStorage(self.services.url_of(database))
            await store.open()
            try:
                await load_from_sqlite(staging / DATABASE_FILE, store)
            finally:
                await store.close()
        except BaseException:
            await self.services.drop_database(database)
            raise
        for path in sqlite_files(staging / DATABASE_FILE):
            path.unlink(missing_ok=True)
        return database

    async def backup(self, name: str, out: Path, progress: BackupProgress | None = None) -> None:
        """Write backpack `name`'s backup archive to `out` while it keeps serving.

        SQLite backpacks are snapshot by SQLite itself; a PostgreSQL backpack's
        records are copied from one snapshot into an SQLite file of the archive's
        layout, so every backup restores on either engine.
        """
        instance = self._get(name)
        ctx = instance.ctx
        await backup_directory(
            instance.directory,
            out,
            name=name,
            services=instance.storage_services(),
            live=ctx.data.storage if ctx is not None else None,
            progress=progress,
        )

    async def move(self, name: str, to: str, progress: Progress | None = None) -> dict[str, int]:
        """Move the stopped backpack `name`'s records to the engine `to` (sqlite or postgres)."""
        instance = self._get(name)
        if instance.state == RUNNING:
            raise Conflict(f"Stop the backpack '{name}' before moving it.", {"name": name})
        counts = await move(instance.directory, name, self.services, to, progress)
        instance.log.event("moved", f"Moved to {to}.")
        return counts

    def status(self, name: str) -> Status:
        instance = self._get(name)
        return Status(instance.state, instance.reason)

    def endpoint(self, name: str) -> EmbeddedInstance | None:
        return self._instances.get(name)

    def instance(self, name: str) -> EmbeddedInstance:
        return self._get(name)

    def logs(
        self, name: str, after: str | None, limit: int, matcher: LogFilter
    ) -> list[JSONObject]:
        instance = self._get(name)
        instance.drain()
        return instance.log.read(after, limit, matcher)

    async def secret_key(self, name: str) -> str:
        instance = self._get(name)
        if instance.ctx is not None:
            return instance.ctx.secret_key
        return (await asyncio.to_thread(load_secret_key, instance.directory, {})).value

    async def rotate_key(self, name: str, new_key: str) -> None:
        instance = self._get(name)
        await asyncio.to_thread(store_secret_key, instance.directory, new_key)
        if instance.ctx is not None:
            instance.ctx.rotate_secret_key(new_key)
        instance.log.event("key_rotated", "The secret key was rotated.")

    async def stats(self, name: str) -> Stats:
        instance = self._get(name)
        ctx = instance.ctx
        disk = await asyncio.to_thread(_disk_usage, instance.directory)
        if ctx is None:
            return Stats(0, 0, 0, disk, 0)
        records = await ctx.data.count_records()
        system = await ctx.data.count_records(system=True)
        return Stats(
            records=sum(records.values()),
            users=system.get("_users", 0),
            files=system.get("_files", 0),
            storage_bytes=disk,
            realtime_connections=len(ctx.realtime.connections),
        )

    async def close(self) -> None:
        for instance in list(self._instances.values()):
            await instance.stop()
            instance.log.close()


def _swap_in(staging: Path, target: Path, replaced: Path) -> None:
    if target.exists():
        os.replace(target, replaced)
    os.replace(staging, target)
    shutil.rmtree(replaced, ignore_errors=True)


def _make_directory(directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.mkdir(mode=0o700)


def _disk_usage(directory: Path) -> int:
    total = 0
    for folder, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total
