"""The per-backpack request/event log: entries, cursors, rotation under a cap, streams."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from backpack.errors import BadRequest
from backpack.platform.logs import (
    LOG_FILE,
    MAX_PATH,
    PENDING_MAX_BYTES,
    ROTATED_FILE,
    TAIL_ENTRIES,
    InstanceLog,
    LogFilter,
    parse_entries,
)

T0 = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def log_get(log: InstanceLog, n: int, status: int = 200, user: str | None = "u1") -> None:
    for i in range(n):
        log.request("GET", f"/api/collections/todos/records/{i}", status, 0.0042, user, f"r{i}")


def stored(directory: Path) -> list[dict[str, object]]:
    """The entries in the files (requests are stored in batch lines: see logs.py)."""
    data = b""
    for name in (ROTATED_FILE, LOG_FILE):
        if (directory / name).exists():
            data += (directory / name).read_bytes()
    return parse_entries(data)


def test_a_request_entry_has_the_documented_shape(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, clock=Clock())
    log.request("POST", "/api/auth/login", 401, 0.01234567, None, "req-1")
    (entry,) = log.read()
    assert entry == {
        "id": entry["id"],
        "time": "2023-11-14T22:13:20.250Z",
        "type": "request",
        "method": "POST",
        "path": "/api/auth/login",
        "status": 401,
        "duration_ms": 12.345,
        "user_id": None,
        "request_id": "req-1",
    }
    assert re.fullmatch(r"[0-9]{16}", str(entry["id"]))
    log.flush()
    assert stored(tmp_path) == [entry]


def test_query_strings_and_fragments_are_never_logged(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, clock=Clock())
    log.request("GET", "/api/realtime?token=bps_secret123", 101, 1.0, "u1", "r1")
    log.request("GET", "/api/files/f1/content?sig=abc#frag", 200, 0.1, None, "r2")
    log.request("GET", "/" + "x" * 5000, 404, 0.1, None, "r3")
    log.close()
    text = (tmp_path / LOG_FILE).read_text()
    assert "bps_secret123" not in text and "sig=" not in text and "frag" not in text
    paths = [e["path"] for e in log.read()]
    assert paths[:2] == ["/api/realtime", "/api/files/f1/content"]
    assert len(str(paths[2])) == MAX_PATH and str(paths[2]).endswith("...")


def test_text_that_is_not_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, clock=Clock())
    log.request("GET", "/api/x\udcff", 404, 0.001, None, "r1")
    log.close()
    assert stored(tmp_path)[0]["path"] == "/api/x?"


def test_events_carry_their_fields_and_reserved_names_are_refused(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, clock=Clock())
    log.event("started", "Backpack started", runtime="embedded", pid=42)
    with pytest.raises(ValueError):
        log.event("rotated", "Key rotated", id="forged")
    entries = log.read()
    assert len(entries) == 1
    assert {k: v for k, v in entries[0].items() if k not in ("id", "time")} == {
        "type": "event",
        "kind": "started",
        "message": "Backpack started",
        "runtime": "embedded",
        "pid": 42,
    }


def test_ids_increase_with_a_still_or_backward_clock_and_across_restarts(tmp_path: Path) -> None:
    clock = Clock()
    log = InstanceLog(tmp_path, clock=clock)
    log_get(log, 3)
    clock.now -= 3600
    log_get(log, 2)
    log.close()
    first_run = [e["id"] for e in log.read()]
    assert first_run == sorted(first_run) and len(set(first_run)) == 5
    clock.now -= 86400  # the clock is even further behind after the restart
    reopened = InstanceLog(tmp_path, clock=clock)
    reopened.event("started", "again")
    newest = reopened.read(after=str(first_run[-1]))
    assert len(newest) == 1 and str(newest[0]["id"]) > str(first_run[-1])


def test_read_with_and_without_a_cursor(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, clock=Clock())
    log_get(log, 10)
    everything = log.read(limit=1000)
    ids = [str(e["id"]) for e in everything]
    assert len(ids) == 10 and ids == sorted(ids)
    assert log.read(limit=3) == everything[-3:]  # no cursor: the latest, oldest first
    assert log.read(after=ids[4], limit=2) == everything[5:7]  # strictly after the cursor
    assert log.read(after="0") == everything
    assert log.read(after="5") == everything  # a short id is a small number
    assert log.read(after=ids[-1]) == []
    assert log.read(after="9" * 16) == []


@pytest.mark.parametrize(("after", "limit"), [("abc", 10), ("1" * 17, 10), ("-1", 10), (None, 0)])
def test_read_refuses_bad_cursors_and_limits(tmp_path: Path, after: str | None, limit: int) -> None:
    log = InstanceLog(tmp_path, clock=Clock())
    with pytest.raises(BadRequest):
        log.read(after=after, limit=limit)
    with pytest.raises(BadRequest):
        log.read(limit=1001)


def test_reads_reach_past_memory_to_disk(tmp_path: Path) -> None:
    clock = Clock()
    log = InstanceLog(tmp_path, clock=clock)
    log.request("DELETE", "/api/files/f1", 500, 0.1, None, "failed")
    log_get(log, TAIL_ENTRIES + 50)
    log.flush()
    log_get(log, 5)  # still in the buffer
    from_start = log.read(after="0", limit=1000)
    assert len(from_start) == TAIL_ENTRIES + 56
    assert from_start[0]["request_id"] == "failed"
    errors_only = log.read(matcher=LogFilter(min_status=400))  # only on disk now
    assert errors_only == from_start[:1]
    log.close()
    reopened = InstanceLog(tmp_path, clock=clock)  # nothing in memory now
    assert reopened.read(limit=1000) == from_start
    assert reopened.read(after=str(from_start[10]["id"]), limit=1) == [from_start[11]]


def test_filters(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, clock=Clock())
    log_get(log, 3, status=200, user="alice")
    log_get(log, 2, status=404, user="bob")
    log_get(log, 1, status=503, user=None)
    log.event("stopped", "Backpack stopped")
    assert len(log.read(matcher=LogFilter(min_status=400))) == 3
    assert len(log.read(matcher=LogFilter(min_status=500))) == 1
    assert len(log.read(matcher=LogFilter(user_id="bob"))) == 2
    assert [e["kind"] for e in log.read(matcher=LogFilter(entry_type="event"))] == ["stopped"]
    assert len(log.read(matcher=LogFilter(request_id="r1"))) == 2
    parsed = LogFilter.from_query({"type": "request", "min_status": "500", "user_id": "x"})
    assert parsed == LogFilter("request", 500, "x", None)


@pytest.mark.parametrize(
    "query",
    [{"type": "requests"}, {"min_status": "abc"}, {"min_status": "700"}, {"min_status": "5²0"}],
)
def test_filter_parsing_refuses_bad_values(query: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        LogFilter.from_query(query)


def test_rotation_keeps_the_files_within_the_cap(tmp_path: Path) -> None:
    cap = 8192
    log = InstanceLog(tmp_path, max_bytes=cap, clock=Clock())
    for _ in range(40):
        log_get(log, 7)
        log.flush()
        sizes = [(tmp_path / n).stat().st_size for n in (LOG_FILE, ROTATED_FILE)
                 if (tmp_path / n).exists()]  # fmt: skip
        assert sum(sizes) <= cap and all(size <= cap // 2 for size in sizes)
    assert (tmp_path / ROTATED_FILE).exists()
    kept = stored(tmp_path)
    ids = [str(e["id"]) for e in kept]
    assert ids == sorted(ids) and 20 < len(ids) < 280  # the oldest are gone
    assert log.read(after="0", limit=1000)[-1] == kept[-1]


def test_one_batch_larger_than_a_file_keeps_its_newest_lines(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, max_bytes=4096, clock=Clock())
    log_get(log, 100)
    log.flush()
    kept = stored(tmp_path)
    assert (tmp_path / LOG_FILE).stat().st_size <= 2048
    assert kept and kept[-1]["request_id"] == "r99"


def test_a_half_written_line_is_cut_on_open(tmp_path: Path) -> None:
    clock = Clock()
    log = InstanceLog(tmp_path, clock=clock)
    log_get(log, 3)
    log.close()
    with open(tmp_path / LOG_FILE, "ab") as f:
        f.write(b'{"id":"9999999999999999","time":"20')
    reopened = InstanceLog(tmp_path, clock=clock)
    assert (tmp_path / LOG_FILE).read_bytes().endswith(b"\n")
    log_get(reopened, 1)
    reopened.close()
    assert [e["request_id"] for e in stored(tmp_path)] == ["r0", "r1", "r2", "r0"]


def test_entries_beyond_the_buffer_are_dropped_and_reported(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, max_bytes=16 * PENDING_MAX_BYTES, clock=Clock())
    (tmp_path / LOG_FILE).mkdir()  # every write fails until it is gone
    count = PENDING_MAX_BYTES // 50  # more than the buffer holds without a flush
    log_get(log, count)
    with pytest.raises(OSError):
        log.flush()
    (tmp_path / LOG_FILE).rmdir()
    log.flush()
    entries = stored(tmp_path)
    assert len(entries) < count
    overflow = entries[-1]
    assert overflow["type"] == "event" and overflow["kind"] == "log_overflow"
    assert str(count - (len(entries) - 1)) in str(overflow["message"])


def test_max_bytes_must_leave_room() -> None:
    with pytest.raises(ValueError):
        InstanceLog(Path("/nonexistent"), max_bytes=100)


async def test_a_subscription_receives_new_entries(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, clock=Clock())
    log_get(log, 2)
    backlog_from = str(log.read()[0]["id"])
    everything = log.subscribe()
    errors = log.subscribe(matcher=LogFilter(min_status=500))
    resumed = log.subscribe(after=backlog_from)  # the second old entry, then new ones

    async def take(subscription: object, n: int) -> list[dict[str, object]]:
        got = []
        async for entry in subscription:  # type: ignore[attr-defined]
            got.append(entry)
            if len(got) == n:
                break
        return got

    waiting = asyncio.create_task(take(everything, 3))
    await asyncio.sleep(0)
    log.request("GET", "/api/health", 200, 0.001, None, "a")
    log.request("GET", "/api/health", 500, 0.001, None, "b")
    log.event("stopped", "bye")
    got = await asyncio.wait_for(waiting, 1)
    assert [e.get("request_id", e.get("kind")) for e in got] == ["a", "b", "stopped"]
    assert [e["request_id"] for e in await asyncio.wait_for(take(errors, 1), 1)] == ["b"]
    resumed_ids = [e.get("request_id") for e in await asyncio.wait_for(take(resumed, 3), 1)]
    assert resumed_ids == ["r1", "a", "b"]
    log.unsubscribe(errors)
    log.request("GET", "/api/health", 500, 0.001, None, "c")
    assert await asyncio.wait_for(take(errors, 1), 1) == []  # ended, nothing after it


async def test_a_slow_subscriber_is_cut_off_without_holding_anyone_back(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, clock=Clock())
    slow = log.subscribe(limit=5)
    fast = log.subscribe()
    received: list[object] = []

    async def drain() -> None:
        async for entry in fast:
            received.append(entry["request_id"])

    reader = asyncio.create_task(drain())
    for i in range(50):
        log.request("GET", "/api/health", 200, 0.001, None, f"x{i}")
        await asyncio.sleep(0)
    log.close()
    await asyncio.wait_for(reader, 1)
    assert received == [f"x{i}" for i in range(50)]
    assert slow.overflowed and slow.closed
    queued = [entry["request_id"] async for entry in slow]
    assert queued == [f"x{i}" for i in range(5)]  # resume with read(after=x4's id)
    assert len(log.read(limit=1000)) == 50


async def test_a_backlog_bigger_than_the_queue_ends_the_subscription(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path, clock=Clock())
    log_get(log, 10)
    subscription = log.subscribe(after="0", limit=4)
    assert subscription.overflowed
    assert [e["request_id"] async for e in subscription] == ["r0", "r1", "r2", "r3"]


# `serve --workers`: a file per worker, merged reads, streams that follow the others


def test_workers_write_their_own_files_and_reads_merge_them_by_id(tmp_path: Path) -> None:
    clock = Clock()
    one = InstanceLog(tmp_path, clock=clock, worker=1)
    two = InstanceLog(tmp_path, clock=clock, worker=2)
    for n in range(3):  # the same millisecond on both: ids still differ
        one.request("GET", "/api/health", 200, 0.001, None, f"one-{n}")
        two.request("GET", "/api/health", 200, 0.001, None, f"two-{n}")
    one.flush()
    two.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.w1.jsonl", "log.w2.jsonl"]
    for log in (one, two):
        entries = log.read()
        assert len(entries) == 6
        ids = [str(e["id"]) for e in entries]
        assert ids == sorted(set(ids))
        assert {int(i) % 100 for i in ids} == {1, 2}
        after = log.read(after=ids[2], limit=2)
        assert [e["id"] for e in after] == ids[3:5]
        assert [e["request_id"] for e in log.read(limit=1)] == [entries[-1]["request_id"]]


def test_a_restarted_worker_continues_its_own_file_and_ids(tmp_path: Path) -> None:
    clock = Clock()
    first = InstanceLog(tmp_path, clock=clock, worker=3)
    first.request("GET", "/a", 200, 0.001, None, "a")
    first.close()
    again = InstanceLog(tmp_path, clock=clock, worker=3)
    again.request("GET", "/b", 200, 0.001, None, "b")
    again.flush()
    entries = stored_worker(tmp_path, 3)
    assert [e["request_id"] for e in entries] == ["a", "b"]
    assert int(str(entries[1]["id"])) - int(str(entries[0]["id"])) == 100


def test_worker_numbers_are_bounded(tmp_path: Path) -> None:
    for worker in (0, 100):
        with pytest.raises(ValueError):
            InstanceLog(tmp_path, worker=worker)


async def test_a_subscription_follows_the_other_workers_files(tmp_path: Path) -> None:
    clock = Clock()
    mine = InstanceLog(tmp_path, clock=clock, worker=1)
    other = InstanceLog(tmp_path, clock=clock, worker=2, max_bytes=4096)
    other.request("GET", "/before", 200, 0.001, None, "before")
    other.flush()
    subscription = mine.subscribe()

    async def take(n: int) -> list[object]:
        got: list[object] = []
        async for entry in subscription:
            got.append(entry["request_id"])
            if len(got) == n:
                break
        return got

    mine.request("GET", "/mine", 200, 0.001, None, "mine")
    assert await asyncio.wait_for(take(1), 5) == ["mine"]
    rotated = False
    for batch in range(4):  # past half the cap: the other's file rotates under the reader
        expected = [f"after-{batch}-{n}" for n in range(8)]
        for request_id in expected:
            other.request("GET", "/after", 200, 0.001, None, request_id)
        other.flush()
        rotated = rotated or (tmp_path / "log.w2.1.jsonl").exists()
        assert await asyncio.wait_for(take(8), 5) == expected
    assert rotated
    mine.unsubscribe(subscription)


def stored_worker(directory: Path, worker: int) -> list[dict[str, object]]:
    data = b""
    for name in (f"log.w{worker}.1.jsonl", f"log.w{worker}.jsonl"):
        if (directory / name).exists():
            data += (directory / name).read_bytes()
    return parse_entries(data)
