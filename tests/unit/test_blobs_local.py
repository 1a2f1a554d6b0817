"""The local blob store's own promises: its layout on disk, durable atomic writes, cleanup."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backpack.blobs.local import LocalBlobStore
from backpack.errors import NotFound, Unavailable


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalBlobStore]:
    blobs = LocalBlobStore(tmp_path / "blobs")
    await blobs.open()
    yield blobs
    await blobs.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


async def stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_layout_is_content_addressed_with_two_levels(store: LocalBlobStore) -> None:
    info = await store.put(stream(b"hello ", b"world"))
    key = hashlib.sha256(b"hello world").hexdigest()
    path = store.root / key[:2] / key[2:4] / key
    assert info.key == key and path.read_bytes() == b"hello world"
    assert mode(path) == 0o600
    assert mode(path.parent) == mode(path.parent.parent) == 0o700
    assert os.listdir(store.root / "tmp") == []


async def test_write_is_fsynced_then_renamed_then_directory_fsynced(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", fd_path(fd)))
        real_fsync(fd)

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        events.append(("replace", f"{source} -> {target}"))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    info = await store.put(stream(b"durable"))
    target = store.blob_path(info.key)
    temp_dir = str(store.root / "tmp")
    kinds = [kind for kind, _ in events]
    rename = kinds.index("replace")
    assert events[0][0] == "fsync" and events[0][1].startswith(temp_dir + "/put-")
    assert events[rename][1] == f"{events[0][1]} -> {target}"
    assert ("fsync", str(target.parent)) in events[rename + 1 :]
    # The fan-out directories were new, so their entries were made durable too.
    assert ("fsync", str(target.parent.parent)) in events


async def test_upload_in_progress_lives_in_tmp(store: LocalBlobStore) -> None:
    halfway, finish = asyncio.Event(), asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * (2 * 1024 * 1024)
        halfway.set()
        await finish.wait()
        yield b"b"

    task = asyncio.create_task(store.put(slow()))
    await halfway.wait()
    (temp,) = (store.root / "tmp").iterdir()
    assert temp.name.startswith("put-") and mode(temp) == 0o600
    assert temp.stat().st_size == 2 * 1024 * 1024
    assert temp.stat().st_dev == store.root.stat().st_dev
    finish.set()
    info = await task
    assert list((store.root / "tmp").iterdir()) == []
    assert store.blob_path(info.key).stat().st_size == 2 * 1024 * 1024 + 1


async def test_duplicate_keeps_the_stored_file(store: LocalBlobStore) -> None:
    first = await store.put_bytes(b"same")
    inode = store.blob_path(first.key).stat().st_ino
    second = await store.put_bytes(b"same")
    assert second == first
    assert store.blob_path(first.key).stat().st_ino == inode
    assert os.listdir(store.root / "tmp") == []


async def test_truncated_blob_is_replaced_by_a_new_put(store: LocalBlobStore) -> None:
    info = await store.put_bytes(b"complete content")
    store.blob_path(info.key).write_bytes(b"compl")
    assert (await store.put_bytes(b"complete content")) == info
    assert store.blob_path(info.key).read_bytes() == b"complete content"


async def test_open_removes_only_stale_temp_files(tmp_path: Path) -> None:
    temp_dir = tmp_path / "blobs" / "tmp"
    temp_dir.mkdir(parents=True)
    stale, fresh = temp_dir / "put-stale.part", temp_dir / "put-fresh.part"
    stale.write_bytes(b"crashed upload")
    fresh.write_bytes(b"live upload")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    assert sorted(p.name for p in temp_dir.iterdir()) == ["put-fresh.part"]
    assert await store.usage() == 0  # temp files are not stored blobs


async def test_disk_work_runs_off_the_event_loop(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    real_write, real_pread = os.write, os.pread

    def write(fd: int, data: bytes) -> int:
        threads.add(threading.get_ident())
        return real_write(fd, data)

    def pread(fd: int, size: int, offset: int) -> bytes:
        threads.add(threading.get_ident())
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "pread", pread)
    data = os.urandom(3 * 1024 * 1024)
    info = await store.put(stream(*(data[i : i + 4096] for i in range(0, len(data), 4096))))
    assert b"".join([c async for c in await store.read(info.key)]) == data
    assert threads and loop_thread not in threads


async def test_small_chunks_are_written_a_buffer_at_a_time(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    await store.put(stream(*(b"x" * 100 for _ in range(30_000))))  # 3,000,000 bytes
    assert len(writes) <= 4


async def test_full_disk_is_unavailable_and_leaves_no_temp(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def writev(fd: int, buffers: list[memoryview]) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "writev", writev)
    with pytest.raises(Unavailable) as raised:
        await store.put_bytes(b"no room")
    assert raised.value.message == "The file store could not store the upload: the disk is full."
    assert os.listdir(store.root / "tmp") == []


async def test_short_writes_are_continued(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may take part of a writev; the rest follows, across and inside chunks."""
    real_writev = os.writev
    calls = []

    def writev(fd: int, buffers: list[memoryview]) -> int:
        calls.append(len(buffers))
        first = buffers[0]
        return real_writev(fd, [first[: max(1, len(first) // 3)]])  # a third of one buffer

    monkeypatch.setattr(os, "writev", writev)
    data = [os.urandom(n) for n in (1, 4096, 70_000, 3, 100_000)]

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in data:
            yield chunk

    info = await store.put(chunks())
    assert store.blob_path(info.key).read_bytes() == b"".join(data)
    assert info.sha256 == hashlib.sha256(b"".join(data)).hexdigest()
    assert len(calls) > len(data)  # continued after every short write


async def test_stream_outlives_a_delete(store: LocalBlobStore) -> None:
    data = os.urandom(1024 * 1024)
    info = await store.put_bytes(data)
    chunks = await store.read(info.key, chunk_size=64 * 1024)
    first = await anext(chunks)
    await store.delete(info.key)
    rest = [chunk async for chunk in chunks]
    assert first + b"".join(rest) == data
    assert not store.blob_path(info.key).exists()


async def test_derived_data_sits_beside_its_blob(store: LocalBlobStore) -> None:
    info = await store.put_bytes(b"image")
    await store.put_derived(info.key, "thumb-100x100.webp", b"thumb")
    derived = store.blob_path(info.key).with_name(info.key + ".derived") / "thumb-100x100.webp"
    assert derived.read_bytes() == b"thumb" and mode(derived) == 0o600
    assert os.listdir(store.root / "tmp") == []
    await store.delete(info.key)
    assert not derived.parent.exists()


def walk(root: Path) -> Iterator[Path]:
    for directory, _, files in os.walk(root):
        for name in files:
            yield Path(directory) / name


async def test_nothing_is_written_outside_the_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    info = await store.put_bytes(b"x")
    with pytest.raises(ValueError):
        await store.put_derived(info.key, "../../../escape", b"x")
    with pytest.raises(ValueError):
        await store.put_derived("../" + info.key[3:], "thumb", b"x")
    assert all(path.is_relative_to(tmp_path / "blobs") for path in walk(tmp_path))


async def read_all(blobs: LocalBlobStore, key: str, **kwargs: int) -> bytes:
    return b"".join([chunk async for chunk in await blobs.read(key, **kwargs)])


async def test_small_blobs_are_served_from_memory_after_the_first_read(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs", cache_bytes=100, cache_blob_bytes=40)
    await blobs.open()
    small = await blobs.put(stream(b"s" * 30))
    large = await blobs.put(stream(b"L" * 41))
    assert await read_all(blobs, small.key) == b"s" * 30
    assert await read_all(blobs, large.key) == b"L" * 41
    # The small blob's file is gone behind the store's back: only memory can answer now.
    blobs.blob_path(small.key).unlink()
    blobs.blob_path(large.key).unlink()
    assert await read_all(blobs, small.key) == b"s" * 30
    assert await read_all(blobs, small.key, start=5, end=9) == b"ssss"
    assert await read_all(blobs, small.key, start=3, chunk_size=7) == b"s" * 27
    with pytest.raises(NotFound):
        await blobs.read(large.key)  # too big to be kept


async def test_a_deleted_blob_leaves_the_cache_and_old_entries_are_evicted(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs", cache_bytes=64, cache_blob_bytes=40)
    await blobs.open()
    infos = [await blobs.put(stream(bytes([65 + i]) * 30)) for i in range(3)]
    for info in infos:
        await read_all(blobs, info.key)
    await blobs.delete(infos[2].key)
    with pytest.raises(NotFound):
        await blobs.read(infos[2].key)
    # Three 30-byte blobs exceed 64 bytes: the least recently read (the first) was evicted.
    blobs.blob_path(infos[0].key).unlink()
    blobs.blob_path(infos[1].key).unlink()
    with pytest.raises(NotFound):
        await blobs.read(infos[0].key)
    assert await read_all(blobs, infos[1].key) == b"B" * 30
