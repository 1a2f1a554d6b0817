"""Realtime over real WebSockets against a real server: every message, every bad input.

Absence of a message is proven with a sentinel: events travel in commit order,
so when a later write's event arrives first, the earlier one was never sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import RunningServer, shared_server, start_server
from tests.e2e.helpers import ALL_TRUE
from tests.engine import instance_env

OWNER = {"owner": "@auth.id"}
SIGNED_IN = {"@auth": {"$ne": None}}


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # Credentials are re-checked every second here, so revocations made by another
    # process (the CLI) show quickly; everything else uses the defaults.
    yield from shared_server(
        tmp_path_factory.mktemp("realtime") / "data",
        env={"BACKPACK_REALTIME_RECHECK_SECONDS": "1"},
    )


@pytest.fixture
def api(rt: RunningServer) -> Iterator[httpx.Client]:
    with rt.client() as client:
        yield client


class WS:
    """A websockets client speaking JSON, with generous timeouts."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        message: dict[str, Any] = json.loads(raw)
        return message

    async def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        message = await self.recv()
        assert message["type"] == kind, message
        for key, value in fields.items():
            assert message.get(key) == value, message
        return message

    async def error(self, code: str, msg_id: str | None = None) -> dict[str, Any]:
        message = await self.expect("error")
        assert message.get("id") == msg_id, message
        error: dict[str, Any] = message["error"]
        assert error["code"] == code, message
        assert set(error) == {"status", "code", "message", "details"}
        return error

    async def subscribe(self, sub_id: str, collection: str, **extra: Any) -> None:
        await self.send(type="subscribe", id=sub_id, collection=collection, **extra)
        await self.expect("ack", id=sub_id)

    async def alive(self) -> None:
        await self.send(type="ping")
        await self.expect("pong")

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; the close code it sent."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), max(0.1, deadline - time.monotonic()))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None

    async def close(self) -> None:
        await self.ws.close()


def ws_url(server: RunningServer, token: str | None = None) -> str:
    url = server.url.replace("http://", "ws://") + "/api/realtime"
    return url + (f"?token={token}" if token else "")


async def open_ws(
    server: RunningServer, token: str | None = None, *, ready: bool = True, **options: Any
) -> WS:
    ws = WS(await connect(ws_url(server, token), open_timeout=10, **options))
    if ready and token is not None:
        await ws.expect("ready")
    elif ready:
        await ws.send(type="ping")  # any first message settles the identity: anonymous
        await ws.expect("ready", user=None)
        await ws.expect("pong")
    return ws


