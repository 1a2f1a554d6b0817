"""The in-process bus: one event loop, bounded per-subscription buffers."""

from __future__ import annotations

from typing import Final

from backpack.bus.fanout import Fanout
from backpack.core.bus import BusSubscription, check_topic

DEFAULT_CAPACITY: Final = 10_000


class MemoryBus:
    """Publish is a loop over the topic's subscribers, each an append to a deque.

    The fan-out is the one the networked buses use for their local subscribers,
    without a transport in front of it.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._fanout = Fanout(capacity, on_idle=lambda topic: None)
        self.capacity = capacity
        self._closed = False

    async def open(self) -> None:
        self._closed = False

    def publish(self, topic: str, payload: bytes) -> None:
        if not isinstance(payload, bytes):
            raise TypeError("Bus payloads are bytes.")
        if not self._closed:
            self._fanout.deliver(topic, payload)

    async def subscribe(self, topic: str) -> BusSubscription:
        check_topic(topic)
        return self._fanout.ended(topic) if self._closed else self._fanout.add(topic)

    async def close(self) -> None:
        self._closed = True
        self._fanout.end_all()
