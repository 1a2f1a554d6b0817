"""The event bus on PostgreSQL LISTEN/NOTIFY: one connection notifies, one listens.

A topic is a channel under a prefix (hashed when the name would pass 63
bytes). NOTIFY carries text under 8000 bytes, so each payload travels framed:
`t<seq>:<utf-8 text>`, `b<seq>:<base64>` for other bytes, or `s<seq>:<id>`
when it is too large, the payload then being a row of the unlogged
`backpack_bus_spill` table (kept `spill_ttl` seconds). The sequence number
keeps equal payloads of one batch apart, since PostgreSQL folds identical
notifications of a transaction into one. Losses surface as in the Redis bus:
a `Resync` on the prefix's control channel from a publisher that dropped
payloads, and to every subscription after the listener reconnected.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import secrets
import time
from typing import Any, Final

from backpack.bus.fanout import Backoff, Fanout, Outbox
from backpack.core.bus import BusSubscription, Resync, check_topic

try:
    import asyncpg  # type: ignore[import-untyped]
except ImportError as error:  # pragma: no cover - the extra is installed in development
    raise ImportError(
        "The PostgreSQL event bus needs asyncpg: pip install 'backpack-baas[postgres]'."
    ) from error

log = logging.getLogger("backpack.bus")

DEFAULT_CAPACITY: Final = 10_000
DEFAULT_PREFIX: Final = "backpack:"
NOTIFY_LIMIT: Final = 8000
CHANNEL_LIMIT: Final = 63
BATCH_PAYLOADS: Final = 512
BATCH_BYTES: Final = 4 << 20
FLUSH_ON_CLOSE: Final = 2.0
_CONTROL: Final = "!resync"  # topics never hold "!"
_TRANSPORT_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_SCHEMA_LOCK: Final = 0x6270627573  # "bpbus"
_SCHEMA: Final = """
CREATE UNLOGGED TABLE IF NOT EXISTS backpack_bus_spill (
    id text PRIMARY KEY,
    payload bytea NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
)
"""


class PostgresBus:
    """`PostgresBus("postgresql://user@host/db")`; `prefix` keeps deployments sharing one apart."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        capacity: int = DEFAULT_CAPACITY,
        outbox_payloads: int = 10_000,
        outbox_bytes: int = 64 << 20,
        connect_timeout: float = 5.0,
        spill_ttl: float = 60.0,
    ) -> None:
        if len((prefix + _CONTROL).encode()) > CHANNEL_LIMIT:
            raise ValueError("A PostgreSQL bus prefix has at most 56 bytes.")
        self.url = url
        self.prefix = prefix
        self.connect_timeout = connect_timeout
        self.spill_ttl = spill_ttl
        self._control = prefix + _CONTROL
        self._fanout = Fanout(capacity, self._on_idle)
        self._outbox = Outbox(outbox_payloads, outbox_bytes)
        self._topic_of: dict[str, str] = {}  # channel → topic, for the topics listened to
        self._inbox: asyncio.Queue[tuple[str, str] | Resync] = asyncio.Queue()
        self._listener: Any = None  # the connected listening connection, if any
        self._lock = asyncio.Lock()  # one operation at a time on the listener
        self._first_attempt = asyncio.Event()
        self._publisher_tried = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._chores: set[asyncio.Task[None]] = set()
        self._sequence = 0
        self._sending = False
        self._last_sweep = 0.0
        self._closed = False

    def channel(self, topic: str) -> str:
        """The NOTIFY channel of a topic."""
        name = self.prefix + topic
        if len(name.encode()) > CHANNEL_LIMIT:
            # Topics never hold "#": a hashed name cannot be another topic's.
            name = "#" + hashlib.sha256(name.encode()).hexdigest()[: CHANNEL_LIMIT - 1]
        return name

    async def _connect(self, name: str) -> Any:
        settings = {"application_name": name}
        return await asyncpg.connect(
            self.url, timeout=self.connect_timeout, server_settings=settings
        )

    async def open(self) -> None:
        """Starts both connections; waits for their first attempts, never raises for them."""
        self._closed = False
        self._tasks = [
            asyncio.create_task(self._listen_forever()),
            asyncio.create_task(self._dispatch_forever()),
            asyncio.create_task(self._publish_forever()),
        ]
        await self._first_attempt.wait()
        await self._publisher_tried.wait()

    def publish(self, topic: str, payload: bytes) -> None:
        if not isinstance(payload, bytes):
            raise TypeError("Bus payloads are bytes.")
        if not self._closed:
            self._outbox.put(topic, payload)

    async def subscribe(self, topic: str) -> BusSubscription:
        check_topic(topic)
        if self._closed:
            return self._fanout.ended(topic)
        if self._sending:
            # What was published before must not reach the new subscription.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.reached(self._outbox.queued), FLUSH_ON_CLOSE)
        subscription = self._fanout.add(topic)
        channel = self.channel(topic)
        async with self._lock:
            listener = self._listener
            if listener is not None and channel not in self._topic_of:
                try:
                    await listener.add_listener(channel, self._on_notify)
                    self._topic_of[channel] = topic
                except _TRANSPORT_ERRORS:
                    pass  # the reconnect listens again and sends a Resync
        return subscription

    def _on_idle(self, topic: str) -> None:
        if not self._closed:
            task = asyncio.get_running_loop().create_task(self._unlisten(topic))
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)

    async def _unlisten(self, topic: str) -> None:
        channel = self.channel(topic)
        async with self._lock:
            # A subscription may have come back while this waited for the lock.
            listener = self._listener
            if self._fanout.has(topic) or listener is None or channel not in self._topic_of:
                return
            del self._topic_of[channel]
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                await listener.remove_listener(channel, self._on_notify)

    def _on_notify(self, connection: Any, pid: int, channel: str, text: str) -> None:
        self._inbox.put_nowait((channel, text))

    async def _listen_forever(self) -> None:
        backoff = Backoff()
        reconnect = False
        while not self._closed:
            listener: Any = None
            try:
                listener = await self._connect("backpack-bus-listener")
                gone = asyncio.Event()
                listener.add_termination_listener(lambda _connection, gone=gone: gone.set())
                async with self._lock:
                    self._topic_of = {}
                    await listener.add_listener(self._control, self._on_notify)
                    for topic in self._fanout.topics():
                        channel = self.channel(topic)
                        await listener.add_listener(channel, self._on_notify)
                        self._topic_of[channel] = topic
                    self._listener = listener
                backoff.reset()
                if reconnect:
                    self._inbox.put_nowait(Resync("the bus reconnected"))
                self._first_attempt.set()
                await gone.wait()
            except Exception as error:  # a transport loop outlives any failure
                # Warn once per outage; the retries go to the debug log.
                log.log(
                    logging.DEBUG if backoff.failures else logging.WARNING,
                    "PostgreSQL bus: listening failed (%s); reconnecting",
                    error,
                )
            finally:
                self._listener = None
                self._first_attempt.set()
                if listener is not None:
                    listener.terminate()
            if self._closed:
                return
            reconnect = True
            await backoff.sleep()

    async def _dispatch_forever(self) -> None:
        while True:
            item = await self._inbox.get()
            if isinstance(item, Resync):
                self._fanout.resync_all(item.reason)
                continue
            channel, text = item
            if channel == self._control:
                self._fanout.resync_all("a publisher lost payloads")
                continue
            topic = self._topic_of.get(channel)
            if topic is None:
                continue
            try:
                delivery = await self._unframe(text)
            except ValueError:
                log.warning("PostgreSQL bus: ignored a notification not sent by a bus on %r", topic)
                continue
            self._fanout.deliver(topic, delivery)

    async def _unframe(self, text: str) -> bytes | Resync:
        head, colon, body = text.partition(":")
        kind = head[:1]
        if not colon or kind not in ("t", "b", "s"):
            raise ValueError("not a bus frame")
        if kind == "t":
            return body.encode()
        if kind == "b":
            return base64.b64decode(body, validate=True)
        async with self._lock:
            listener = self._listener
            payload = None
            if listener is not None:
                with contextlib.suppress(*_TRANSPORT_ERRORS):
                    payload = await listener.fetchval(
                        "SELECT payload FROM backpack_bus_spill WHERE id = $1", body
                    )
        return Resync("a large payload expired") if payload is None else bytes(payload)

    def _frame(self, payload: bytes) -> tuple[str, bytes | None]:
        """The NOTIFY text of a payload, and the payload itself when it must be spilled."""
        self._sequence += 1
        if len(payload) < NOTIFY_LIMIT:
            try:
                text = payload.decode()
                kind = "t" if "\x00" not in text else "b"
            except UnicodeDecodeError:
                kind = "b"
            if kind == "b":
                text = base64.b64encode(payload).decode()
            frame = f"{kind}{self._sequence:x}:{text}"
            if len(frame.encode()) < NOTIFY_LIMIT:
                return frame, None
        return f"s{self._sequence:x}:{secrets.token_hex(16)}", payload

    async def _publish_forever(self) -> None:
        backoff = Backoff()
        while not self._closed:
            publisher: Any = None
            try:
                publisher = await self._connect("backpack-bus-publisher")
                async with publisher.transaction():
                    await publisher.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                    await publisher.execute(_SCHEMA)
                backoff.reset()
                self._sending = True
                self._publisher_tried.set()
                while True:
                    await self._outbox.wait()
                    await self._send_batch(publisher)
            except Exception as error:  # a transport loop outlives any failure
                # Warn once per outage; the retries go to the debug log.
                log.log(
                    logging.DEBUG if backoff.failures else logging.WARNING,
                    "PostgreSQL bus: publishing failed (%s); reconnecting",
                    error,
                )
            finally:
                self._sending = False
                self._publisher_tried.set()
                if publisher is not None:
                    publisher.terminate()
            if self._closed:
                return
            await backoff.sleep()

    async def _send_batch(self, publisher: Any) -> None:
        lost, self._outbox.lost = self._outbox.lost, None
        batch = self._outbox.take(BATCH_PAYLOADS, BATCH_BYTES)
        try:
            await self._send(publisher, batch, lost)
        except BaseException:
            # Never resent: it may have been committed.
            self._outbox.lost = self._outbox.lost or "a publish batch failed"
            raise
        finally:
            self._outbox.finish(len(batch))

    async def _send(self, publisher: Any, batch: list[tuple[str, bytes]], lost: str | None) -> None:
        notes: list[tuple[str, str]] = []
        spills: list[tuple[str, bytes]] = []
        if lost is not None:
            notes.append((self._control, lost))
        for topic, payload in batch:
            frame, spilled = self._frame(payload)
            if spilled is not None:
                spills.append((frame.split(":", 1)[1], spilled))
            notes.append((self.channel(topic), frame))
        if spills and time.monotonic() - self._last_sweep > self.spill_ttl / 2:
            self._last_sweep = time.monotonic()
            await publisher.execute(
                "DELETE FROM backpack_bus_spill WHERE created < now() - make_interval(secs => $1)",
                self.spill_ttl,
            )
        async with publisher.transaction():
            if spills:
                await publisher.executemany(
                    "INSERT INTO backpack_bus_spill (id, payload) VALUES ($1, $2)", spills
                )
            await publisher.executemany("SELECT pg_notify($1, $2)", notes)

    async def close(self) -> None:
        """Ends every subscription; sends what is still in the outbox for up to 2 s."""
        if self._closed:
            return
        self._closed = True
        self._fanout.end_all()
        if self._sending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.reached(self._outbox.queued), FLUSH_ON_CLOSE)
        tasks = [*self._tasks, *self._chores]
        self._tasks = []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["PostgresBus"]
