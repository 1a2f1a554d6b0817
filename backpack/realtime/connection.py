"""One realtime client: its identity, subscriptions and a bounded outbound queue.

The hub never awaits a socket. `push` writes a message at once while the socket
takes it (the send completes without suspending); the first send that has to
wait starts one drain task, and messages queue behind it until it has caught
up. A client that lets the queue fill up is cut off with close code 1013;
nobody else notices. An idle connection owns no task, event or queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, fields
from inspect import CORO_CREATED, getcoroutinestate
from typing import TYPE_CHECKING, Any, Final

from backpack.core.access import ANONYMOUS, Caller
from backpack.types import JSON

if TYPE_CHECKING:
    from backpack.realtime.hub import Subscription

log = logging.getLogger("backpack.realtime")

# A queued message: its text, or (head, tail) whose concatenation is the text, so one
# change event fanned out to many subscribers shares the record's JSON until it is sent.
Outgoing = str | tuple[str, str]
SendText = Callable[[str], Coroutine[Any, Any, None]]
SendClose = Callable[[int, str], Coroutine[Any, Any, None]]

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


async def _resume(coro: Coroutine[Any, Any, None], waiting: object) -> None:
    """Run on a coroutine that was stepped outside a task and suspended on `waiting`."""
    while True:
        try:
            if asyncio.isfuture(waiting):
                waiting._asyncio_future_blocking = False
                await asyncio.wait((waiting,))
            else:  # a bare `yield` (asyncio.sleep(0)): just let the loop run once
                await asyncio.sleep(0)
        except BaseException:
            coro.close()
            raise
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


class Connection:
    __slots__ = (
        "_aborted",
        "_closing",
        "_done",
        "_drainer",
        "_held",
        "_queue",
        "_queued_chars",
        "_send_close",
        "_send_text",
        "_waiter",
        "caller",
        "channels",
        "close_code",
        "close_reason",
        "held_overflow",
        "id",
        "limits",
        "reader",
        "ready_sent",
        "subscriptions",
        "token",
        "user",
    )

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
        # Set while the socket is backpressured: the task sending, and what waits behind it.
        self._drainer: asyncio.Task[None] | None = None
        self._queue: deque[Outgoing] | None = None
        self._queued_chars = 0
        self._closing = False
        self._aborted = False
        self._done = False  # the close frame went out (or could not), or the peer left
        self._waiter: asyncio.Future[None] | None = None  # made by wait_finished
        self.reader: asyncio.Task[Any] | None = None  # cancelled when the connection finishes
        self.close_code = NORMAL
        self.close_reason = ""
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

    # lifecycle

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def finished(self) -> bool:
        return self._done

    async def wait_finished(self) -> None:
        if self._done:
            return
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then the close frame."""
        if self._closing:
            return
        self._closing = True
        self.close_code, self.close_reason = code, reason[:120]
        self._held = None
        if self._drainer is None:  # nothing queued: the close frame goes now
            self._step(self._send_close(self.close_code, self.close_reason), closing=True)

    def abort(self, code: int, reason: str = "") -> None:
        """Drop what is queued and send the close frame now (a client that fell behind)."""
        if self._aborted:
            return
        self.close(code, reason)
        self.close_code, self.close_reason = code, reason[:120]
        self._aborted = True
        if self._queue is not None:
            self._queue.clear()
        self._queued_chars = 0
        drainer = self._drainer
        # Interrupt the send it waits on; it sends the close frame instead. One that has
        # not started yet sees `_aborted` first (cancelled, it would never run at all).
        if drainer is not None:
            coro = drainer.get_coro()
            if not isinstance(coro, Coroutine) or getcoroutinestate(coro) != CORO_CREATED:
                drainer.cancel()

    def gone(self) -> None:
        """The peer disconnected: stop writing."""
        self._closing = self._aborted = True
        self._queue = None
        self._queued_chars = 0
        self._held = None
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        reader = self.reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()

    # outbound

    def push(self, item: Outgoing) -> None:
        if self._closing:
            return
        if self._drainer is None:
            self._step(self._send_text(item if isinstance(item, str) else item[0] + item[1]))
            return
        queue = self._queue
        assert queue is not None
        size = len(item) if isinstance(item, str) else len(item[0]) + len(item[1])
        if (
            len(queue) >= self.limits.queue_messages
            or self._queued_chars + size > self.limits.queue_chars
        ):
            log.info("realtime connection %s fell behind; closing it with 1013", self.id)
            self.abort(TRY_AGAIN_LATER, "outbound queue full: the client reads too slowly")
            return
        queue.append(item)
        self._queued_chars += size

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

    # writing

    def _step(self, send: Coroutine[Any, Any, None], *, closing: bool = False) -> None:
        """Run a send as far as it goes now; if it has to wait, a drain task takes it over."""
        try:
            waiting = send.send(None)
        except StopIteration:
            if closing:
                self._finish()
            return
        except Exception:  # the peer is gone: nothing more to write
            self._closing = True
            self._finish()
            return
        self._queue = deque()
        self._drainer = asyncio.get_running_loop().create_task(self._drain(send, waiting, closing))
        # A callback, so that it also runs for a task cancelled before it ever started.
        self._drainer.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        if task is self._drainer:  # it did not hand back to direct writes: the end
            self._closing = True
            self._finish()

    async def _drain(self, send: Coroutine[Any, Any, None], waiting: object, closing: bool) -> None:
        try:
            if closing:
                await asyncio.wait_for(_resume(send, waiting), self.limits.close_timeout_seconds)
                return
            try:
                if self._aborted:
                    send.close()
                else:
                    await _resume(send, waiting)
                    await self._pump()
                    if not self._closing:  # caught up: back to writing at once
                        self._drainer = self._queue = None
                        return
            except asyncio.CancelledError:
                if not self._aborted or self._done:
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

    async def _pump(self) -> None:
        queue = self._queue
        assert queue is not None
        while queue:
            item = queue.popleft()
            text = item if isinstance(item, str) else item[0] + item[1]
            self._queued_chars -= len(text)
            await self._send_text(text)
