"""The control store contract: SQLite and PostgreSQL keep admins, sessions and instances alike.

PostgreSQL runs on 127.0.0.1:5432 (user postgres, trust auth); the module makes a
database of its own and drops it afterwards. Without a server these tests fail.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from backpack.errors import BadRequest, Conflict, NotFound
from backpack.platform.store import (
    Admin,
    ControlStore,
    InstanceRecord,
    PostgresControlStore,
    SqliteControlStore,
    open_control_store,
)
from tests.pg import PG_SERVER, fresh_database, pg_admin

PAST = "2020-01-01T00:00:00.000Z"
NOW = "2026-11-27T19:15:19.123Z"
LATER = "2026-11-27T19:15:19.124Z"
FAR = "2999-01-01T00:00:00.000Z"
HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"

StoreFactory = Callable[[], ControlStore]


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with fresh_database("bp_control_test") as name:
        yield name


@pytest.fixture(params=["sqlite", "postgres"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Makes unopened stores that share one backing database, emptied for this test."""
    opened: list[ControlStore] = []
    if request.param == "sqlite":
        path = tmp_path / "control.db"

        def factory() -> ControlStore:
            store = SqliteControlStore(path)
            opened.append(store)
            return store
    else:
        database: str = request.getfixturevalue("pg_database")

        def factory() -> ControlStore:
            store = PostgresControlStore(f"{PG_SERVER}/{database}")
            opened.append(store)
            return store

        first = factory()
        await first.open()  # creates the tables to empty
        await pg_admin("TRUNCATE admins, admin_sessions, instances", database)
    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> ControlStore:
    opened = make_store()
    await opened.open()
    return opened


def record(name: str, **changes: object) -> InstanceRecord:
    values: dict[str, object] = {
        "name": name,
        "runtime": "embedded",
        "status": "running",
        "created": NOW,
        "config": {},
    }
    values.update(changes)
    return InstanceRecord(**values)  # type: ignore[arg-type]


async def outcomes(*calls: Awaitable[object]) -> list[object]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


# admins


async def test_admins_are_created_found_and_listed(store: ControlStore) -> None:
    assert await store.count_admins() == 0
    assert await store.list_admins() == []
    first = await store.create_admin("Ada@Example.COM", HASH)
    second = await store.create_admin("grace@example.com", "other-hash")
    assert first.email == "ada@example.com"
    assert len(first.created) == 24 and first.created.endswith("Z")
    assert await store.count_admins() == 2
    assert await store.list_admins() == [first, second]
    assert await store.admin_by_id(first.id) == first
    assert await store.admin_by_id("nobody") is None
    assert await store.admin_by_email(" ADA@example.com ") == (first, HASH)
    assert await store.admin_by_email("grace@example.com") == (second, "other-hash")
    assert await store.admin_by_email("nobody@example.com") is None
    assert first.to_json() == {"id": first.id, "email": first.email, "created": first.created}


async def test_emails_are_unique_whatever_their_case(store: ControlStore) -> None:
    admin = await store.create_admin("ada@example.com", HASH)
    with pytest.raises(Conflict):
        await store.create_admin("ADA@EXAMPLE.COM", "another-hash")
    assert await store.list_admins() == [admin]
    assert await store.admin_by_email("ada@example.com") == (admin, HASH)


async def test_only_if_none_creates_the_first_admin_only(store: ControlStore) -> None:
    first = await store.create_admin("ada@example.com", HASH, only_if_none=True)
    with pytest.raises(Conflict):
        await store.create_admin("grace@example.com", HASH, only_if_none=True)
    assert await store.list_admins() == [first]


async def test_of_concurrent_first_admins_exactly_one_is_made(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(2)]
    for store in stores:
        await store.open()
    results = await outcomes(
        *(
            stores[n % 2].create_admin(f"admin{n}@example.com", HASH, only_if_none=True)
            for n in range(6)
        )
    )
    made = [result for result in results if isinstance(result, Admin)]
    assert len(made) == 1
    assert all(isinstance(result, Conflict) for result in results if result not in made)
    assert await stores[0].list_admins() == made


