"""One backpack's request/event log: JSON lines on disk under a size cap, a cursor, a stream.

Requests are logged in batches (`InstanceLog.requests()`): the request path only
appends a tuple to a list (backpack.api.app.AnsweredRequests), and about once a
second, or every `REQUEST_BATCH` requests, the whole list becomes ONE line,
`{"requests": [[method, path, status, seconds, user, request_id, time, group], …],
"first": ID, "step": STEP}`, encoded by a single orjson call: the nth request's
id is FIRST + n·STEP, and its entry (the API's shape) is made when it is read.
Events are one object per line. Lines go to an in-memory buffer; `flush()`
(called periodically and on close) writes the buffer to DIR/log.jsonl. When log.jsonl would pass
half the cap it becomes log.1.jsonl (replacing the previous one), so the two
files together never exceed `max_bytes`.

Entry ids are 16 decimal digits, time-based and strictly increasing (they
continue after the last stored id on open), so they sort as strings and serve
as read cursors across restarts.

Under `backpack serve --workers N` worker K writes log.wK.jsonl (and
log.wK.1.jsonl) and its ids end in K (they step by 100), so ids stay unique
across workers. Reads merge every log file of the directory by id, and a
subscription also follows the other workers' files as they flush (about once
a second), so their entries reach a stream within about a second, not always
in id order.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from backpack.api.http import NO_GROUP, RequestRecord
from backpack.errors import BadRequest
from backpack.fsutil import append
from backpack.types import JSONObject, JSONScalar

LOG_FILE = "log.jsonl"
ROTATED_FILE = "log.1.jsonl"
MAX_PATH = 512
MAX_READ = 1000
TAIL_ENTRIES = 256  # recent entries kept in memory to serve `read` without the disk
FLUSH_BYTES = 256 * 1024  # unflushed lines that make a request write them out at once
PENDING_MAX_BYTES = 1024 * 1024  # unflushed lines beyond this (a failing disk) are dropped
SUBSCRIPTION_QUEUE = 1000
FOLLOW_INTERVAL = 0.5  # seconds between looks at the other workers' files, while streaming
WORKER_ID_STEP = 100  # a worker's ids are ≡ its number (mod this): at most 99 workers
_LOG_GLOB = "log*.jsonl"
_RESERVED = frozenset({"id", "time", "type", "kind", "message"})
_CURSOR = re.compile(r"[0-9]{1,16}")
_STATUS = re.compile(r"[1-5][0-9]{2}")
_ENTRY_TYPES = ("request", "event")
REQUEST_BATCH = 256  # requests per batch line at most (a line stays well under 64 KiB)


def _time_text(at: float) -> str:
    ms = int(at * 1000)
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
    return f"{second}.{ms % 1000:03d}Z"


def _request_entry(ident: int, row: list[Any]) -> dict[str, Any]:
    method, path, status, seconds, user, request_id, at = row[:7]  # [7]: the route group
    return {
        "id": f"{ident:016d}",
        "time": _time_text(float(at)),
        "type": "request",
        "method": str(method)[:16],
        "path": str(path),  # cleaned when stored (see _stored)
        "status": status,
        "duration_ms": int(float(seconds) * 1_000_000) / 1000,
        "user_id": user,
        "request_id": str(request_id)[:128],
    }


def _expand(line: bytes) -> list[dict[str, Any]]:
    """The entries one stored line holds: an entry, or a batch of requests."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(value, dict):
        return []
    rows = value.get("requests")
    if rows is None:
        return [value] if isinstance(value.get("id"), str) else []
    first, step = value.get("first"), value.get("step")
    if not isinstance(rows, list) or not isinstance(first, int) or not isinstance(step, int):
        return []
    entries: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        if isinstance(row, list) and len(row) in (7, 8):  # 7: lines of before the group
            entries.append(_request_entry(first + index * step, row))
    return entries


def _stored(record: RequestRecord) -> RequestRecord:
    """The record as stored: the path cleaned, fields bounded, lone surrogates replaced."""
    method, path, status, seconds, user, request_id, at, group = record

    def fix(text: str) -> str:
        return text.encode("utf-8", "replace").decode()

    user = None if user is None else fix(user[:256])
    return (
        fix(method[:16]),
        fix(clean_path(path)),
        status,
        seconds,
        user,
        fix(request_id[:128]),
        at,
        group,
    )


