"""Domain events: every committed write announces itself once, after commit.

Realtime, metrics and logs listen here; nothing in core knows who they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from backpack.types import Document

Action = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class RecordEvent:
    collection: str
    action: Action
    record: Document
    previous: Document | None = None


@dataclass(frozen=True, slots=True)
class CollectionEvent:
    collection: str
    action: Action


@dataclass(frozen=True, slots=True)
class ConfigEvent:
    """The backpack's settings (`kind` "settings") or a bucket's ("bucket", `name`) changed:
    other processes serving the backpack reload them."""

    kind: Literal["settings", "bucket"]
    name: str = ""


log = logging.getLogger("backpack.events")

Event = RecordEvent | CollectionEvent | ConfigEvent
Listener = Callable[[Event], None]


class EventHub:
    """In-process fan-out of committed events to listeners."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, events: list[Event]) -> None:
        for event in events:
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:  # the write is committed; one listener must not undo the reply
                    log.exception("event listener failed")
