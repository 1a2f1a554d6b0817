"""Realtime for one backpack: subscriptions, matching, fan-out, channels, presence.

The data path never waits on a socket:

    a write commits → EventHub listener `_on_event` serializes the event once and
    `bus.publish`es it (an append) → the bus delivers it to `_consume` (in this
    process, or in every process once the bus is Redis or PostgreSQL) → the
    collection's group → each distinct compiled matcher runs once on the new and
    the previous record → matching connections get the message appended to
    their bounded queues, the record's JSON shared, never re-serialized.

A subscription holds `filter AND list rule AND read rule` (rules bound for its
caller) compiled once; a change to the caller (sign-out, new role) or to the
rules recompiles it. Channel broadcasts and presence travel on the same bus,
as do "this user's access changed" notes from the auth service, so the order
of a revocation and the events after it is the order of the bus.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from fnmatch import fnmatchcase
from typing import Any, Final

import orjson

from backpack.auth.credentials import Credentials
from backpack.auth.service import AuthService, public_user
from backpack.core import jsonutil
from backpack.core.access import ANONYMOUS, SECRET_KEY, Caller, check_rule, rule_filter
from backpack.core.bus import Bus, BusSubscription, Resync
from backpack.core.collections import Rule, check_collection_name
from backpack.core.events import CollectionEvent, ConfigEvent, Event, RecordEvent
from backpack.core.filter import MATCH_ALL, Eq, Node, and_nodes, compile_matcher, parse_filter
from backpack.core.records import DataService
from backpack.core.settings import SettingsService
from backpack.errors import (
    BackpackError,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidQuery,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from backpack.files.service import DEFAULT_BUCKET, FILES, FilesService
from backpack.realtime.connection import (
    GOING_AWAY,
    TOO_BIG,
    TRY_AGAIN_LATER,
    UNAUTHORIZED,
    Connection,
    RealtimeLimits,
)
from backpack.types import JSON, Document

log = logging.getLogger("backpack.realtime")

TOPIC: Final = "realtime"
MAX_FILTER_BYTES: Final = 16 * 1024
MAX_JSON_DEPTH: Final = 32
_CHANNEL: Final = re.compile(r"[A-Za-z0-9:_.\-]{1,128}")
_SIGNED_IN_DEFAULT: Final = object()  # a channel rule that was left out
_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "auth": frozenset({"type", "id", "token"}),
    "subscribe": frozenset({"type", "id", "collection", "filter", "bucket"}),
    "unsubscribe": frozenset({"type", "id"}),
    "join": frozenset({"type", "id", "channel", "presence"}),
    "leave": frozenset({"type", "id", "channel"}),
    "broadcast": frozenset({"type", "id", "channel", "event", "data"}),
    "ping": frozenset({"type", "id"}),
}
_RECHECK_AFTER_CACHE: Final = 1.2  # another process's auth cache forgets a session within 1 s
_PONG: Final = '{"type":"pong"}'


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Subscription:
    __slots__ = ("bucket", "collection", "connection", "filter", "group", "id", "key", "tail")

    def __init__(
        self, sub_id: str, connection: Connection, collection: str, bucket: str | None, node: Node
    ) -> None:
        self.id = sub_id
        self.connection = connection
        self.collection = collection
        self.bucket = bucket
        self.filter = node
        self.tail = _dumps(sub_id) + "}"  # the end of every change message for it
        self.group: _Group | None = None
        self.key = ""  # of its matcher in the group


class _Matcher:
    """One compiled predicate shared by every subscription with the same bound filter."""

    __slots__ = ("key", "predicate", "subscriptions")

    def __init__(self, key: str, node: Node) -> None:
        self.key = key  # in its group; every subscription of the matcher shares this string
        self.predicate = compile_matcher(node)
        self.subscriptions: set[Subscription] = set()


class _Group:
    """The subscriptions of one collection (or one bucket of `_files`)."""

    __slots__ = ("bucket", "collection", "key", "matchers", "source")

    def __init__(self, key: str, collection: str, bucket: str | None, source: object) -> None:
        self.key = key
        self.collection = collection
        self.bucket = bucket
        self.source = source  # the rules' owner when compiled; replaced when rules change
        self.matchers: dict[str, _Matcher] = {}

    def subscriptions(self) -> list[Subscription]:
        return [sub for matcher in self.matchers.values() for sub in matcher.subscriptions]


class _Channel:
    __slots__ = ("local", "name", "presence")

    def __init__(self, name: str) -> None:
        self.name = name
        self.local: dict[str, Connection] = {}  # members connected to this process
        self.presence: dict[str, JSON] = {}  # every member's presence, by connection id


def _group_key(collection: str, bucket: str | None) -> str:
    return f"{FILES}/{bucket}" if collection == FILES else collection


def _message_id(msg: Mapping[str, JSON]) -> str | None:
    value = msg.get("id")
    return value if isinstance(value, str) else None


def _required_id(msg: Mapping[str, JSON]) -> str:
    value = msg.get("id")
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.isprintable():
        raise BadRequest(
            "A subscription needs an id: a string of 1 to 64 printable characters.",
            {"field": "id"},
        )
    return value


def _channel_name(msg: Mapping[str, JSON]) -> str:
    name = msg.get("channel")
    if not isinstance(name, str) or not _CHANNEL.fullmatch(name):
        raise BadRequest(
            "A channel name has 1 to 128 letters, digits and ':', '_', '.', '-'.",
            {"field": "channel"},
        )
    return name


class RealtimeHub:
    def __init__(
        self,
        data: DataService,
        auth: AuthService,
        files: FilesService,
        settings: SettingsService,
        bus: Bus,
        secret_key: str,
        limits: RealtimeLimits | None = None,
        topic: str = TOPIC,
    ) -> None:
        self.data = data
        self.auth = auth
        self.files = files
        self.settings = settings
        self.bus = bus
        self.secret_key = secret_key
        self.credentials: Credentials | None = None  # set by the backpack that runs this hub
        self.limits = limits or RealtimeLimits()
        self.topic = topic
        self.connections: dict[str, Connection] = {}
        self._groups: dict[str, _Group] = {}
        self._channels: dict[str, _Channel] = {}
        self._origin = secrets.token_hex(8)  # tells this process's access notes from others'
        self._subscription: BusSubscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._rechecks: dict[str, asyncio.Task[None]] = {}
        self._recheck_again: set[str] = set()
        self._grace: dict[str, asyncio.TimerHandle] = {}
        self._unlisten: Callable[[], None] | None = None
        self._channel_rules: dict[str, Node] = {}
        self._filters: dict[bytes, Node] = {}  # parsed subscription filters, shared (immutable)
        # Counters since start, for metrics and benchmarks (see stats()).
        self.events_seen = 0  # record events that reached the hub from the bus
        self.changes_sent = 0  # change messages queued for subscribers
        self.resyncs = 0  # times the bus reported lost messages
        self.slow_closes = 0  # clients cut off with 1013
        self._handlers: dict[str, Callable[[Connection, Document], Awaitable[None]]] = {
            "auth": self._handle_auth,
            "subscribe": self._handle_subscribe,
            "unsubscribe": self._handle_unsubscribe,
            "join": self._handle_join,
            "leave": self._handle_leave,
            "broadcast": self._handle_broadcast,
            "ping": self._handle_ping,
        }

    # lifecycle

    async def open(self) -> None:
        await self.bus.open()
        self._subscription = await self.bus.subscribe(self.topic)
        self._spawn(self._consume(self._subscription))
        self._spawn(self._recheck_periodically())
        self._unlisten = self.data.events.listen(self._on_event)
        self.auth.session_listeners.append(self._on_access)
        # Definitions were read before the bus listened: another process may have changed
        # one in between (workers starting together), and its note is not for us to hear.
        await self._reload_definitions()

    async def close(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._on_access in self.auth.session_listeners:
            self.auth.session_listeners.remove(self._on_access)
        for conn in list(self.connections.values()):
            conn.close(GOING_AWAY, "the server is shutting down")
        tasks = [*self._tasks, *self._rechecks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for handle in self._grace.values():
            handle.cancel()
        if self._subscription is not None:
            await self._subscription.close()
        await self.bus.close()

    def set_secret_key(self, key: str) -> None:
        """After a key rotation: sockets signed in with the old key are closed (4001)."""
        self.secret_key = key
        for conn in list(self.connections.values()):
            if conn.caller.is_admin and not conn.closing:
                conn.hold()
                self._schedule_recheck(conn, later=False)

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def stats(self) -> dict[str, int]:
        return {
            "connections": len(self.connections),
            "subscriptions": sum(len(c.subscriptions) for c in self.connections.values()),
            "channels": len(self._channels),
            "events_seen": self.events_seen,
            "changes_sent": self.changes_sent,
            "resyncs": self.resyncs,
            "slow_closes": self.slow_closes,
        }

    # the write path: called synchronously by the EventHub after every commit

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RecordEvent):
            if event.collection.startswith("_") and event.collection != FILES:
                return  # users, sessions, settings…: never exposed
            header = jsonutil.dumps({"k": "record", "c": event.collection, "a": event.action})
            previous = b"null" if event.previous is None else jsonutil.dumps(event.previous)
            payload = b"\n".join((header, jsonutil.dumps(event.record), previous))
            self.bus.publish(self.topic, payload)
        elif isinstance(event, CollectionEvent) and not event.collection.startswith("_"):
            note = {"k": "collection", "c": event.collection, "a": event.action}
            self._publish({**note, "o": self._origin})
        elif isinstance(event, ConfigEvent):
            self._publish({"k": "config", "what": event.kind, "c": event.name, "o": self._origin})

    def _on_access(self, user_id: str | None, session: str | None) -> None:
        """The auth service forgot a session or a user's sessions (sign-out, new role…)."""
        self._publish({"k": "access", "user": user_id, "session": session, "o": self._origin})

    def _publish(self, header: Mapping[str, JSON]) -> None:
        self.bus.publish(self.topic, jsonutil.dumps(header))

    # the bus consumer

    async def _consume(self, subscription: BusSubscription) -> None:
        handled = 0
        async for delivery in subscription:
            try:
                if isinstance(delivery, Resync):
                    self._resync_everyone(delivery.reason)
                else:
                    self._dispatch(delivery)
            except Exception:
                log.exception("realtime could not handle a bus message")
            handled += 1
            if handled % 256 == 0:
                await asyncio.sleep(0)  # let sockets and requests run during a burst

    def _dispatch(self, payload: bytes) -> None:
        head, _, rest = payload.partition(b"\n")
        header = orjson.loads(head)
        kind = header.get("k")
        if kind == "record":
            self._on_record(header["c"], header["a"], rest)
        elif kind == "collection":
            if header.get("o", self._origin) == self._origin:
                self._on_collection(header["c"], header["a"])
            else:  # another process changed it: read the definition first
                self._spawn(self._reload_collection(header["c"], header["a"]))
        elif kind == "config":
            if header.get("o") != self._origin:
                self._spawn(self._reload_config(header.get("what"), header.get("c")))
        elif kind == "access":
            self._on_access_note(header.get("user"), header.get("session"), header.get("o"))
        elif kind == "broadcast":
            self._on_broadcast(header)
        elif kind == "presence":
            self._on_presence(header)

    def _on_record(self, collection: str, action: str, rest: bytes) -> None:
        if collection == FILES:
            if not any(key.startswith(FILES + "/") for key in self._groups):
                return
        elif collection not in self._groups:
            return
        self.events_seen += 1
        record_json, _, previous_json = rest.partition(b"\n")
        record: Document = orjson.loads(record_json)
        previous: Document | None = orjson.loads(previous_json)
        texts: dict[str, str] = {}  # decoded lazily, once per event

        def text(which: str) -> str:
            if which not in texts:
                raw = record_json if which == "record" else previous_json
                texts[which] = raw.decode()
            return texts[which]

        if collection == FILES:
            buckets = [record.get("bucket")]
            if previous is not None and previous.get("bucket") != buckets[0]:
                buckets.append(previous.get("bucket"))
            groups = [self._groups.get(_group_key(FILES, str(b))) for b in buckets]
        else:
            groups = [self._groups.get(collection)]
        for group in groups:
            if group is not None:
                self._fan_out(group, action, record, previous, text)

    def _fan_out(
        self,
        group: _Group,
        action: str,
        record: Document,
        previous: Document | None,
        text: Callable[[str], str],
    ) -> None:
        if group.source is not self._source(group):
            self._refresh(group)
            refreshed = self._groups.get(group.key)
            if refreshed is None:
                return
            group = refreshed
        heads: dict[tuple[str, str], str] = {}
        for matcher in list(group.matchers.values()):
            matches = matcher.predicate
            if action == "create":
                was, now = False, matches(record)
            elif action == "update":
                was = previous is not None and matches(previous)
                now = matches(record)
            else:
                was, now = matches(record), False
            if now:
                kind, which = ("update" if was else "create"), "record"
            elif was:
                # Leaving: the last version this subscriber was allowed to see.
                kind, which = "delete", ("previous" if action == "update" else "record")
            else:
                continue
            head = heads.get((kind, which))
            if head is None:
                head = f'{{"type":"change","action":"{kind}","record":{text(which)},"sub":'
                heads[(kind, which)] = head
            for sub in matcher.subscriptions:
                sub.connection.deliver((head, sub.tail))
            self.changes_sent += len(matcher.subscriptions)

    def _on_collection(self, name: str, action: str) -> None:
        group = self._groups.get(name)
        if group is None:
            return
        if action == "delete":
            error = NotFound(f"Collection '{name}' was deleted.", {"collection": name})
            for sub in group.subscriptions():
                self._drop(sub, error)
        elif group.source is not self._source(group):
            self._refresh(group)

    # definitions another process serving this backpack changed

    async def _reload_collection(self, name: str, action: str) -> None:
        try:
            await self.data.reload_collections(name)
        except Exception:
            log.exception("reloading collection %s failed", name)
        self._on_collection(name, action)

    async def _reload_config(self, what: object, name: object) -> None:
        try:
            if what == "settings":
                await self.settings.reload()
            elif what == "bucket" and isinstance(name, str):
                await self.files.reload_buckets(name)
        except Exception:
            log.exception("reloading the %s settings failed", what)

    async def _reload_definitions(self) -> None:
        await self.data.reload_collections()
        await self.settings.reload()
        await self.files.reload_buckets()

    async def _reload_everything(self) -> None:
        """After lost bus messages: any definition may have changed elsewhere."""
        try:
            await self._reload_definitions()
        except Exception:
            log.exception("reloading definitions after a resync failed")
        for name in list(self._groups):
            self._on_collection(name, "update")

    def _resync_everyone(self, reason: str) -> None:
        log.warning("realtime events may have been lost (%s); asking clients to resync", reason)
        self.resyncs += 1
        self._spawn(self._reload_everything())
        for conn in list(self.connections.values()):
            self._resync(conn)
            if conn.token is not None:
                self._schedule_recheck(conn, later=False)  # an access note may be among the lost
        for channel in list(self._channels.values()):
            # Presence notes may be lost too: rebuild from the members connected here.
            channel.presence = {
                cid: c.channels.get(channel.name) for cid, c in channel.local.items()
            }
            if not channel.local:
                del self._channels[channel.name]
                continue
            message = _dumps(
                {
                    "type": "presence",
                    "channel": channel.name,
                    "state": channel.presence,
                    "joins": {},
                    "leaves": {},
                }
            )
            for conn in channel.local.values():
                conn.deliver(message)

    # subscriptions

    def _source(self, group: _Group) -> object:
        if group.collection == FILES:
            return self.files._buckets.get(group.bucket or DEFAULT_BUCKET)
        return self.data._collections.get(group.collection)

    def _rules(self, collection: str, bucket: str | None) -> tuple[Mapping[str, Rule], object]:
        if collection == FILES:
            name = bucket or DEFAULT_BUCKET
            found = self.files._bucket(name)  # NotFound for an unknown bucket
            return self.files._rules(found), self.files._buckets.get(name)
        if collection.startswith("_"):
            raise NotFound(f"Collection '{collection}' does not exist.", {"collection": collection})
        table = self.data._collection(collection)
        return table.compiled_rules, table

    def _attach(self, sub: Subscription) -> None:
        """Compile `filter AND list AND read` for the subscriber and file it in its group."""
        rules, source = self._rules(sub.collection, sub.bucket)
        caller = sub.connection.caller
        label = f"bucket {sub.bucket}" if sub.collection == FILES else sub.collection
        listed = rule_filter(caller, rules["list"], "list", label)
        readable = rule_filter(caller, rules["read"], "read", label)
        base = Eq(("bucket",), sub.bucket) if sub.collection == FILES else MATCH_ALL
        extra = () if readable == listed else (readable,)
        node = and_nodes(base, sub.filter, listed, *extra)
        key = _group_key(sub.collection, sub.bucket)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(key, sub.collection, sub.bucket, source)
        elif group.source is not source:
            self._refresh(group)
            group = self._groups.setdefault(key, _Group(key, sub.collection, sub.bucket, source))
        matcher_key = repr(node)
        matcher = group.matchers.get(matcher_key)
        if matcher is None:
            matcher = group.matchers[matcher_key] = _Matcher(matcher_key, node)
        matcher.subscriptions.add(sub)
        sub.group, sub.key = group, matcher.key

    def _detach(self, sub: Subscription) -> None:
        group, sub.group = sub.group, None
        if group is None:
            return
        matcher = group.matchers.get(sub.key)
        if matcher is not None:
            matcher.subscriptions.discard(sub)
            if not matcher.subscriptions:
                del group.matchers[sub.key]
        if not group.matchers and self._groups.get(group.key) is group:
            del self._groups[group.key]

    def _refresh(self, group: _Group) -> None:
        """The rules changed: compile every subscription of the group again."""
        subs = group.subscriptions()
        group.matchers.clear()
        if self._groups.get(group.key) is group:
            del self._groups[group.key]
        for sub in subs:
            sub.group = None
            self._reattach(sub)

    def _reattach(self, sub: Subscription) -> None:
        self._detach(sub)
        try:
            self._attach(sub)
        except BackpackError as exc:
            self._drop(sub, exc)

    def _drop(self, sub: Subscription, error: BackpackError) -> None:
        self._detach(sub)
        conn = sub.connection
        if conn.subscriptions.get(sub.id) is sub:
            del conn.subscriptions[sub.id]
        self._error(conn, sub.id, error)

    # connections

    async def connect(self, conn: Connection, token: str | None) -> None:
        """A client is accepted; `token` came with the upgrade (query or cookie)."""
        self.connections[conn.id] = conn
        if token is not None:
            await self._sign_in(conn, token, None)
            return
        # Give a first `auth` message a moment, so `ready` tells the final identity.
        loop = asyncio.get_running_loop()
        self._grace[conn.id] = loop.call_later(
            self.limits.auth_grace_seconds, self._grace_over, conn
        )

    def _grace_over(self, conn: Connection) -> None:
        self._grace.pop(conn.id, None)
        if not conn.ready_sent and not conn.closing:
            self._send_ready(conn)

    async def disconnect(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is not None and conn.close_code == TRY_AGAIN_LATER:
            self.slow_closes += 1
        handle = self._grace.pop(conn.id, None)
        if handle is not None:
            handle.cancel()
        task = self._rechecks.pop(conn.id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        for sub in list(conn.subscriptions.values()):
            self._detach(sub)
        conn.subscriptions.clear()
        for name in list(conn.channels):
            self._leave(conn, name)
        conn.gone()

    async def handle_text(self, conn: Connection, text: str) -> None:
        if conn.closing:
            return
        limit = self.limits.max_message_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            self._error(
                conn,
                None,
                PayloadTooLarge(f"Messages are limited to {limit} bytes.", {"limit": limit}),
            )
            conn.close(TOO_BIG, "message too big")
            return
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._error(conn, None, BadRequest("Messages must be JSON objects with a type."))
            return
        if not isinstance(msg, dict):
            self._error(conn, None, BadRequest("Messages must be JSON objects with a type."))
            return
        msg_id = _message_id(msg)
        kind = msg.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            shown = kind[:64] if isinstance(kind, str) else None
            self._error(
                conn,
                msg_id,
                BadRequest(
                    "Unknown message type; use auth, subscribe, unsubscribe, join, leave, "
                    "broadcast or ping.",
                    {"type": shown},
                ),
            )
            return
        if not conn.ready_sent and kind != "auth":
            self._send_ready(conn)  # the client chose not to sign in by message
        try:
            if jsonutil.depth_exceeds(msg, MAX_JSON_DEPTH):
                raise BadRequest(f"The message nests deeper than {MAX_JSON_DEPTH} levels.")
            unknown = set(msg) - _KEYS[str(kind)]
            if unknown:
                raise BadRequest(
                    f"Unknown keys in a {kind} message: {', '.join(sorted(unknown)[:10])}.",
                    {"fields": sorted(unknown)[:10]},
                )
            await handler(conn, msg)
        except BackpackError as exc:
            self._error(conn, msg_id, exc)

    def handle_binary(self, conn: Connection, data: bytes) -> None:
        if conn.closing:
            return
        if len(data) > self.limits.max_message_bytes:
            limit = self.limits.max_message_bytes
            self._error(
                conn,
                None,
                PayloadTooLarge(f"Messages are limited to {limit} bytes.", {"limit": limit}),
            )
            conn.close(TOO_BIG, "message too big")
            return
        self._error(
            conn, None, BadRequest("Binary frames are not part of the protocol; send JSON text.")
        )

    # messages

    def _error(self, conn: Connection, msg_id: str | None, exc: BackpackError) -> None:
        message: dict[str, JSON] = {"type": "error"}
        if msg_id is not None:
            message["id"] = msg_id
        message["error"] = exc.body()["error"]
        conn.push(_dumps(message))

    def _ack(self, conn: Connection, msg_id: str | None) -> None:
        if msg_id is not None:
            conn.push(_dumps({"type": "ack", "id": msg_id}))

    def _send_ready(self, conn: Connection) -> None:
        handle = self._grace.pop(conn.id, None)
        if handle is not None:
            handle.cancel()
        conn.ready_sent = True
        conn.push(_dumps({"type": "ready", "user": conn.user}))

    async def _handle_ping(self, conn: Connection, msg: Document) -> None:
        conn.push(_PONG)

    async def _handle_auth(self, conn: Connection, msg: Document) -> None:
        token = msg.get("token")
        if token is not None and not isinstance(token, str):
            raise BadRequest("token must be a string (or null to sign out).", {"field": "token"})
        await self._sign_in(conn, token, _message_id(msg))

    async def _handle_subscribe(self, conn: Connection, msg: Document) -> None:
        sub_id = _required_id(msg)
        if sub_id in conn.subscriptions:
            raise Conflict(f"Subscription '{sub_id}' already exists.", {"id": sub_id})
        if len(conn.subscriptions) >= self.limits.max_subscriptions:
            raise BadRequest(
                f"A connection holds at most {self.limits.max_subscriptions} subscriptions.",
                {"limit": self.limits.max_subscriptions},
            )
        collection = msg.get("collection")
        if not isinstance(collection, str) or not collection:
            raise BadRequest("subscribe needs a collection.", {"field": "collection"})
        bucket = msg.get("bucket")
        if collection == FILES:
            if bucket is None:
                bucket = DEFAULT_BUCKET
            if not isinstance(bucket, str):
                raise BadRequest("bucket must be a bucket name.", {"field": "bucket"})
            check_collection_name(bucket)
        elif bucket is not None:
            raise BadRequest("bucket goes with the collection _files only.", {"field": "bucket"})
        raw_filter = msg.get("filter")
        node = MATCH_ALL
        if raw_filter is not None:
            text = jsonutil.dumps(raw_filter)
            if len(text) > MAX_FILTER_BYTES:
                raise InvalidQuery(f"The filter is longer than {MAX_FILTER_BYTES} bytes.")
            # Many clients subscribe with the same filter: they share one parsed tree.
            found = self._filters.get(text)
            if found is None:
                if len(self._filters) > 256:
                    self._filters.clear()
                found = self._filters[text] = parse_filter(raw_filter)
            node = found
        sub = Subscription(sub_id, conn, collection, bucket, node)
        self._attach(sub)
        conn.subscriptions[sub_id] = sub
        conn.push(_dumps({"type": "ack", "id": sub_id}))

    async def _handle_unsubscribe(self, conn: Connection, msg: Document) -> None:
        sub_id = _required_id(msg)
        sub = conn.subscriptions.pop(sub_id, None)
        if sub is None:
            raise NotFound(f"There is no subscription '{sub_id}'.", {"id": sub_id})
        self._detach(sub)
        conn.push(_dumps({"type": "ack", "id": sub_id}))

    # identity

    async def _caller_for(self, token: str | None) -> Caller:
        if self.credentials is not None:  # the backpack's one resolver: every token kind
            return await self.credentials.caller(token)
        if token is None:
            return ANONYMOUS
        if token.startswith("bpk_"):
            if hmac.compare_digest(token.encode(), self.secret_key.encode()):
                return SECRET_KEY
            raise Unauthorized("The secret key is not valid for this backpack.")
        if token.startswith("bps_"):
            return await self.auth.authenticate(token)
        raise Unauthorized("The token is not a Backpack credential (bps_ or bpk_).")

    async def _user_of(self, caller: Caller) -> JSON:
        if caller.user is None:
            return None
        user = await self.auth.user_by_id(str(caller.user.get("id")))
        if user is None:
            raise Unauthorized("The session token is invalid or has expired.")
        return public_user(user)

    async def _sign_in(self, conn: Connection, token: str | None, msg_id: str | None) -> None:
        handle = self._grace.pop(conn.id, None)
        if handle is not None:
            handle.cancel()
        try:
            caller = await self._caller_for(token)
            user = await self._user_of(caller)
        except Unauthorized as exc:
            self._error(conn, msg_id, exc)
            conn.close(UNAUTHORIZED, "invalid credentials")
            return
        if conn.closing:
            return
        was_ready = conn.ready_sent
        changed = self._switch(conn, caller, token, user)
        self._send_ready(conn)
        if changed and was_ready:
            self._resync(conn)  # records became visible or hidden: the client should refetch

    def _switch(self, conn: Connection, caller: Caller, token: str | None, user: JSON) -> bool:
        """Take on a new identity; what the old one could see is compiled again."""
        changed = (caller.is_admin, caller.user) != (conn.caller.is_admin, conn.caller.user)
        conn.caller, conn.token, conn.user = caller, token, user
        if not changed:
            return False
        for sub in list(conn.subscriptions.values()):
            self._reattach(sub)
        for name in list(conn.channels):
            try:
                allowed = self._channel_allows(caller, name, "join")
            except Forbidden:
                allowed = False
            if not allowed:
                self._leave(conn, name)
                self._error(
                    conn,
                    None,
                    Forbidden(f"You may no longer be in channel '{name}'.", {"channel": name}),
                )
        return True

    def _on_access_note(self, user_id: object, session: object, origin: object) -> None:
        for conn in list(self.connections.values()):
            caller = conn.caller
            hit = (isinstance(session, str) and caller.session == session) or (
                isinstance(user_id, str)
                and caller.user is not None
                and caller.user.get("id") == user_id
            )
            if hit and not conn.closing:
                conn.hold()  # nothing more reaches it until its credentials are checked
                self._schedule_recheck(conn, later=origin != self._origin)

    def _schedule_recheck(self, conn: Connection, *, later: bool) -> None:
        if conn.id in self._rechecks:
            self._recheck_again.add(conn.id)
            return
        task = asyncio.get_running_loop().create_task(self._recheck(conn, later))
        self._rechecks[conn.id] = task

    async def _recheck(self, conn: Connection, later: bool) -> None:
        try:
            while True:
                self._recheck_again.discard(conn.id)
                await self._revalidate(conn)
                if conn.id not in self._recheck_again or conn.closing:
                    break
            if later and not conn.closing:
                # Another process revoked it: this process's auth cache may lag a second.
                await asyncio.sleep(_RECHECK_AFTER_CACHE)
                await self._revalidate(conn)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("realtime could not re-check a connection's credentials")
            self._flush_held(conn)
        finally:
            if self._rechecks.get(conn.id) is asyncio.current_task():
                del self._rechecks[conn.id]

    async def _revalidate(self, conn: Connection) -> None:
        token = conn.token
        if conn.closing or (token is None and not conn.caller.is_admin):
            self._flush_held(conn)
            return
        try:
            caller = await self._caller_for(token)
            user = await self._user_of(caller)
        except Unauthorized as exc:
            conn.release()
            self._error(conn, None, exc)
            conn.close(UNAUTHORIZED, "credentials no longer valid")
            return
        if conn.closing:
            return
        if conn.token is not token:  # an `auth` message changed the identity meanwhile
            conn.release()
            self._resync(conn)
            return
        if (caller.is_admin, caller.user) == (conn.caller.is_admin, conn.caller.user):
            conn.user = user
            self._flush_held(conn)
            return
        conn.release()  # matched for the old identity: dropped, the client resyncs
        self._switch(conn, caller, token, user)
        self._send_ready(conn)
        self._resync(conn)

    def _flush_held(self, conn: Connection) -> None:
        overflow = conn.held_overflow
        for item in conn.release():
            conn.push(item)
        if overflow:
            self._resync(conn)

    def _resync(self, conn: Connection) -> None:
        for sub in conn.subscriptions.values():
            conn.push(_dumps({"type": "resync", "sub": sub.id}))

    async def _recheck_periodically(self) -> None:
        """Expired sessions, and revocations this process was not told about."""
        while True:
            await asyncio.sleep(self.limits.recheck_seconds)
            for conn in list(self.connections.values()):
                if conn.token is not None and not conn.closing and conn.id not in self._rechecks:
                    try:
                        await self._revalidate(conn)
                    except Exception:
                        log.exception("realtime could not re-check a connection's credentials")

    # channels

    def _channel_rule(self, channel: str, operation: str) -> object:
        for entry in self.settings.current.values.get("channels") or ():
            if isinstance(entry, dict) and fnmatchcase(channel, str(entry.get("pattern", ""))):
                found: object = entry.get(operation, _SIGNED_IN_DEFAULT)
                return found
        return _SIGNED_IN_DEFAULT

    def _channel_allows(self, caller: Caller, channel: str, operation: str) -> bool:
        """Whether the channel rules let `caller` join/broadcast; raises for a locked rule."""
        if caller.is_admin:
            return True
        rule = self._channel_rule(channel, operation)
        if rule is _SIGNED_IN_DEFAULT:
            return caller.user is not None
        if rule is None or rule is False:
            raise Forbidden(
                f"Only the secret key may {operation} channel '{channel}'.",
                {"channel": channel, "operation": operation},
            )
        if rule is True:
            return True
        text = jsonutil.dumps_str(rule)
        node = self._channel_rules.get(text)
        if node is None:
            if len(self._channel_rules) > 256:
                self._channel_rules.clear()
            node = self._channel_rules[text] = parse_filter(rule, allow_variables=True)
        # Against an empty record: channel rules are about the caller (@auth…).
        return check_rule(caller, node, operation, f"channel {channel}", {})

    def _require_channel(self, caller: Caller, channel: str, operation: str) -> None:
        if not self._channel_allows(caller, channel, operation):
            raise Forbidden(
                f"The channel rules do not let you {operation} '{channel}'.",
                {"channel": channel, "operation": operation},
            )

    async def _handle_join(self, conn: Connection, msg: Document) -> None:
        name = _channel_name(msg)
        presence = msg.get("presence")
        if presence is None:
            presence = {}
        if not isinstance(presence, dict):
            raise BadRequest("presence must be an object.", {"field": "presence"})
        if len(jsonutil.dumps(presence)) > self.limits.max_presence_bytes:
            raise BadRequest(
                f"presence is limited to {self.limits.max_presence_bytes} bytes.",
                {"field": "presence"},
            )
        self._require_channel(conn.caller, name, "join")
        if name not in conn.channels and len(conn.channels) >= self.limits.max_channels:
            raise BadRequest(
                f"A connection joins at most {self.limits.max_channels} channels.",
                {"limit": self.limits.max_channels},
            )
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(name)
        channel.local[conn.id] = conn
        conn.channels[name] = presence
        self._publish({"k": "presence", "channel": name, "conn": conn.id, "presence": presence})
        self._ack(conn, _message_id(msg))

    async def _handle_leave(self, conn: Connection, msg: Document) -> None:
        name = _channel_name(msg)
        if name not in conn.channels:
            raise NotFound(f"You have not joined '{name}'.", {"channel": name})
        self._leave(conn, name)
        self._ack(conn, _message_id(msg))

    def _leave(self, conn: Connection, name: str) -> None:
        conn.channels.pop(name, None)
        channel = self._channels.get(name)
        if channel is not None:
            channel.local.pop(conn.id, None)
        self._publish({"k": "presence", "channel": name, "conn": conn.id, "presence": None})

    async def _handle_broadcast(self, conn: Connection, msg: Document) -> None:
        name = _channel_name(msg)
        event = msg.get("event")
        if not isinstance(event, str) or not 1 <= len(event) <= 128:
            raise BadRequest("event must be a name of 1 to 128 characters.", {"field": "event"})
        if name not in conn.channels:
            raise Forbidden(f"Join '{name}' before broadcasting on it.", {"channel": name})
        self._require_channel(conn.caller, name, "broadcast")
        sender = conn.caller.user.get("id") if conn.caller.user is not None else None
        self._publish(
            {
                "k": "broadcast",
                "channel": name,
                "event": event,
                "data": msg.get("data"),
                "from": sender,
                "conn": conn.id,
            }
        )
        self._ack(conn, _message_id(msg))

    def _on_broadcast(self, header: Mapping[str, Any]) -> None:
        channel = self._channels.get(str(header.get("channel")))
        if channel is None or not channel.local:
            return
        message = _dumps(
            {
                "type": "broadcast",
                "channel": channel.name,
                "event": header.get("event"),
                "data": header.get("data"),
                "from": header.get("from"),
            }
        )
        sender = header.get("conn")
        for cid, conn in list(channel.local.items()):
            if cid != sender:
                conn.deliver(message)

    def _on_presence(self, header: Mapping[str, Any]) -> None:
        name = str(header.get("channel"))
        cid = str(header.get("conn"))
        presence = header.get("presence")
        channel = self._channels.get(name)
        if channel is None:
            if presence is None:
                return
            channel = self._channels[name] = _Channel(name)
        joins: dict[str, JSON] = {}
        leaves: dict[str, JSON] = {}
        if presence is None:
            if cid not in channel.presence:
                return
            leaves[cid] = channel.presence.pop(cid)
        else:
            channel.presence[cid] = joins[cid] = presence
        if channel.local:
            message = _dumps(
                {
                    "type": "presence",
                    "channel": name,
                    "state": channel.presence,
                    "joins": joins,
                    "leaves": leaves,
                }
            )
            for conn in list(channel.local.values()):
                conn.deliver(message)
        if not channel.local and not channel.presence:
            del self._channels[name]
