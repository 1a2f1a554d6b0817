"""One realtime client: its identity, subscriptions and a bounded outbound queue.

The hub never awaits a socket: it appends to the queue (`push`, `deliver`) and
one writer task per connection drains it. A client that lets the queue fill
up is cut off with close code 1013; nobody else notices.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Final

from backpack.core.access import ANONYMOUS, Caller
from backpack.types import JSON

if TYPE_CHECKING:
    from backpack.realtime.hub import Subscription

log = logging.getLogger("backpack.realtime")

# A queued message: its text, or (head, tail) whose concatenation is the text, so one
# change event fanned out to many subscribers shares the record's JSON until it is sent.
Outgoing = str | tuple[str, str]
SendText = Callable[[str], Awaitable[None]]
SendClose = Callable[[int, str], Awaitable[None]]

# Close codes
NORMAL: Final = 1000
GOING_AWAY: Final = 1001
POLICY: Final = 1008
TOO_BIG: Final = 1009
TRY_AGAIN_LATER: Final = 1013
UNAUTHORIZED: Final = 4001


@dataclass(frozen=True)
class RealtimeLimits:
    """Per-connection limits; `from_env` reads BACKPACK_REALTIME_<FIELD> overrides."""

    queue_messages: int = 1000  # outbound messages waiting for a client before 1013
    queue_chars: int = 32 * 1024 * 1024  # and their total size
    max_subscriptions: int = 100
    max_channels: int = 100
    max_message_bytes: int = 64 * 1024  # inbound; larger closes with 1009
    max_presence_bytes: int = 4 * 1024
    auth_grace_seconds: float = 1.0  # wait this long for a first `auth` message
    recheck_seconds: float = 60.0  # re-validate every credential this often
    close_timeout_seconds: float = 30.0  # for the close frame to get past a full socket

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RealtimeLimits:
        env = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for item in fields(cls):
            raw = env.get(f"BACKPACK_REALTIME_{item.name.upper()}")
            if raw is None or raw == "":
                continue
            try:
                number = float(raw) if item.type == "float" else int(raw)
            except ValueError:
                raise ValueError(
                    f"BACKPACK_REALTIME_{item.name.upper()} must be a number."
                ) from None
            if number <= 0:
                raise ValueError(f"BACKPACK_REALTIME_{item.name.upper()} must be positive.")
            values[item.name] = number
        return cls(**values)  # type: ignore[arg-type]


def new_connection_id() -> str:
    return secrets.token_urlsafe(12)


class Connection:
    def __init__(
        self,
        send_text: SendText,
        send_close: SendClose,
        limits: RealtimeLimits,
        connection_id: str | None = None,
    ) -> None:
        self.id = connection_id or new_connection_id()
        self.limits = limits
        self._send_text = send_text
        self._send_close = send_close
        self._queue: deque[Outgoing] = deque()
        self._queued_chars = 0
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        self._closing = False
        self._aborted = False
        self.close_code = NORMAL
        self.close_reason = ""
        self._writer: asyncio.Task[None] | None = None
        # Identity, kept current by the hub.
        self.caller: Caller = ANONYMOUS
        self.token: str | None = None
        self.user: JSON = None  # the public User sent in `ready`
        self.ready_sent = False
        # What the client asked for.
        self.subscriptions: dict[str, Subscription] = {}
        self.channels: dict[str, JSON] = {}  # channel → this connection's presence
        # Data messages held back while credentials are re-checked.
        self._held: list[Outgoing] | None = None
        self.held_overflow = False
        self.sent = 0

    # lifecycle

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._run_writer())
        # Also when it is cancelled before it ever ran (its `finally` would not run then).
        self._writer.add_done_callback(lambda _: self._finished.set())

    @property
    def closing(self) -> bool:
        return self._closing

    async def wait_finished(self) -> None:
        await self._finished.wait()

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then the close frame."""
        if self._closing:
            return
        self._closing = True
        self.close_code, self.close_reason = code, reason[:120]
        self._held = None
        self._wake.set()

    def abort(self, code: int, reason: str = "") -> None:
        """Drop what is queued and send the close frame now (a client that fell behind)."""
        if self._aborted:
            return
        self.close(code, reason)
        self.close_code, self.close_reason = code, reason[:120]
        self._aborted = True
        self._queue.clear()
        self._queued_chars = 0
        if self._writer is not None:
            self._writer.cancel()

    def gone(self) -> None:
        """The peer disconnected: stop writing."""
        self._closing = self._aborted = True
        self._queue.clear()
        self._held = None
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        self._finished.set()

    # outbound

    def push(self, item: Outgoing) -> None:
        if self._closing:
            return
        size = len(item) if isinstance(item, str) else len(item[0]) + len(item[1])
        if (
            len(self._queue) >= self.limits.queue_messages
            or self._queued_chars + size > self.limits.queue_chars
        ):
            log.info("realtime connection %s fell behind; closing it with 1013", self.id)
            self.abort(TRY_AGAIN_LATER, "outbound queue full: the client reads too slowly")
            return
        self._queue.append(item)
        self._queued_chars += size
        self._wake.set()

    def deliver(self, item: Outgoing) -> None:
        """A data message (change, broadcast, presence): held while credentials are re-checked."""
        if self._held is not None:
            if len(self._held) < self.limits.queue_messages:
                self._held.append(item)
            else:
                self.held_overflow = True
            return
        self.push(item)

    @property
    def holding(self) -> bool:
        return self._held is not None

    def hold(self) -> None:
        if self._held is None and not self._closing:
            self._held = []
            self.held_overflow = False

    def release(self) -> list[Outgoing]:
        """Stop holding; the caller decides what of the held messages to send."""
        held, self._held = self._held or [], None
        return held

    # the writer

    async def _run_writer(self) -> None:
        try:
            try:
                await self._pump()
            except asyncio.CancelledError:
                if not self._aborted or self._finished.is_set():
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            await asyncio.wait_for(
                self._send_close(self.close_code, self.close_reason),
                self.limits.close_timeout_seconds,
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # the peer is gone or never read again: nothing left to do
            pass
        finally:
            self._finished.set()

    async def _pump(self) -> None:
        queue = self._queue
        while True:
            while queue:
                item = queue.popleft()
                text = item if isinstance(item, str) else item[0] + item[1]
                self._queued_chars -= len(text)
                await self._send_text(text)
                self.sent += 1
            if self._closing:
                return
            self._wake.clear()
            await self._wake.wait()
