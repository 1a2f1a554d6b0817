"""The Python SDK (backpack.client) against a real server: sync and async, no mocks."""

from __future__ import annotations

import asyncio
import io
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from backpack.client import (
    AsyncClient,
    BackpackConnectionError,
    BackpackError,
    BroadcastEvent,
    ChangeEvent,
    Client,
    Conflict,
    InvalidQuery,
    NotFound,
    Page,
    Realtime,
    Unauthorized,
)
from tests.conftest import MailServer, RunningServer, free_port, start_server
from tests.e2e.helpers import ALL_TRUE

PASSWORD = "sdk password 1"


def email() -> str:
    return f"py{secrets.token_hex(5)}@example.com"


def png_bytes(width: int = 40, height: int = 20) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def key_client(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, server.key) as client:
        yield client


@pytest.fixture
def open_collection(key_client: Client) -> str:
    name = "py_" + secrets.token_hex(4)
    key_client.collections.create(name, rules=ALL_TRUE)
    return name


# ---------------------------------------------------------------- sync


def test_sync_crud_filters_iterate_conflict(server: RunningServer, open_collection: str) -> None:
    with Client(server.url) as bp:
        todos = bp.collection(open_collection)
        created = [todos.create({"title": f"t{i}", "n": i, "done": i % 2 == 0}) for i in range(7)]
        first = created[0]
        assert first["version"] == 1 and first["title"] == "t0"
        assert todos.get(first["id"])["n"] == 0

        page = todos.list(filter={"done": True}, sort="-n", limit=2, count=True)
        assert isinstance(page, Page)
        assert [r["n"] for r in page.items] == [6, 4]
        assert page.total == 4 and page.next
        second = todos.list(filter={"done": True}, sort="-n", limit=2, after=page.next)
        assert [r["n"] for r in second] == [2, 0]
        assert [r["n"] for r in todos.iterate(sort="n", limit=3)] == list(range(7))
        assert [r["n"] for r in todos.iterate(filter={"n": {"$gte": 5}}, sort="n")] == [5, 6]
        fields = todos.list(fields=["title"], limit=1).items[0]
        assert "title" in fields and "n" not in fields

        updated = todos.update(first["id"], {"title": "new", "done": None}, if_match=first)
        assert updated["title"] == "new" and "done" not in updated and updated["version"] == 2
        with pytest.raises(Conflict) as info:
            todos.update(first["id"], {"title": "stale"}, if_match=1)
        assert info.value.status == 409 and info.value.code == "conflict"
        assert info.value.request_id
        replaced = todos.replace(first["id"], {"only": 1}, if_match=2)
        assert replaced["only"] == 1 and "title" not in replaced
        todos.delete(first["id"])
        with pytest.raises(NotFound) as missing:
            todos.get(first["id"])
        assert missing.value.status == 404 and missing.value.code == "not_found"
        assert isinstance(missing.value, BackpackError)
        with pytest.raises(InvalidQuery):
            todos.list(filter={"n": {"$bogus": 1}})


def test_sync_batch(server: RunningServer, open_collection: str) -> None:
    with Client(server.url) as bp:
        todos = bp.collection(open_collection)
        a = todos.create({"title": "a"})
        results = (
            bp.batch()
            .create(open_collection, {"title": "b"})
            .update(open_collection, a["id"], {"title": "a2"}, if_match=a)
            .commit()
        )
        assert len(results) == 2
        assert todos.get(a["id"])["title"] == "a2"
        with pytest.raises(Conflict):  # all or nothing
            bp.batch().create(open_collection, {"title": "c"}).delete(
                open_collection, a["id"], if_match=1
            ).commit()
        assert todos.list(filter={"title": "c"}).items == []
        assert bp.batch().commit() == []