async def test_unicode_and_long_values_round_trip(store: ControlStore) -> None:
    email = "ÉMILE.Ünïcødé@例え.JP"
    long_hash = "h" * 100_000
    admin = await store.create_admin(email, long_hash)
    assert admin.email == email.lower()
    assert await store.admin_by_email("émile.ünïcødé@例え.jp") == (admin, long_hash)
    widest = "😀" * 240 + "@example.com"  # 254 characters of up to four bytes each
    assert (await store.create_admin(widest, HASH)).email == widest


@pytest.mark.parametrize(
    "email", ["", "   ", "a\x00b@example.com", "\ud800@example.com", "a" * 243 + "@example.com"]
)
async def test_bad_emails_are_refused_and_nothing_is_stored(
    store: ControlStore, email: str
) -> None:
    with pytest.raises(BadRequest):
        await store.create_admin(email, HASH)
    assert await store.count_admins() == 0


@pytest.mark.parametrize("password_hash", ["", "nul\x00inside", "\udfff"])
async def test_bad_password_hashes_are_refused(store: ControlStore, password_hash: str) -> None:
    with pytest.raises(BadRequest):
        await store.create_admin("ada@example.com", password_hash)
    assert await store.count_admins() == 0


@pytest.mark.parametrize("key", ["a\x00b", "\ud800", "x" * 10_000])
async def test_lookups_with_unstorable_keys_find_nothing(store: ControlStore, key: str) -> None:
    await store.create_admin("ada@example.com", HASH)
    assert await store.admin_by_email(key) is None
    assert await store.admin_by_id(key) is None
    assert await store.delete_admin(key) is False
    assert await store.session_admin(key, NOW) is None
    await store.delete_session(key)
    assert await store.get_instance(key) is None
    assert await store.delete_instance(key) is False
    with pytest.raises(NotFound):
        await store.update_instance(key, status="stopped")
    with pytest.raises(NotFound):
        await store.create_session("hash", key, FAR)
    assert await store.count_admins() == 1


async def test_deleting_an_admin_ends_its_sessions(store: ControlStore) -> None:
    ada = await store.create_admin("ada@example.com", HASH)
    grace = await store.create_admin("grace@example.com", HASH)
    await store.create_session("ada-session", ada.id, FAR)
    await store.create_session("grace-session", grace.id, FAR)
    assert await store.delete_admin(ada.id) is True
    assert await store.delete_admin(ada.id) is False
    assert await store.admin_by_id(ada.id) is None
    assert await store.admin_by_email("ada@example.com") is None
    assert await store.session_admin("ada-session", NOW) is None
    assert await store.session_admin("grace-session", NOW) == grace
    assert await store.delete_expired_sessions(FAR) == 1  # only grace's is left


async def test_keep_last_refuses_to_delete_the_only_admin(store: ControlStore) -> None:
    ada = await store.create_admin("ada@example.com", HASH)
    grace = await store.create_admin("grace@example.com", HASH)
    assert await store.delete_admin(grace.id, keep_last=True) is True
    with pytest.raises(Conflict):
        await store.delete_admin(ada.id, keep_last=True)
    assert await store.list_admins() == [ada]
    assert await store.delete_admin("nobody", keep_last=True) is False
    assert await store.delete_admin(ada.id) is True  # without keep_last the last one goes
    assert await store.count_admins() == 0


async def test_two_admins_deleting_each_other_at_once_leave_one(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(2)]
    for store in stores:
        await store.open()
    ada = await stores[0].create_admin("ada@example.com", HASH)
    grace = await stores[0].create_admin("grace@example.com", HASH)
    results = await outcomes(
        stores[0].delete_admin(ada.id, keep_last=True),
        stores[1].delete_admin(grace.id, keep_last=True),
    )
    assert sum(result is True for result in results) == 1
    assert sum(isinstance(result, Conflict) for result in results) == 1
    assert await stores[1].count_admins() == 1


# sessions


async def test_sessions_find_their_admin_until_they_expire(store: ControlStore) -> None:
    ada = await store.create_admin("ada@example.com", HASH)
    await store.create_session("s1", ada.id, LATER)
    assert await store.session_admin("s1", PAST) == ada
    assert await store.session_admin("s1", NOW) == ada
    assert await store.session_admin("s1", LATER) is None  # expires at that instant
    assert await store.session_admin("s1", FAR) is None
    assert await store.session_admin("unknown", PAST) is None


