"""Per-backpack metrics: minute series, 24 h retention, persistence, Prometheus text."""

from __future__ import annotations

import re
from bisect import bisect_left
from pathlib import Path
from typing import Any

import orjson
import pytest

from backpack.api.http import GROUP_INDEX, route_group
from backpack.errors import BadRequest
from backpack.platform.metrics import (
    BUCKETS,
    COMPACT_AFTER,
    Gauge,
    InstanceMetrics,
    metrics_file,
    parse_window,
    render_prometheus,
)

T0 = 1_700_000_040.0  # 2023-11-14T22:14:00Z, the start of a minute
DAY = 24 * 3600


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def gauges(**values: int) -> dict[str, int]:
    return {"realtime_connections": 0, "records": 0, "users": 0, "storage_bytes": 0} | values


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/api/collections", "records"),
        ("/api/collections/todos/records/abc", "records"),
        ("/api/auth/login", "auth"),
        ("/api/users/u1", "auth"),
        ("/api/files/f1/content", "files"),
        ("/api/buckets", "files"),
        ("/api/realtime", "realtime"),
        ("/api/realtime?token=x", "realtime"),
        ("/api/health", "other"),
        ("/api", "other"),
        ("/api/collectionsx", "other"),
        ("/", "site"),
        ("/index.html", "site"),
        ("/apiary", "site"),
    ],
)
def test_route_group(path: str, group: str) -> None:
    assert route_group(path) == group


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m", 60), ("15m", 900), ("90m", 5400), ("1h", 3600), ("6h", 21600), ("24h", DAY)],
)
def test_parse_window(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "0m", "25h", "1441m", "1d", "1 h", "-1h", "1.5h", "h", "1H", "01h", "3600"]
)
def test_parse_window_refuses(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_window(text)
    assert info.value.status == 400
    assert "15m, 1h, 6h or 24h" in info.value.message


def test_minutes_roll_over_and_count_by_group_and_status() -> None:
    clock = Clock()
    metrics = InstanceMetrics(None, clock)
    metrics.observe("/api/collections/n/records", 200, 0.003)
    metrics.observe("/api/collections/n/records", 201, 0.004)
    metrics.observe("/api/auth/login", 400, 0.010)
    metrics.observe("/api/collections/n/records", 500, 0.050)
    clock.now += 59.9
    metrics.observe("/api/files/f1", 404, 0.001)
    clock.now += 0.1  # the next minute
    metrics.observe("/api/realtime", 101, 0.002)
    series = metrics.series(180)
    assert series["window"] == 180 and series["resolution"] == 60
    points = series["points"]
    assert [p["time"] for p in points] == [
        "2023-11-14T22:13:00.000Z",
        "2023-11-14T22:14:00.000Z",
        "2023-11-14T22:15:00.000Z",
    ]
    assert points[0]["requests"] == 0 and points[0]["p50_ms"] is None
    first = points[1]
    assert (first["requests"], first["errors"], first["client_errors"]) == (5, 1, 2)
    assert first["statuses"] == {"400": 1, "404": 1, "500": 1}
    assert first["groups"]["records"]["requests"] == 3
    assert first["groups"]["records"]["errors"] == 1
    assert first["groups"]["auth"]["client_errors"] == 1
    assert first["groups"]["files"]["client_errors"] == 1
    assert set(first["groups"]) == {"records", "auth", "files"}
    assert points[2]["requests"] == 1 and set(points[2]["groups"]) == {"realtime"}
    totals = series["totals"]
    assert (totals["requests"], totals["errors"], totals["client_errors"]) == (6, 1, 2)
    assert totals["groups"]["records"]["requests"] == 3


def test_unknown_group_counts_as_other() -> None:
    metrics = InstanceMetrics(None, Clock())
    metrics.observe("/api/nonsense", 200, 0.001)
    assert set(metrics.series(60)["totals"]["groups"]) == {"other"}


def test_percentiles_come_from_the_buckets() -> None:
    metrics = InstanceMetrics(None, Clock())
    for _ in range(50):
        metrics.observe("/api/collections/n/records", 200, 0.0015)  # bucket (1 ms, 2 ms]
    for _ in range(50):
        metrics.observe("/api/collections/n/records", 200, 0.015)  # bucket (10 ms, 20 ms]
    totals = metrics.series(60)["totals"]
    assert totals["p50_ms"] == 2.0  # rank 50 closes the first bucket
    assert totals["p95_ms"] == 19.0  # 10 + 10 * 45/50
    assert totals["groups"]["records"]["p95_ms"] == 19.0


def test_percentiles_past_the_last_bucket_report_its_bound() -> None:
    metrics = InstanceMetrics(None, Clock())
    metrics.observe("/api/collections/n/records", 200, 0.0001)
    for _ in range(9):
        metrics.observe("/api/collections/n/records", 200, 120.0)
    totals = metrics.series(60)["totals"]
    assert totals["p95_ms"] == BUCKETS[-1] * 1000
    assert totals["p50_ms"] == BUCKETS[-1] * 1000


def test_gauges_hold_until_the_next_sample() -> None:
    clock = Clock()
    metrics = InstanceMetrics(None, clock)
    clock.now += 60
    metrics.set_gauges(realtime_connections=2, records=10, users=3, storage_bytes=4096)
    clock.now += 120
    metrics.set_gauges(realtime_connections=1, records=12, users=3, storage_bytes=5000)
    points = metrics.series(300)["points"]
    assert [p["records"] for p in points] == [None, None, 10, 10, 12]
    assert [p["realtime_connections"] for p in points] == [None, None, 2, 2, 1]
    assert metrics.series(60)["totals"]["storage_bytes"] == 5000


def test_series_refuses_windows_beyond_retention() -> None:
    metrics = InstanceMetrics(None, Clock())
    with pytest.raises(ValueError):
        metrics.series(DAY + 60)
    with pytest.raises(ValueError):
        metrics.series(0)
    assert len(metrics.series(DAY)["points"]) == 1440


def test_history_older_than_24_hours_is_dropped_but_gauges_stay(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    clock = Clock()
    metrics = InstanceMetrics(path, clock)
    metrics.observe("/api/collections/n/records", 200, 0.002)
    metrics.set_gauges(**gauges(records=7))
    clock.now += 2 * 3600
    metrics.observe("/api/collections/n/records", 200, 0.002)
    metrics.flush()
    clock.now += DAY - 2 * 3600 + 300  # the first minute is 24 h 5 min old
    series = metrics.series(DAY)
    assert series["totals"]["requests"] == 1
    assert all(p["records"] == 7 for p in series["points"])
    clock.now += COMPACT_AFTER
    metrics.flush()  # the file holds more than an hour beyond 24 h: rewritten
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["minute"] for line in lines] == [clock.now - DAY + 60, T0 + 2 * 3600]
    assert lines[0] == {"minute": clock.now - DAY + 60, "gauges": [0, 7, 0, 0]}
    assert not list(tmp_path.glob("*.tmp"))
    reopened = InstanceMetrics(path, clock).series(DAY)
    assert reopened["totals"]["requests"] == 1
    assert reopened["points"][0]["records"] == 7


def test_gauges_carry_into_a_minute_at_the_edge_of_the_window() -> None:
    clock = Clock()
    metrics = InstanceMetrics(None, clock)
    metrics.set_gauges(**gauges(users=4))
    clock.now += 120
    # the first minute of the 1 h window below
    metrics.observe("/api/collections/n/records", 200, 0.001)
    clock.now += 3540
    points = metrics.series(3600)["points"]
    assert points[0]["requests"] == 1 and points[0]["users"] == 4


def test_a_reopened_file_restores_the_series(tmp_path: Path) -> None:
    path = tmp_path / "m" / "metrics.jsonl"
    clock = Clock()
    metrics = InstanceMetrics(path, clock)
    for status in (200, 200, 404, 503):
        metrics.observe("/api/collections/n/records", status, 0.004)
    metrics.set_gauges(**gauges(users=5))
    clock.now += 60
    metrics.observe("/api/auth/login", 200, 0.2)
    clock.now += 60
    metrics.flush()
    before = metrics.series(3600)
    assert not list(path.parent.glob("*.tmp"))
    clock.now += 30
    after = InstanceMetrics(path, clock).series(3600)
    assert after == before
    assert after["totals"]["requests"] == 5 and after["totals"]["users"] == 5


def test_the_minute_in_progress_survives_a_restart_within_it(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    clock = Clock()
    first = InstanceMetrics(path, clock)
    for _ in range(3):
        first.observe("/api/collections/n/records", 200, 0.001)
    first.flush()
    clock.now += 20
    second = InstanceMetrics(path, clock)
    second.observe("/api/collections/n/records", 200, 0.001)
    second.observe("/api/collections/n/records", 500, 0.001)
    assert second.series(60)["totals"]["requests"] == 5
    clock.now += 60
    second.flush()
    assert second.series(120)["points"][0]["requests"] == 5
    assert InstanceMetrics(path, clock).series(120)["points"][0]["errors"] == 1


def test_an_idle_backpack_writes_nothing_new(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    clock = Clock()
    metrics = InstanceMetrics(path, clock)
    metrics.flush()
    assert not path.exists()
    metrics.set_gauges(**gauges(records=1))
    metrics.flush()
    written = path.read_bytes()
    for _ in range(30):  # 30 idle minutes sampled once a minute, nothing changes
        clock.now += 60
        metrics.set_gauges(**gauges(records=1))
        metrics.flush()
    assert path.read_bytes() == written
    assert len(written.splitlines()) == 1
    metrics.observe("/api/collections/n/records", 200, 0.001)
    metrics.flush()
    assert len(path.read_bytes().splitlines()) == 2  # the idle minutes took no room


def test_flushes_append_and_parts_of_a_minute_add_up(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    clock = Clock()
    metrics = InstanceMetrics(path, clock)
    metrics.set_gauges(**gauges(users=9))
    for _ in range(3):  # three flushes within one minute, each after new requests
        metrics.observe("/api/collections/n/records", 200, 0.001)
        metrics.flush()
        clock.now += 10
    metrics.flush()  # nothing new: nothing written
    assert len(path.read_bytes().splitlines()) == 3
    assert metrics.series(60)["points"][0]["users"] == 9
    with open(path, "ab") as f:
        f.write(b'{"minute": 17000')  # a write cut short by a crash
    reopened = InstanceMetrics(path, clock)
    assert path.read_bytes().endswith(b"}\n")
    assert reopened.series(60)["points"][0]["requests"] == 3


def test_without_a_file_only_24_hours_stay_in_memory() -> None:
    clock = Clock()
    metrics = InstanceMetrics(None, clock)
    for _ in range(6):
        metrics.observe("/api/collections/n/records", 200, 0.001)
        metrics.set_gauges(**gauges(records=3))
        metrics.flush()
        clock.now += 3600
    clock.now += DAY - 3 * 3600 - 90  # the first three hours are beyond 24 h
    metrics.observe("/api/collections/n/records", 200, 0.001)
    series = metrics.series(DAY)
    assert series["totals"]["requests"] == 4
    assert series["points"][0]["records"] == 3
    assert len(metrics._unwritten) == 4  # the gauges at the cutoff and three hours


def test_damaged_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    clock = Clock()
    metrics = InstanceMetrics(path, clock)
    metrics.observe("/api/collections/n/records", 200, 0.001)
    clock.now += 60
    metrics.observe("/api/files/f1", 200, 0.001)
    metrics.flush()
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join([b"{not json", lines[0], b'{"minute": 7}', lines[1][:10]]))
    totals = InstanceMetrics(path, clock).series(300)["totals"]
    assert totals["requests"] == 1 and set(totals["groups"]) == {"records"}


# Prometheus text format 0.0.4, checked line by line.
_SAMPLE = re.compile(
    r'(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})?'
    r" (?P<value>[-+]?(?:[0-9.]+(?:e[-+]?[0-9]+)?|Inf|NaN))"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_prometheus(text: str) -> dict[str, dict[str, Any]]:
    """Families with their type and samples; fails on anything out of format."""
    assert text.endswith("\n")
    families: dict[str, dict[str, Any]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in families, f"family {name} appears twice"
            families[name] = {"type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and kind in {"counter", "gauge", "histogram"}
            families[name]["type"] = kind
        else:
            match = _SAMPLE.fullmatch(line)
            assert match, f"not a sample line: {line!r}"
            family = re.sub(r"_(bucket|sum|count)$", "", match["name"])
            family = family if family in families else match["name"]
            assert family == current, f"{line!r} outside its family {current}"
            labels = {k: v for k, v in _LABEL.findall(match["labels"] or "")}
            families[family]["samples"].append((match["name"], labels, float(match["value"])))
    return families


def test_prometheus_text_parses_back() -> None:
    clock = Clock()
    todo = InstanceMetrics(None, clock)
    chat = InstanceMetrics(None, clock)
    for seconds in (0.0003, 0.004, 0.004, 0.3, 45.0):
        todo.observe("/api/collections/n/records", 200, seconds)
    todo.observe("/api/auth/login", 401, 0.01)
    clock.now += 3600  # counters are cumulative, whatever the minute series holds
    chat.observe("/api/realtime", 101, 0.002)
    todo.set_gauges(**gauges(realtime_connections=3, records=40, users=2, storage_bytes=999))
    text = render_prometheus(
        {"todo": todo, "chat": chat},
        extra_gauges=[
            Gauge("backpack_instances", "Backpacks by status.", 2, {"status": "running"}),
            Gauge("backpack_instances", "Backpacks by status.", 1, {"status": "stopped"}),
        ],
    )
    families = parse_prometheus(text)
    assert families["backpack_requests_total"]["type"] == "counter"
    requests = {
        (labels["instance"], labels["group"], labels["status"]): value
        for _, labels, value in families["backpack_requests_total"]["samples"]
    }
    assert requests == {
        ("chat", "realtime", "101"): 1,
        ("todo", "records", "200"): 5,
        ("todo", "auth", "401"): 1,
    }
    histogram = families["backpack_request_duration_seconds"]
    assert histogram["type"] == "histogram"
    buckets = [
        (labels["le"], value)
        for name, labels, value in histogram["samples"]
        if name.endswith("_bucket")
        and labels["instance"] == "todo"
        and labels["group"] == "records"
    ]
    assert [le for le, _ in buckets] == [repr(b) for b in BUCKETS] + ["+Inf"]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)  # cumulative
    assert dict(buckets)["0.0005"] == 1 and dict(buckets)["0.005"] == 3
    assert dict(buckets)["30.0"] == 4 and dict(buckets)["+Inf"] == 5
    totals = {
        name: value
        for name, labels, value in histogram["samples"]
        if labels.get("instance") == "todo" and labels.get("group") == "records"
    }
    assert totals["backpack_request_duration_seconds_count"] == 5
    assert totals["backpack_request_duration_seconds_sum"] == pytest.approx(45.3083)
    assert families["backpack_records"]["type"] == "gauge"
    assert families["backpack_records"]["samples"] == [
        ("backpack_records", {"instance": "todo"}, 40)
    ]
    assert [s[1]["status"] for s in families["backpack_instances"]["samples"]] == [
        "running",
        "stopped",
    ]
    assert todo.prometheus("todo")[0].startswith("# HELP backpack_requests_total")


def test_prometheus_escapes_label_values() -> None:
    metrics = InstanceMetrics(None, Clock())
    metrics.observe("/api/collections/n/records", 200, 0.001)
    families = parse_prometheus(render_prometheus({'we"ird\\na\nme': metrics}))
    _, labels, _ = families["backpack_requests_total"]["samples"][0]
    assert labels["instance"] == 'we\\"ird\\\\na\\nme'


def test_prometheus_without_traffic_is_empty_and_bad_gauges_are_refused() -> None:
    assert render_prometheus({"idle": InstanceMetrics(None, Clock())}) == ""
    with pytest.raises(ValueError):
        render_prometheus({}, extra_gauges=[Gauge("bad name", "x", 1)])
    with pytest.raises(ValueError):
        render_prometheus({}, extra_gauges=[Gauge("ok", "x", 1, {"bad-label": "v"})])


# `serve --workers`: a file per worker, merged series, Prometheus by worker


def test_workers_series_merge_counts_and_gauges(tmp_path: Path) -> None:
    clock = Clock()
    one = InstanceMetrics(tmp_path / metrics_file(1), clock, worker=1)
    two = InstanceMetrics(tmp_path / metrics_file(2), clock, worker=2)
    one.observe("/api/collections/n/records", 200, 0.001)
    one.set_gauges(**gauges(realtime_connections=3, records=10))
    for _ in range(2):
        two.observe("/api/auth/login", 401, 0.002)
    two.set_gauges(**gauges(realtime_connections=4, records=12))
    one.flush()
    two.flush()
    assert (tmp_path / "metrics.w1.jsonl").exists() and (tmp_path / "metrics.w2.jsonl").exists()
    # not flushed: counted from memory by its own worker
    one.observe("/api/collections/n/records", 200, 0.001)
    totals = one.series(60)["totals"]
    assert totals["requests"] == 4 and totals["client_errors"] == 2
    assert totals["realtime_connections"] == 7  # each worker's own sockets
    assert totals["records"] == 12  # the same data seen by both: the latest, highest
    assert two.series(60)["totals"]["requests"] == 3  # worker 1's unflushed one not yet


def test_prometheus_shows_each_worker_with_its_label(tmp_path: Path) -> None:
    clock = Clock()
    one = InstanceMetrics(tmp_path / metrics_file(1), clock, worker=1)
    two = InstanceMetrics(tmp_path / metrics_file(2), clock, worker=2)
    one.observe("/api/collections/n/records", 200, 0.001)
    for _ in range(2):
        two.observe("/api/collections/n/records", 200, 0.001)
    two.flush()
    (tmp_path / "metrics.w5.totals.json").write_bytes(b"not json")  # ignored
    text = render_prometheus({"todo": one})
    assert (
        'backpack_requests_total{instance="todo",worker="1",group="records",status="200"} 1' in text
    )
    assert (
        'backpack_requests_total{instance="todo",worker="2",group="records",status="200"} 2' in text
    )
    assert 'worker="5"' not in text
    assert text.count("# TYPE backpack_requests_total counter") == 1


def test_a_single_process_reads_what_workers_wrote_before(tmp_path: Path) -> None:
    clock = Clock()
    worker = InstanceMetrics(tmp_path / metrics_file(1), clock, worker=1)
    worker.observe("/api/collections/n/records", 200, 0.001)
    worker.flush()
    single = InstanceMetrics(tmp_path / metrics_file(None), clock)
    single.observe("/api/collections/n/records", 200, 0.001)
    assert single.series(60)["totals"]["requests"] == 2
    assert 'worker="' not in render_prometheus({"todo": single})


@pytest.mark.parametrize(
    "seconds",
    [
        0.0,
        -1.0,
        0.0001,
        0.0005,
        0.00050001,
        0.001,
        0.0015,
        0.002,
        0.003,
        0.005,
        0.0051,
        0.01,
        0.0100001,
        0.05,
        0.3,
        1.0,
        29.0,
        30.0,
        31.0,
        float("inf"),
        float("nan"),
    ],
)
def test_latency_bucket_is_bisect_of_the_bounds(seconds: float) -> None:
    metrics = InstanceMetrics(None, Clock())
    metrics.observe("/api/health", 200, seconds)
    expected = bisect_left(BUCKETS, seconds)  # the definition; the counting loop unrolls it
    cells = [cell for cell, count in enumerate(metrics._latency) if count]
    assert cells == [GROUP_INDEX["other"] * (len(BUCKETS) + 1) + expected]
