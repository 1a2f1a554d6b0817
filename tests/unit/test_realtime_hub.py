"""The realtime hub on real services (SQLite, local blobs, the in-process bus).

Clients here are `Connection`s whose transport is an in-memory pair of
callables, so the tests can look inside the hub: shared matchers, held
messages, what happens when the bus loses events or a session expires.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backpack.auth.service import SESSIONS, AuthService
from backpack.auth.tokens import token_hash
from backpack.blobs.local import LocalBlobStore
from backpack.bus import MemoryBus
from backpack.core import jsonutil
from backpack.core.access import SECRET_KEY, Caller
from backpack.core.records import DataService
from backpack.core.settings import SettingsService
from backpack.core.storage import Update
from backpack.files.service import FilesService
from backpack.realtime import Connection, RealtimeHub, RealtimeLimits
from backpack.storage.sqlite.adapter import SqliteStorage

KEY = "bpk_" + "k" * 43
ALL_TRUE = dict.fromkeys(("list", "read", "create", "update", "delete"), True)


@dataclass
class Services:
    data: DataService
    auth: AuthService
    files: FilesService
    settings: SettingsService
    bus: MemoryBus


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    data = DataService(SqliteStorage(str(tmp_path / "db.sqlite")), cursor_key=b"k")
    await data.open()
    settings = SettingsService(data)
    await settings.open()
    auth = AuthService(data, settings)
    await auth.open()
    files = FilesService(data, LocalBlobStore(tmp_path / "blobs"), settings, signing_key=b"s")
    await files.open()
    yield Services(data, auth, files, settings, MemoryBus())
    await files.close()
    await data.close()


async def make_hub(services: Services, **limits: Any) -> RealtimeHub:
    hub = RealtimeHub(
        services.data,
        services.auth,
        services.files,
        services.settings,
        services.bus,
        KEY,
        RealtimeLimits(**limits),
    )
    await hub.open()
    return hub


@pytest.fixture
async def hub(services: Services) -> AsyncIterator[RealtimeHub]:
    hub = await make_hub(services)
    yield hub
    await hub.close()


class Peer:
    """A client on an in-memory transport; `blocked` peers never finish a send."""

    def __init__(self, hub: RealtimeHub, *, blocked: bool = False) -> None:
        self.hub = hub
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.gate = asyncio.Event()
        if not blocked:
            self.gate.set()
        self.close_code: int | None = None
        self.conn = Connection(self._send_text, self._send_close, hub.limits)

    async def _send_text(self, text: str) -> None:
        await self.gate.wait()
        self.inbox.put_nowait(json.loads(text))

    async def _send_close(self, code: int, reason: str) -> None:
        self.close_code = code

    async def connect(self, token: str | None = None) -> Peer:
        await self.hub.connect(self.conn, token)
        return self

    async def send(self, **message: Any) -> None:
        await self.hub.handle_text(self.conn, json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        message = await self.recv()
        assert message["type"] == kind, message
        for key, value in fields.items():
            assert message.get(key) == value, message
        return message

    async def quiet(self) -> None:
        """Nothing is waiting for this peer (after the bus has been drained)."""
        await settle()
        assert self.inbox.empty(), self.inbox.get_nowait()

    async def finished(self, timeout: float = 5.0) -> int | None:
        await asyncio.wait_for(self.conn.wait_finished(), timeout)
        return self.close_code


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def user(services: Services, email: str, role: str = "user") -> tuple[Caller, str]:
    doc = await services.auth.create_user(
        SECRET_KEY, {"email": email, "password": "password 1", "role": role}
    )
    grant = await services.auth.start_session(doc, "test", "127.0.0.1")
    return await services.auth.authenticate(grant.token), grant.token


async def test_one_matcher_per_distinct_bound_filter(services: Services, hub: RealtimeHub) -> None:
    await services.data.create_collection(
        SECRET_KEY, {"name": "notes", "rules": {**ALL_TRUE, "list": {"owner": "@auth.id"}}}
    )
    ann, ann_token = await user(services, "ann@example.com")
    _, bob_token = await user(services, "bob@example.com")
    peers = [
        await Peer(hub).connect(token) for token in (ann_token, ann_token, bob_token, KEY, KEY)
    ]
    for peer in peers:
        await peer.expect("ready")
        await peer.send(type="subscribe", id="s", collection="notes", filter={"done": False})
        await peer.expect("ack", id="s")
    group = hub._groups["notes"]
    assert len(group.matchers) == 3  # ann's, bob's and the secret key's
    assert sorted(len(m.subscriptions) for m in group.matchers.values()) == [1, 2, 2]

    record = await services.data.create_record(ann, "notes", {"done": False})
    for peer in (peers[0], peers[1], peers[3], peers[4]):
        change = await peer.expect("change", sub="s", action="create")
        assert change["record"] == record
    await peers[2].quiet()

    for peer in peers:
        await hub.disconnect(peer.conn)
    assert "notes" not in hub._groups
    stats = hub.stats()
    assert stats["connections"] == stats["subscriptions"] == stats["channels"] == 0
    assert stats["events_seen"] == 1 and stats["changes_sent"] == 4


async def test_rule_changes_recompile_and_deletion_ends_subscriptions(
    services: Services, hub: RealtimeHub
) -> None:
    owner_only = {"list": {"owner": "@auth.id"}, "read": {"owner": "@auth.id"}}
    await services.data.create_collection(
        SECRET_KEY, {"name": "docs", "rules": {**ALL_TRUE, **owner_only}}
    )
    _, token = await user(services, "cy@example.com")
    peer = await Peer(hub).connect(token)
    await peer.expect("ready")
    await peer.send(type="subscribe", id="s", collection="docs")
    await peer.expect("ack")
    await services.data.create_record(SECRET_KEY, "docs", {"n": 1})
    await peer.quiet()
    await services.data.update_collection(
        SECRET_KEY, "docs", {"rules": {"list": True, "read": True}}
    )
    await services.data.create_record(SECRET_KEY, "docs", {"n": 2})
    assert (await peer.expect("change"))["record"]["n"] == 2
    await services.data.delete_collection(SECRET_KEY, "docs")
    error = await peer.expect("error", id="s")
    assert error["error"]["code"] == "not_found"
    assert peer.conn.subscriptions == {}
    assert "docs" not in hub._groups


async def test_bucket_rule_changes_apply_at_the_next_event(
    services: Services, hub: RealtimeHub
) -> None:
    closed = {"list": None, "read": None, "create": True}
    await services.files.put_bucket(SECRET_KEY, "pics", {"rules": closed})
    peer = await Peer(hub).connect(None)
    await peer.send(type="subscribe", id="p", collection="_files", bucket="pics")
    await peer.expect("ready")
    assert (await peer.expect("error", id="p"))["error"]["code"] == "forbidden"
    await services.files.put_bucket(SECRET_KEY, "pics", {"rules": {"list": True, "read": True}})
    await peer.send(type="subscribe", id="p", collection="_files", bucket="pics")
    await peer.expect("ack")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"data"

    doc = await services.files.upload(SECRET_KEY, "pics", "a.txt", False, chunks())
    assert (await peer.expect("change", action="create"))["record"] == doc
    await services.files.put_bucket(SECRET_KEY, "pics", {"rules": {"list": None}})
    await services.files.update(SECRET_KEY, str(doc["id"]), {"name": "b.txt"})
    assert (await peer.expect("error", id="p"))["error"]["code"] == "forbidden"
    # Moving a file between buckets: it leaves one subscription and enters the other.
    await services.files.put_bucket(SECRET_KEY, "pics", {"rules": {"list": True}})
    await services.files.put_bucket(SECRET_KEY, "docs", {"rules": ALL_TRUE})
    await peer.send(type="subscribe", id="p", collection="_files", bucket="pics")
    await peer.send(type="subscribe", id="d", collection="_files", bucket="docs")
    await peer.expect("ack", id="p")
    await peer.expect("ack", id="d")
    await services.files.update(SECRET_KEY, str(doc["id"]), {"bucket": "docs"})
    got = {(m["sub"], m["action"]) for m in [await peer.recv(), await peer.recv()]}
    assert got == {("p", "delete"), ("d", "create")}


async def test_lost_bus_messages_become_resync(services: Services) -> None:
    services.bus = MemoryBus(capacity=5)
    hub = await make_hub(services)
    try:
        await services.data.create_collection(SECRET_KEY, {"name": "t", "rules": ALL_TRUE})
        peer = await Peer(hub).connect(KEY)
        await peer.expect("ready")
        for sub in ("a", "b"):
            await peer.send(type="subscribe", id=sub, collection="t")
            await peer.expect("ack", id=sub)
        await peer.send(type="join", channel="room")
        await peer.expect("presence")
        # Published in one go, without letting the hub run: more than the bus holds.
        for _ in range(12):
            hub.bus.publish(hub.topic, b'{"k":"collection","c":"t","a":"update"}')
        await settle()
        got = [await peer.recv() for _ in range(3)]
        assert [m["type"] for m in got] == ["resync", "resync", "presence"]
        assert {m.get("sub") for m in got[:2]} == {"a", "b"}
        assert got[2]["state"] == {peer.conn.id: {}}
        await services.data.create_record(SECRET_KEY, "t", {"n": 1})
        assert (await peer.recv())["type"] == "change"  # and life goes on
    finally:
        await hub.close()


async def test_an_expired_session_is_closed_by_the_periodic_check(services: Services) -> None:
    hub = await make_hub(services, recheck_seconds=0.05)
    try:
        _, token = await user(services, "dee@example.com")
        peer = await Peer(hub).connect(token)
        await peer.expect("ready")
        key = token_hash(token)
        found = await services.data.storage.get(SESSIONS, key)
        assert found is not None
        doc = jsonutil.loads(found.doc)
        doc.update(expires="2000-01-01T00:00:00.000Z", version=found.version + 1)
        await services.data.storage.apply(
            [Update(SESSIONS, key, found.version, found.version + 1, jsonutil.dumps_str(doc))]
        )
        started = time.monotonic()
        assert (await peer.expect("error"))["error"]["code"] == "unauthorized"
        assert await peer.finished() == 4001
        assert time.monotonic() - started < 5  # the auth cache forgets within a second
    finally:
        await hub.close()


async def test_events_are_held_while_credentials_are_rechecked(
    services: Services, hub: RealtimeHub
) -> None:
    await services.data.create_collection(SECRET_KEY, {"name": "t", "rules": ALL_TRUE})
    caller, token = await user(services, "eve@example.com")
    peer = await Peer(hub).connect(token)
    await peer.expect("ready")
    await peer.send(type="subscribe", id="s", collection="t")
    await peer.expect("ack")
    # A change of data only (no access change): held, then delivered in order.
    hub._on_access(None, caller.session)
    await services.data.create_record(SECRET_KEY, "t", {"n": 1})
    await services.data.create_record(SECRET_KEY, "t", {"n": 2})
    assert [(await peer.recv())["record"]["n"] for _ in range(2)] == [1, 2]
    # Signed out: whatever was held is dropped, then the socket closes.
    await services.auth.logout(caller)
    await services.data.create_record(SECRET_KEY, "t", {"n": 3})
    assert (await peer.expect("error"))["error"]["code"] == "unauthorized"
    assert await peer.finished() == 4001
    assert peer.inbox.empty()


async def test_a_blocked_client_never_slows_the_others(
    services: Services, hub: RealtimeHub
) -> None:
    await services.data.create_collection(SECRET_KEY, {"name": "t", "rules": ALL_TRUE})
    stuck = await Peer(hub, blocked=True).connect(KEY)
    fine = await Peer(hub).connect(KEY)
    await fine.expect("ready")
    for peer in (stuck, fine):
        await peer.send(type="subscribe", id="s", collection="t")
    await fine.expect("ack")
    ops = [{"op": "create", "collection": "t", "data": {"n": i}} for i in range(1000)]
    for _ in range(2):
        started = time.monotonic()
        await services.data.batch(SECRET_KEY, {"ops": ops})
        assert time.monotonic() - started < 5
    assert [(await fine.recv())["record"]["n"] for _ in range(2000)] == list(range(1000)) * 2
    assert await stuck.finished() == 1013
    assert stuck.inbox.empty()
    assert stuck.conn.id in hub.connections  # until its endpoint calls disconnect
    await hub.disconnect(stuck.conn)
    assert len(hub._groups["t"].matchers) == 1
    assert hub.stats()["slow_closes"] == 1


async def test_channel_rules(services: Services, hub: RealtimeHub) -> None:
    await services.settings.update(
        SECRET_KEY,
        {
            "channels": [
                {"pattern": "ed:*", "join": {"@auth.role": "editor"}, "broadcast": None},
                {"pattern": "open", "join": True},
            ]
        },
    )
    _, editor_token = await user(services, "ed@example.com", role="editor")
    _, plain_token = await user(services, "pl@example.com")
    editor = await Peer(hub).connect(editor_token)
    plain = await Peer(hub).connect(plain_token)
    anon = await Peer(hub).connect(None)
    admin = await Peer(hub).connect(KEY)
    for peer in (editor, plain, admin):
        await peer.expect("ready")

    await anon.send(type="ping")
    await anon.expect("ready", user=None)
    await anon.expect("pong")

    async def outcome(peer: Peer, **message: Any) -> str:
        """The reply's type, or the error code; presence messages are skipped."""
        await peer.send(**message)
        while (reply := await peer.recv())["type"] == "presence":
            pass
        return reply["error"]["code"] if reply["type"] == "error" else str(reply["type"])

    assert await outcome(plain, type="join", channel="ed:1") == "forbidden"
    assert await outcome(editor, type="join", channel="ed:1", id="j") == "ack"
    assert await outcome(editor, type="broadcast", channel="ed:1", event="e") == "forbidden"
    assert await outcome(anon, type="join", channel="open", id="o") == "ack"
    assert await outcome(anon, type="broadcast", channel="open", event="e") == "forbidden"
    assert await outcome(anon, type="join", channel="elsewhere") == "forbidden"
    assert await outcome(plain, type="join", channel="elsewhere", id="k") == "ack"
    assert await outcome(plain, type="broadcast", channel="elsewhere", event="e", id="b") == "ack"
    assert await outcome(admin, type="join", channel="ed:2", id="a") == "ack"
    assert await outcome(admin, type="broadcast", channel="ed:2", event="e", id="b") == "ack"


