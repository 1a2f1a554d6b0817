"""Realtime load benchmark: Backpack's WebSocket vs PocketBase's SSE, same shape, same run.

    .venv/bin/python -m bench.realtime                       # 1,000 subscribers, both servers
    .venv/bin/python -m bench.realtime --subscribers 2000 --only backpack
    .venv/bin/python -m bench.realtime --connections-test 10000   # Backpack alone

Per server: N subscribers (own connection each, spread over worker processes), one writer
creating records for --duration seconds; delivered events/s, delivery latency p50/p99,
missed events per subscriber, idle memory per connection. Writes bench/REALTIME.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import cpu
from bench.memory import process_tree, tree_rss_kb
from bench.realtime_client import Sink, open_one, raise_nofile
from bench.servers import Backpack, PocketBase, Server, ServerError, http_json
from bench.wrk import die_with_parent

COLLECTION = "live"
FILTER = {"score": {"$gte": 0}}
REPORT = Path(__file__).resolve().parent / "REALTIME.md"
WRITER_TASKS = 4  # creates in flight at once
WINDOW = 8  # records created but not yet seen by the probe subscriber
DRAIN_IDLE_S = 5.0  # stop waiting for late events after this long without progress

BUSY_WARN_PCT = 20.0
TARGET_EVENTS_S = 50_000
TARGET_KB_PER_CONN = 20.0
TARGET_RATIO = 1.5
TARGET_FANOUT_P99_S = 1.0


@dataclass
class RunResult:
    server: str
    mode: str = "throughput"  # or "fanout": one change to every subscriber
    requested: int = 0  # subscribers asked for
    subscribers: int = 0
    connect_errors: int = 0
    first_error: str = ""
    records: int = 0
    write_s: float = 0.0
    delivered: int = 0
    deliver_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    missing_subscribers: int = 0
    missed_total: int = 0
    missed_max: int = 0
    closed: int = 0
    close_reasons: dict[str, int] = field(default_factory=dict)
    rss_before_kb: int = 0
    rss_idle_kb: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def events_s(self) -> float:
        return self.delivered / self.deliver_s if self.deliver_s > 0 else 0.0

    @property
    def kb_per_conn(self) -> float:
        n = self.subscribers
        return (self.rss_idle_kb - self.rss_before_kb) / n if n else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- servers


def create_collection(server: Server) -> None:
    """`live`: title, score, t (the writer's clock); everyone may list, read and create."""
    if isinstance(server, Backpack):
        body: dict[str, Any] = {
            "name": COLLECTION,
            "schema": {
                "fields": {
                    "title": {"type": "string"},
                    "score": {"type": "integer"},
                    "t": {"type": "number"},
                }
            },
            "rules": {"list": True, "read": True, "create": True, "update": None, "delete": None},
        }
        headers = {"Authorization": f"Bearer {server.secret_key}"}
    else:
        assert isinstance(server, PocketBase)
        body = {
            "name": COLLECTION,
            "type": "base",
            "fields": [
                {"name": "title", "type": "text"},
                {"name": "score", "type": "number", "onlyInt": True},
                {"name": "t", "type": "number"},
                {"name": "created", "type": "autodate", "onCreate": True, "onUpdate": False},
                {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
            ],
            "listRule": "",
            "viewRule": "",
            "createRule": "",
        }
        headers = {"Authorization": server.token}
    status, answer = http_json("POST", server.base_url + "/api/collections", body, headers)
    server.check_ok(f"create collection {COLLECTION}", status, answer, (200, 201))


def kind_of(server: Server) -> str:
    return "ws" if isinstance(server, Backpack) else "sse"


def server_rss_kb(server: Server) -> int:
    return tree_rss_kb(process_tree(server.pid))


# --------------------------------------------------------------------------- workers


class Workers:
    """Subscriber processes (bench.realtime_client); every one is killed by stop()."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(
        self, server: Server, total: int, processes: int, extra: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        shares = [
            total // processes + (1 if i < total % processes else 0) for i in range(processes)
        ]
        for share in shares:
            if share == 0:
                continue
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.realtime_client",
                "--kind",
                kind_of(server),
                "--port",
                str(server.port),
                "--count",
                str(share),
                "--collection",
                COLLECTION,
                "--filter",
                json.dumps(FILTER),
                *extra,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=Path(__file__).resolve().parent.parent,
                preexec_fn=die_with_parent,
                limit=1 << 30,
            )
            self.procs.append(proc)
        return [await self._line(p, timeout=600) for p in self.procs]

    async def _line(self, proc: asyncio.subprocess.Process, timeout: float = 120) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise ServerError(f"subscriber worker {proc.pid} exited (code {proc.returncode})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, command: str) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command.encode() + b"\n")
            await proc.stdin.drain()
        return [await self._line(p) for p in self.procs]

    def cpu_s(self) -> float:
        return sum(cpu.tree_cpu_s(p.pid) for p in self.procs)

    async def received(self) -> int:
        return sum(int(a["received"]) for a in await self.ask("count"))

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)
        self.procs = []


# --------------------------------------------------------------------------- writer


class Writer:
    """Creates records as fast as the subscribers keep up: at most WINDOW records ahead of
    a probe subscriber (subscribed last), so no server's per-client queue overflows because
    the writer outran the fan-out; the rate is what the whole pipeline sustains."""

    def __init__(self, server: Server, probe: Sink) -> None:
        self.server = server
        self.created = 0
        self.seen = 0
        self.errors = 0
        self.changed = asyncio.Event()
        probe.on_event.append(self._seen)

    def _seen(self, _record: dict[str, Any]) -> None:
        self.seen += 1
        self.changed.set()

    def url(self) -> str:
        return f"{self.server.base_url}/api/collections/{COLLECTION}/records"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """The HTTP connections create() sends on, open while the writer runs."""
        async with httpx.AsyncClient(timeout=30) as self._client:
            yield

    async def create(self, body: dict[str, Any]) -> tuple[int, str]:
        """One create; returns (HTTP status, response text)."""
        resp = await self._client.post(self.url(), json=body)
        return resp.status_code, resp.text

    async def run(self, duration_s: float, limit: int | None = None) -> tuple[int, float]:
        """Write for duration_s (or `limit` records); returns (records created, seconds)."""
        start = time.monotonic()
        deadline = start + duration_s
        async with self.session():

            async def task() -> None:
                while time.monotonic() < deadline and (limit is None or self.created < limit):
                    if self.created - self.seen >= WINDOW:
                        self.changed.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.changed.wait(), 1.0)
                        continue
                    self.created += 1
                    seq = self.created
                    body = {"title": f"event {seq}", "score": seq, "t": time.time()}
                    status, text = await self.create(body)
                    if status not in (200, 201):
                        self.errors += 1
                        self.created -= 1
                        if self.errors > 10:
                            raise ServerError(f"create answered {status}: {text}")

            await asyncio.gather(*(task() for _ in range(WRITER_TASKS)))
        return self.created, time.monotonic() - start


# --------------------------------------------------------------------------- one run


async def drain(workers: Workers, expected: int) -> int:
    """Wait until every subscriber has every event, or nothing arrived for DRAIN_IDLE_S."""
    last, last_change = -1, time.monotonic()
    while True:
        got = await workers.received()
        if got >= expected:
            return got
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > DRAIN_IDLE_S:
            return got
        await asyncio.sleep(0.2)


async def measure(
    server: Server, subscribers: int, processes: int, duration_s: float, single: bool
) -> RunResult:
    """Subscribers, idle memory, then the writer (or one change when `single`)."""
    res = RunResult(server.label, "fanout" if single else "throughput", subscribers)
    # Warm up: one subscriber and one record, so state built on first use (the realtime
    # hub, the collection's matcher) is not charged to the N connections.
    warm = Sink(keep_latencies=False)
    _, warm_transport = await open_one(kind_of(server), server.port, COLLECTION, FILTER, warm)
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(
            f"{server.base_url}/api/collections/{COLLECTION}/records",
            json={"title": "warm-up", "score": 0, "t": time.time()},
        )
        server.check_ok("warm-up create", resp.status_code, resp.text, (200, 201))
    await asyncio.sleep(1.0)
    warm_transport.close()
    await asyncio.sleep(1.0)
    res.rss_before_kb = server_rss_kb(server)

    workers = Workers()
    probe_transport: asyncio.Transport | None = None
    try:
        ready = await workers.start(server, subscribers, processes)
        res.subscribers = sum(int(r["ready"]) for r in ready)
        res.connect_errors = sum(int(r["connect_errors"]) for r in ready)
        res.first_error = next((str(r["first_error"]) for r in ready if r["first_error"]), "")
        nofile = ready[0]["nofile"] if ready else None
        res.notes.append(f"open-file limit of each subscriber process: {nofile}")
        await asyncio.sleep(3.0)  # idle with every connection open and subscribed
        res.rss_idle_kb = server_rss_kb(server)

        probe = Sink(keep_latencies=False)
        _, probe_transport = await open_one(kind_of(server), server.port, COLLECTION, FILTER, probe)
        writer = Writer(server, probe)
        before = cpu.snapshot(server.pid)
        clients_before = workers.cpu_s()
        res.records, res.write_s = await writer.run(
            duration_s if not single else 60.0, limit=1 if single else None
        )
        expected = res.records * res.subscribers
        await drain(workers, expected)
        used = cpu.since(before, server.pid)
        res.client_cpu_s = workers.cpu_s() - clients_before
        res.server_cpu_s = used.server_s
        res.other_cpu_s = max(0.0, used.other_s - res.client_cpu_s)
        answers = await workers.ask("stop")
    finally:
        if probe_transport is not None:
            probe_transport.close()
        await workers.stop()

    latencies: list[float] = []
    first_rx, last_rx = float("inf"), 0.0
    for answer in answers:
        latencies += answer["latencies_ms"]
        res.delivered += int(answer["received"])
        res.closed += int(answer["closed"])
        for reason, n in answer["close_reasons"].items():
            res.close_reasons[reason] = res.close_reasons.get(reason, 0) + n
        if answer["received"]:
            first_rx = min(first_rx, float(answer["first_rx"]))
            last_rx = max(last_rx, float(answer["last_rx"]))
        for count in answer["counts"]:
            missed = res.records - int(count)
            if missed > 0:
                res.missing_subscribers += 1
                res.missed_total += missed
                res.missed_max = max(res.missed_max, missed)
    # Delivery time: from the first event received to the last one (the writer's pace
    # plus the drain); events/s is every subscriber's events over that span.
    res.deliver_s = max(last_rx - first_rx, 1e-9) if res.delivered else 0.0
    if single and latencies:
        res.deliver_s = max(latencies) / 1000.0
    res.p50_ms = percentile(latencies, 0.50)
    res.p99_ms = percentile(latencies, 0.99)
    res.max_ms = max(latencies) if latencies else 0.0
    return res


def nofile_of(pid: int) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft} (hard {hard})"
    return "unknown"


def start_server(kind: str, workdir: Path) -> Server:
    server: Server = Backpack(workdir) if kind == "backpack" else PocketBase(workdir)
    server.start()
    create_collection(server)
    return server


async def run_all(args: argparse.Namespace, workdir: Path) -> list[RunResult]:
    results: list[RunResult] = []
    runs: list[tuple[str, int, bool]] = []
    if not args.connections_test:
        runs += [(kind, args.subscribers, False) for kind in args.only.split(",")]
    fanout = args.connections_test or args.fanout
    if fanout:
        runs.append(("backpack", fanout, True))
    for number, (kind, subscribers, single) in enumerate(runs, 1):
        server = start_server(kind, workdir / f"run{number}")  # each run starts fresh
        try:
            res = await measure(server, subscribers, args.processes, args.duration, single)
            res.notes.append(f"server open-file limit: {nofile_of(server.pid)}")
            res.notes.append(f"version: {server.version()}")
            res.notes.append(f"command: `{server.command_line()}`")
            results.append(res)
            print(summary_line(res), flush=True)
        finally:
            server.stop()
    return results


# --------------------------------------------------------------------------- report


def summary_line(r: RunResult) -> str:
    return (
        f"{r.server}: {r.subscribers} subscribers, {r.records} records in {r.write_s:.1f}s, "
        f"{r.delivered} events in {r.deliver_s:.2f}s = {r.events_s:,.0f}/s, "
        f"latency p50 {r.p50_ms:.1f} ms p99 {r.p99_ms:.1f} ms max {r.max_ms:.1f} ms, "
        f"subscribers missing events {r.missing_subscribers} (total {r.missed_total}), "
        f"closed {r.closed} {r.close_reasons or ''}, idle {r.kb_per_conn:.1f} KB/connection "
        f"({r.rss_before_kb / 1024:.1f} -> {r.rss_idle_kb / 1024:.1f} MB), "
        f"CPU: server {r.server_cpu_s:.1f}s, subscriber processes {r.client_cpu_s:.1f}s, "
        f"anything else on the machine {r.other_cpu_s:.1f}s"
    )


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB RAM"
    return (
        f"{os.cpu_count()} CPUs ({model or 'unknown model'}), {mem}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def ok(value: bool) -> str:
    return "✅" if value else "❌"


def report(args: argparse.Namespace, results: list[RunResult], busy: float, started: str) -> str:
    argv = [".venv/bin/python", "-m", "bench.realtime", *sys.argv[1:]]
    command = " ".join(shlex.quote(a) for a in argv)
    lines = [
        "# Realtime benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Date: {started} (UTC). Machine: {machine()}. CPU busy before the run: {busy:.0f}% of "
        "all cores. Servers, subscriber processes and writer share these cores.",
        "",
    ]
    cores = os.cpu_count() or 1
    shared = [
        r
        for r in results
        if r.deliver_s > 0 and 100 * r.other_cpu_s / (cores * r.deliver_s) >= BUSY_WARN_PCT
    ]
    if shared:
        lines += [
            "**CPU used by neither the server nor the benchmark (other processes, or kernel "
            "network work charged to no process) during "
            + ", ".join(f"{r.server} ({r.mode}): {r.other_cpu_s:.1f} s" for r in shared)
            + ": those numbers may be low; rerun on an idle machine.**",
            "",
        ]
    if busy >= BUSY_WARN_PCT:
        lines += [
            f"**The machine was busy ({busy:.0f}% of all cores) before the run: other work "
            "competed for the CPU; see each run's 'anything else' CPU. Rerun on an idle "
            "machine for numbers to keep.**",
            "",
        ]
    fan = next((r for r in results if r.mode == "fanout"), None)
    fan_lines: list[str] = []
    if fan is not None:
        want = fan.requested
        held = fan.subscribers >= want
        fan_lines += [
            f"## One change to {want:,} subscribed WebSockets (Backpack)",
            "",
            "| | measured | target |",
            "|---|---:|---:|",
            f"| connections open and subscribed | {fan.subscribers:,} | {want:,} {ok(held)} |",
            f"| delivery p50 / p99 / max | {fan.p50_ms:.0f} / {fan.p99_ms:.0f} / "
            f"{fan.max_ms:.0f} ms | p99 < {TARGET_FANOUT_P99_S * 1000:.0f} ms "
            f"{ok(held and fan.p99_ms < TARGET_FANOUT_P99_S * 1000)} |",
            f"| subscribers that missed it | {fan.missing_subscribers} | 0 |",
            f"| idle memory per connection | {fan.kb_per_conn:.1f} KB | "
            f"≤ {TARGET_KB_PER_CONN:.0f} KB {ok(fan.kb_per_conn <= TARGET_KB_PER_CONN)} |",
            "",
        ]
        if fan.connect_errors:
            fan_lines += [
                f"{fan.connect_errors} connections failed; first error: `{fan.first_error}`.",
                "",
            ]
    by = {r.server: r for r in results if r.mode == "throughput"}
    bp, pb = by.get("Backpack"), by.get("PocketBase")
    if by:
        n = args.subscribers
        lines += [
            f"## {n:,} subscribers, one writer, {args.duration:.0f} s",
            "",
            "| | Backpack (WebSocket) | PocketBase (SSE) | target |",
            "|---|---:|---:|---:|",
        ]

        def cell(r: RunResult | None, text: str) -> str:
            return text if r else "—"

        def row(label: str, fmt: Any, target: str = "") -> str:
            left = cell(bp, fmt(bp) if bp else "")
            right = cell(pb, fmt(pb) if pb else "")
            return f"| {label} | {left} | {right} | {target} |"

        lines += [
            row("subscribers connected", lambda r: f"{r.subscribers:,}"),
            row("records written (s)", lambda r: f"{r.records:,} ({r.write_s:.1f} s)"),
            row(
                "delivered events/s",
                lambda r: f"{r.events_s:,.0f}",
                f"Backpack ≥ {TARGET_EVENTS_S:,}"
                + (f" {ok(bp.events_s >= TARGET_EVENTS_S)}" if bp else ""),
            ),
            row("latency p50 / p99", lambda r: f"{r.p50_ms:.1f} / {r.p99_ms:.1f} ms"),
            row("latency max", lambda r: f"{r.max_ms:.1f} ms"),
            row(
                "subscribers that missed events (total missed)",
                lambda r: f"{r.missing_subscribers} ({r.missed_total})",
                "0",
            ),
            row("connections closed by the server", lambda r: f"{r.closed}"),
            row(
                "server RSS before → idle with N open",
                lambda r: f"{r.rss_before_kb / 1024:.1f} → {r.rss_idle_kb / 1024:.1f} MB",
            ),
            row(
                "idle memory per connection",
                lambda r: f"{r.kb_per_conn:.1f} KB",
                f"Backpack ≤ {TARGET_KB_PER_CONN:.0f} KB"
                + (f" {ok(bp.kb_per_conn <= TARGET_KB_PER_CONN)}" if bp else ""),
            ),
            row("server CPU during writes + drain", lambda r: f"{r.server_cpu_s:.1f} s"),
            row("subscriber processes' CPU", lambda r: f"{r.client_cpu_s:.1f} s"),
            row("anything else on the machine", lambda r: f"{r.other_cpu_s:.1f} s"),
            "",
        ]
        if bp and pb and pb.events_s > 0:
            ratio = bp.events_s / pb.events_s
            lines += [
                "| ratio | measured | target |",
                "|---|---:|---:|",
                f"| delivered events/s Backpack ÷ PocketBase | {ratio:.2f} | ≥ {TARGET_RATIO} "
                f"{ok(ratio >= TARGET_RATIO)} |",
                "",
            ]
    lines += fan_lines
    lines += ["## Runs", ""]
    for r in results:
        lines += [f"- {r.mode}: {summary_line(r)}"]
        if r.close_reasons:
            lines += [f"  - close reasons: {r.close_reasons}"]
        if r.connect_errors:
            lines += [f"  - {r.connect_errors} connections failed; first: `{r.first_error}`"]
        lines += [f"  - {note}" for note in r.notes]
    lines += [
        "",
        "## How it is measured (fairness)",
        "",
        "- Same collection on both: `live` with `title`, `score` (integer), `t` (number), "
        "anyone may list, read and create; subscribers are anonymous. Backpack: one WebSocket "
        'each, `subscribe` with the filter `{"score": {"$gte": 0}}` (matches every record). '
        f"PocketBase: one SSE stream each, subscribed to `{COLLECTION}/*` (it has no "
        "subscription filter; its list rule is evaluated per client).",
        f"- Subscribers are spread over {args.processes} worker processes (asyncio + uvloop, "
        "each connection a minimal protocol parser, `bench/realtime_client.py`) so the client "
        "side stays cheap; they run on the same cores as the server.",
        f"- One writer process, {WRITER_TASKS} creates in flight, `POST "
        f"/api/collections/{COLLECTION}/records` on both. It stays at most {WINDOW} records "
        "ahead of a probe subscriber that subscribed after all the others (so it is served "
        "last or near last): it writes as fast as the whole pipeline delivers, and never so "
        "fast that the server's per-client queues overflow (Backpack cuts a client whose "
        "1,000-message queue fills). The same rule applies to both servers.",
        "- Each record carries `t` = the writer's `time.time()` just before its create request; "
        "latency is the subscriber's receive time - `t` (same machine, same clock), so it "
        "includes the create request itself, not only commit → receipt.",
        "- Delivered events/s: all events received by all N subscribers ÷ the time from the "
        "first to the last event received. Missed: records written - events a subscriber "
        f"received after the writer stopped and deliveries went quiet for {DRAIN_IDLE_S:.0f} s.",
        "- Idle memory per connection: the server's RSS (process tree, /proc) with N "
        "subscribed connections idle for 3 s, minus its RSS before they connected (after one "
        "warm-up connection and one record), ÷ N. Go's RSS includes heap the GC has not "
        "returned yet.",
        "- The servers run one at a time (Backpack first), each started fresh.",
        "- Everything shares the machine's CPUs: when server + subscriber CPU is close to "
        "(CPUs x seconds), the run is CPU-bound as a whole and the clients' share limits both "
        "servers alike. Backpack serves from one process (one core at most); PocketBase's Go "
        "runtime may use every core. Repeated runs on an idle 2-CPU machine varied by about "
        "±10 % in events/s.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of writing")
    p.add_argument("--processes", type=int, default=4, help="subscriber worker processes")
    p.add_argument("--only", default="backpack,pocketbase", help="servers, comma-separated")
    p.add_argument(
        "--connections-test",
        type=int,
        default=0,
        metavar="N",
        help="only this: Backpack, N subscribed WebSockets, one change, time until all have it",
    )
    p.add_argument(
        "--fanout",
        type=int,
        default=10_000,
        metavar="N",
        help="after the comparison, the --connections-test with N (0: skip)",
    )
    p.add_argument("--output", type=Path, default=REPORT)
    return p.parse_args(argv)


def run_loop(main: Coroutine[Any, Any, list[RunResult]]) -> list[RunResult]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _terminate(signum: int, _frame: Any) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` stops what it started.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    soft, hard = raise_nofile()
    fanout = args.connections_test or args.fanout
    if fanout + 100 > soft:
        print(
            f"note: open-file limit is {soft} (hard {hard}); the server may not hold "
            f"{fanout} connections",
            flush=True,
        )
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    busy = cpu.busy_share(1.0)
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as tmp:
        results = run_loop(run_all(args, Path(tmp)))
    text = report(args, results, busy, started)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