def parse_entries(data: bytes) -> list[dict[str, Any]]:
    """The entries in the bytes of a log file, oldest first (lines that do not parse skipped)."""
    return list(_entries(data))


def clean_path(path: str) -> str:
    """The path as logged: no query string or fragment (they may carry tokens), bounded."""
    if "?" in path or "#" in path:
        path = path.split("?", 1)[0].split("#", 1)[0]
    return path if len(path) <= MAX_PATH else path[: MAX_PATH - 3] + "..."


def cut_partial_line(path: Path) -> int:
    """Cut a JSON-lines file back to its last newline (a crash mid-write); return its size."""
    if not path.exists():
        return 0
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        keep = end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            cut = f.read(end - start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = keep = start
        if keep != size:
            f.truncate(keep)
        return keep


def log_files(worker: int | None) -> tuple[str, str]:
    """The current and the rotated file of worker `worker` (None: a single process)."""
    if worker is None:
        return LOG_FILE, ROTATED_FILE
    return f"log.w{worker}.jsonl", f"log.w{worker}.1.jsonl"


def _rotated_name(current: str) -> str:
    return current.removesuffix(".jsonl") + ".1.jsonl"


def _entries(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.splitlines():
        yield from _expand(line)


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """The whole lines of `path` from `offset` on, and the offset after them."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    cut = data.rfind(b"\n") + 1
    return data[:cut], offset + cut


def _cursor(after: str) -> str:
    if not _CURSOR.fullmatch(after):
        raise BadRequest("after must be a log entry id (up to 16 digits).", {"after": after[:32]})
    return after.zfill(16)


@dataclass(frozen=True)
class LogFilter:
    """Which entries a read or a stream wants; an unset field matches everything."""

    entry_type: str | None = None  # "request" or "event"
    min_status: int | None = None  # e.g. 400: failed requests only (events never match)
    user_id: str | None = None
    request_id: str | None = None

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> LogFilter:
        """From query parameters `type`, `min_status`, `user_id`, `request_id`."""
        entry_type = params.get("type")
        if entry_type is not None and entry_type not in _ENTRY_TYPES:
            raise BadRequest("type must be request or event.")
        raw_status = params.get("min_status")
        min_status = None
        if raw_status is not None:
            if not _STATUS.fullmatch(raw_status):
                raise BadRequest("min_status must be an HTTP status from 100 to 599.")
            min_status = int(raw_status)
        return cls(entry_type, min_status, params.get("user_id"), params.get("request_id"))

    def matches(self, entry: Mapping[str, Any]) -> bool:
        if self.entry_type is not None and entry.get("type") != self.entry_type:
            return False
        if self.min_status is not None and entry.get("status", 0) < self.min_status:
            return False
        if self.user_id is not None and entry.get("user_id") != self.user_id:
            return False
        return self.request_id is None or entry.get("request_id") == self.request_id


_EVERYTHING = LogFilter()


class Subscription:
    """New entries as an async iterator, bounded: one that falls behind is closed.

    When it ends, `overflowed` tells whether entries were skipped; the reader
    then resumes with `InstanceLog.read(after=<last id it got>)`.
    """

    def __init__(self, log: InstanceLog, matcher: LogFilter, limit: int) -> None:
        self._log = log
        self._matcher = matcher
        self._limit = limit
        self._items: deque[JSONObject] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.overflowed = False

    def push(self, entry: JSONObject) -> None:
        """Queue an entry if it matches; never blocks, closes the subscription when full."""
        if self.closed or not self._matcher.matches(entry):
            return
        if len(self._items) >= self._limit:
            self.overflowed = True
            self.close()
            return
        self._items.append(entry)
        self._ready.set()

    def close(self) -> None:
        """Stop receiving; the iterator still yields what is queued, then ends."""
        if not self.closed:
            self.closed = True
            self._log.unsubscribe(self)
            self._ready.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> JSONObject:
        self._log.follow()
        while not self._items:
            if self.closed:
                raise StopAsyncIteration
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), FOLLOW_INTERVAL)
            except TimeoutError:
                self._log.follow()
        return self._items.popleft()


class InstanceLog:
    """The request/event log of one backpack in `directory`, at most `max_bytes` on disk."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        *,
        worker: int | None = None,
    ) -> None:
        if max_bytes < 4096:
            raise ValueError("max_bytes must be at least 4096")
        if worker is not None and not 0 < worker < WORKER_ID_STEP:
            raise ValueError(f"worker must be 1 to {WORKER_ID_STEP - 1}")
        current, rotated = log_files(worker)
        self._directory = directory
        self._file = directory / current
        self._rotated = directory / rotated
        self._offset = 0 if worker is None else worker
        self._step = 1 if worker is None else WORKER_ID_STEP  # between consecutive ids
        self._followed: dict[Path, tuple[int, int]] | None = None  # other files: inode, offset
        self._followed_at = 0.0
        self._half = max_bytes // 2
        self._clock = clock
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._dropped = 0
        # Recent lines with how many entries each holds, TAIL_ENTRIES entries or a little more.
        self._tail: deque[tuple[bytes, int]] = deque()
        self._tail_entries = 0
        self._subscribers: set[Subscription] = set()
        self._flush_at = FLUSH_BYTES
        directory.mkdir(parents=True, exist_ok=True)
        self._size = cut_partial_line(self._file)
        cut_partial_line(self._rotated)
        last = self._last_stored_id()
        self._last_id = int(last) if last is not None else 0
        if worker is not None:  # the greatest id ≡ worker up to the last one stored
            base = self._last_id - self._last_id % WORKER_ID_STEP + self._offset
            self._last_id = base if base <= self._last_id else base - WORKER_ID_STEP
        # Whether entries older than the in-memory tail may exist on disk.
        self._older_on_disk = last is not None

    @property
    def streaming(self) -> bool:
        """Whether anyone follows the log live."""
        return bool(self._subscribers)

    def request(
        self,
        method: str,
        path: str,
        status: int,
        duration_s: float,
        user_id: str | None,
        request_id: str,
    ) -> None:
        """Log one answered request. No bodies, no headers (`requests` logs many at once)."""
        record = (method, path, status, duration_s, user_id, request_id, self._clock(), NO_GROUP)
        self.requests([record])

    def requests(self, batch: list[RequestRecord]) -> None:
        """Log answered requests, oldest first, as one line (see the module docstring)."""
        for start in range(0, len(batch), REQUEST_BATCH):
            part = batch[start : start + REQUEST_BATCH]
            first = self._last_id + self._step
            floor = int(part[0][6] * 1000) * 1000 + self._offset  # time-based, ≡ the worker
            if floor > first:
                first = floor
            self._last_id = first + (len(part) - 1) * self._step
            line = {"requests": part, "first": first, "step": self._step}
            try:
                encoded = orjson.dumps(line)
            except orjson.JSONEncodeError:  # a lone surrogate in a path: replace it
                encoded = b""
            # Rare, so looked for in the encoded line at C speed: a query string or fragment
            # in a path (never stored: they may carry tokens), an overlong field, or the
            # lone surrogate above.
            if not encoded or b"?" in encoded or b"#" in encoded or len(encoded) > 400 * len(part):
                line["requests"] = [_stored(record) for record in part]
                encoded = orjson.dumps(line)
            self._append_line(encoded, None, len(part))

    def event(self, kind: str, message: str, **fields: JSONScalar) -> None:
        """Log an instance event (started, stopped, failed, key rotated …); never pass secrets."""
        clash = _RESERVED.intersection(fields)
        if clash:
            raise ValueError(f"reserved log field names: {sorted(clash)}")
        entry = self._stamp("event")
        entry["kind"] = kind
        entry["message"] = message
        entry.update(fields)
        self._append(entry)

    def read(
        self, after: str | None = None, limit: int = 100, matcher: LogFilter = _EVERYTHING
    ) -> list[JSONObject]:
        """Entries, oldest first: the first `limit` after the cursor, else the last `limit`.

        `after="0"` reads from the oldest entry still retained.
        """
        if not 1 <= limit <= MAX_READ:
            raise BadRequest(f"limit must be from 1 to {MAX_READ}.")
        cursor = None if after is None else _cursor(after)
        others = self._other_files()
        if others:
            return self._read_merged(others, cursor, limit, matcher)
        tail: list[dict[str, Any]] = [e for line, _ in self._tail for e in _expand(line)]
        if cursor is not None:
            if cursor >= f"{self._last_id:016d}":
                return []
            if tail and tail[0]["id"] <= cursor:
                return [e for e in tail if e["id"] > cursor and matcher.matches(e)][:limit]
            found: list[dict[str, Any]] = []
            for entry in self._everything():
                if entry["id"] > cursor and matcher.matches(entry):
                    found.append(entry)
                    if len(found) == limit:
                        break
            return found
        recent = [e for e in tail if matcher.matches(e)]
        if len(recent) >= limit or not self._older_on_disk:
            return recent[-limit:]
        last: deque[dict[str, Any]] = deque(maxlen=limit)
        last.extend(e for e in self._everything() if matcher.matches(e))
        return list(last)

    def _read_merged(
        self, others: list[Path], cursor: str | None, limit: int, matcher: LogFilter
    ) -> list[JSONObject]:
        """`read` over this process's entries and the other workers' files, by id."""
        entries = list(self._everything())
        for path in others:
            try:
                entries += _entries(path.read_bytes())
            except FileNotFoundError:
                continue
        entries.sort(key=lambda entry: entry["id"])
        if cursor is not None:
            found = (e for e in entries if e["id"] > cursor and matcher.matches(e))
            return [e for e, _ in zip(found, range(limit), strict=False)]
        return [e for e in entries if matcher.matches(e)][-limit:]

    def _other_files(self) -> list[Path]:
        """Log files of other workers (or of an earlier run with more or fewer of them)."""
        own = (self._file, self._rotated)
        return sorted(p for p in self._directory.glob(_LOG_GLOB) if p not in own)

    def follow(self) -> None:
        """Hand the subscribers what the other workers flushed since the last look."""
        if not self._subscribers:
            self._followed = None
            return
        now = time.monotonic()
        if self._followed is not None and now - self._followed_at < FOLLOW_INTERVAL * 0.8:
            return
        self._followed_at = now
        starting = self._followed is None
        followed = self._followed if self._followed is not None else {}
        new: list[dict[str, Any]] = []
        for path in self._other_files():
            if path.name.endswith(".1.jsonl"):
                continue  # a rotated file: read through its current one
            try:
                stat = os.stat(path)
                inode = stat.st_ino
                if starting:
                    followed[path] = (inode, stat.st_size)
                    continue
                seen_inode, offset = followed.get(path, (inode, 0))
                if seen_inode != inode:  # rotated: the rest of the old file is the .1 one now
                    rotated = path.with_name(_rotated_name(path.name))
                    if os.stat(rotated).st_ino == seen_inode:
                        new += _entries(_read_from(rotated, offset)[0])
                    offset = 0
                data, offset = _read_from(path, offset)
            except FileNotFoundError:
                continue
            followed[path] = (inode, offset)
            new += _entries(data)
        self._followed = followed
        new.sort(key=lambda entry: entry["id"])
        for entry in new:
            for subscription in tuple(self._subscribers):
                subscription.push(entry)

    def subscribe(
        self,
        after: str | None = None,
        matcher: LogFilter = _EVERYTHING,
        limit: int = SUBSCRIPTION_QUEUE,
    ) -> Subscription:
        """New entries as they are logged; with `after`, the ones since that cursor first."""
        subscription = Subscription(self, matcher, limit)
        if after is not None:
            wanted = min(limit, MAX_READ)
            backlog = self.read(after, wanted, matcher)
            for entry in backlog:
                subscription.push(entry)
            if len(backlog) == wanted:
                subscription.overflowed = True  # more may follow: resume from the last id
                subscription.close()
                return subscription
        self._subscribers.add(subscription)
        if self._followed is None:
            self.follow()  # from now on, the other workers' new entries too
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        if not self._subscribers:
            self._followed = None
        subscription.close()

    def flush(self) -> None:
        """Write buffered entries to disk, rotating to keep both files within the cap."""
        lines, self._pending = self._pending, []
        self._pending_bytes = 0
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            self.event("log_overflow", f"{dropped} log entries were dropped: writes fell behind.")
            lines += self._pending
            self._pending = []
            self._pending_bytes = 0
        if not lines:
            return
        chunk = b"\n".join(lines) + b"\n"
        try:
            if self._size + len(chunk) > self._half:
                if self._size:
                    os.replace(self._file, self._rotated)
                    self._size = 0
                while len(chunk) > self._half:  # one batch bigger than a file: keep the newest
                    chunk = chunk[chunk.index(b"\n") + 1 :]
            append(self._file, chunk)
        except OSError:
            # Keep the lines for the next flush (within the buffer's cap) and tell the caller.
            self._pending = lines + self._pending
            self._pending_bytes = sum(len(line) + 1 for line in self._pending)
            raise
        self._size += len(chunk)

    def close(self) -> None:
        """Flush and end every subscription."""
        self.flush()
        for subscription in list(self._subscribers):
            subscription.close()

    def _next_id(self) -> tuple[str, str]:
        """A new event's id and time (a batch of requests numbers itself in `requests`)."""
        now = self._clock()
        floor = int(now * 1000) * 1000 + self._offset  # time-based, ≡ the worker's number
        following = self._last_id + self._step
        self._last_id = ident = following if following > floor else floor
        return f"{ident:016d}", _time_text(now)

    def _stamp(self, entry_type: str) -> JSONObject:
        ident, stamp = self._next_id()
        return {"id": ident, "time": stamp, "type": entry_type}

    def _append(self, entry: JSONObject) -> None:
        try:
            line = orjson.dumps(entry)
        except orjson.JSONEncodeError:  # a lone surrogate in a path or field: replace it
            for key, value in entry.items():
                if isinstance(value, str):
                    entry[key] = value.encode("utf-8", "replace").decode()
            line = orjson.dumps(entry)
        self._append_line(line, entry)

    def _append_line(self, line: bytes, entry: JSONObject | None, count: int = 1) -> None:
        if self._pending_bytes >= self._flush_at:
            # A busy backpack writes its lines as they pile up, a few hundred KB at a time
            # (no fsync); the periodic flush covers the quiet ones. After a failed write,
            # the next try waits for as much again.
            try:
                self.flush()
                self._flush_at = FLUSH_BYTES
            except OSError:
                self._flush_at = self._pending_bytes + FLUSH_BYTES
        if self._pending_bytes + len(line) > PENDING_MAX_BYTES:
            self._dropped += count
            return
        self._pending.append(line)
        self._pending_bytes += len(line) + 1
        tail = self._tail
        tail.append((line, count))
        self._tail_entries += count
        while len(tail) > 1 and self._tail_entries - tail[0][1] >= TAIL_ENTRIES:
            self._tail_entries -= tail.popleft()[1]
            self._older_on_disk = True
        if self._subscribers:
            entries = _expand(line) if entry is None else [entry]
            for parsed in entries:
                for subscription in tuple(self._subscribers):
                    subscription.push(parsed)

    def _everything(self) -> Iterator[dict[str, Any]]:
        """Every retained entry, oldest first: both files, then the unflushed buffer."""
        for path in (self._rotated, self._file):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            yield from _entries(data)
        for line in list(self._pending):
            yield from _expand(line)

    def _last_stored_id(self) -> str | None:
        for path in (self._file, self._rotated):
            try:
                with open(path, "rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(max(0, size - 65536))
                    lines = f.read().splitlines()
            except FileNotFoundError:
                continue
            for line in reversed(lines):
                entries = _expand(line)
                entry_id = entries[-1].get("id") if entries else None
                if isinstance(entry_id, str) and _CURSOR.fullmatch(entry_id):
                    return entry_id.zfill(16)
        return None
