"""The event bus on Redis pub/sub: one connection publishes, one listens.

Topics are channels under a key prefix. Publishing appends to a bounded
outbox that one task sends in pipelined batches; nothing is ever resent, so a
payload arrives once or, after a failed batch or a full outbox, a `Resync` is
published on the prefix's control channel before anything newer. The
listening connection reconnects with backoff and, once resubscribed, hands a
`Resync` to every subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from typing import Any, Final

from backpack.bus.fanout import Backoff, Fanout, Outbox
from backpack.core.bus import BusSubscription, check_topic

try:
    from redis.asyncio import ConnectionPool
    from redis.exceptions import RedisError
except ImportError as error:  # pragma: no cover - the extra is installed in development
    raise ImportError(
        "The Redis event bus needs redis: pip install 'backpack-baas[redis]'."
    ) from error

log = logging.getLogger("backpack.bus")

DEFAULT_CAPACITY: Final = 10_000
DEFAULT_PREFIX: Final = "backpack:bus:"
BATCH_PAYLOADS: Final = 512
BATCH_BYTES: Final = 4 << 20
FLUSH_ON_CLOSE: Final = 2.0
_NAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9:._-]")
# Topics never hold "!", so the control channel cannot be a topic's.
_CONTROL: Final = "!resync"

_TRANSPORT_ERRORS: Final = (RedisError, OSError, TimeoutError)


class RedisBus:
    """`RedisBus("redis://host:6379/0")`; `prefix` keeps deployments sharing a server apart."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        capacity: int = DEFAULT_CAPACITY,
        outbox_payloads: int = 10_000,
        outbox_bytes: int = 64 << 20,
        connect_timeout: float = 5.0,
    ) -> None:
        self.prefix = prefix
        name = _NAME_UNSAFE.sub("_", prefix)
        # RESP2: messages come back as replies (RESP3 would route them to push handlers).
        self._pool = ConnectionPool.from_url(
            url, socket_connect_timeout=connect_timeout, protocol=2
        )
        self.subscriber_name = f"backpack-bus-sub:{name}"
        self.publisher_name = f"backpack-bus-pub:{name}"
        self._control = prefix + _CONTROL
        self._fanout = Fanout(capacity, self._on_idle)
        self._outbox = Outbox(outbox_payloads, outbox_bytes)
        self._listener: Any = None  # the connected subscriber connection, if any
        self._write_lock = asyncio.Lock()
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._first_attempt = asyncio.Event()
        self._publisher_tried = asyncio.Event()
        self._listening: asyncio.Task[None] | None = None
        self._publishing: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._sending = False  # the publisher is connected
        self._closed = False

    def _connection(self, name: str) -> Any:
        options = {**self._pool.connection_kwargs, "client_name": name}
        return self._pool.connection_class(**options)

    async def open(self) -> None:
        """Starts both connections; waits for their first attempts, never raises for them."""
        self._closed = False
        self._listening = asyncio.create_task(self._listen_forever())
        self._publishing = asyncio.create_task(self._publish_forever())
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
        first = not self._fanout.has(topic)
        subscription = self._fanout.add(topic)
        if first and self._listener is not None:
            confirmed = self._confirmations.get(topic)
            if confirmed is None:
                confirmed = asyncio.get_running_loop().create_future()
                self._confirmations[topic] = confirmed
            await self._send_to_listener("SUBSCRIBE", self.prefix + topic)
            # Unconfirmed when the connection drops: the reconnect sends a Resync.
            await asyncio.shield(confirmed)
        else:
            pending = self._confirmations.get(topic)
            if pending is not None:
                await asyncio.shield(pending)
        return subscription

    def _on_idle(self, topic: str) -> None:
        if not self._closed:
            task = asyncio.get_running_loop().create_task(self._unsubscribe(topic))
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)

    async def _unsubscribe(self, topic: str) -> None:
        async with self._write_lock:
            # A subscription may have come back while this waited for the lock.
            if not self._fanout.has(topic) and self._listener is not None:
                with contextlib.suppress(*_TRANSPORT_ERRORS):
                    await self._listener.send_command("UNSUBSCRIBE", self.prefix + topic)

    async def _send_to_listener(self, *command: str) -> None:
        async with self._write_lock:
            listener = self._listener
            if listener is not None:
                try:
                    await listener.send_command(*command)
                except _TRANSPORT_ERRORS:
                    self._settle_confirmations()

    def _settle_confirmations(self) -> None:
        confirmations, self._confirmations = self._confirmations, {}
        for confirmed in confirmations.values():
            if not confirmed.done():
                confirmed.set_result(None)

    async def _listen_forever(self) -> None:
        backoff = Backoff()
        reconnect = False
        while not self._closed:
            connection = self._connection(self.subscriber_name)
            try:
                await connection.connect()
                backoff.reset()
                await self._listen(connection, reconnect)
            except Exception as error:  # a transport loop outlives any failure
                # Warn once per outage; the retries go to the debug log.
                log.log(
                    logging.DEBUG if backoff.failures else logging.WARNING,
                    "Redis bus: listening failed (%s); reconnecting",
                    error,
                )
            finally:
                self._listener = None
                self._settle_confirmations()
                self._first_attempt.set()
                await connection.disconnect(nowait=True)
            if self._closed:
                return
            reconnect = True
            await backoff.sleep()

    async def _listen(self, connection: Any, reconnect: bool) -> None:
        async with self._write_lock:
            channels = [self._control, *(self.prefix + t for t in self._fanout.topics())]
            await connection.send_command("SUBSCRIBE", *channels)
            self._listener = connection
        waiting = set(channels)
        while True:
            reply = await connection.read_response(timeout=math.inf)
            kind, channel = reply[0], reply[1].decode()
            if kind == b"message":
                if channel == self._control:
                    self._fanout.resync_all("a publisher lost payloads")
                elif channel.startswith(self.prefix):
                    self._fanout.deliver(channel[len(self.prefix) :], reply[2])
            elif kind == b"subscribe":
                confirmed = self._confirmations.pop(channel[len(self.prefix) :], None)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)
                if waiting:
                    waiting.discard(channel)
                    if not waiting:
                        self._first_attempt.set()
                        if reconnect:
                            self._fanout.resync_all("the bus reconnected")

    async def _publish_forever(self) -> None:
        backoff = Backoff()
        while not self._closed:
            connection = self._connection(self.publisher_name)
            try:
                await connection.connect()
                backoff.reset()
                self._sending = True
                self._publisher_tried.set()
                while True:
                    await self._outbox.wait()
                    await self._send_batch(connection)
            except Exception as error:  # a transport loop outlives any failure
                # Warn once per outage; the retries go to the debug log.
                log.log(
                    logging.DEBUG if backoff.failures else logging.WARNING,
                    "Redis bus: publishing failed (%s); reconnecting",
                    error,
                )
            finally:
                self._sending = False
                self._publisher_tried.set()
                await connection.disconnect(nowait=True)
            if self._closed:
                return
            await backoff.sleep()

    async def _send_batch(self, connection: Any) -> None:
        commands: list[tuple[str, str, str | bytes]] = []
        lost, self._outbox.lost = self._outbox.lost, None
        if lost is not None:
            commands.append(("PUBLISH", self._control, lost))
        batch = self._outbox.take(BATCH_PAYLOADS, BATCH_BYTES)
        commands.extend(("PUBLISH", self.prefix + topic, payload) for topic, payload in batch)
        try:
            await connection.send_packed_command(
                connection.pack_commands(commands), check_health=False
            )
            for _ in commands:
                await connection.read_response()
        except BaseException:
            # Never resent: it may have gone out in part.
            self._outbox.lost = self._outbox.lost or "a publish batch failed"
            raise
        finally:
            self._outbox.finish(len(batch))

    async def close(self) -> None:
        """Ends every subscription; sends what is still in the outbox for up to 2 s."""
        if self._closed:
            return
        self._closed = True
        self._fanout.end_all()
        if self._sending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.reached(self._outbox.queued), FLUSH_ON_CLOSE)
        tasks = [t for t in (self._listening, self._publishing, *self._chores) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._pool.aclose()


__all__ = ["RedisBus"]
