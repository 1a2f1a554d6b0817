"""Per-backpack request metrics: a 24 h minute series on disk and Prometheus counters.

`InstanceMetrics.observe_many()` counts every request, so it only bumps cumulative
counters in preallocated lists. What the counters gained since the last look
becomes a `_Minute` (only what happened: no traffic, no entry) when a minute
ends or `flush()` runs, and `flush()` appends those to a JSON-lines file. The
history lives in that file, not in memory: `series()` reads it back, merging
the lines of each minute, and `flush()` rewrites it (temp + rename) once it
holds more than an hour beyond the 24 h kept. Gauges are written only when
they change: a minute shows the latest sample taken at or before it.

Under `backpack serve --workers N` every worker K keeps its own file,
`metrics.wK.jsonl`, and its Prometheus counters in `metrics.wK.totals.json`
(rewritten by `flush()` when they changed). Reads merge every `metrics*.jsonl`
of the directory: requests add up, `realtime_connections` (each worker's own
sockets) too, and the other gauges (the same data seen by each) take the
highest. Prometheus text then carries a `worker` label per worker.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import re
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from backpack.api.http import GROUP_INDEX, GROUPS, NO_GROUP, RequestRecord, route_group
from backpack.errors import BadRequest
from backpack.fsutil import append
from backpack.platform.logs import cut_partial_line
from backpack.types import JSON, JSONObject

# Upper bounds (seconds) of the latency buckets, 1-2-5 spaced; a last bucket is +Inf.
BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0,
)  # fmt: skip
GAUGES = ("realtime_connections", "records", "users", "storage_bytes")
METRICS_FILE = "metrics.jsonl"  # the series' file name in a backpack's data directory
_SERIES_GLOB = "metrics*.jsonl"  # every worker's series file, and the single process's
_TOTALS = re.compile(r"metrics\.w([0-9]{1,3})\.totals\.json")
MINUTE = 60
RETENTION_MINUTES = 24 * 60
COMPACT_AFTER = 3600  # rewrite the file once it holds this much beyond the retention
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NB = len(BUCKETS) + 1  # buckets per group, +Inf included
_GROUP_OF = operator.itemgetter(7)  # of a RequestRecord
_SECONDS = operator.itemgetter(3)
_STATUS = operator.itemgetter(2)
_LE = [repr(bound) for bound in BUCKETS] + ["+Inf"]
# A status counter's key packs the group into the low 3 bits: status * 8 + group.
_GROUP_BITS = 8
_WINDOW = re.compile(r"([1-9][0-9]{0,3})([mh])")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Gauges = tuple[int, int, int, int]


def metrics_file(worker: int | None) -> str:
    """The series' file name of worker `worker` (None: a single process)."""
    return METRICS_FILE if worker is None else f"metrics.w{worker}.jsonl"


def _totals_file(worker: int) -> str:
    return f"metrics.w{worker}.totals.json"


def parse_window(text: str) -> int:
    """`?window=` as seconds: minutes (`15m`) or hours (`1h`), from 1m up to 24h."""
    match = _WINDOW.fullmatch(text)
    if match is not None:
        seconds = int(match[1]) * (MINUTE if match[2] == "m" else 3600)
        if seconds <= RETENTION_MINUTES * MINUTE:
            return seconds
    raise BadRequest(
        "window must be a number of minutes or hours from 1m to 24h, like 15m, 1h, 6h or 24h.",
        {"window": text[:32]},
    )


