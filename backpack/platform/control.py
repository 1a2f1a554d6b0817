"""The control plane: admins, the registry of backpacks and what is done to them.

HTTP-free: platform/admin_api.py translates requests to these calls, the CLI
calls them directly. The registry (the control store) says which backpacks
exist and whether they should run; the runtime runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from backpack.auth.credentials import mint_console_token
from backpack.core.clock import now_rfc3339
from backpack.errors import BackpackError, BadRequest, NotFound
from backpack.platform.admins import AdminService
from backpack.platform.instance import new_secret_key
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
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.addressing = addressing or Addressing()
        self.admins = AdminService(store)
        self.services = services or Services()
        self.runtime = EmbeddedRuntime(
            data_dir / INSTANCES_DIR, self._is_admin_token, services=self.services
        )
        self.sample_interval = sample_interval
        self._stats: dict[str, Stats] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._serving = False  # in the CLI the registry, not the runtime, tells the status

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
        if serve:
            await asyncio.to_thread(_remove_leftovers, self.data_dir)
        await self.store.open()
        self._serving = serve
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
            _flush(self.runtime.instance(name))

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

    async def list_instances(self, origin: str) -> list[JSONObject]:
        return [self._json(record, origin) for record in await self.store.list_instances()]

    async def get_instance(self, name: str, origin: str) -> JSONObject:
        record = await self._record(name)
        if self.runtime.status(name).state == RUNNING:
            await self._refresh_stats(name)
        return self._json(record, origin)

    async def create_instance(self, name: object, origin: str) -> JSONObject:
        checked = check_name(name)
        record = InstanceRecord(checked, self.runtime.name, RUNNING, now_rfc3339(), {})
        await self.store.insert_instance(record)  # of two creates of one name, one wins here
        try:
            await self.runtime.create(checked)
        except BaseException:
            await self.store.delete_instance(checked)
            raise
        await self._refresh_stats(checked)
        log.info("created backpack %s", checked)
        return self._json(record, origin)

    async def delete_instance(self, name: str, confirm: str | None) -> None:
        await self._record(name)
        if confirm != name:
            raise BadRequest(
                f"Deleting removes every byte of '{name}': confirm with ?confirm={name}.",
                {"confirm": name},
            )
        await self.runtime.remove(name)
        await self.store.delete_instance(name)
        self._stats.pop(name, None)
        log.info("deleted backpack %s", name)

    async def start_instance(self, name: str, origin: str) -> JSONObject:
        record = await self.store.update_instance((await self._record(name)).name, status=RUNNING)
        await self.runtime.start(name)
        return self._json(record, origin)

    async def stop_instance(self, name: str, origin: str) -> JSONObject:
        record = await self.store.update_instance((await self._record(name)).name, status=STOPPED)
        await self.runtime.stop(name)
        return self._json(record, origin)

    async def restart_instance(self, name: str, origin: str) -> JSONObject:
        record = await self.store.update_instance((await self._record(name)).name, status=RUNNING)
        await self.runtime.stop(name)
        await self.runtime.start(name)
        return self._json(record, origin)

    async def restore_instance(self, name: str, archive: Path, origin: str) -> JSONObject:
        """Rebuild backpack `name` (new, or replacing the current one) from a backup archive."""
        checked = check_name(name)
        record = await self.store.get_instance(checked)
        if record is None:
            record = InstanceRecord(checked, self.runtime.name, RUNNING, now_rfc3339(), {})
            await self.store.insert_instance(record)
            try:
                await self.runtime.restore(checked, archive)
            except BaseException:
                await self.store.delete_instance(checked)
                raise
        else:
            await self.runtime.restore(checked, archive)
            record = await self.store.update_instance(checked, status=RUNNING)
        await self._refresh_stats(checked)
        return self._json(record, origin)

    def _json(self, record: InstanceRecord, origin: str) -> JSONObject:
        status = self.runtime.status(record.name) if self._serving else Status(record.status)
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
        await self._record(name)
        return {"secret_key": await self.runtime.secret_key(name)}

    async def rotate_key(self, name: str) -> JSONObject:
        await self._record(name)
        key = new_secret_key()
        await self.runtime.rotate_key(name, key)
        return {"secret_key": key}

    async def console_token(self, name: str, origin: str) -> JSONObject:
        await self._record(name)
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
        await self._record(name)
        return self.runtime.instance(name).metrics

    def all_metrics(self) -> Mapping[str, InstanceMetrics]:
        return {name: self.runtime.instance(name).metrics for name in self.runtime.names()}

    async def instance(self, name: str) -> EmbeddedInstance:
        await self._record(name)
        return self.runtime.instance(name)


def _remove_leftovers(data_dir: Path) -> None:
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


def _flush(instance: EmbeddedInstance) -> None:
    instance.metrics.flush()
    instance.log.flush()