async def test_sessions_end_on_delete_and_expired_ones_are_purged(store: ControlStore) -> None:
    ada = await store.create_admin("ada@example.com", HASH)
    await store.create_session("old", ada.id, NOW)
    await store.create_session("current", ada.id, FAR)
    await store.create_session("ending", ada.id, FAR)
    await store.delete_session("ending")
    await store.delete_session("ending")  # ending an ended session is no error
    assert await store.session_admin("ending", PAST) is None
    assert await store.delete_expired_sessions(NOW) == 1
    assert await store.session_admin("old", PAST) is None
    assert await store.session_admin("current", NOW) == ada
    assert await store.delete_expired_sessions(NOW) == 0


async def test_a_session_needs_an_existing_admin_and_a_new_hash(store: ControlStore) -> None:
    ada = await store.create_admin("ada@example.com", HASH)
    with pytest.raises(NotFound):
        await store.create_session("s1", "no-such-admin", FAR)
    assert await store.session_admin("s1", NOW) is None
    await store.create_session("s1", ada.id, FAR)
    with pytest.raises(Conflict):
        await store.create_session("s1", ada.id, LATER)
    assert await store.session_admin("s1", LATER) == ada  # the first one still stands
    for bad in ("", "x" * 256, "nul\x00"):
        with pytest.raises(BadRequest):
            await store.create_session(bad, ada.id, FAR)
    assert await store.delete_expired_sessions(FAR) == 1


# instances


async def test_instances_are_inserted_listed_and_read(store: ControlStore) -> None:
    todo = record("todo", config={"plan": "free", "limits": {"rps": 10.5, "tags": ["a", None]}})
    chat = record("chat", status="stopped", runtime="swarm")
    await store.insert_instance(todo)
    await store.insert_instance(chat)
    assert await store.list_instances() == [chat, todo]
    assert await store.get_instance("todo") == todo
    assert await store.get_instance("nope") is None


async def test_a_taken_name_is_a_conflict_and_changes_nothing(store: ControlStore) -> None:
    original = record("todo", config={"v": 1})
    await store.insert_instance(original)
    with pytest.raises(Conflict):
        await store.insert_instance(record("todo", runtime="swarm", config={"v": 2}))
    assert await store.list_instances() == [original]


async def test_of_concurrent_inserts_of_one_name_exactly_one_wins(
    make_store: StoreFactory,
) -> None:
    stores = [make_store() for _ in range(2)]
    for store in stores:
        await store.open()
    results = await outcomes(
        *(stores[n % 2].insert_instance(record("todo", config={"n": n})) for n in range(6))
    )
    assert sum(result is None for result in results) == 1
    assert sum(isinstance(result, Conflict) for result in results) == 5
    winner = results.index(None)
    assert await stores[1].list_instances() == [record("todo", config={"n": winner})]


async def test_updates_change_status_and_config(store: ControlStore) -> None:
    await store.insert_instance(record("todo", config={"a": 1}))
    stopped = await store.update_instance("todo", status="stopped")
    assert stopped == record("todo", status="stopped", config={"a": 1})
    replaced = await store.update_instance("todo", config={"b": [1, 2]})
    assert replaced == record("todo", status="stopped", config={"b": [1, 2]})
    both = await store.update_instance("todo", status="running", config={})
    assert both == record("todo")
    assert await store.update_instance("todo") == record("todo")
    assert await store.get_instance("todo") == record("todo")
    with pytest.raises(NotFound):
        await store.update_instance("nope", status="stopped")
    assert await store.list_instances() == [record("todo")]


async def test_instances_are_deleted(store: ControlStore) -> None:
    await store.insert_instance(record("todo"))
    await store.insert_instance(record("chat"))
    assert await store.delete_instance("todo") is True
    assert await store.delete_instance("todo") is False
    assert await store.list_instances() == [record("chat")]