class _Minute:
    """Counts added during one minute (maybe only part of it), and gauges if they changed."""

    __slots__ = ("gauges", "latency", "start", "statuses")

    def __init__(
        self,
        start: int,
        statuses: dict[int, int],
        latency: dict[int, int],
        gauges: Gauges | None = None,
    ) -> None:
        self.start = start  # epoch seconds, a multiple of 60
        self.statuses = statuses  # status * 8 + group → count
        self.latency = latency  # group * _NB + bucket → count
        self.gauges = gauges

    def absorb(self, later: _Minute) -> None:
        """Add the counts of a later part of the same minute."""
        for key, count in later.statuses.items():
            self.statuses[key] = self.statuses.get(key, 0) + count
        for cell, count in later.latency.items():
            self.latency[cell] = self.latency.get(cell, 0) + count
        if later.gauges is not None:
            self.gauges = later.gauges

    def encode(self) -> bytes:
        requests: dict[str, dict[str, int]] = {}
        for key, count in self.statuses.items():
            status, group = divmod(key, _GROUP_BITS)
            requests.setdefault(GROUPS[group], {})[str(status)] = count
        latency: dict[str, list[int]] = {}
        for cell, count in self.latency.items():
            group, bucket = divmod(cell, _NB)
            latency.setdefault(GROUPS[group], [0] * _NB)[bucket] = count
        for counts in latency.values():
            while not counts[-1]:
                counts.pop()
        line: dict[str, Any] = {"minute": self.start}
        if requests:
            line["requests"] = requests
            line["latency"] = latency
        if self.gauges is not None:
            line["gauges"] = self.gauges
        return orjson.dumps(line)

    @classmethod
    def decode(cls, line: bytes, since: int = 0) -> _Minute:
        """A line of the file; before `since` only its gauges are of interest."""
        data = orjson.loads(line)
        start = data["minute"]
        if not isinstance(start, int) or start % MINUTE:
            raise ValueError("not a minute")
        raw = data.get("gauges")
        gauges = None if raw is None else _gauges(raw)
        if start < since:
            return cls(start, {}, {}, gauges)
        statuses: dict[int, int] = {}
        for group, counts in data.get("requests", {}).items():
            for status, count in counts.items():
                statuses[int(status) * _GROUP_BITS + GROUP_INDEX[group]] = int(count)
        latency: dict[int, int] = {}
        for group, counts in data.get("latency", {}).items():
            if len(counts) > _NB:
                raise ValueError("unknown latency buckets")
            for bucket, count in enumerate(counts):
                if count:
                    latency[GROUP_INDEX[group] * _NB + bucket] = int(count)
        return cls(start, statuses, latency, gauges)


def _by_minute(parts: Iterable[_Minute]) -> list[_Minute]:
    """Parts merged into one point per minute, oldest first (later parts win on gauges)."""
    merged: dict[int, _Minute] = {}
    for part in parts:
        point = merged.get(part.start)
        if point is None:
            merged[part.start] = _Minute(part.start, {}, {}, None)
            point = merged[part.start]
        point.absorb(part)
    return [merged[start] for start in sorted(merged)]


def _retain(points: list[_Minute], cutoff: int) -> list[_Minute]:
    """Points from `cutoff` on, plus the gauges in force at `cutoff` (merged points in)."""
    kept = [point for point in points if point.start >= cutoff]
    carried = None
    for point in points:
        if point.start < cutoff and point.gauges is not None:
            carried = point.gauges
    if carried is not None and (not kept or kept[0].start > cutoff):
        kept.insert(0, _Minute(cutoff, {}, {}, carried))
    elif carried is not None and kept[0].gauges is None:
        kept[0].gauges = carried
    return kept


def _timeline(parts: list[_Minute], starts: range) -> list[_Minute]:
    """One point per minute of `starts`, each with the gauges in force then."""
    by_start = {point.start: point for point in _retain(_by_minute(parts), starts.start)}
    points: list[_Minute] = []
    gauges: Gauges | None = None
    for start in starts:
        point = by_start.get(start) or _Minute(start, {}, {})
        if point.gauges is None:
            point.gauges = gauges
        gauges = point.gauges
        points.append(point)
    return points


def _combine(points: Sequence[_Minute]) -> _Minute:
    """One minute as seen by several workers: counts add up, so do realtime connections
    (each worker's own); records, users and storage are the same data, the highest wins."""
    if len(points) == 1:
        return points[0]
    merged = _Minute(points[0].start, {}, {})
    for point in points:
        merged.absorb(_Minute(point.start, point.statuses, point.latency))
    seen = [point.gauges for point in points if point.gauges is not None]
    if seen:
        merged.gauges = (
            sum(g[0] for g in seen),
            max(g[1] for g in seen),
            max(g[2] for g in seen),
            max(g[3] for g in seen),
        )
    return merged


def _read_series(path: Path, since: int = 0) -> list[_Minute]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    parts = []
    for line in data.splitlines():
        try:
            parts.append(_Minute.decode(line, since))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            continue  # a damaged line costs its own part of a minute only
    return parts


