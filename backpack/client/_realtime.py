"""Realtime for the async client: one WebSocket shared by subscriptions and channels,
reconnecting with backoff and resubscribing after a drop or a server restart."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from backpack.client._errors import (
    CHANNEL_RE,
    BackpackConnectionError,
    BackpackError,
    JSONDict,
    check_collection,
    check_dict,
    error_from_body,
)

if TYPE_CHECKING:
    from backpack.client._async import AsyncClient

__all__ = ["ChangeEvent", "Channel", "PresenceEvent", "Realtime", "Subscription"]

log = logging.getLogger("backpack.client.realtime")


class _Dropped(Exception):
    """The connection dropped while a message waited for its answer."""


def _retrieve(future: asyncio.Future[None]) -> None:
    # Marks the outcome as seen: a drop nobody waits for any more is no error.
    if not future.cancelled():
        future.exception()


Callback = Callable[[Any], Awaitable[None] | None]


@dataclass
class ChangeEvent:
    """action: "create" | "update" | "delete", or "resync" (refetch: events may have been
    missed while the connection was down) or "error" (the server refused the subscription)."""

    action: str
    record: JSONDict | None = None
    error: BackpackError | None = None


@dataclass
class BroadcastEvent:
    channel: str
    event: str
    data: Any
    sender: str | None


@dataclass
class PresenceEvent:
    channel: str
    state: dict[str, Any]
    joins: dict[str, Any] = field(default_factory=dict)
    leaves: dict[str, Any] = field(default_factory=dict)


class Subscription:
    """A live subscription: an async iterator of ChangeEvent when no callback was given."""

    def __init__(
        self,
        rt: Realtime,
        id: str,
        collection: str,
        filter: JSONDict | None,
        bucket: str | None,
        callback: Callback | None,
    ) -> None:
        self.rt = rt
        self.id = id
        self.collection = collection
        self.filter = filter
        self.bucket = bucket
        self.callback = callback
        self.queue: asyncio.Queue[ChangeEvent] = asyncio.Queue()
        self.active = True
        self.resync_on_ack = False
        self.acked = False  # the server confirmed it once: resent after a reconnect

    def message(self) -> JSONDict:
        msg: JSONDict = {"type": "subscribe", "id": self.id, "collection": self.collection}
        if self.filter is not None:
            msg["filter"] = self.filter
        if self.bucket is not None:
            msg["bucket"] = self.bucket
        return msg

    def _deliver(self, event: ChangeEvent) -> None:
        if self.callback is None:
            self.queue.put_nowait(event)
        else:
            self.rt._call(self.callback, event)

    async def unsubscribe(self) -> None:
        if not self.active:
            return
        self.active = False
        self.rt._subs.pop(self.id, None)
        await self.rt._send_if_ready({"type": "unsubscribe", "id": self.id})

    def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        return self

    async def __anext__(self) -> ChangeEvent:
        if self.callback is not None:
            raise TypeError("this subscription delivers to its callback")
        if not self.active and self.queue.empty():
            raise StopAsyncIteration
        return await self.queue.get()

    async def next(self, timeout: float | None = None) -> ChangeEvent:
        """The next event, waiting at most `timeout` seconds (TimeoutError after)."""
        return await asyncio.wait_for(self.__anext__(), timeout)


class Channel:
    """A broadcast/presence channel; joined again automatically after every reconnect."""

    def __init__(self, rt: Realtime, name: str) -> None:
        self.rt = rt
        self.name = name
        self.joined = False
        self._joining = False
        self.presence: JSONDict | None = None
        self.state: dict[str, Any] = {}
        self._handlers: dict[str, list[Callback]] = {}
        self._presence_handlers: list[Callback] = []

    async def join(self, presence: Mapping[str, Any] | None = None) -> Channel:
        self.presence = check_dict(presence, "presence") if presence is not None else None
        self.joined = True
        self._joining = True
        try:
            await self.rt._request(self._join_message(), retry=True)
        except BaseException:
            self.joined = False
            raise
        finally:
            self._joining = False
        return self

    def _join_message(self) -> JSONDict:
        msg: JSONDict = {"type": "join", "channel": self.name}
        if self.presence is not None:
            msg["presence"] = self.presence
        return msg

    async def leave(self) -> None:
        if not self.joined:
            return
        self.joined = False
        self.state = {}
        if self.rt.ready:
            await self.rt._request({"type": "leave", "channel": self.name})

    async def broadcast(self, event: str, data: Any = None) -> None:
        """Sends to everyone else in the channel (not echoed to this connection)."""
        if not isinstance(event, str) or not 1 <= len(event) <= 128:
            raise ValueError("event must be a name of 1..128 characters")
        await self.rt._request(
            {"type": "broadcast", "channel": self.name, "event": event, "data": data}
        )

    def on(self, event: str, callback: Callback) -> Callable[[], None]:
        """callback(BroadcastEvent) for `event` ("*" for all); returns a remover."""
        if not isinstance(event, str) or not event:
            raise ValueError("event must be a non-empty string")
        if not callable(callback):
            raise TypeError("callback must be callable")
        handlers = self._handlers.setdefault(event, [])
        handlers.append(callback)
        return lambda: handlers.remove(callback) if callback in handlers else None

    def on_presence(self, callback: Callback) -> Callable[[], None]:
        """callback(PresenceEvent) on every presence change; returns a remover."""
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._presence_handlers.append(callback)
        handlers = self._presence_handlers
        return lambda: handlers.remove(callback) if callback in handlers else None

    def _broadcast(self, msg: JSONDict) -> None:
        event = BroadcastEvent(self.name, str(msg.get("event")), msg.get("data"), msg.get("from"))
        for key in (event.event, "*"):
            for cb in list(self._handlers.get(key, [])):
                self.rt._call(cb, event)

    def _presence(self, msg: JSONDict) -> None:
        self.state = dict(msg.get("state") or {})
        event = PresenceEvent(
            self.name, self.state, dict(msg.get("joins") or {}), dict(msg.get("leaves") or {})
        )
        for cb in list(self._presence_handlers):
            self.rt._call(cb, event)

    def _disconnected(self) -> None:
        if not self.state:
            return
        leaves, self.state = self.state, {}
        for cb in list(self._presence_handlers):
            self.rt._call(cb, PresenceEvent(self.name, {}, {}, leaves))


class Realtime:
    """`async with client.realtime() as rt:` — the connection runs in a background task."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        min_delay: float = 0.25,
        max_delay: float = 10.0,
        ping_interval: float = 25.0,
    ) -> None:
        self.client = client
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.ping_interval = ping_interval
        self.user: JSONDict | None = None
        self.ready = False
        self.connects = 0  # how many times the connection became ready
        self.last_error: BaseException | None = None
        self._subs: dict[str, Subscription] = {}
        self._channels: dict[str, Channel] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._ready_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._off_auth: Callable[[], None] | None = None
        self._reconnect_now = False
        self._closed = False

    async def __aenter__(self) -> Realtime:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._closed = False
            self._task = asyncio.create_task(self._run())
            self._off_auth = self.client.auth.on_change(self._auth_changed)

    def _auth_changed(self) -> None:
        """Signed in or out: reconnect with the new credentials (state is restored)."""
        ws = self._ws
        if ws is not None:
            self._reconnect_now = True
            if self.ready:  # later requests wait for the new connection
                self.ready = False
                self._ready_event.clear()
                for ch in self._channels.values():
                    ch._disconnected()
            task = asyncio.ensure_future(ws.close(1000, "credentials changed"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        if self._off_auth is not None:
            self._off_auth()
            self._off_auth = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for t in list(self._tasks):
            t.cancel()
        self._fail_pending(BackpackConnectionError("The realtime connection was closed."))

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Waits until the connection is open and authenticated."""
        await asyncio.wait_for(self._ready_event.wait(), timeout)

    # ------------------------------------------------------------ public API

    async def subscribe(
        self,
        collection: str,
        filter: Mapping[str, Any] | None = None,
        *,
        callback: Callback | None = None,
        bucket: str | None = None,
    ) -> Subscription:
        """Live changes of a collection's records (`"_files"` with `bucket=` for files).

        With `callback`, each ChangeEvent is passed to it (a function or a coroutine
        function); without, iterate the returned Subscription. Returns once the server
        acknowledged the subscription; a refusal raises BackpackError.
        """
        if collection != "_files":
            check_collection(collection)
        body = check_dict(filter, "filter") if filter is not None else None
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        if bucket is not None:
            check_collection(bucket, "bucket name")
        sub = Subscription(self, f"s{next(self._ids)}", collection, body, bucket, callback)
        self._subs[sub.id] = sub
        try:
            await self._request(sub.message(), sub.id, retry=True)
        except BaseException:
            self._subs.pop(sub.id, None)
            raise
        return sub

    def channel(self, name: str) -> Channel:
        if not isinstance(name, str) or not CHANNEL_RE.match(name):
            raise ValueError("a channel name is 1..128 letters, digits or ':_.-'")
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = Channel(self, name)
        return ch

    # ------------------------------------------------------------ plumbing

    def _call(self, callback: Callback, event: Any) -> None:
        try:
            result = callback(event)
        except Exception:
            log.exception("a realtime callback failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _request(self, msg: JSONDict, id: str | None = None, *, retry: bool = False) -> None:
        """Sends a message with an id once the connection is ready and waits for its ack.

        With `retry`, a drop before the answer sends it again on the next connection.
        """
        if self._task is None:
            raise RuntimeError("use `async with client.realtime() as rt:` (or rt.start())")
        id = id or f"m{next(self._ids)}"
        deadline = self.client.timeout
        try:
            async with asyncio.timeout(deadline):
                while True:
                    await self._ready_event.wait()
                    ws = self._ws
                    assert ws is not None
                    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    future.add_done_callback(_retrieve)
                    self._pending[id] = future
                    try:
                        await ws.send(json.dumps({**msg, "id": id}))
                        await future
                        return
                    except (_Dropped, ConnectionClosed):
                        if not retry:
                            raise BackpackConnectionError(
                                "The realtime connection dropped before an answer."
                            ) from None
                        await asyncio.sleep(0)
        except TimeoutError:
            raise BackpackConnectionError(
                f"No answer from {self.client.base_url}/api/realtime within {deadline} s"
                + (f" (last error: {self.last_error})" if self.last_error else "")
            ) from None
        finally:
            self._pending.pop(id, None)

    async def _send_if_ready(self, msg: JSONDict) -> None:
        if self.ready and self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(json.dumps(msg))

    def _fail_pending(self, exc: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)

    def _ws_url(self) -> str:
        return "ws" + self.client.base_url[4:] + "/api/realtime"

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                async with connect(self._ws_url(), open_timeout=self.client.timeout) as ws:
                    self._ws = ws
                    await self._session(ws)
                    attempt = 0
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                self.last_error = exc
            except Exception as exc:  # a bug in a message handler must not stop reconnecting
                log.exception("realtime connection failed")
                self.last_error = exc
            finally:
                self._dropped()
            if self._closed:
                return
            if self._reconnect_now:
                self._reconnect_now = False
                attempt = 0
                continue
            ceiling = min(self.max_delay, self.min_delay * 2**attempt)
            attempt += 1
            await asyncio.sleep(ceiling / 2 + random.random() * ceiling / 2)

    def _dropped(self) -> None:
        was_ready = self.ready
        self._ws = None
        self.ready = False
        self._ready_event.clear()
        # Messages without an answer are resent (subscribe/join) or failed (the rest).
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(_Dropped())
        if was_ready:
            for ch in self._channels.values():
                ch._disconnected()

    async def _session(self, ws: ClientConnection) -> None:
        token = self.client.auth.token
        await ws.send(json.dumps({"type": "auth", "token": token} if token else {"type": "ping"}))
        pinger: asyncio.Task[None] | None = None
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                if msg.get("type") == "ready" and not self.ready:
                    await self._on_ready(ws, msg)
                    if pinger is None:
                        pinger = asyncio.create_task(self._ping(ws))
                else:
                    self._dispatch(msg)
        finally:
            if pinger is not None:
                pinger.cancel()

    async def _ping(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.ping_interval)
                await ws.send('{"type":"ping"}')

    async def _on_ready(self, ws: ClientConnection, msg: JSONDict) -> None:
        reconnected = self.connects > 0
        self.connects += 1
        self.user = msg.get("user")
        # Restore the state first, then let waiting requests through.
        for sub in list(self._subs.values()):
            sub.resync_on_ack = reconnected and sub.acked
            if sub.acked and sub.id not in self._pending:
                await ws.send(json.dumps(sub.message()))
        for ch in self._channels.values():
            if ch.joined and not ch._joining:
                await ws.send(json.dumps(ch._join_message()))
        self.ready = True
        self._ready_event.set()

    def _dispatch(self, msg: JSONDict) -> None:
        kind = msg.get("type")
        if kind == "change":
            sub = self._subs.get(str(msg.get("sub")))
            if sub is not None:
                sub._deliver(ChangeEvent(str(msg.get("action")), msg.get("record")))
        elif kind == "ack":
            id = str(msg.get("id"))
            future = self._pending.get(id)
            if future is not None and not future.done():
                future.set_result(None)
            sub = self._subs.get(id)
            if sub is not None:
                sub.acked = True
            if sub is not None and sub.resync_on_ack:
                sub.resync_on_ack = False
                sub._deliver(ChangeEvent("resync"))
        elif kind == "resync":
            sub = self._subs.get(str(msg.get("sub")))
            if sub is not None:
                sub._deliver(ChangeEvent("resync"))
        elif kind == "error":
            body = msg.get("error") if isinstance(msg.get("error"), dict) else {}
            assert isinstance(body, dict)
            status = body.get("status")
            error = error_from_body(
                status if isinstance(status, int) else 400, json.dumps({"error": body}), None
            )
            msg_id = msg.get("id")
            future = self._pending.get(str(msg_id)) if msg_id is not None else None
            if future is not None and not future.done():
                future.set_exception(error)
            else:
                sub = self._subs.get(str(msg_id)) if msg_id is not None else None
                if sub is not None:
                    sub._deliver(ChangeEvent("error", error=error))
                else:
                    self.last_error = error
        elif kind == "broadcast":
            ch = self._channels.get(str(msg.get("channel")))
            if ch is not None:
                ch._broadcast(msg)
        elif kind == "presence":
            ch = self._channels.get(str(msg.get("channel")))
            if ch is not None:
                ch._presence(msg)