def signup(server: RunningServer) -> tuple[dict[str, Any], str]:
    response = httpx.post(
        server.url + "/api/auth/signup",
        json={"email": f"rt{secrets.token_hex(5)}@example.com", "password": "realtime pw"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["user"], body["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def collection(api: httpx.Client, rules: dict[str, Any] | None = None) -> str:
    name = "rt_" + secrets.token_hex(4)
    response = api.post("/api/collections", json={"name": name, "rules": rules or ALL_TRUE})
    assert response.status_code == 201, response.text
    return name


def create(api: httpx.Client, name: str, **data: Any) -> dict[str, Any]:
    response = api.post(f"/api/collections/{name}/records", json=data)
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    return record


# connecting and signing in


async def test_ready_for_every_kind_of_credential(rt: RunningServer, api: httpx.Client) -> None:
    user, token = signup(rt)
    by_query = await open_ws(rt, token, ready=False)
    assert await by_query.expect("ready") == {"type": "ready", "user": user}
    by_key = await open_ws(rt, rt.key, ready=False)
    assert await by_key.expect("ready") == {"type": "ready", "user": None}

    # A first `auth` message, then the ready that reflects it.
    by_message = await open_ws(rt, ready=False)
    await by_message.send(type="auth", token=token)
    assert (await by_message.expect("ready"))["user"] == user
    await by_message.send(type="auth", token=None)  # and back to anonymous
    await by_message.expect("ready", user=None)

    # Nothing sent at all: anonymous after a short grace period.
    silent = await open_ws(rt, ready=False)
    started = time.monotonic()
    await silent.expect("ready", user=None)
    assert time.monotonic() - started < 5

    # The cookie, from an allowed origin or without one (not a browser).
    cookie = {"Cookie": f"bp_session={token}"}
    for headers in (cookie, {**cookie, "Origin": "http://localhost:3000"}):
        ws = await open_ws(rt, ready=False, additional_headers=headers)
        assert (await ws.expect("ready"))["user"] == user
        await ws.close()
    # A page on another site may not ride on the cookie.
    evil = await open_ws(
        rt, ready=False, additional_headers={**cookie, "Origin": "https://evil.example"}
    )
    assert await evil.closed() == 1008

    for ws in (by_query, by_key, by_message, silent):
        await ws.alive()
        await ws.close()


@pytest.mark.parametrize("token", ["bps_" + "x" * 43, "bpk_" + "y" * 43, "nonsense"])
async def test_bad_credentials_close_with_4001(rt: RunningServer, token: str) -> None:
    ws = await open_ws(rt, token, ready=False)
    await ws.error("unauthorized")
    assert await ws.closed() == 4001
    by_message = await open_ws(rt, ready=False)
    await by_message.send(type="auth", token=token)
    await by_message.error("unauthorized")
    assert await by_message.closed() == 4001


# bad input


async def test_bad_frames_are_answered_and_the_socket_stays_up(rt: RunningServer) -> None:
    ws = await open_ws(rt)
    for raw in ("not json", "[1, 2]", '"text"', "{}", '{"type": 5}', '{"type": "dance"}'):
        await ws.ws.send(raw)
        error = await ws.error("bad_request")
        assert error["status"] == 400
    await ws.ws.send(b"\x00binary\xff")
    await ws.error("bad_request")
    await ws.send(type="ping", id="p1", extra=True)
    await ws.error("bad_request", "p1")
    await ws.send(type="subscribe", collection="x")  # no id
    await ws.error("bad_request")
    deep: Any = {}
    for _ in range(40):
        deep = {"a": deep}
    await ws.send(type="subscribe", id="deep", collection="x", filter=deep)
    await ws.error("bad_request", "deep")
    await ws.alive()
    await ws.send(type="unsubscribe", id="never")
    await ws.error("not_found", "never")
    await ws.send(type="leave", channel="room:1")
    await ws.error("not_found")
    # Too big: answered, then closed with 1009.
    await ws.ws.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
    await ws.error("payload_too_large")
    assert await ws.closed() == 1009

    binary = await open_ws(rt)
    await binary.ws.send(b"\x00" * 70_000)
    await binary.error("payload_too_large")
    assert await binary.closed() == 1009


async def test_subscribe_errors_leak_nothing(rt: RunningServer, api: httpx.Client) -> None:
    locked = collection(api, {"list": None, "read": None})
    owned = collection(api, {**ALL_TRUE, "list": OWNER, "read": OWNER})
    user, token = signup(rt)
    _, other_token = signup(rt)
    ws = await open_ws(rt, token)

    await ws.send(type="subscribe", id="f", collection=owned, filter={"n": {"$bogus": 1}})
    await ws.error("invalid_query", "f")
    await ws.send(type="subscribe", id="g", collection=owned, filter=[1])
    await ws.error("invalid_query", "g")
    await ws.send(type="subscribe", id="h", collection=owned, filter={"a": {"$regex": "("}})
    await ws.error("invalid_query", "h")
    await ws.send(type="subscribe", id="l", collection=locked)
    await ws.error("forbidden", "l")
    for hidden in ("nope_" + secrets.token_hex(3), "_users", "_sessions", "_settings"):
        await ws.send(type="subscribe", id="x", collection=hidden)
        await ws.error("not_found", "x")
    await ws.send(type="subscribe", id="b", collection=owned, bucket="default")
    await ws.error("bad_request", "b")
    await ws.subscribe("mine", owned)
    await ws.send(type="subscribe", id="mine", collection=owned)
    await ws.error("conflict", "mine")
    await ws.alive()

    # Records the user may not read never arrive, nor do system collections' changes.
    api.post(f"/api/collections/{locked}/records", json={"secret": 1})
    create(api, owned, secret=2)  # owner null: not the user's
    httpx.post(
        f"{rt.url}/api/collections/{owned}/records", json={"n": 1}, headers=bearer(other_token)
    )
    signup(rt)  # a new user: a _users event
    api.patch("/api/settings", json={"rate_limits": {"auth_per_minute": 0}})
    mine = httpx.post(
        f"{rt.url}/api/collections/{owned}/records", json={"n": 2}, headers=bearer(token)
    ).json()
    change = await ws.expect("change", sub="mine", action="create")
    assert change["record"] == mine and mine["owner"] == user["id"]
    await ws.close()


async def test_at_most_100_subscriptions(rt: RunningServer, api: httpx.Client) -> None:
    name = collection(api)
    ws = await open_ws(rt)
    for i in range(100):
        await ws.send(type="subscribe", id=f"s{i}", collection=name, filter={"n": i})
    for i in range(100):
        await ws.expect("ack", id=f"s{i}")
    await ws.send(type="subscribe", id="s100", collection=name)
    error = await ws.error("bad_request", "s100")
    assert error["details"]["limit"] == 100
    await ws.send(type="unsubscribe", id="s7")
    await ws.expect("ack", id="s7")
    await ws.subscribe("s100", name, filter={"n": 7})
    create(api, name, n=7)
    assert (await ws.expect("change"))["sub"] == "s100"  # s7 is gone
    create(api, name, n=8)
    assert (await ws.expect("change"))["sub"] == "s8"
    await ws.close()


# changes


async def test_enter_and_leave_semantics(rt: RunningServer, api: httpx.Client) -> None:
    name = collection(api)
    ws = await open_ws(rt)
    await ws.subscribe("open", name, filter={"status": "open"})
    await ws.subscribe("all", name)

    async def expect(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
        got = [await ws.expect("change") for _ in pairs]
        assert sorted((m["sub"], m["action"]) for m in got) == sorted(pairs), got
        return got

    record = create(api, name, id="r1", status="open")
    got = await expect(("open", "create"), ("all", "create"))
    assert all(m["record"] == record for m in got)
    api.patch(f"/api/collections/{name}/records/r1", json={"title": "t"})
    await expect(("open", "update"), ("all", "update"))
    closed = api.patch(f"/api/collections/{name}/records/r1", json={"status": "closed"}).json()
    got = await expect(("open", "delete"), ("all", "update"))
    leaving = next(m for m in got if m["sub"] == "open")
    assert leaving["record"]["status"] == "open"  # the last version it matched
    assert next(m for m in got if m["sub"] == "all")["record"] == closed
    api.patch(f"/api/collections/{name}/records/r1", json={"title": "u"})
    await expect(("all", "update"))
    api.put(f"/api/collections/{name}/records/r1", json={"status": "open"})
    await expect(("open", "create"), ("all", "update"))
    assert api.delete(f"/api/collections/{name}/records/r1").status_code == 204
    got = await expect(("open", "delete"), ("all", "delete"))
    assert all(m["record"]["id"] == "r1" for m in got)
    create(api, name, id="r2", status="closed")
    await expect(("all", "create"))
    await ws.send(type="unsubscribe", id="all")
    await ws.expect("ack", id="all")
    create(api, name, id="r3", status="open")
    assert (await ws.expect("change", sub="open", action="create"))["record"]["id"] == "r3"
    await ws.close()


async def test_batches_send_one_event_per_op_and_none_when_they_fail(
    rt: RunningServer, api: httpx.Client
) -> None:
    name = collection(api)
    create(api, name, id="a", n=1)
    create(api, name, id="b", n=2)
    ws = await open_ws(rt)
    await ws.subscribe("s", name)
    ops = [
        {"op": "create", "collection": name, "id": "c", "data": {"n": 3}},
        {"op": "update", "collection": name, "id": "a", "data": {"n": 10}},
        {"op": "delete", "collection": name, "id": "b"},
        {"op": "update", "collection": name, "id": "c", "data": {"n": 30}},
    ]
    assert api.post("/api/batch", json={"ops": ops}).status_code == 200
    got = [await ws.expect("change") for _ in ops]
    assert [(m["action"], m["record"]["id"]) for m in got] == [
        ("create", "c"),
        ("update", "a"),
        ("delete", "b"),
        ("update", "c"),
    ]
    failing = [
        {"op": "create", "collection": name, "id": "d", "data": {}},
        {"op": "create", "collection": name, "id": "a", "data": {}},  # taken
    ]
    assert api.post("/api/batch", json={"ops": failing}).status_code == 409
    create(api, name, id="sentinel")
    assert (await ws.expect("change"))["record"]["id"] == "sentinel"
    await ws.close()


async def test_secret_key_sees_everything_and_admin_writes_reach_users(
    rt: RunningServer, api: httpx.Client
) -> None:
    name = collection(api, {"list": None, "read": None, "create": SIGNED_IN})
    admin = await open_ws(rt, rt.key)
    await admin.subscribe("s", name)
    _, token = signup(rt)
    httpx.post(f"{rt.url}/api/collections/{name}/records", json={"x": 1}, headers=bearer(token))
    assert (await admin.expect("change", action="create"))["record"]["x"] == 1
    await admin.close()


async def test_file_events(rt: RunningServer, api: httpx.Client) -> None:
    user, token = signup(rt)
    _, other_token = signup(rt)
    mine = await open_ws(rt, token)
    await mine.subscribe("files", "_files", bucket="default")
    other = await open_ws(rt, other_token)
    await other.subscribe("files", "_files")  # the default bucket
    await other.send(type="subscribe", id="nb", collection="_files", bucket="no_such_bucket")
    await other.error("not_found", "nb")
    await other.send(type="subscribe", id="bad", collection="_files", bucket="../x")
    await other.error("bad_request", "bad")

    uploaded = httpx.post(
        rt.url + "/api/files",
        data={"public": "true"},
        files={"file": ("a.txt", b"hello", "text/plain")},
        headers=bearer(token),
    )
    assert uploaded.status_code == 201, uploaded.text
    file = uploaded.json()
    change = await mine.expect("change", sub="files", action="create")
    assert change["record"] == file and file["owner"] == user["id"]
    renamed = httpx.patch(
        f"{rt.url}/api/files/{file['id']}", json={"name": "b.txt"}, headers=bearer(token)
    ).json()
    assert (await mine.expect("change", action="update"))["record"] == renamed
    assert httpx.delete(f"{rt.url}/api/files/{file['id']}", headers=bearer(token)).is_success
    assert (await mine.expect("change", action="delete"))["record"]["id"] == file["id"]
    # Public files are readable by id, but a subscription follows the bucket's list rule.
    other_file = httpx.post(
        rt.url + "/api/files",
        files={"file": ("c.txt", b"other", "text/plain")},
        headers=bearer(other_token),
    ).json()
    change = await other.expect("change", action="create")
    assert change["record"]["id"] == other_file["id"]
    await mine.close()
    await other.close()


# channels


async def test_channels_presence_and_broadcasts(rt: RunningServer, api: httpx.Client) -> None:
    rules = [
        {"pattern": "staff:*", "join": {"@auth.role": "staff"}},
        {"pattern": "locked:*", "join": None},
        {"pattern": "lobby", "join": True, "broadcast": SIGNED_IN},
    ]
    assert api.patch("/api/settings", json={"channels": rules}).status_code == 200
    users = [signup(rt) for _ in range(3)]
    a, b, c = [await open_ws(rt, token) for _, token in users]
    anon = await open_ws(rt)

    await a.send(type="join", channel="staff:1", id="j")
    await a.error("forbidden", "j")
    await a.send(type="join", channel="locked:1")
    await a.error("forbidden")
    await anon.send(type="join", channel="room:1")  # default: signed-in users only
    await anon.error("forbidden")
    await a.send(type="join", channel="bad channel!")
    await a.error("bad_request")
    await a.send(type="broadcast", channel="room:1", event="typing", data={})
    await a.error("forbidden")  # not joined

    await a.send(type="join", channel="room:1", presence={"name": "A"})
    first = await a.expect("presence", channel="room:1")
    a_id = next(iter(first["joins"]))
    assert first["state"] == {a_id: {"name": "A"}} and first["leaves"] == {}
    await b.send(type="join", channel="room:1", presence={"name": "B"}, id="jb")
    await b.expect("ack", id="jb")
    seen_by_b = await b.expect("presence")
    b_id = next(iter(seen_by_b["joins"]))
    assert seen_by_b["state"] == {a_id: {"name": "A"}, b_id: {"name": "B"}}
    assert (await a.expect("presence")) == seen_by_b
    await c.send(type="join", channel="room:1")
    joined_c = await c.expect("presence")
    c_id = next(iter(joined_c["joins"]))
    assert joined_c["state"] == {a_id: {"name": "A"}, b_id: {"name": "B"}, c_id: {}}
    assert await a.expect("presence") == joined_c
    assert await b.expect("presence") == joined_c

    await b.send(type="broadcast", channel="room:1", event="typing", data={"on": True})
    for ws in (a, c):
        assert await ws.expect("broadcast") == {
            "type": "broadcast",
            "channel": "room:1",
            "event": "typing",
            "data": {"on": True},
            "from": users[1][0]["id"],
        }
    await b.alive()  # not echoed: the pong is b's next message

    await c.send(type="leave", channel="room:1", id="lc")
    await c.expect("ack", id="lc")
    for ws in (a, b):
        left = await ws.expect("presence")
        assert left["leaves"] == {c_id: {}} and left["joins"] == {}
        assert set(left["state"]) == {a_id, b_id}
    await a.close()  # a disconnect is a leave
    left = await b.expect("presence")
    assert left["leaves"] == {a_id: {"name": "A"}} and left["state"] == {b_id: {"name": "B"}}

    # Anyone may join the lobby, only signed-in users broadcast there.
    await anon.send(type="join", channel="lobby")
    await anon.expect("presence")
    await anon.send(type="broadcast", channel="lobby", event="hi", data=None)
    await anon.error("forbidden")
    await c.send(type="join", channel="lobby")
    await c.expect("presence")
    await anon.expect("presence")
    await c.send(type="broadcast", channel="lobby", event="hi", data=[1])
    assert (await anon.expect("broadcast"))["data"] == [1]

    # A role change makes the staff channel reachable.
    api.patch(f"/api/users/{users[2][0]['id']}", json={"role": "staff"})
    assert (await c.expect("ready"))["user"]["role"] == "staff"
    await c.send(type="join", channel="staff:1")
    await c.expect("presence")
    api.patch("/api/settings", json={"channels": []})
    for ws in (b, c, anon):
        await ws.close()


# slow clients


async def test_a_client_that_never_reads_is_cut_off_and_nobody_else_notices(
    rt: RunningServer, api: httpx.Client
) -> None:
    name = collection(api)
    host, port = urlsplit(rt.url).hostname, urlsplit(rt.url).port
    assert host is not None and port is not None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # no kernel cushion
    sock.connect((host, port))
    sock.setblocking(False)
    # No compression (it would shrink the backlog), and the client library stops
    # reading from the socket as soon as it holds one unread message.
    slow = await open_ws(rt, sock=sock, max_queue=1, compression=None)
    fast = await open_ws(rt, max_queue=None)
    await slow.subscribe("s", name)
    await fast.subscribe("s", name)
    total = 10_000

    async def receive_everything() -> list[int]:
        numbers = []
        while len(numbers) < total:
            message = await fast.recv()
            assert message["type"] == "change", message
            numbers.append(message["record"]["n"])
        return numbers

    receiving = asyncio.ensure_future(receive_everything())
    pad = secrets.token_hex(400)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=rt.url, headers=bearer(rt.key), timeout=60) as client:
        for batch in range(total // 1000):
            ops = [
                {"op": "create", "collection": name, "data": {"n": batch * 1000 + i, "pad": pad}}
                for i in range(1000)
            ]
            response = await client.post("/api/batch", json={"ops": ops})
            assert response.status_code == 200, response.text
    assert await asyncio.wait_for(receiving, 60) == list(range(total))
    assert time.monotonic() - started < 60
    # The slow one gets what was already on its way, then the close frame.
    assert await slow.closed(timeout=60) == 1013
    await fast.alive()
    await fast.close()


async def test_a_peer_that_never_takes_the_close_frame_is_dropped_after_the_timeout(
    tmp_path: Path,
) -> None:
    # Small limits: 5 queued messages, 1 s for the close frame to get through.
    env = {"BACKPACK_REALTIME_QUEUE_MESSAGES": "5", "BACKPACK_REALTIME_CLOSE_TIMEOUT_SECONDS": "1"}
    key = "bpk_" + secrets.token_urlsafe(32)
    server = start_server(tmp_path / "data", key=key, env=env)
    try:
        with server.client() as client:
            name = collection(client)
        watcher = await open_ws(server, key)
        await watcher.send(type="join", channel="room")
        await watcher.expect("presence", channel="room")
        host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
        assert host is not None and port is not None
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, port))
        sock.setblocking(False)
        stuck = await open_ws(server, key, sock=sock, max_queue=1, compression=None)
        await stuck.subscribe("s", name)
        await stuck.send(type="join", channel="room")  # from now on, it reads nothing
        joined = await watcher.expect("presence", channel="room")
        (stuck_id,) = joined["joins"]
        pad = secrets.token_hex(400)
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(key)) as client:
            for _ in range(10):  # ~8 MB for a socket that is never read
                ops = [
                    {"op": "create", "collection": name, "data": {"n": i, "pad": pad}}
                    for i in range(1000)
                ]
                response = await client.post("/api/batch", json={"ops": ops}, timeout=60)
                assert response.status_code == 200, response.text
        # The 1013 close frame cannot get out either: the server gives up and forgets it.
        left = await watcher.expect("presence", channel="room")
        assert left["leaves"] == {stuck_id: {}} and stuck_id not in left["state"]
        assert time.monotonic() - started < 30
        await watcher.alive()
        await watcher.close()
        # Reading again, it gets what was on the wire, then the end (no close frame made it).
        assert await stuck.closed(timeout=30) is None
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


# access changes


async def test_a_revoked_session_stops_receiving_at_once(
    rt: RunningServer, api: httpx.Client
) -> None:
    name = collection(api)
    _, token = signup(rt)
    ws = await open_ws(rt, token)
    await ws.subscribe("s", name)
    create(api, name, n=1)
    await ws.expect("change")
    assert httpx.post(rt.url + "/api/auth/logout", headers=bearer(token)).status_code == 204
    create(api, name, n=2)  # committed after the sign-out: must not arrive
    await ws.error("unauthorized")
    assert await ws.closed() == 4001

    # Signed out elsewhere: DELETE /api/auth/sessions/{id} from another session.
    user = signup(rt)[0]
    login = httpx.post(
        rt.url + "/api/auth/login", json={"email": user["email"], "password": "realtime pw"}
    ).json()["token"]
    first = await open_ws(rt, login)
    await first.subscribe("s", name)
    sessions = httpx.get(rt.url + "/api/auth/sessions", headers=bearer(login)).json()["items"]
    sid = next(s["id"] for s in sessions if s["current"])
    other_login = httpx.post(
        rt.url + "/api/auth/login", json={"email": user["email"], "password": "realtime pw"}
    ).json()["token"]
    second = await open_ws(rt, other_login)
    await second.subscribe("s", name)
    revoke = httpx.delete(f"{rt.url}/api/auth/sessions/{sid}", headers=bearer(other_login))
    assert revoke.status_code == 204
    create(api, name, n=3)
    await first.error("unauthorized")
    assert await first.closed() == 4001
    assert (await second.expect("change"))["record"]["n"] == 3  # the other session lives on

    # A new password signs out every other session, including its sockets.
    third_login = httpx.post(
        rt.url + "/api/auth/login", json={"email": user["email"], "password": "realtime pw"}
    ).json()["token"]
    third = await open_ws(rt, third_login)
    changed = httpx.patch(
        rt.url + "/api/auth/me",
        json={"password": "a new password", "current_password": "realtime pw"},
        headers=bearer(other_login),
    )
    assert changed.status_code == 200, changed.text
    create(api, name, n=4)
    await third.error("unauthorized")
    assert await third.closed() == 4001
    assert (await second.expect("change"))["record"]["n"] == 4  # the session that changed it

    # Deleting the user closes the rest.
    assert api.delete(f"/api/users/{user['id']}").status_code == 204
    create(api, name, n=5)
    await second.error("unauthorized")
    assert await second.closed() == 4001


async def test_a_role_change_recompiles_subscriptions(rt: RunningServer, api: httpx.Client) -> None:
    editors = {"@auth.role": "editor"}
    name = collection(api, {**ALL_TRUE, "list": editors, "read": editors})
    user, token = signup(rt)
    ws = await open_ws(rt, token)
    await ws.subscribe("s", name)
    create(api, name, n=1)  # not visible to a "user"
    assert api.patch(f"/api/users/{user['id']}", json={"role": "editor"}).status_code == 200
    ready = await ws.expect("ready")
    assert ready["user"]["role"] == "editor"
    await ws.expect("resync", sub="s")  # what it shows may have changed: refetch
    create(api, name, n=2)
    assert (await ws.expect("change"))["record"]["n"] == 2
    assert api.patch(f"/api/users/{user['id']}", json={"role": "user"}).status_code == 200
    await ws.expect("ready")
    await ws.expect("resync", sub="s")
    create(api, name, n=3)
    await ws.alive()  # n=3 never arrived
    # Locking the collection ends the subscription with an error.
    api.patch(f"/api/collections/{name}", json={"rules": {"list": None}})
    await ws.error("forbidden", "s")
    await ws.close()


async def test_revocation_by_another_process_is_noticed(
    rt: RunningServer, api: httpx.Client
) -> None:
    user, token = signup(rt)
    ws = await open_ws(rt, token)
    started = time.monotonic()
    command = [sys.executable, "-m", "backpack", "users", "delete", "--yes"]
    result = subprocess.run(
        [*command, "--data", str(rt.data_dir), "--email", user["email"]],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **instance_env(rt.data_dir), "BACKPACK_SECRET_KEY": rt.key},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    await ws.error("unauthorized")
    assert await ws.closed() == 4001
    assert time.monotonic() - started < 15


# restarts


async def test_reconnect_and_resubscribe_after_a_restart(tmp_path: Path) -> None:
    key = "bpk_" + secrets.token_urlsafe(32)
    data = tmp_path / "data"
    first = start_server(data, key=key)
    try:
        with first.client() as client:
            name = collection(client)
        ws = await open_ws(first, key)
        await ws.subscribe("s", name)
    finally:
        first.stop()
    assert await ws.closed() in (1001, 1012)
    second = start_server(data, key=key)
    try:
        ws = await open_ws(second, key)
        await ws.subscribe("s", name)
        with second.client() as client:
            create(client, name, n=1)
        assert (await ws.expect("change"))["record"]["n"] == 1
        await ws.close()
    finally:
        second.stop()
    assert "Traceback" not in first.log() + second.log()
