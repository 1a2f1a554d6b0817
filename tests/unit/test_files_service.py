"""The file service on real SQLite and a real local blob store: events, dedup, rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backpack.blobs.local import LocalBlobStore
from backpack.core.access import SECRET_KEY, Caller
from backpack.core.events import Event, RecordEvent
from backpack.core.records import DataService
from backpack.core.settings import SettingsService
from backpack.errors import NotFound
from backpack.files.service import FILES, FilesService
from backpack.storage.sqlite.adapter import SqliteStorage

ALICE = Caller(user={"id": "alice", "email": "a@x.io", "role": "user", "verified": True})


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[FilesService]:
    data = DataService(SqliteStorage(str(tmp_path / "db.sqlite")), cursor_key=b"k")
    await data.open()
    settings = SettingsService(data)
    await settings.open()
    service = FilesService(data, LocalBlobStore(tmp_path / "blobs"), settings, signing_key=b"s")
    await service.open()
    yield service
    await service.close()
    await data.close()


async def test_every_change_emits_one_event(files: FilesService) -> None:
    seen: list[Event] = []
    files.data.events.listen(seen.append)
    doc = await files.upload(ALICE, "default", "a.txt", False, chunks(b"hello ", b"world"))
    await files.update(ALICE, str(doc["id"]), {"name": "b.txt"})
    await files.replace_content(ALICE, str(doc["id"]), chunks(b"new"), None)
    await files.delete(ALICE, str(doc["id"]))
    actions = [(e.collection, e.action) for e in seen if isinstance(e, RecordEvent)]
    assert actions == [(FILES, "create"), (FILES, "update"), (FILES, "update"), (FILES, "delete")]


async def test_shared_blobs_outlive_one_file(files: FilesService) -> None:
    first = await files.upload(ALICE, "default", "1.txt", False, chunks(b"same"))
    second = await files.upload(SECRET_KEY, "default", "2.txt", False, chunks(b"same"))
    assert first["sha256"] == second["sha256"]
    assert await files.blobs.usage() == 4
    await files.delete(ALICE, str(first["id"]))
    assert await files.blobs.size(str(second["sha256"])) == 4
    await files.delete(SECRET_KEY, str(second["id"]))
    assert await files.blobs.size(str(second["sha256"])) is None


async def test_other_users_cannot_see_private_files(files: FilesService) -> None:
    doc = await files.upload(ALICE, "default", "a.txt", False, chunks(b"mine"))
    bob = Caller(user={"id": "bob", "email": "b@x.io", "role": "user", "verified": True})
    with pytest.raises(NotFound):
        await files.get(bob, str(doc["id"]))
    public = await files.upload(ALICE, "default", "p.txt", True, chunks(b"ours"))
    assert (await files.get(bob, str(public["id"])))["name"] == "p.txt"