def test_sync_auth_and_revoked_session(server: RunningServer) -> None:
    address = email()
    with Client(server.url) as bp, Client(server.url) as other:
        user = bp.auth.signup(email=address, password=PASSWORD, data={"name": "Ada"})
        assert user["email"] == address and bp.auth.token and bp.auth.token.startswith("bps_")
        assert bp.auth.user == user
        assert bp.auth.me()["id"] == user["id"]
        assert bp.auth.update({"data": {"name": "Ada L."}})["data"]["name"] == "Ada L."
        assert isinstance(bp.auth.providers(), list)

        other.auth.login(email=address, password=PASSWORD)
        sessions = bp.auth.sessions()
        assert len(sessions) == 2
        # The second client's session is revoked from the first one.
        mine = bp.auth.token
        for s in sessions:
            if not s.get("current"):
                bp.auth.revoke_session(s["id"])
        assert bp.auth.token == mine
        with pytest.raises(Unauthorized) as info:
            other.auth.me()
        assert info.value.status == 401 and info.value.code == "unauthorized"
        assert other.auth.token is None  # signed out on the client too

        bp.auth.logout()
        assert bp.auth.token is None and bp.auth.user is None
        with pytest.raises(Unauthorized):
            bp.auth.login(email=address, password="wrong password")
        bp.auth.login(email=address, password=PASSWORD)
        assert bp.auth.me()["email"] == address


def mail_token(smtp: MailServer, to: str, prefix: str) -> str:
    mail = smtp.wait_for(to)
    text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[attr-defined,union-attr,unused-ignore]
    found = re.search(rf"token=({prefix}[\w-]+)", text)
    assert found, text
    return found.group(1)


def test_sync_verification_and_password_reset(
    server: RunningServer, key_client: Client, smtp: MailServer
) -> None:
    key_client.settings.update({"smtp": smtp.settings(), "app_url": "https://app.example.com"})
    try:
        address = email()
        with Client(server.url) as bp:
            bp.auth.signup(email=address, password=PASSWORD)
            bp.auth.request_verification()
            verified = bp.auth.confirm_verification(mail_token(smtp, address, "bpv_"))
            assert (
                verified is not None and verified["verified"] is True and bp.auth.user == verified
            )
            smtp.messages.clear()
            bp.auth.request_password_reset(address)
            reset = mail_token(smtp, address, "")
            bp.auth.confirm_password_reset(reset, "a brand new password")
            with pytest.raises(Unauthorized):  # every session was revoked
                bp.auth.me()
            bp.auth.login(email=address, password="a brand new password")
    finally:
        key_client.settings.update({"smtp": None, "app_url": None})


def test_sync_files(server: RunningServer, tmp_path: Path) -> None:
    with Client(server.url) as bp:
        bp.auth.signup(email=email(), password=PASSWORD)
        blob = bp.files.upload(b"hello, files", name="hello.txt")
        assert blob["name"] == "hello.txt" and blob["size"] == 12
        assert bp.files.download(blob["id"]) == b"hello, files"
        assert b"".join(bp.files.stream(blob["id"], range=(7, 11))) == b"files"
        assert b"".join(bp.files.stream(blob["id"], range="bytes=0-4")) == b"hello"

        path = tmp_path / "big.bin"
        content = secrets.token_bytes(3 * 1024 * 1024 + 17)
        path.write_bytes(content)
        big = bp.files.upload(path)
        assert big["name"] == "big.bin" and big["size"] == len(content)
        assert bp.files.download(big["id"]) == content
        with path.open("rb") as handle:
            assert bp.files.upload(handle, name="again.bin")["size"] == len(content)

        image = bp.files.upload(png_bytes(400, 200), name="pic.png")
        signed = bp.files.signed_url(image["id"], expires_in=60, thumb="100x0")
        thumb = httpx.get(signed)  # no credentials
        assert thumb.status_code == 200
        assert Image.open(io.BytesIO(thumb.content)).size == (100, 50)
        assert httpx.get(bp.files.url(image["id"])).status_code == 404  # private
        url = bp.files.url(image["id"], thumb="50x50", download=True)
        assert url.endswith(f"/api/files/{image['id']}/content?thumb=50x50&download=1")

        assert bp.files.get(image["id"])["type"] == "image/png"
        ids = {f["id"] for f in bp.files.list(limit=100)}
        assert {blob["id"], big["id"], image["id"]} <= ids
        assert bp.files.update(blob["id"], {"name": "renamed.txt"})["name"] == "renamed.txt"
        public = bp.files.upload(b"public bytes", public=True)
        assert httpx.get(bp.files.url(public["id"])).content == b"public bytes"
        bp.files.delete(blob["id"])
        with pytest.raises(NotFound):
            bp.files.get(blob["id"])