async def test_rotating_the_secret_key_closes_its_sockets(
    services: Services, hub: RealtimeHub
) -> None:
    old = await Peer(hub).connect(KEY)
    await old.expect("ready", user=None)
    new_key = "bpk_" + "n" * 43
    hub.set_secret_key(new_key)
    assert (await old.expect("error"))["error"]["code"] == "unauthorized"
    assert await old.finished() == 4001
    fresh = await Peer(hub).connect(new_key)
    await fresh.expect("ready", user=None)
    await fresh.send(type="ping")
    await fresh.expect("pong")


# the outbound path: direct writes, one drain task only while a socket is backpressured


async def test_idle_connections_own_no_task_and_little_memory(
    services: Services, hub: RealtimeHub
) -> None:
    await services.data.create_collection(SECRET_KEY, {"name": "t", "rules": ALL_TRUE})
    received: list[str] = []

    async def send_text(text: str) -> None:  # one transport for all: only the hub's cost counts
        received.append(text)

    async def send_close(code: int, reason: str) -> None:
        pass

    subscribe = json.dumps(
        {"type": "subscribe", "id": "s", "collection": "t", "filter": {"n": {"$gte": 0}}}
    )
    tasks = len(asyncio.all_tasks())
    count = 500
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        conns = [Connection(send_text, send_close, hub.limits) for _ in range(count)]
        for conn in conns:
            await hub.connect(conn, KEY)
            await hub.handle_text(conn, subscribe)
        received.clear()
        gc.collect()
        per_connection = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert len(asyncio.all_tasks()) == tasks  # no writer task, no reader: nothing per socket
    assert conns[0].subscriptions["s"].filter is conns[-1].subscriptions["s"].filter  # shared
    assert per_connection < 1500, f"{per_connection:.0f} bytes per idle subscribed connection"
    record = await services.data.create_record(SECRET_KEY, "t", {"n": 1})
    await settle()
    assert len(received) == count  # written at once, without a task in between
    assert all(json.loads(text)["record"] == record for text in received)
    for conn in conns:
        await hub.disconnect(conn)
    assert hub.stats()["connections"] == 0


