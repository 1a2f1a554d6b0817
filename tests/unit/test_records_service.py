"""The data service on real SQLite storage: events after commit, rules, batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backpack.core.access import ANONYMOUS, SECRET_KEY, Caller
from backpack.core.events import Event, RecordEvent
from backpack.core.query import parse_list_params
from backpack.core.records import DataService
from backpack.errors import Conflict, Forbidden, NotFound, ValidationFailed
from backpack.storage.sqlite.adapter import SqliteStorage

ALL_TRUE = {op: True for op in ("list", "read", "create", "update", "delete")}


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[DataService]:
    data = DataService(SqliteStorage(str(tmp_path / "db.sqlite")), cursor_key=b"k" * 32)
    await data.open()
    yield data
    await data.close()


@pytest.fixture
def events(service: DataService) -> list[Event]:
    seen: list[Event] = []
    service.events.listen(seen.append)
    return seen


def record_events(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.action, str(e.record["id"])) for e in events if isinstance(e, RecordEvent)]


async def test_one_event_per_committed_write(service: DataService, events: list[Event]) -> None:
    await service.create_collection(SECRET_KEY, {"name": "t", "rules": ALL_TRUE})
    record = await service.create_record(ANONYMOUS, "t", {"id": "a", "n": 1})
    await service.update_record(ANONYMOUS, "t", "a", {"n": 2}, merge=True)
    await service.delete_record(ANONYMOUS, "t", "a")
    assert record["owner"] is None
    assert record_events(events) == [("create", "a"), ("update", "a"), ("delete", "a")]
    update = [e for e in events if isinstance(e, RecordEvent)][1]
    assert update.previous is not None and update.previous["n"] == 1


async def test_batch_events_only_after_commit(service: DataService, events: list[Event]) -> None:
    await service.create_collection(
        SECRET_KEY,
        {
            "name": "t",
            "rules": ALL_TRUE,
            "schema": {"fields": {"u": {"type": "string", "unique": True}}},
        },
    )
    ops = [
        {"op": "create", "collection": "t", "id": "a", "data": {"u": "x"}},
        {"op": "create", "collection": "t", "id": "b", "data": {"u": "y"}},
        {"op": "update", "collection": "t", "id": "a", "data": {"v": 1}},
    ]
    await service.batch(SECRET_KEY, {"ops": ops})
    assert record_events(events) == [("create", "a"), ("create", "b"), ("update", "a")]
    events.clear()
    failing = [
        {"op": "delete", "collection": "t", "id": "a"},
        {"op": "create", "collection": "t", "data": {"u": "y"}},
    ]
    with pytest.raises(Conflict):
        await service.batch(SECRET_KEY, {"ops": failing})
    with pytest.raises(ValidationFailed):
        await service.create_record(SECRET_KEY, "t", {"u": 5})
    with pytest.raises(Conflict):
        await service.create_record(SECRET_KEY, "t", {"u": "x"})
    assert record_events(events) == []
    assert (await service.get_record(SECRET_KEY, "t", "a")).version == 2


async def test_owner_rules_for_users(service: DataService) -> None:
    await service.create_collection(SECRET_KEY, {"name": "notes"})  # default rules: owner only
    alice = Caller(user={"id": "alice", "email": "a@x.io", "role": "user", "verified": True})
    bob = Caller(user={"id": "bob", "email": "b@x.io", "role": "user", "verified": True})
    note = await service.create_record(alice, "notes", {"text": "mine", "owner": "bob"})
    assert note["owner"] == "alice"
    with pytest.raises(Forbidden):
        await service.create_record(ANONYMOUS, "notes", {"text": "x"})
    with pytest.raises(NotFound):
        await service.get_record(bob, "notes", str(note["id"]))
    with pytest.raises(NotFound):
        await service.update_record(bob, "notes", str(note["id"]), {"text": "x"}, merge=True)
    await service.update_record(alice, "notes", str(note["id"]), {"text": "edited"}, merge=True)
    page = await service.list_records(bob, "notes", parse_list_params({}))
    assert page.docs == []
    page = await service.list_records(alice, "notes", parse_list_params({}))
    assert len(page.docs) == 1


async def test_collections_reload_after_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite")
    first = DataService(SqliteStorage(path), cursor_key=b"k")
    await first.open()
    await first.create_collection(
        SECRET_KEY, {"name": "t", "rules": ALL_TRUE, "indexes": [{"fields": ["-a.b"]}]}
    )
    await first.close()
    second = DataService(SqliteStorage(path), cursor_key=b"k")
    await second.open()
    collection = second.get_collection(SECRET_KEY, "t")
    assert collection.to_json()["indexes"] == [{"fields": ["-a.b"], "unique": False}]
    await second.close()