def test_sync_admin_helpers(server: RunningServer, key_client: Client) -> None:
    name = "adm_" + secrets.token_hex(4)
    created = key_client.collections.create(
        name, schema={"fields": {"title": {"type": "string", "required": True}}}
    )
    assert created["name"] == name
    assert key_client.collections.get(name)["schema"]["fields"]["title"]["type"] == "string"
    assert any(c["name"] == name for c in key_client.collections.list())
    key_client.collections.update(name, {"rules": ALL_TRUE})
    assert key_client.collections.get(name)["rules"]["list"] is True
    with pytest.raises(BackpackError) as info:
        key_client.collection(name).create({"nope": 1})
    assert info.value.code == "validation_failed" and "fields" in info.value.details
    key_client.collections.delete(name)
    with pytest.raises(NotFound):
        key_client.collections.get(name)

    user = key_client.users.create(email=email(), password=PASSWORD)
    assert key_client.users.get(user["id"])["email"] == user["email"]
    assert key_client.users.update(user["id"], {"role": "editor"})["role"] == "editor"
    found = key_client.users.list(filter={"email": user["email"]}, count=True)
    assert found.total == 1
    key_client.users.delete(user["id"])
    with pytest.raises(NotFound):
        key_client.users.get(user["id"])

    settings = key_client.settings.get()
    assert "allowed_origins" in settings
    key_client.settings.update({"session_ttl_days": settings["session_ttl_days"]})

    bucket = "bk_" + secrets.token_hex(4)
    key_client.buckets.put(bucket, {"rules": ALL_TRUE})
    assert key_client.buckets.get(bucket)["name"] == bucket

    with Client(server.url) as anon, pytest.raises(BackpackError) as denied:
        anon.collections.list()
    assert denied.value.status in (401, 403)


