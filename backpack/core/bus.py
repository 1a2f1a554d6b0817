"""The event bus seam: how committed events and realtime traffic cross process boundaries.

Core declares what a bus must do; adapters in `backpack.bus` do it (in process
Redis pub/sub, PostgreSQL LISTEN/NOTIFY). Every adapter passes
the one contract suite in `tests/contract/test_bus_contract.py`:

- `publish(topic, payload)` never blocks and never raises for transport
  trouble: a write path calls it right after commit and must not wait on it.
  A transport that is down buffers (boundedly) or drops; whatever is dropped
  surfaces at the subscribers as a `Resync`.
- A subscription receives every payload published on its topic after
  `subscribe()` returned, by any publisher in any process, unchanged, once,
  in the order each publisher published them, or a `Resync` where it may have
  lost some (a full buffer, a reconnect). Receivers recover from a `Resync`
  by refetching state; a bus never replays.
- Payloads are bytes (JSON, so they can travel as text, e.g. over NOTIFY) of
  any size; an adapter with a smaller transport limit spills large payloads
  (PostgreSQL: a row in an unlogged table, NOTIFY carries its id).
- Iterating a subscription ends when it or its bus is closed.
- Everything is called from the event loop that opened the bus.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Protocol

TOPIC_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,200}")


@dataclass(frozen=True, slots=True)
class Resync:
    """Delivered in place of payloads the bus may have lost; `reason` is for logs."""

    reason: str


Delivery = bytes | Resync


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not TOPIC_PATTERN.fullmatch(topic):
        raise ValueError(f"Invalid bus topic {topic!r}: use 1 to 200 of A-Z a-z 0-9 . _ : -")
    return topic


class BusSubscription(Protocol):
    """An async iterator of payloads (and `Resync` markers) of one topic."""

    @property
    def topic(self) -> str: ...

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def __anext__(self) -> Delivery: ...

    async def close(self) -> None: ...


class Bus(Protocol):
    async def open(self) -> None: ...

    def publish(self, topic: str, payload: bytes) -> None:
        """Hand `payload` to the bus; returns at once (see the module docstring)."""
        ...

    async def subscribe(self, topic: str) -> BusSubscription:
        """Returns once payloads published from now on will be delivered."""
        ...

    async def close(self) -> None: ...