@dataclass(frozen=True)
class _Totals:
    """Cumulative counters of one process: what Prometheus reads."""

    statuses: Mapping[int, int]
    latency: Sequence[int]
    seconds: Sequence[float]
    gauges: Gauges | None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "statuses": {str(key): count for key, count in self.statuses.items()},
                "latency": list(self.latency),
                "seconds": list(self.seconds),
                "gauges": self.gauges,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> _Totals:
        raw = orjson.loads(data)
        latency = [int(count) for count in raw["latency"]]
        seconds = [float(value) for value in raw["seconds"]]
        if len(latency) != len(GROUPS) * _NB or len(seconds) != len(GROUPS):
            raise ValueError("unknown groups or buckets")
        statuses = {int(key): int(count) for key, count in raw["statuses"].items()}
        if any(key % _GROUP_BITS >= len(GROUPS) for key in statuses):
            raise ValueError("unknown group")
        gauges = raw.get("gauges")
        return cls(statuses, latency, seconds, None if gauges is None else _gauges(gauges))


def _gauges(raw: Any) -> Gauges:
    return (int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]))


def _percentile_ms(counts: Sequence[int], total: int, q: float) -> float | None:
    """The q-quantile in ms, linearly interpolated inside its bucket (+Inf: the top bound)."""
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == len(BUCKETS):
                return BUCKETS[-1] * 1000
            lower = BUCKETS[index - 1] if index else 0.0
            value = lower + (BUCKETS[index] - lower) * (rank - seen) / count
            return round(value * 1000, 3)
        seen += count
    return None


def _summary(statuses: Mapping[int, int], latency: Mapping[int, int]) -> JSONObject:
    """Requests, errors, latency and error statuses, overall and per group."""
    groups: dict[int, list[int]] = {}  # group → [requests, errors, client_errors]
    errors_by_status: dict[int, int] = {}
    for key, count in statuses.items():
        status, group = divmod(key, _GROUP_BITS)
        row = groups.setdefault(group, [0, 0, 0])
        row[0] += count
        if status >= 500:
            row[1] += count
        elif status >= 400:
            row[2] += count
        if status >= 400:
            errors_by_status[status] = errors_by_status.get(status, 0) + count
    histograms: dict[int, list[int]] = {}
    overall = [0] * _NB
    for cell, count in latency.items():
        group, bucket = divmod(cell, _NB)
        histograms.setdefault(group, [0] * _NB)[bucket] += count
        overall[bucket] += count
    per_group: JSONObject = {}
    for group in sorted(groups):
        requests, errors, client_errors = groups[group]
        histogram = histograms.get(group, [0] * _NB)
        measured = sum(histogram)
        per_group[GROUPS[group]] = {
            "requests": requests,
            "errors": errors,
            "client_errors": client_errors,
            "p50_ms": _percentile_ms(histogram, measured, 0.5),
            "p95_ms": _percentile_ms(histogram, measured, 0.95),
        }
    measured = sum(overall)
    return {
        "requests": sum(row[0] for row in groups.values()),
        "errors": sum(row[1] for row in groups.values()),
        "client_errors": sum(row[2] for row in groups.values()),
        "p50_ms": _percentile_ms(overall, measured, 0.5),
        "p95_ms": _percentile_ms(overall, measured, 0.95),
        "statuses": {str(status): errors_by_status[status] for status in sorted(errors_by_status)},
        "groups": per_group,
    }


def _gauge_fields(gauges: Gauges | None) -> JSONObject:
    return {name: None if gauges is None else gauges[i] for i, name in enumerate(GAUGES)}


def _minute_time(start: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start))