def test_sync_invalid_arguments_send_nothing() -> None:
    # A closed port: anything that reached the network would be a connection error.
    with Client(f"http://127.0.0.1:{free_port()}") as bp:
        todos = bp.collection("todos")
        with pytest.raises(ValueError):
            bp.collection("no spaces")
        with pytest.raises(ValueError):
            todos.get("bad/id")
        with pytest.raises(TypeError):
            todos.create(["not", "a", "dict"])  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            todos.list(limit=0)
        with pytest.raises(TypeError):
            todos.list(filter=42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            todos.update("abc", {"x": 1}, if_match=1.5)
        with pytest.raises(ValueError):
            bp.auth.login(email="nobody", password=PASSWORD)
        with pytest.raises(ValueError):
            bp.auth.signup(email=email(), password="short")
        with pytest.raises(TypeError):
            bp.files.upload(12345)
        with pytest.raises(ValueError):
            bp.files.upload("/no/such/file")
        with pytest.raises(ValueError):
            bp.files.url("abc", thumb="big")
        with pytest.raises(ValueError):
            bp.batch().create("bad name", {})
    with pytest.raises(ValueError):
        Client("localhost:8000")
    with pytest.raises(ValueError):
        Client("http://localhost:8000", timeout=0)


def test_sync_server_down_and_non_json_errors(server: RunningServer) -> None:
    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as bp:
        with pytest.raises(BackpackConnectionError) as info:
            bp.collection("todos").list()
        assert info.value.status == 0 and info.value.code == "network_error"
        assert "Could not reach" in str(info.value)

    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html><h1>Bad Gateway</h1></html>")

    with Client(server.url, transport=httpx.MockTransport(proxy)) as bp:
        with pytest.raises(BackpackError) as bad:
            bp.collection("todos").list()
        assert bad.value.status == 502 and bad.value.code == "bad_gateway"


# ---------------------------------------------------------------- async


async def test_async_crud_auth_files(server: RunningServer, open_collection: str) -> None:
    async with AsyncClient(server.url) as bp:
        user = await bp.auth.signup(email=email(), password=PASSWORD)
        assert (await bp.auth.me())["id"] == user["id"]
        todos = bp.collection(open_collection)
        rec = await todos.create({"title": "async", "n": 1})
        await todos.create({"title": "async", "n": 2})
        assert (await todos.get(rec["id"]))["owner"] == user["id"]
        page = await todos.list(filter={"title": "async"}, sort="n", count=True)
        assert page.total == 2
        seen = [r["n"] async for r in todos.iterate(filter={"title": "async"}, sort="n", limit=1)]
        assert seen == [1, 2]
        await todos.update(rec["id"], {"n": 10}, if_match=rec["version"])
        with pytest.raises(Conflict):
            await todos.update(rec["id"], {"n": 11}, if_match=rec["version"])
        results = await bp.batch().delete(open_collection, rec["id"]).commit()
        assert len(results) == 1
        with pytest.raises(NotFound) as info:
            await todos.get(rec["id"])
        assert info.value.request_id

        f = await bp.files.upload(b"0123456789", name="digits.txt")
        assert await bp.files.download(f["id"]) == b"0123456789"
        chunks = [c async for c in bp.files.stream(f["id"], range=(2, 4))]
        assert b"".join(chunks) == b"234"
        signed = await bp.files.signed_url(f["id"])
        assert httpx.get(signed).content == b"0123456789"
        await bp.auth.logout()
        with pytest.raises(Unauthorized):
            await bp.auth.me()

    async with AsyncClient(f"http://127.0.0.1:{free_port()}", timeout=2) as down:
        with pytest.raises(BackpackConnectionError):
            await down.health()


# ---------------------------------------------------------------- realtime


async def test_realtime_subscribe_create_update_delete(
    server: RunningServer, open_collection: str
) -> None:
    async with AsyncClient(server.url) as bp:
        await bp.auth.signup(email=email(), password=PASSWORD)
        async with bp.realtime() as rt:
            await _subscribe_scenario(bp, rt, open_collection)


async def _subscribe_scenario(bp: AsyncClient, rt: Realtime, open_collection: str) -> None:
    todos = bp.collection(open_collection)
    seen: list[ChangeEvent] = []
    got = asyncio.Event()

    def on_change(event: ChangeEvent) -> None:
        seen.append(event)
        got.set()

    await rt.subscribe(open_collection, {"kind": "x"}, callback=on_change)
    iterator = await rt.subscribe(open_collection)  # no callback: an async iterator

    rec = await todos.create({"kind": "x", "n": 1})
    await todos.create({"kind": "y", "n": 2})  # not matching the filter
    await todos.update(rec["id"], {"n": 3})
    await todos.delete(rec["id"])

    events = [await iterator.next(timeout=5) for _ in range(4)]
    assert [e.action for e in events] == ["create", "create", "update", "delete"]
    async with asyncio.timeout(5):
        while len(seen) < 3:
            got.clear()
            await got.wait()
    assert [(e.action, e.record and e.record["id"]) for e in seen] == [
        ("create", rec["id"]),
        ("update", rec["id"]),
        ("delete", rec["id"]),
    ]
    await iterator.unsubscribe()

    with pytest.raises(BackpackError) as refused:
        await rt.subscribe(open_collection, {"n": {"$bogus": 1}})
    assert refused.value.code == "invalid_query"
    with pytest.raises(TypeError):
        await rt.subscribe(open_collection, filter="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rt.channel("bad channel!")


async def test_realtime_follows_sign_in(server: RunningServer, key_client: Client) -> None:
    name = "own_" + secrets.token_hex(4)
    key_client.collections.create(name)  # default rules: owner only, signed in to create
    async with AsyncClient(server.url) as bp, bp.realtime() as rt:
        await rt.wait_ready(timeout=5)
        assert rt.user is None
        user = await bp.auth.signup(email=email(), password=PASSWORD)
        sub = await rt.subscribe(name)
        assert rt.user is not None and rt.user["id"] == user["id"]
        rec = await bp.collection(name).create({"mine": True})
        event = await sub.next(timeout=5)
        while event.action == "resync":
            event = await sub.next(timeout=5)
        assert event.action == "create" and event.record and event.record["id"] == rec["id"]


async def test_realtime_channel_broadcast_between_two_clients(server: RunningServer) -> None:
    async with AsyncClient(server.url) as a, AsyncClient(server.url) as b:
        alice = await a.auth.signup(email=email(), password=PASSWORD)
        await b.auth.signup(email=email(), password=PASSWORD)
        room = "room:" + secrets.token_hex(4)
        async with a.realtime() as rta, b.realtime() as rtb:
            received: asyncio.Queue[BroadcastEvent] = asyncio.Queue()
            presence: list[Any] = []
            chb = rtb.channel(room)
            chb.on("typing", received.put_nowait)
            chb.on_presence(presence.append)
            await chb.join(presence={"name": "bob"})
            await rta.channel(room).join(presence={"name": "alice"})
            await rta.channel(room).broadcast("typing", {"text": "hi"})
            event = await asyncio.wait_for(received.get(), 5)
            assert event.data == {"text": "hi"} and event.sender == alice["id"]
            assert event.channel == room
            async with asyncio.timeout(5):
                while len(chb.state) < 2:
                    await asyncio.sleep(0.02)
            assert sorted(p["name"] for p in chb.state.values()) == ["alice", "bob"]
            await rta.channel(room).leave()
            async with asyncio.timeout(5):
                while len(chb.state) != 1:
                    await asyncio.sleep(0.02)


async def test_realtime_reconnects_after_restart(tmp_path: Path) -> None:
    key = "bpk_" + secrets.token_urlsafe(32)
    data = tmp_path / "data"
    first = start_server(data, key=key)
    port = int(first.url.rsplit(":", 1)[1])
    async with AsyncClient(first.url, key) as admin:
        await admin.collections.create("notes", rules=ALL_TRUE)
    first.stop()
    # Same data dir, fixed port: the client's base URL keeps working across restarts.
    env: dict[str, str] = {}
    server = _start_on_port(data, key, port, env)
    try:
        async with AsyncClient(server.url, key) as bp, bp.realtime(max_delay=0.5) as rt:
            sub = await rt.subscribe("notes")
            ch = rt.channel("lobby")
            await ch.join(presence={"me": 1})
            await bp.collection("notes").create({"n": 1})
            assert (await sub.next(timeout=5)).action == "create"

            server.stop()
            server = _start_on_port(data, key, port, env)
            # After the reconnect the subscription is back and asks for a refetch.
            event = await sub.next(timeout=15)
            assert event.action == "resync"
            assert rt.connects == 2
            rec = await bp.collection("notes").create({"n": 2})
            event = await sub.next(timeout=5)
            assert event.action == "create" and event.record
            assert event.record["id"] == rec["id"]
            assert ch.joined
    finally:
        server.stop()


def _start_on_port(data: Path, key: str, port: int, env: dict[str, str]) -> RunningServer:
    return start_server(data, key=key, env=env, port=port)


async def test_realtime_server_down_at_start_retries(tmp_path: Path) -> None:
    key = "bpk_" + secrets.token_urlsafe(32)
    port = free_port()
    async with (
        AsyncClient(f"http://127.0.0.1:{port}", key, timeout=20) as bp,
        bp.realtime(max_delay=0.3) as rt,
    ):
        pending = asyncio.create_task(rt.channel("lobby").join())
        await asyncio.sleep(0.5)
        assert not pending.done() and rt.last_error is not None
        server = await asyncio.to_thread(_start_on_port, tmp_path / "data", key, port, {})
        try:
            await pending
            await bp.collections.create("late", rules=ALL_TRUE)
            sub = await rt.subscribe("late")
            await bp.collection("late").create({"x": 1})
            assert (await sub.next(timeout=5)).action == "create"
        finally:
            server.stop()
    async with (
        AsyncClient(f"http://127.0.0.1:{free_port()}", timeout=1) as down,
        down.realtime() as rt2,
    ):
        with pytest.raises(BackpackConnectionError) as info:
            await rt2.subscribe("todos")
        assert "No answer" in str(info.value)
