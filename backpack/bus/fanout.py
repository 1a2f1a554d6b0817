"""What the networked buses share: local subscriptions, a bounded outbox, reconnect backoff."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

from backpack.core.bus import Delivery, Resync

OVERFLOW: Final = Resync("a subscriber buffer overflowed")


class LocalSubscription:
    """Buffers up to `capacity` deliveries; on overflow drops them for one `Resync`."""

    def __init__(self, fanout: Fanout, topic: str, capacity: int) -> None:
        self._fanout = fanout
        self._topic = topic
        self._capacity = capacity
        self._buffer: deque[Delivery] = deque()
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def topic(self) -> str:
        return self._topic

    def _push(self, delivery: Delivery) -> None:
        if self._closed:
            return
        if isinstance(delivery, Resync) and self._buffer and isinstance(self._buffer[-1], Resync):
            return
        if len(self._buffer) >= self._capacity:
            # The receiver is behind: it will refetch anyway, so keep memory flat.
            self._buffer.clear()
            self._buffer.append(OVERFLOW)
        self._buffer.append(delivery)
        self._wake()

    def _end(self) -> None:
        self._closed = True
        self._buffer.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> LocalSubscription:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._buffer:
                return self._buffer.popleft()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def close(self) -> None:
        self._fanout.forget(self)
        self._end()


class Fanout:
    """The subscriptions of one bus by topic; `on_idle(topic)` runs when a topic's last one left."""

    def __init__(self, capacity: int, on_idle: Callable[[str], None]) -> None:
        if capacity < 1:
            raise ValueError("A bus buffer holds at least one payload.")
        self.capacity = capacity
        self._on_idle = on_idle
        self._topics: dict[str, list[LocalSubscription]] = {}

    def add(self, topic: str) -> LocalSubscription:
        subscription = LocalSubscription(self, topic, self.capacity)
        self._topics.setdefault(topic, []).append(subscription)
        return subscription

    def ended(self, topic: str) -> LocalSubscription:
        """A subscription of a closed bus: iterating it ends at once."""
        subscription = LocalSubscription(self, topic, self.capacity)
        subscription._end()
        return subscription

    def topics(self) -> list[str]:
        return list(self._topics)

    def has(self, topic: str) -> bool:
        return topic in self._topics

    def deliver(self, topic: str, delivery: Delivery) -> None:
        for subscription in self._topics.get(topic, ()):
            subscription._push(delivery)

    def resync_all(self, reason: str) -> None:
        marker = Resync(reason)
        for subscribers in self._topics.values():
            for subscription in subscribers:
                subscription._push(marker)

    def forget(self, subscription: LocalSubscription) -> None:
        subscribers = self._topics.get(subscription.topic)
        if subscribers is not None and subscription in subscribers:
            subscribers.remove(subscription)
            if not subscribers:
                del self._topics[subscription.topic]
                self._on_idle(subscription.topic)

    def end_all(self) -> None:
        topics, self._topics = self._topics, {}
        for subscribers in topics.values():
            for subscription in subscribers:
                subscription._end()


class Outbox:
    """Payloads waiting for the transport, bounded; on overflow all are dropped and `lost` set."""

    def __init__(self, max_payloads: int, max_bytes: int) -> None:
        self.max_payloads = max_payloads
        self.max_bytes = max_bytes
        self.lost: str | None = None
        self._items: deque[tuple[str, bytes]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self.queued = 0  # payloads ever put
        self.finished = 0  # payloads ever sent, dropped or lost
        self._progress = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, topic: str, payload: bytes) -> None:
        if len(self._items) >= self.max_payloads or self._bytes + len(payload) > self.max_bytes:
            self.finish(len(self._items))
            self._items.clear()
            self._bytes = 0
            self.lost = "the publish buffer overflowed"
        self.queued += 1
        self._items.append((topic, payload))
        self._bytes += len(payload)
        self._ready.set()

    def take(self, max_payloads: int, max_bytes: int) -> list[tuple[str, bytes]]:
        """The oldest payloads, at least one when any wait, within the bounds."""
        batch: list[tuple[str, bytes]] = []
        size = 0
        while self._items and len(batch) < max_payloads and (not batch or size < max_bytes):
            item = self._items.popleft()
            size += len(item[1])
            batch.append(item)
        self._bytes -= size
        return batch

    def finish(self, count: int) -> None:
        """`count` taken payloads were sent (or lost) for good."""
        self.finished += count
        self._progress.set()

    async def reached(self, mark: int) -> None:
        """Returns once the first `mark` payloads ever put are finished."""
        while self.finished < mark:
            self._progress.clear()
            await self._progress.wait()

    async def wait(self) -> None:
        """Returns once something waits to be sent, or a loss to be reported."""
        while not self._items and self.lost is None:
            self._ready.clear()
            await self._ready.wait()


class Backoff:
    """Reconnect delays doubling from `first` up to `most` seconds."""

    def __init__(self, first: float = 0.05, most: float = 2.0) -> None:
        self.first = first
        self.most = most
        self._next = first
        self.failures = 0  # since the last success

    async def sleep(self) -> None:
        self.failures += 1
        await asyncio.sleep(self._next)
        self._next = min(self._next * 2, self.most)

    def reset(self) -> None:
        self._next = self.first
        self.failures = 0
