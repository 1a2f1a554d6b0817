"""The embedded blob store: one directory per backpack.

Layout under the root, two levels of fan-out so no directory grows huge:

    ab/cd/abcd…ef              the blob whose sha256 is abcd…ef
    ab/cd/abcd…ef.derived/NAME its derived data
    tmp/put-….part             uploads in progress

An upload streams into a temp file in `tmp/` (same filesystem, so the final
rename is atomic), hashing as it goes; the file is fsync'd, renamed to its
content address and the directory fsync'd, so a blob is either whole and
durable or absent. Files are created 0600 and directories 0700: blobs are the
users' data and only the server reads them. Disk work runs in worker threads,
a buffer's worth at a time, so a large upload never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from backpack.core.blobs import (
    DEFAULT_CHUNK_SIZE,
    BlobInfo,
    check_derived_name,
    check_key,
    check_range,
    over_limit_message,
    single_chunk,
)
from backpack.errors import NotFound, PayloadTooLarge, Unavailable
from backpack.fsutil import fsync_dir

TEMP_DIR = "tmp"
STALE_TEMP_AGE = 3600.0  # seconds; younger temp files may belong to a live upload
_DERIVED_SUFFIX = ".derived"
_DIR_MODE = 0o700
_IOV_MAX = 512  # buffers per writev (Linux takes 1024)
_FADVISE_DONTNEED: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)  # not on macOS

T = TypeVar("T")
P = ParamSpec("P")


class _TempFile:
    """A temp file filled from worker threads, created by its first write.

    Making the object touches no disk, so it exists before any thread work and a
    cancelled upload can always discard what a thread created. Every step holds
    the lock, so a discard that follows a cancelled write waits for that write
    to finish instead of racing it on the descriptor.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.path: Path | None = None
        self._fd = -1
        self._hash = hashlib.sha256()
        self._lock = threading.Lock()
        self._done = False  # sealed into place, or discarded

    def _open(self) -> int:
        if self._done or (self.path is not None and self._fd < 0):
            raise RuntimeError("write to a finished upload")
        if self.path is None:
            self._fd, name = tempfile.mkstemp(prefix="put-", suffix=".part", dir=self._directory)
            self.path = Path(name)
        return self._fd

    def write(self, chunks: list[bytes]) -> None:
        """Append `chunks`: hashed one by one, written with one `writev` where it takes all."""
        with self._lock:
            fd = self._open()
            for chunk in chunks:
                self._hash.update(chunk)
            _write_all(fd, chunks)

    def seal(self) -> tuple[str, Path]:
        """Make the content durable and close the file; the content's sha256 and the path.

        Once durable, its pages leave the page cache: a new blob is seldom read back soon
        (the hot-blob cache serves small ones from memory), and uploads then reuse pages
        the kernel just freed instead of evicting the cache that reads live on.
        """
        with self._lock:
            fd = self._open()
            os.fsync(fd)
            _drop_cached_pages(fd)
            os.close(fd)
            self._fd = -1
            assert self.path is not None
            return self._hash.hexdigest(), self.path

    def mark_committed(self) -> None:
        with self._lock:
            self._done = True

    def discard(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if not self._done and self.path is not None:
                self.path.unlink(missing_ok=True)
            self._done = True


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write every byte of `chunks` to `fd`, however short the kernel's writes fall."""
    for start in range(0, len(chunks), _IOV_MAX):
        views = [memoryview(chunk) for chunk in chunks[start : start + _IOV_MAX]]
        while views:
            written = os.writev(fd, views)
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if views and written:
                views[0] = views[0][written:]


def _drop_cached_pages(fd: int) -> None:
    """Ask the kernel to drop `fd`'s clean pages from the page cache (where it can)."""
    if _FADVISE_DONTNEED is not None:
        os.posix_fadvise(fd, 0, 0, _FADVISE_DONTNEED)


def _make_dirs(path: Path) -> None:
    """Create `path` and missing parents; each new directory's entry is fsync'd too."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    try:
        path.mkdir(mode=_DIR_MODE)
    except FileExistsError:
        return
    fsync_dir(path.parent)


def _unavailable(action: str, exc: OSError) -> Unavailable:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "the disk is full"
    return Unavailable(f"The file store could not {action}: {reason.lower()}.")


class _HotBlobs:
    """Small blobs kept whole in memory, least recently read evicted first.

    A key is its content's hash, so an entry never goes stale; deleting the blob
    drops it. A cached download skips the worker thread and the disk read.
    """

    def __init__(self, max_bytes: int, max_blob: int) -> None:
        self.max_bytes = max_bytes
        self.max_blob = max_blob
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_blob or key in self._items:
            return
        self._items[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= len(evicted)

    def drop(self, key: str) -> None:
        data = self._items.pop(key, None)
        if data is not None:
            self._bytes -= len(data)


async def _slices(data: bytes, start: int, stop: int, chunk_size: int) -> AsyncIterator[bytes]:
    if start == 0 and stop == len(data) <= chunk_size:
        yield data  # the whole blob: no copy
        return
    view = memoryview(data)
    for offset in range(start, stop, chunk_size):
        yield bytes(view[offset : min(offset + chunk_size, stop)])


class LocalBlobStore:
    """Blobs as files under `root`; see the module docstring for the layout."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        write_buffer: int = 1024 * 1024,
        cache_bytes: int = 32 * 1024 * 1024,
        cache_blob_bytes: int = 1024 * 1024,
    ) -> None:
        self.root = Path(root)
        self._temp_dir = self.root / TEMP_DIR
        self._write_buffer = write_buffer
        self._hot = _HotBlobs(cache_bytes, cache_blob_bytes)

    async def open(self) -> None:
        await self._disk(f"use the directory {self.root}", self._prepare)

    def _prepare(self) -> None:
        _make_dirs(self._temp_dir)
        cutoff = time.time() - STALE_TEMP_AGE
        with os.scandir(self._temp_dir) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    Path(entry.path).unlink(missing_ok=True)

    async def close(self) -> None:
        return None

    def blob_path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key[2:4] / key

    def _derived_dir(self, key: str) -> Path:
        blob = self.blob_path(key)
        return blob.with_name(blob.name + _DERIVED_SUFFIX)

    async def put(self, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None) -> BlobInfo:
        temp = _TempFile(self._temp_dir)
        try:
            size = 0
            pending: list[bytes] = []  # the chunks themselves: no copy before the kernel's
            pending_bytes = 0
            async for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise PayloadTooLarge(over_limit_message(max_bytes))
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes >= self._write_buffer:
                    await self._disk("store the upload", temp.write, pending)
                    pending, pending_bytes = [], 0
            # The rest, the fsync and the rename in one trip: a small upload costs one hop.
            key = await self._disk("store the upload", self._commit, temp, pending, size)
            return BlobInfo(key=key, size=size, sha256=key)
        except BaseException:
            # Runs to the end in its thread even if this task is cancelled again.
            await asyncio.to_thread(temp.discard)
            raise

    @staticmethod
    async def _disk(action: str, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`func(*args)` in a worker thread, a disk error told as Unavailable."""
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except OSError as exc:
            raise _unavailable(action, exc) from exc

    def _commit(self, temp: _TempFile, rest: list[bytes], size: int) -> str:
        if rest:
            temp.write(rest)
        key, path = temp.seal()
        target = self.blob_path(key)
        try:
            if target.stat().st_size == size:
                temp.discard()  # the same content is stored already
                return key
        except FileNotFoundError:
            pass
        _make_dirs(target.parent)
        os.replace(path, target)
        temp.mark_committed()
        fsync_dir(target.parent)
        return key

    async def put_bytes(self, data: bytes) -> BlobInfo:
        return await self.put(single_chunk(data))

    async def read(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncIterator[bytes]:
        path = self.blob_path(key)
        check_range(start, end, chunk_size)
        cached = self._hot.get(key)
        if cached is not None:
            stop = len(cached) if end is None else min(end, len(cached))
            return _slices(cached, start, stop, chunk_size)
        # Open, measure and read the first chunk in one trip to a worker thread: a small
        # download then costs a single hop. The open descriptor keeps the bytes readable
        # even if the blob is deleted while the stream is being sent.
        try:
            fd, size, stop, first = await asyncio.to_thread(
                _open_and_read, path, start, end, chunk_size
            )
        except FileNotFoundError:
            raise NotFound("The file does not exist.") from None
        except OSError as exc:
            raise _unavailable("read a file", exc) from exc
        if start == 0 and len(first) == size:
            self._hot.put(key, first)
        return self._stream(_Descriptor(fd), start, stop, chunk_size, first)

    async def _stream(
        self, fd: _Descriptor, start: int, stop: int, chunk_size: int, first: bytes
    ) -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            position = start + len(first)
            while position < stop and fd.number >= 0:
                data = await self._disk(
                    "read a file", os.pread, fd.number, min(chunk_size, stop - position), position
                )
                if not data:
                    break
                position += len(data)
                yield data
        finally:
            fd.close()

    async def size(self, key: str) -> int | None:
        path = self.blob_path(key)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unavailable("read a file", exc) from exc

    async def delete(self, key: str) -> None:
        path = self.blob_path(key)
        self._hot.drop(key)
        await self._disk("delete a file", self._delete, path, self._derived_dir(key))

    @staticmethod
    def _delete(path: Path, derived: Path) -> None:
        # Even when the blob is gone: a put_derived racing a delete may have left some.
        shutil.rmtree(derived, ignore_errors=True)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    async def put_derived(self, key: str, name: str, data: bytes) -> None:
        target = self._derived_dir(key) / check_derived_name(name)
        await self._disk("store derived data", self._put_derived, key, target, data)

    def _put_derived(self, key: str, target: Path, data: bytes) -> None:
        if not self.blob_path(key).exists():
            raise NotFound("The file does not exist.")
        temp = _TempFile(self._temp_dir)
        try:
            temp.write([data])
            _, path = temp.seal()
            _make_dirs(target.parent)
            os.replace(path, target)
            temp.mark_committed()
            fsync_dir(target.parent)
        finally:
            temp.discard()

    async def get_derived(self, key: str, name: str) -> bytes | None:
        target = self._derived_dir(key) / check_derived_name(name)
        try:
            return await asyncio.to_thread(target.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unavailable("read derived data", exc) from exc

    async def usage(self) -> int:
        return await self._disk("measure its usage", self._usage)

    def _usage(self) -> int:
        total = 0
        for directory, subdirs, files in os.walk(self.root):
            if directory == str(self.root):
                subdirs[:] = [d for d in subdirs if d != TEMP_DIR]
            for name in files:
                try:
                    total += os.lstat(os.path.join(directory, name)).st_size
                except FileNotFoundError:
                    continue  # deleted while we walked
        return total


def _open_and_read(
    path: Path, start: int, end: int | None, chunk_size: int
) -> tuple[int, int, int, bytes]:
    """(descriptor, or -1 when the first chunk is all; the blob's size; where the stream stops;
    the first chunk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        stop = size if end is None else min(end, size)
        first = os.pread(fd, min(chunk_size, stop - start), start) if start < stop else b""
    except BaseException:
        os.close(fd)
        raise
    if start + len(first) >= stop:
        os.close(fd)
        fd = -1
    return fd, size, stop, first


class _Descriptor:
    """An open file descriptor that is closed even if its stream is never iterated."""

    def __init__(self, number: int) -> None:
        self.number = number

    def close(self) -> None:
        if self.number >= 0:
            os.close(self.number)
            self.number = -1

    def __del__(self) -> None:
        self.close()