async def test_unicode_and_long_instance_values_round_trip(store: ControlStore) -> None:
    config = {
        "ünïcødé 😀": "line\nbreak \x00 nul and \u2028",
        "big": "x" * 1_000_000,
        "deep": {"a": [{"b": {"c": [1, -2.5, True, None, "é"]}}]},
    }
    weird = record("名前-😀", runtime="ëmbedded", config=config)
    await store.insert_instance(weird)
    assert await store.get_instance("名前-😀") == weird
    assert await store.list_instances() == [weird]


@pytest.mark.parametrize(
    "bad",
    [
        record("todo", status="paused"),
        record("todo", status=""),
        record("", config={}),
        record("x" * 256),
        record("nul\x00name"),
        record("todo", runtime=""),
        record("todo", config=["not", "an", "object"]),
        record("todo", config={"set": {1, 2}}),
        record("todo", config={1: "non-string key"}),
        record("todo", config={"bad": "\ud800"}),
    ],
)
async def test_bad_instance_records_are_refused(store: ControlStore, bad: InstanceRecord) -> None:
    with pytest.raises(BadRequest):
        await store.insert_instance(bad)
    assert await store.list_instances() == []


async def test_bad_updates_are_refused_and_change_nothing(store: ControlStore) -> None:
    await store.insert_instance(record("todo", config={"a": 1}))
    with pytest.raises(BadRequest):
        await store.update_instance("todo", status="paused")
    with pytest.raises(BadRequest):
        await store.update_instance("todo", status="stopped", config={"x": object()})  # type: ignore[dict-item]
    with pytest.raises(BadRequest):
        await store.update_instance("todo", config="{}")  # type: ignore[arg-type]
    assert await store.get_instance("todo") == record("todo", config={"a": 1})


# lifecycle


async def test_data_outlives_the_store_and_reopening_is_harmless(
    make_store: StoreFactory,
) -> None:
    first = make_store()
    await first.open()
    ada = await first.create_admin("ada@example.com", HASH)
    await first.create_session("s1", ada.id, FAR)
    await first.insert_instance(record("todo", config={"k": "v"}))
    await first.close()
    await first.close()  # closing twice is harmless
    again = make_store()
    await again.open()  # the tables exist already
    assert await again.list_admins() == [ada]
    assert await again.session_admin("s1", NOW) == ada
    assert await again.list_instances() == [record("todo", config={"k": "v"})]


# choosing and opening a store


def test_open_control_store_picks_the_store_from_the_url(tmp_path: Path) -> None:
    default = open_control_store(tmp_path, None)
    assert isinstance(default, SqliteControlStore)
    assert default.path == tmp_path / "control.db"
    assert isinstance(open_control_store(tmp_path, ""), SqliteControlStore)
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        chosen = open_control_store(tmp_path, url)
        assert isinstance(chosen, PostgresControlStore) and chosen.url == url


@pytest.mark.parametrize(
    "url", ["mysql://root:hunter2@db/control", "sqlite:///x.db", "localhost:5432", "postgresql:/x"]
)
def test_other_urls_are_refused_without_showing_passwords(tmp_path: Path, url: str) -> None:
    with pytest.raises(BadRequest) as raised:
        open_control_store(tmp_path, url)
    assert "postgresql://" in raised.value.message
    assert "hunter2" not in raised.value.message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://postgres:hunter2@127.0.0.1:1/control", "Connect call failed"),
        ("postgresql://postgres:hunter2@[bad/control", "Invalid IPv6 URL"),
        ("postgresql://postgres@127.0.0.1:notaport/control", "invalid literal"),
        ("postgres://postgres:hunter2@127.0.0.1:5432/no_such_db_here", "does not exist"),
    ],
)
async def test_an_unusable_postgres_url_is_a_clear_bad_request(url: str, says: str) -> None:
    store = PostgresControlStore(url)
    with pytest.raises(BadRequest) as raised:
        await store.open()
    assert raised.value.message.startswith("Cannot connect to the control database")
    assert says in raised.value.message
    assert "hunter2" not in raised.value.message


async def test_the_sqlite_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = SqliteControlStore(tmp_path / "deep" / "control.db")
    await store.open()
    try:
        await store.create_admin("ada@example.com", HASH)
    finally:
        await store.close()
    assert stat.S_IMODE(os.stat(tmp_path / "deep" / "control.db").st_mode) == 0o600