async def test_a_backpressured_socket_queues_then_writes_directly_again(
    services: Services, hub: RealtimeHub
) -> None:
    await services.data.create_collection(SECRET_KEY, {"name": "t", "rules": ALL_TRUE})
    tasks = len(asyncio.all_tasks())
    peer = await Peer(hub, blocked=True).connect(KEY)  # `ready` cannot go out
    await peer.send(type="subscribe", id="s", collection="t")
    for n in range(3):
        await services.data.create_record(SECRET_KEY, "t", {"n": n})
    await settle()
    assert peer.inbox.empty()
    assert len(asyncio.all_tasks()) == tasks + 1  # one drain task for the stuck socket
    peer.gate.set()  # the client reads again: everything, in order
    await peer.expect("ready")
    await peer.expect("ack", id="s")
    assert [(await peer.recv())["record"]["n"] for _ in range(3)] == [0, 1, 2]
    await settle()
    assert len(asyncio.all_tasks()) == tasks  # caught up: the drain task is gone
    await services.data.create_record(SECRET_KEY, "t", {"n": 3})
    assert (await peer.recv())["record"]["n"] == 3
    peer.conn.close(1000)
    assert await peer.finished() == 1000


async def test_a_close_frame_that_cannot_go_out_is_given_up_and_wakes_the_reader() -> None:
    gate = asyncio.Event()  # never set: the peer never reads
    tried: list[int] = []

    async def send_text(text: str) -> None:
        await gate.wait()

    async def send_close(code: int, reason: str) -> None:
        tried.append(code)
        await gate.wait()

    limits = RealtimeLimits(queue_messages=3, close_timeout_seconds=0.2)
    conn = Connection(send_text, send_close, limits)
    conn.reader = asyncio.ensure_future(asyncio.sleep(3600))
    for n in range(4):  # the first waits on the socket, three queue behind it
        conn.push(f"m{n}")
    assert not conn.closing
    conn.push("one too many")
    assert conn.closing and conn.close_code == 1013
    await asyncio.wait_for(conn.wait_finished(), 5)
    assert tried == [1013]
    await asyncio.sleep(0)
    assert conn.reader.cancelled()
    conn.push("after the end")  # ignored
    conn.close(1000)
    assert conn.close_code == 1013


async def test_a_send_that_fails_ends_the_connection() -> None:
    sends: list[str] = []

    async def send_text(text: str) -> None:
        sends.append(text)
        raise ConnectionResetError("the peer is gone")

    async def send_close(code: int, reason: str) -> None:
        raise AssertionError("no close frame to a peer that is gone")

    conn = Connection(send_text, send_close, RealtimeLimits())
    conn.push("first")
    assert conn.closing and conn.finished
    conn.push("second")
    conn.close(1000)
    await asyncio.wait_for(conn.wait_finished(), 1)
    assert sends == ["first"]