class InstanceMetrics:
    """One backpack's counters, its minute series (24 h, in the file `path`) and gauges.

    Without a `path` the series is kept in memory (for tests and throwaway backpacks).
    Call `flush()` about once a minute and when the backpack stops.
    """

    def __init__(
        self,
        path: Path | None,
        clock: Callable[[], float] = time.time,
        *,
        worker: int | None = None,
    ) -> None:
        self._path = path
        self._clock = clock
        self._worker = worker  # `serve --workers`: this process's number
        self._totals_written = b""
        # Cumulative since this object was made (the Prometheus counters).
        self._latency = [0] * (len(GROUPS) * _NB)
        self._seconds = [0.0] * len(GROUPS)
        self._statuses: dict[int, int] = {}
        self._gauges: Gauges | None = None
        # The same counters when they were last taken into a _Minute.
        self._taken_latency = self._latency.copy()
        self._taken_statuses: dict[int, int] = {}
        self._taken_gauges: Gauges | None = None
        self._minute_start = int(clock() // MINUTE) * MINUTE
        self._minute_end = self._minute_start + MINUTE
        self._unwritten: list[_Minute] = []  # the whole series when there is no file
        self._oldest: int | None = None  # the first minute in the file
        if path is not None:
            self._oldest = self._open(path)

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request of `path` (relative to the backpack)."""
        self.observe_many([("GET", path, status, seconds, None, "", 0.0, NO_GROUP)])

    def observe_many(self, batch: Sequence[RequestRecord]) -> None:
        """Count each answered request of `batch`: its route group (taken from the path when
        the record has none), status and latency bucket.

        Once per request of the backpack, so in bulk at C speed (map, sorted, list.count,
        bisect) rather than a Python loop over the records: per route group, the latency
        buckets come from the sorted durations by one bisection per bucket bound.
        """
        if self._clock() >= self._minute_end:
            self._roll()
        statuses, latency, totals = self._statuses, self._latency, self._seconds
        for index, records in itertools.groupby(sorted(batch, key=_GROUP_OF), _GROUP_OF):
            group = list(records)
            if index == NO_GROUP:  # sites, unknown paths (sorted first): group by the path
                self.observe_many([(*r[:7], GROUP_INDEX[route_group(r[1])]) for r in group])
                continue
            codes = list(map(_STATUS, group))
            for status in set(codes):
                key = status * _GROUP_BITS + index
                statuses[key] = statuses.get(key, 0) + codes.count(status)
            seconds = sorted(map(_SECONDS, group))
            totals[index] += sum(seconds)
            base, counted = index * _NB, 0
            for bucket, bound in enumerate(BUCKETS):  # bisect_left(BUCKETS, s) is the bucket
                within = bisect_right(seconds, bound, counted)
                latency[base + bucket] += within - counted
                counted = within
            latency[base + len(BUCKETS)] += len(seconds) - counted

    def set_gauges(
        self, *, realtime_connections: int, records: int, users: int, storage_bytes: int
    ) -> None:
        if self._clock() >= self._minute_end:
            self._roll()
        self._gauges = (realtime_connections, records, users, storage_bytes)

    def series(self, window_seconds: int) -> JSONObject:
        """One point per minute over the last `window_seconds` (the current minute last)."""
        minutes = -(-window_seconds // MINUTE)
        if not 1 <= minutes <= RETENTION_MINUTES:
            raise ValueError(f"window_seconds must be 1..{RETENTION_MINUTES * MINUTE}")
        if self._clock() >= self._minute_end:
            self._roll()
        first = self._minute_start - (minutes - 1) * MINUTE
        parts = self._read(first) + self._unwritten
        current = self._delta(take=False)
        if current is not None:
            parts.append(current)
        starts = range(first, self._minute_start + MINUTE, MINUTE)
        timelines = [_timeline(parts, starts)]
        timelines += [_timeline(_read_series(other, first), starts) for other in self._others()]
        points: list[JSON] = []
        statuses: dict[int, int] = {}
        latency: dict[int, int] = {}
        gauges: Gauges | None = None
        for views in zip(*timelines, strict=True):
            point = _combine(views)
            for key, count in point.statuses.items():
                statuses[key] = statuses.get(key, 0) + count
            for cell, count in point.latency.items():
                latency[cell] = latency.get(cell, 0) + count
            gauges = point.gauges
            summary: JSONObject = {"time": _minute_time(point.start)}
            summary.update(_summary(point.statuses, point.latency))
            summary.update(_gauge_fields(gauges))
            points.append(summary)
        totals = _summary(statuses, latency)
        totals.update(_gauge_fields(gauges))
        return {
            "window": minutes * MINUTE,
            "resolution": MINUTE,
            "from": _minute_time(first),
            "points": points,
            "totals": totals,
        }

    def flush(self) -> None:
        """Close the current minute if it is over and append what is new to the file."""
        if self._clock() >= self._minute_end:
            self._roll()
        current = self._delta(take=True)
        if current is not None:
            self._unwritten.append(current)
        if self._path is None:
            return
        if self._unwritten:
            append(self._path, b"".join(part.encode() + b"\n" for part in self._unwritten))
            if self._oldest is None:
                self._oldest = self._unwritten[0].start
            self._unwritten = []
        if self._oldest is not None and self._oldest < self._cutoff() - COMPACT_AFTER:
            self._compact(self._path)
        if self._worker is not None:
            self._write_totals(self._path.parent / _totals_file(self._worker))

    def prometheus(self, instance: str) -> list[str]:
        """This backpack alone in the Prometheus text format, one line per item."""
        return render_prometheus({instance: self}).splitlines()

    def _samples(self, instance: str) -> dict[str, list[str]]:
        """Sample lines of one backpack, by metric family (one set per worker, labelled)."""
        own = _Totals(self._statuses, self._latency, self._seconds, self._gauges)
        if self._worker is None or self._path is None:
            return _family_samples([("instance", instance)], own)
        out: dict[str, list[str]] = {name: [] for name, _, _ in _FAMILIES}
        workers = {self._worker: own, **_other_totals(self._path.parent, self._worker)}
        for worker in sorted(workers):
            labels = [("instance", instance), ("worker", str(worker))]
            for name, lines in _family_samples(labels, workers[worker]).items():
                out[name] += lines
        return out

    def _others(self) -> list[Path]:
        """The series files of the other workers (or of an earlier run with more or fewer)."""
        if self._path is None:
            return []
        own = self._path.name
        return sorted(p for p in self._path.parent.glob(_SERIES_GLOB) if p.name != own)

    def _write_totals(self, path: Path) -> None:
        data = _Totals(self._statuses, self._latency, self._seconds, self._gauges).encode()
        if data == self._totals_written:
            return
        temp = path.with_name(path.name + ".tmp")
        temp.write_bytes(data)
        os.replace(temp, path)
        self._totals_written = data

    def _delta(self, *, take: bool) -> _Minute | None:
        """What the counters gained since they were last taken, as part of this minute."""
        # Each second for each busy backpack: cell by cell at C speed (counters only grow).
        gained = list(map(operator.sub, self._latency, self._taken_latency))
        cells = itertools.compress(range(len(gained)), gained)
        latency = dict(zip(cells, itertools.compress(gained, gained), strict=True))
        statuses = {
            key: count - self._taken_statuses.get(key, 0)
            for key, count in self._statuses.items()
            if count != self._taken_statuses.get(key, 0)
        }
        gauges = self._gauges if self._gauges != self._taken_gauges else None
        if take:
            self._taken_latency = self._latency.copy()
            self._taken_statuses = self._statuses.copy()
            self._taken_gauges = self._gauges
        if not statuses and gauges is None:
            return None
        return _Minute(self._minute_start, statuses, latency, gauges)

    def _roll(self) -> None:
        ended = self._delta(take=True)
        if ended is not None:
            self._unwritten.append(ended)
        self._minute_start = int(self._clock() // MINUTE) * MINUTE
        self._minute_end = self._minute_start + MINUTE
        if self._unwritten and self._unwritten[0].start < self._cutoff():
            self._unwritten = _retain(self._unwritten, self._cutoff())

    def _cutoff(self) -> int:
        """The oldest minute kept."""
        return self._minute_start - (RETENTION_MINUTES - 1) * MINUTE

    def _read(self, since: int = 0) -> list[_Minute]:
        return [] if self._path is None else _read_series(self._path, since)

    def _compact(self, path: Path) -> None:
        """Rewrite the file with one line per minute of the last 24 h (temp + rename)."""
        points = _retain(_by_minute(self._read()), self._cutoff())
        temp = path.with_name(path.name + ".tmp")
        with open(temp, "wb") as out:
            out.write(b"".join(point.encode() + b"\n" for point in points))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
        self._oldest = points[0].start if points else None

    @staticmethod
    def _open(path: Path) -> int | None:
        """Cut a line half-written by a crash; return the first minute in the file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cut_partial_line(path):
            return None
        with open(path, "rb") as f:
            first = f.readline()
        try:
            return _Minute.decode(first).start
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            return 0  # unreadable: the first flush compacts it away


@dataclass(frozen=True)
class Gauge:
    """A deployment-wide gauge for `render_prometheus` (e.g. backpacks by status)."""

    name: str
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


_FAMILIES = (
    (
        "backpack_requests_total",
        "counter",
        "Requests answered, by backpack, route group and status.",
    ),
    (
        "backpack_request_duration_seconds",
        "histogram",
        "Request duration in seconds, by backpack and route group.",
    ),
    ("backpack_realtime_connections", "gauge", "Open realtime WebSocket connections."),
    ("backpack_records", "gauge", "Records stored, all collections."),
    ("backpack_users", "gauge", "Users of the backpack."),
    ("backpack_storage_bytes", "gauge", "Bytes stored: database and files."),
)


def _family_samples(base: list[tuple[str, str]], totals: _Totals) -> dict[str, list[str]]:
    """The sample lines of one set of counters, labelled `base` first, by metric family."""
    out: dict[str, list[str]] = {name: [] for name, _, _ in _FAMILIES}
    requests = out["backpack_requests_total"]
    statuses = totals.statuses
    for key in sorted(statuses, key=lambda k: (k % _GROUP_BITS, k // _GROUP_BITS)):
        status, group = divmod(key, _GROUP_BITS)
        labels = _labels([*base, ("group", GROUPS[group]), ("status", str(status))])
        requests.append(f"backpack_requests_total{labels} {statuses[key]}")
    durations = out["backpack_request_duration_seconds"]
    for group, name in enumerate(GROUPS):
        counts = totals.latency[group * _NB : (group + 1) * _NB]
        total = sum(counts)
        if not total:
            continue
        cumulative = 0
        for bucket, count in enumerate(counts):
            cumulative += count
            labels = _labels([*base, ("group", name), ("le", _LE[bucket])])
            durations.append(f"backpack_request_duration_seconds_bucket{labels} {cumulative}")
        labels = _labels([*base, ("group", name)])
        durations.append(
            f"backpack_request_duration_seconds_sum{labels} {_number(totals.seconds[group])}"
        )
        durations.append(f"backpack_request_duration_seconds_count{labels} {total}")
    if totals.gauges is not None:
        labels = _labels(base)
        for name, value in zip(GAUGES, totals.gauges, strict=True):
            out[f"backpack_{name}"].append(f"backpack_{name}{labels} {value}")
    return out


def _other_totals(directory: Path, own: int) -> dict[int, _Totals]:
    """The counters the other workers last wrote in `directory`, by worker number."""
    found: dict[int, _Totals] = {}
    for path in directory.glob("metrics.w*.totals.json"):
        match = _TOTALS.fullmatch(path.name)
        if match is None or int(match[1]) == own:
            continue
        try:
            found[int(match[1])] = _Totals.decode(path.read_bytes())
        except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            continue
    return found


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def render_prometheus(
    instances: Mapping[str, InstanceMetrics], extra_gauges: Iterable[Gauge] = ()
) -> str:
    """The whole deployment in the Prometheus text exposition format 0.0.4.

    Counters and histograms count since the process started (a restart resets
    them, as Prometheus expects); gauges are the last sample.
    """
    per_instance = [metrics._samples(name) for name, metrics in sorted(instances.items())]
    lines: list[str] = []
    for name, kind, help_text in _FAMILIES:
        samples = [line for families in per_instance for line in families[name]]
        if samples:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    extras: dict[str, list[Gauge]] = {}
    for gauge in extra_gauges:
        if not _METRIC_NAME.fullmatch(gauge.name) or not all(
            _LABEL_NAME.fullmatch(label) for label in gauge.labels
        ):
            raise ValueError(f"not a Prometheus metric or label name: {gauge.name} {gauge.labels}")
        extras.setdefault(gauge.name, []).append(gauge)
    for name, gauges in extras.items():
        help_text = gauges[0].help.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for gauge in gauges:
            labels = _labels(sorted(gauge.labels.items())) if gauge.labels else ""
            lines.append(f"{name}{labels} {_number(gauge.value)}")
    return "".join(line + "\n" for line in lines)
