"""The in-process bus: one event loop, bounded per-subscription buffers."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

from backpack.core.bus import BusSubscription, Delivery, Resync, check_topic

DEFAULT_CAPACITY: Final = 10_000


class MemorySubscription:
    """Buffers up to `capacity` payloads; on overflow drops them all and reports a `Resync`."""

    def __init__(self, bus: MemoryBus, topic: str, capacity: int) -> None:
        self._bus = bus
        self._topic = topic
        self._capacity = capacity
        self._buffer: deque[bytes] = deque()
        self._lost = False
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def topic(self) -> str:
        return self._topic

    def _push(self, payload: bytes) -> None:
        if self._closed:
            return
        if len(self._buffer) >= self._capacity:
            # The receiver is behind: it will refetch anyway, so keep memory flat.
            self._buffer.clear()
            self._lost = True
        self._buffer.append(payload)
        self._wake()

    def _end(self) -> None:
        self._closed = True
        self._buffer.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> MemorySubscription:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._lost:
                self._lost = False
                return Resync("a subscriber buffer overflowed")
            if self._buffer:
                return self._buffer.popleft()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def close(self) -> None:
        self._bus._forget(self)
        self._end()


class MemoryBus:
    """Publish is a loop over the topic's subscribers, each an append to a deque."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("A bus buffer holds at least one payload.")
        self.capacity = capacity
        self._topics: dict[str, list[MemorySubscription]] = {}
        self._closed = False

    async def open(self) -> None:
        self._closed = False

    def publish(self, topic: str, payload: bytes) -> None:
        if not isinstance(payload, bytes):
            raise TypeError("Bus payloads are bytes.")
        if self._closed:
            return
        for subscription in self._topics.get(topic, ()):
            subscription._push(payload)

    async def subscribe(self, topic: str) -> BusSubscription:
        check_topic(topic)
        subscription = MemorySubscription(self, topic, self.capacity)
        if self._closed:
            subscription._end()
        else:
            self._topics.setdefault(topic, []).append(subscription)
        return subscription

    def _forget(self, subscription: MemorySubscription) -> None:
        subscribers = self._topics.get(subscription.topic)
        if subscribers is not None and subscription in subscribers:
            subscribers.remove(subscription)
            if not subscribers:
                del self._topics[subscription.topic]

    async def close(self) -> None:
        self._closed = True
        topics, self._topics = self._topics, {}
        for subscribers in topics.values():
            for subscription in subscribers:
                subscription._end()
