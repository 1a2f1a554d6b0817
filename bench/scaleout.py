"""Scale-out benchmark: Backpack on PostgreSQL + Redis with 1 and 2 workers, next to the
embedded default and PocketBase, in the same run.

    .venv/bin/python -m bench.scaleout [--rounds 3] [--duration 10] [--pool 10] ...

Part 1, records: bench.run's scenarios (a)-(d) (same data, lua scripts, checks and
schedule: bench.run.run_benchmark does the work) on four servers, interleaved per round:
PocketBase; Backpack embedded (SQLite, 1 process); Backpack on PostgreSQL + Redis with 1
worker; the same with `serve-instance --workers 2`. Each PostgreSQL server gets a database
of its own (created here, dropped at the end) and its own Redis key prefix.

Part 2, realtime: 1,000 WebSocket subscribers (bench.realtime's subscriber processes) on a
fresh `serve-instance --workers 2` on PostgreSQL + Redis, spread over both workers by the
kernel; a writer whose connections are all accepted by one worker creates records; the
delivery latency of the subscribers held by the *other* worker is the cross-worker latency.

Writes bench/SCALEOUT.md. Every server, database and Redis key it made is removed at the
end, also on error, Ctrl-C or --time-limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpcore
import httpx
import redis

from bench import cpu
from bench.memory import process_tree
from bench.realtime import COLLECTION as LIVE
from bench.realtime import FILTER as LIVE_FILTER
from bench.realtime import WRITER_TASKS, Workers, Writer, create_collection, drain, percentile
from bench.realtime_client import Sink, open_one, raise_nofile
from bench.run import (
    BENCH_DIR,
    SCENARIOS,
    Run,
    ServerInfo,
    add_run_options,
    busy_check,
    fmt_ratio,
    log,
    machine_facts,
    mb,
    median_rps,
    not_idle_warning,
    round_rps,
    run_benchmark,
    run_checks,
    run_label,
    run_main,
)
from bench.servers import HOST, Backpack, PocketBase, Server, ServerError, http_json
from bench.wrk import find_wrk

DEFAULT_OUTPUT = BENCH_DIR / "SCALEOUT.md"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
TAG_PREFIX = "bench_scaleout_"  # databases and Redis names: bench_scaleout_<pid>_<hex>_<server>
SCENARIO_KEYS = "abcd"
# Default connections per worker process: see the pool notes in SCALEOUT.md.
DEFAULT_POOL = 10

PB, EMBEDDED, PG1, PG2 = "pocketbase", "backpack", "pg1", "pg2"
SERVER_NAMES = (PB, EMBEDDED, PG1, PG2)
LABELS = {
    PB: "PocketBase",
    EMBEDDED: "Backpack embedded (SQLite, 1 process)",
    PG1: "Backpack PostgreSQL + Redis, 1 worker",
    PG2: "Backpack PostgreSQL + Redis, 2 workers",
}
SHORT = {PB: "PocketBase", EMBEDDED: "embedded", PG1: "PG 1 worker", PG2: "PG 2 workers"}
# Issue 9's targets: PostgreSQL with 2 workers vs PocketBase, same run.
TARGETS = {"a": 1.0, "d": 1.0}
TARGET_RT_P99_MS = 50.0
SCHEMA_SETTLE_S = 1.0  # wait after creating a collection on a multi-worker server
PIN_ATTEMPTS = 400
# The paced realtime run: 20 records/s = 20,000 deliveries/s to 1,000 subscribers, well
# under what the pipeline sustains here (the saturating run measures that).
DEFAULT_RT_RATE = 20.0  # connections tried to get WRITER_TASKS accepted by the chosen worker

T = TypeVar("T")


# --------------------------------------------------------------------------- services


class Cluster:
    """The PostgreSQL cluster and Redis server the scale-out servers share; every database
    and key this run makes is named with `self.tag`, so cleanup finds all of them."""

    def __init__(self, pg_url: str, redis_url: str) -> None:
        self.pg_url = pg_url
        self.redis_url = redis_url
        self.tag = f"{TAG_PREFIX}{os.getpid()}_{secrets.token_hex(3)}"
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=10)

    def _pg(self, work: Callable[[Any], Awaitable[T]]) -> T:
        async def main() -> T:
            conn = await asyncpg.connect(self.pg_url, timeout=10)
            try:
                return await work(conn)
            finally:
                await conn.close()

        return asyncio.run(main())

    def fetch(self, sql: str, *params: Any) -> list[Any]:
        return self._pg(lambda conn: conn.fetch(sql, *params))

    def execute(self, sql: str) -> None:
        self._pg(lambda conn: conn.execute(sql))

    def check(self) -> str:
        """Both services answer; returns their versions (for the report)."""
        try:
            version = self.fetch("SHOW server_version")[0][0]
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise ServerError(f"PostgreSQL at {self.pg_url} is unreachable: {exc}") from exc
        try:
            info = self.redis.info("server")
        except redis.RedisError as exc:
            raise ServerError(f"Redis at {self.redis_url} is unreachable: {exc}") from exc
        redis_version = info["redis_version"]
        return f"PostgreSQL {version} ({self.pg_url}); Redis {redis_version} ({self.redis_url})"

    def database_name(self, server: str) -> str:
        return f"{self.tag}_{server}"

    def url_of(self, database: str) -> str:
        parts = urllib.parse.urlsplit(self.pg_url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + database))

    def create_database(self, database: str) -> None:
        self.execute(f'CREATE DATABASE "{database}"')

    def drop_database(self, database: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def databases(self, prefix: str) -> list[str]:
        rows = self.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
        return sorted(str(r[0]) for r in rows)

    def delete_keys(self, name: str) -> int:
        """Every Redis key with `name` in it (Backpack's are `backpack:NAME:…`)."""
        keys = list(self.redis.scan_iter(match=f"*{name}*", count=1000))
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start : start + 500])
        return len(keys)

    def settings(self) -> str:
        names = ("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers")
        rows = self.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])", list(names)
        )
        return ", ".join(f"{r[0]}={r[1]}{r[2] or ''}" for r in rows)

    def service_cpu_s(self, database: str) -> dict[int, float]:
        """CPU so far of the backends connected to `database`, PostgreSQL's WAL writer,
        checkpointer and background writer, and the Redis server."""
        rows = self.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR backend_type = ANY($2::text[])",
            database,
            ["walwriter", "checkpointer", "background writer"],
        )
        pids = [int(r[0]) for r in rows]
        with contextlib.suppress(redis.RedisError, KeyError, ValueError):
            pids.append(int(self.redis.info("server")["process_id"]))
        return {pid: cpu.tree_cpu_s(pid) for pid in pids}

    def remove_stale(self) -> list[str]:
        """Databases and keys of earlier runs whose harness is gone (killed with SIGKILL)."""
        removed = []
        for database in self.databases(TAG_PREFIX):
            pid = database[len(TAG_PREFIX) :].split("_", 1)[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                self.drop_database(database)
                removed.append(database)
        for key in self.redis.scan_iter(match=f"*{TAG_PREFIX}*", count=1000):
            pid = key.decode(errors="replace").split(TAG_PREFIX, 1)[1].split("_", 1)[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                self.redis.delete(key)
                removed.append(key.decode(errors="replace"))
        return removed

    def cleanup(self) -> str:
        """Drop every database and key of this run; says what it removed and what is left."""
        dropped = self.databases(self.tag)
        for database in dropped:
            self.drop_database(database)
        keys = self.delete_keys(self.tag)
        left_db, left_keys = self.databases(self.tag), list(self.redis.scan_iter(f"*{self.tag}*"))
        return (
            f"at the end {len(dropped)} database(s) and {keys} Redis key(s) named "
            f"`{self.tag}*` were still there and were removed; left afterwards: "
            f"{len(left_db)} databases, {len(left_keys)} keys"
        )


class ScaledBackpack(Backpack):
    """`backpack serve-instance` on PostgreSQL + Redis: a fresh database, its own prefix."""

    def __init__(
        self, workdir: Path, name: str, label: str, cluster: Cluster, workers: int, pool: int
    ) -> None:
        self.name, self.label = name, label
        super().__init__(workdir)
        self.cluster = cluster
        self.workers = workers
        self.database = cluster.database_name(name)
        self.created = False
        self.env = {
            "BACKPACK_DATABASE_URL": cluster.url_of(self.database),
            "BACKPACK_REDIS_URL": cluster.redis_url,
            "BACKPACK_NAME": self.database,  # Redis keys and channels: backpack:<database>:
            "BACKPACK_DATABASE_POOL": str(pool),
        }

    def start(self, extra_args: Sequence[str] = ()) -> None:
        self.cluster.create_database(self.database)
        self.created = True
        super().start([*extra_args, "--workers", str(self.workers)])

    def stop(self) -> None:
        super().stop()
        if self.created:
            self.created = False
            try:
                self.cluster.drop_database(self.database)
                self.cluster.delete_keys(self.database)
            except (OSError, asyncpg.PostgresError, redis.RedisError, TimeoutError) as exc:
                log(f"{self.label}: cleanup failed ({exc}); retried at the end")

    def setup(self) -> None:
        super().setup()
        self.settle()

    def settle(self) -> None:
        """Let a new collection reach every worker (through the bus) before writing to it:
        a write that another worker took a few ms after the create was seen to answer 409
        "Collection 'items' already exists" (that worker had not heard of it yet)."""
        if self.workers > 1:
            time.sleep(SCHEMA_SETTLE_S)

    def command_line(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{env} {super().command_line()}"

    def service_cpu_s(self) -> dict[int, float]:
        return self.cluster.service_cpu_s(self.database) if self.created else {}

    def durability(self) -> str:
        status, body = http_json("GET", self.base_url + "/api/health", timeout=10)
        return (
            f"records in PostgreSQL database `{self.database}`; the cluster's settings: "
            f"{self.cluster.settings()}. `GET /api/health` says: `{json.dumps(body)[:300]}` "
            f"(HTTP {status})."
        )

    def worker_pids(self) -> list[int]:
        """The processes that accept connections: the ones holding the listening socket,
        except the supervisor (which holds it to hand it to restarted workers)."""
        listening = {inode for inode, _ in tcp_sockets(self.port, listening=True)}
        tree = [pid for pid in process_tree(self.pid) if pid != self.pid]
        return sorted(pid for pid in tree if socket_inodes(pid) & listening) or [self.pid]


# --------------------------------------------------------------------------- /proc sockets


def tcp_sockets(port: int, listening: bool = False) -> list[tuple[str, int]]:
    """(inode, peer port) of the IPv4 sockets on 127.0.0.1:port, from /proc/net/tcp:
    established connections (the server side), or the listening socket."""
    out = []
    with open("/proc/net/tcp", encoding="ascii") as fh:
        next(fh)
        for line in fh:
            f = line.split()
            local, remote, state, inode = f[1], f[2], f[3], f[9]
            if int(local.split(":")[1], 16) != port:
                continue
            if (state == "0A") if listening else (state == "01"):
                out.append((inode, int(remote.split(":")[1], 16)))
    return out


def socket_inodes(pid: int) -> set[str]:
    found = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    found.add(target[8:-1])
    return found


def connection_owners(port: int, pids: list[int]) -> dict[int, int]:
    """Client port -> the server process that accepted that connection to `port`."""
    by_inode = dict(tcp_sockets(port))
    owners: dict[int, int] = {}
    for pid in pids:
        for inode in socket_inodes(pid) & by_inode.keys():
            owners[by_inode[inode]] = pid
    return owners


# --------------------------------------------------------------------------- part 1: (a)-(d)


def server_factories(args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    def embedded(workdir: Path) -> Server:
        server = Backpack(workdir)
        server.label = LABELS[EMBEDDED]
        return server

    def scaled(name: str, workers: int) -> Callable[[Path], Server]:
        return lambda workdir: ScaledBackpack(
            workdir, name, LABELS[name], cluster, workers, args.pool
        )

    every: dict[str, Callable[[Path], Server]] = {
        PB: PocketBase,
        EMBEDDED: embedded,
        PG1: scaled(PG1, 1),
        PG2: scaled(PG2, 2),
    }
    return {name: every[name] for name in SERVER_NAMES if name in args.server_names}


# --------------------------------------------------------------------------- part 2: realtime


class PinnedWriter(Writer):
    """bench.realtime's writer, sending on WRITER_TASKS connections that one chosen worker
    accepted (connections the other worker got are closed and tried again)."""

    def __init__(
        self,
        server: ScaledBackpack,
        probe: Sink,
        worker: int,
        workers: list[int],
        rate: float | None = None,
    ):
        super().__init__(server, probe)
        self.worker, self.workers = worker, workers
        self.rate = rate  # records/s at most (None: as fast as the window allows)
        self.next_at = 0.0
        self.attempts = 0
        self.idle: asyncio.Queue[httpcore.AsyncHTTP11Connection] = asyncio.Queue()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        backend = httpcore.AnyIOBackend()
        origin = httpcore.Origin(b"http", HOST.encode(), self.server.port)
        conns: list[httpcore.AsyncHTTP11Connection] = []
        try:
            while len(conns) < WRITER_TASKS:
                self.attempts += 1
                if self.attempts > PIN_ATTEMPTS:
                    raise ServerError(f"no writer connection landed on worker {self.worker}")
                stream = await backend.connect_tcp(HOST, self.server.port, timeout=10)
                conn = httpcore.AsyncHTTP11Connection(origin, stream)
                # One request first: once it is answered, a worker has accepted the socket.
                await conn.request("GET", f"{self.server.base_url}/api/health")
                local_port = stream.get_extra_info("client_addr")[1]
                owner = connection_owners(self.server.port, self.workers).get(local_port)
                if owner == self.worker:
                    conns.append(conn)
                    self.idle.put_nowait(conn)
                else:
                    await conn.aclose()
            yield
        finally:
            for conn in conns:
                with contextlib.suppress(Exception):
                    await conn.aclose()

    async def create(self, body: dict[str, Any]) -> tuple[int, str]:
        if self.rate:
            now = time.monotonic()
            self.next_at = max(self.next_at + 1.0 / self.rate, now)
            await asyncio.sleep(self.next_at - now)
            body["t"] = time.time()  # the latency starts when the create is sent
        conn = await self.idle.get()
        try:
            resp = await conn.request(
                "POST",
                self.url(),
                headers=[(b"Content-Type", b"application/json")],
                content=json.dumps(body).encode(),
            )
            return resp.status, resp.content.decode(errors="replace")
        finally:
            self.idle.put_nowait(conn)


@dataclass
class Realtime:
    rate: float | None = None  # the writer's records/s; None: saturating
    subscribers: int = 0
    requested: int = 0
    connect_errors: int = 0
    first_error: str = ""
    per_worker: dict[int, int] = field(default_factory=dict)  # worker pid -> subscribers
    unattributed: int = 0  # subscribers whose connection no worker was seen holding
    writer_worker: int = 0
    writer_attempts: int = 0
    records: int = 0
    write_s: float = 0.0
    delivered: int = 0
    cross: list[float] = field(default_factory=list)  # latencies, ms
    same: list[float] = field(default_factory=list)
    cross_subscribers: int = 0
    missing_subscribers: int = 0
    missed_total: int = 0
    closed: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def p(self, values: list[float], q: float) -> float:
        return percentile(values, q)


async def cross_worker(
    args: argparse.Namespace, server: ScaledBackpack, rate: float | None
) -> Realtime:
    """Subscribers on both workers, a writer pinned to one (at `rate`, or saturating)."""
    res = Realtime(rate, requested=args.subscribers, command=server.command_line())
    workers_pids = server.worker_pids()
    if len(workers_pids) < 2:
        raise ServerError(f"{server.label}: expected 2 worker processes, found {workers_pids}")
    # Warm-up as in bench.realtime: one subscriber, one record, then closed.
    warm = Sink(keep_latencies=False)
    _, warm_transport = await open_one("ws", server.port, LIVE, LIVE_FILTER, warm)
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(
            f"{server.base_url}/api/collections/{LIVE}/records",
            json={"title": "warm-up", "score": 0, "t": time.time()},
        )
        server.check_ok("warm-up create", resp.status_code, resp.text, (200, 201))
    await asyncio.sleep(1.0)
    warm_transport.close()

    workers = Workers()
    probe_transport: asyncio.Transport | None = None
    try:
        ready = await workers.start(server, args.subscribers, args.processes, ("--per-connection",))
        res.subscribers = sum(int(r["ready"]) for r in ready)
        res.connect_errors = sum(int(r["connect_errors"]) for r in ready)
        res.first_error = next((str(r["first_error"]) for r in ready if r["first_error"]), "")
        await asyncio.sleep(1.0)
        owners = connection_owners(server.port, workers_pids)
        # Which worker holds each subscriber (counted from the server side, /proc).
        counts = {pid: 0 for pid in workers_pids}
        for pid in owners.values():
            counts[pid] += 1
        # The writer goes through the worker with fewer subscribers: more cross-worker ones.
        res.writer_worker = min(workers_pids, key=lambda pid: counts[pid])
        probe = Sink(keep_latencies=False)
        _, probe_transport = await open_one("ws", server.port, LIVE, LIVE_FILTER, probe)
        writer = PinnedWriter(server, probe, res.writer_worker, workers_pids, rate)
        before = cpu.snapshot(server.pid)
        services_before = await asyncio.to_thread(server.service_cpu_s)  # its own loop
        clients_before = workers.cpu_s()
        res.records, res.write_s = await writer.run(args.rt_duration)
        res.writer_attempts = writer.attempts
        await drain(workers, res.records * res.subscribers)
        used = cpu.since(before, server.pid)
        services_after = await asyncio.to_thread(server.service_cpu_s)
        services = sum(t - services_before.get(pid, 0.0) for pid, t in services_after.items())
        res.client_cpu_s = workers.cpu_s() - clients_before
        res.server_cpu_s = used.server_s + services
        res.other_cpu_s = max(0.0, used.other_s - res.client_cpu_s - services)
        answers = await workers.ask("stop")
    finally:
        if probe_transport is not None:
            probe_transport.close()
        await workers.stop()

    for answer in answers:
        res.delivered += int(answer["received"])
        res.closed += int(answer["closed"])
        for port, lats, count in zip(
            answer["ports"], answer["conn_latencies_ms"], answer["counts"], strict=True
        ):
            owner = owners.get(port)
            if owner is None:
                res.unattributed += 1
            else:
                res.per_worker[owner] = res.per_worker.get(owner, 0) + 1
                if owner == res.writer_worker:
                    res.same += lats
                else:
                    res.cross += lats
                    res.cross_subscribers += 1
            missed = res.records - int(count)
            if missed > 0:
                res.missing_subscribers += 1
                res.missed_total += missed
    return res


def realtime_part(
    args: argparse.Namespace, workdir: Path, cluster: Cluster, report: dict[str, Any]
) -> None:
    raise_nofile()  # the server inherits it: 1,000 connections on two workers
    server = ScaledBackpack(
        workdir, "rt", "Backpack PostgreSQL + Redis, 2 workers (realtime)", cluster, 2, args.pool
    )
    try:
        log(f"realtime: starting {server.label}")
        server.start()
        create_collection(server)
        server.settle()
        for rate in (args.rt_rate, None):
            what = f"{rate:g} records/s" if rate else "as fast as delivered (saturating)"
            log(f"realtime: {args.subscribers} subscribers, writer {what}, {args.rt_duration:g}s")
            res = run_async(cross_worker(args, server, rate))
            report["realtime"].append(res)
            log(
                f"realtime: subscribers per worker {res.per_worker}, writer on "
                f"{res.writer_worker}, {res.records} records; cross-worker latency p50 "
                f"{res.p(res.cross, 0.5):.1f} ms p99 {res.p(res.cross, 0.99):.1f} ms; "
                f"same-worker p99 {res.p(res.same, 0.99):.1f} ms; missed {res.missed_total}"
            )
    finally:
        server.stop()


def run_async(main: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# --------------------------------------------------------------------------- the run


def run_scaleout(args: argparse.Namespace, workdir: Path, report: dict[str, Any]) -> None:
    cluster = Cluster(args.pg_url, args.redis_url)
    report["services"] = cluster.check()
    stale = cluster.remove_stale()
    if stale:
        log(f"removed {len(stale)} databases/keys left by earlier killed runs")
    report["tag"] = cluster.tag
    try:
        if "records" in args.part_names:
            run_benchmark(args, workdir, report, server_factories(args, cluster))
        if "realtime" in args.part_names:
            if "machine" not in report:
                report["machine"] = machine_facts(find_wrk())
                report["busy_before_pct"] = cpu.busy_share(2.0)
            realtime_part(args, workdir / "realtime", cluster, report)
    finally:
        try:
            report["cleanup"] = cluster.cleanup()
        except (OSError, asyncpg.PostgresError, redis.RedisError, TimeoutError) as exc:
            report["cleanup"] = f"**cleanup failed: {exc}** (databases/keys `{cluster.tag}*`)"
        log(f"cleanup: {report['cleanup']}")


# --------------------------------------------------------------------------- report


def ratio(runs: list[Run], key: str, name: str, rnd: int | None = None) -> float | None:
    if rnd is None:
        pb, x = median_rps(runs, key, PB), median_rps(runs, key, name)
    else:
        pb, x = round_rps(runs, key, rnd, PB), round_rps(runs, key, rnd, name)
    return x / pb if pb and x is not None else None


def render(args: argparse.Namespace, report: dict[str, Any]) -> str:
    runs: list[Run] = report["runs"]
    infos: dict[str, ServerInfo] = report["servers"]
    rt: list[Realtime] = report.get("realtime", [])
    status = report.get("error")
    scenarios = [s for s in SCENARIOS if s.key in args.keys]
    names = [n for n in SERVER_NAMES if n in infos]
    bp_names = [n for n in names if n != PB]
    out = ["# Backpack scale-out benchmark: PostgreSQL + Redis, 1 and 2 workers", ""]
    out.append(
        f"- Command: `{report['command']}`"
        + (" (run by `make bench`)" if os.environ.get("MAKELEVEL") else "")
    )
    out.append(f"- Date: {report['started']} (took {report.get('elapsed', 0):.0f} s)")
    out.append(f"- Status: {'FAILED — ' + status if status else 'completed'}")
    out.append(f"- Services: {report.get('services', 'not reached')}")
    out.append(
        f"- PostgreSQL pool: `BACKPACK_DATABASE_POOL={args.pool}` connections per worker "
        "process (see 'Pool size' below)."
    )
    out.append("")

    if runs:
        out += [
            "## Headline: requests/s ÷ PocketBase's, same run",
            "",
            "Median requests/s over the rounds of each Backpack server ÷ PocketBase's median; "
            "above 1 means Backpack served more. The four servers take turns on the same "
            "machine in the same run (never two at once).",
            "",
            "| Scenario | Conns | " + " | ".join(SHORT[n] for n in bp_names) + " | Target | Met |",
            "|---|---:|" + "---:|" * len(bp_names) + "---|:---:|",
        ]
        for s in scenarios:
            cells = [fmt_ratio(ratio(runs, s.key, n)) for n in bp_names]
            target, met = "—", "—"
            if s.key in TARGETS:
                target = f"{SHORT[PG2]} ≥ {TARGETS[s.key]:.1f}"
                value = ratio(runs, s.key, PG2)
                met = "—" if value is None else ("yes" if value >= TARGETS[s.key] else "**no**")
            conns = args.connections or s.connections
            out.append(
                f"| ({s.key}) {s.title} | {conns} | {' | '.join(cells)} | {target} | {met} |"
            )
        out.append("")
        if PG1 in names and PG2 in names:
            out += [
                "| Scenario | 2 workers ÷ 1 worker (PG) | PG 1 worker ÷ embedded |",
                "|---|---:|---:|",
            ]
            for s in scenarios:
                pg1, pg2 = median_rps(runs, s.key, PG1), median_rps(runs, s.key, PG2)
                emb = median_rps(runs, s.key, EMBEDDED)
                scale = fmt_ratio(pg2 / pg1 if pg1 and pg2 is not None else None)
                vs = fmt_ratio(pg1 / emb if emb and pg1 is not None else None)
                out.append(f"| ({s.key}) | {scale} | {vs} |")
            out.append("")
        out += [
            "### Per round (ratio to PocketBase's requests/s in the same round)",
            "",
            "| Scenario | Server | "
            + " | ".join(f"Round {r}" for r in range(1, args.rounds + 1))
            + " |",
            "|---|---|" + "---:|" * args.rounds,
        ]
        for s in scenarios:
            for n in bp_names:
                cells = [fmt_ratio(ratio(runs, s.key, n, r)) for r in range(1, args.rounds + 1)]
                out.append(f"| ({s.key}) | {SHORT[n]} | {' | '.join(cells)} |")
        out.append("")

    if rt:
        out += render_realtime(rt)

    busy = report.get("busy_before_pct", 0.0)
    worst = max((r.other_cpu_pct for r in runs), default=0.0)
    out += not_idle_warning(busy, worst, "ratios")

    out += ["## Checks", "", busy_check(busy, worst)]
    out += run_checks(
        runs,
        lambda r: f"{run_label(infos, r)} ({r.scenario.key})",
        lambda w: (
            f"socket errors: connect {w.errors_connect}, read {w.errors_read}, "
            f"write {w.errors_write}, timeout {w.errors_timeout}"
        ),
    )
    for r in runs:
        if r.scenario.kind != "create" or r.count_before is None or r.count_after is None:
            continue
        acked = r.warmup.ok_requests + r.result.ok_requests
        found = r.count_after - r.count_before
        verdict = "ok" if found >= acked else f"**{acked - found} acknowledged creates missing**"
        out.append(
            f"- {infos[r.server].label} ({r.scenario.key}) round {r.round}: {acked} creates "
            f"acknowledged, records went {r.count_before} → {r.count_after} (+{found}): "
            f"{verdict}."
        )
    for info in infos.values():
        for check in info.checks:
            out.append(f"- {info.label}: {check}.")
    if rt:
        out += realtime_checks(rt)
    out.append(f"- Cleanup: {report.get('cleanup', 'not run')}.")
    out.append("")

    if runs:
        out += [
            "## Absolute numbers (secondary)",
            "",
            f"wrk: {args.threads} threads, {args.warmup:g} s warm-up (discarded) then "
            f"{args.duration:g} s measured, per scenario, server and round. Server CPU % "
            "includes, for the PostgreSQL servers, their PostgreSQL backends, PostgreSQL's "
            "WAL writer, checkpointer and background writer, and the Redis server; RSS is "
            "Backpack's process tree only.",
            "",
            "| Scenario | Server | Round | Requests/s | p50 ms | p99 ms | max ms | Non-2xx "
            "| Socket errors | Count after | Peak RSS MB | Server CPU % | Other CPU % |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        order = {n: i for i, n in enumerate(SERVER_NAMES)}
        for r in sorted(runs, key=lambda r: (r.scenario.key, order[r.server], r.round)):
            res = r.result
            count = "—" if r.count_after is None else str(r.count_after)
            out.append(
                f"| ({r.scenario.key}) | {SHORT[r.server]} | {r.round} | {res.rps:.0f} | "
                f"{res.lat_p50_ms:.2f} | {res.lat_p99_ms:.2f} | {res.lat_max_ms:.1f} | "
                f"{res.errors_status} | {res.socket_errors} | {count} | "
                f"{mb(r.rss_peak_kb):.1f} | "
                f"{r.cpu_pct(r.cpu.server_s) if r.cpu else 0:.0f} | {r.other_cpu_pct:.0f} |"
            )
        out.append("")

    out += ["## Setup", ""]
    for key, value in report.get("machine", {}).items():
        out.append(f"- {key}: {value}")
    for info in infos.values():
        out.append(f"- {info.label}: {info.version}")
        out.append(f"  - started as: `{info.command}`")
        out.append(f"  - durability: {info.durability or 'not determined'}")
        out.append(
            f"  - peak RSS (process tree): {mb(info.peak_rss_kb):.1f} MB, "
            f"{info.max_processes} process(es)"
        )
        if info.seed_s is not None:
            out.append(f"  - seeding 10,000 records took {info.seed_s:.1f} s (batches of 1000)")
    if rt:
        out.append(f"- Realtime server: `{rt[0].command}`")
    out += ["", "## Design", ""]
    out += design_notes(args)
    out.append("")
    if status and report.get("traceback"):
        out += ["## Error", "", "```", report["traceback"].rstrip(), "```", ""]
    return "\n".join(out)


def mode_of(rt: Realtime) -> str:
    if rt.rate:
        return f"paced, {rt.rate:g} records/s"
    return "saturating (writer as fast as delivered)"


def render_realtime(results: list[Realtime]) -> list[str]:
    out = [
        "## Realtime across 2 workers (PostgreSQL + Redis)",
        "",
        "Subscribers on both workers of one `serve-instance --workers 2`; every record is "
        "written through one worker, so the subscribers on the other worker receive each "
        "event from the other process, through Redis: their latency is the cross-worker "
        "latency (receive time - the record's `t`, set just before its create is sent). The "
        "paced run carries the target; the saturating run (bench.realtime's writer, at most "
        "8 records ahead of a probe subscriber) shows the throughput, its latency is mostly "
        "the time events wait in that window.",
        "",
        "| Run | Subscribers (per worker) | Records | Delivered events/s | Cross-worker p50 / p99 "
        "/ max ms | Same-worker p50 / p99 ms | Target | Met |",
        "|---|---:|---:|---:|---:|---:|---|:---:|",
    ]
    for rt in results:
        p99 = rt.p(rt.cross, 0.99)
        if rt.rate:
            target = f"cross-worker p99 < {TARGET_RT_P99_MS:.0f} ms"
            met = "—" if not rt.cross else ("yes" if p99 < TARGET_RT_P99_MS else "**no**")
        else:
            target, met = "report only", "—"
        spread = " + ".join(str(n) for n in rt.per_worker.values())
        events_s = rt.delivered / rt.write_s if rt.write_s else 0.0
        out.append(
            f"| {mode_of(rt)} | {rt.subscribers:,} ({spread}) | {rt.records:,} in "
            f"{rt.write_s:.1f} s | {events_s:,.0f} | {rt.p(rt.cross, 0.5):.1f} / {p99:.1f} / "
            f"{max(rt.cross, default=0):.1f} ({rt.cross_subscribers:,} subscribers) | "
            f"{rt.p(rt.same, 0.5):.1f} / {rt.p(rt.same, 0.99):.1f} | {target} | {met} |"
        )
    out.append("")
    for rt in results:
        out.append(
            f"- {mode_of(rt)}: CPU during writes + drain: server (2 workers + its PostgreSQL "
            f"backends + Redis) {rt.server_cpu_s:.1f} s, subscriber processes "
            f"{rt.client_cpu_s:.1f} s, anything else {rt.other_cpu_s:.1f} s."
        )
    out.append("")
    return out


def realtime_checks(results: list[Realtime]) -> list[str]:
    out = []
    for rt in results:
        mode = mode_of(rt)
        out += [
            f"- Realtime ({mode}): {rt.subscribers} of {rt.requested} subscribers connected "
            f"({rt.connect_errors} failed{': ' + rt.first_error if rt.first_error else ''}); "
            "per worker process (server side, from /proc/net/tcp and each worker's "
            f"/proc/PID/fd): {rt.per_worker}"
            + (f", {rt.unattributed} not found on either" if rt.unattributed else "")
            + ("; both workers hold subscribers" if len(rt.per_worker) >= 2 else "")
            + f"; all writer connections accepted by worker {rt.writer_worker} "
            f"({rt.writer_attempts} connections tried, the others closed); "
            f"{rt.missing_subscribers} subscribers missed events (total {rt.missed_total}); "
            f"{rt.closed} connections closed by the server.",
        ]
        if len(rt.per_worker) < 2:
            out.append(
                f"- **Realtime ({mode}): the subscribers did not spread over both workers.**"
            )
    return out


def design_notes(args: argparse.Namespace) -> list[str]:
    return [
        "- One command, `python -m bench.scaleout`, runs bench.run's scenarios (a)-(d) "
        "through `bench.run.run_benchmark` itself: the same 10,000 seeded records, lua "
        "scripts, probes, sanity checks (first page, totals, creates acknowledged vs records "
        "found), wrk settings and schedule (all rounds of (a)-(c), then (d); within a round "
        "the servers take turns, the order alternating between scenarios). Only the set of "
        "servers differs: four instead of two.",
        "- The servers: PocketBase 0.40.6 as in bench.run; `backpack serve-instance` on "
        "SQLite (the embedded default); the same command with `BACKPACK_DATABASE_URL` "
        "(a fresh database `bench_scaleout_<pid>_<hex>_<server>` created by the harness), "
        "`BACKPACK_REDIS_URL`, `BACKPACK_NAME` = the database name (so its Redis keys and "
        "channels are `backpack:<database>:…`, apart from any other user of the Redis "
        "server) and `BACKPACK_DATABASE_POOL`, with `--workers 1` and `--workers 2` (uvicorn "
        "worker processes sharing the one listening socket).",
        "- CPU accounting: a PostgreSQL server's requests are served partly by PostgreSQL "
        "processes, so their CPU (the backends connected to that server's database, the WAL "
        "writer, checkpointer and background writer, and the Redis server) counts as the "
        "server's, not as 'other', when the harness decides whether a run was disturbed.",
        f"- Pool size: `BACKPACK_DATABASE_POOL={args.pool}` connections per worker process "
        f"({args.pool * 2} with 2 workers; Backpack's default is {DEFAULT_POOL}, so this "
        "measures what a deployment gets unless it tunes the pool). On this 2-core machine "
        "wrk, the Backpack workers and PostgreSQL share the CPU, so only a few queries can "
        "run at once anyway: the pool needs enough connections to keep PostgreSQL busy while "
        "Backpack parses and answers, and for commits to be grouped ((d): while one "
        "transaction waits for its WAL flush others queue behind it), and few enough that "
        "100 concurrent requests do not become 100 PostgreSQL processes contending for 2 "
        "cores (and stay well under the cluster's max_connections, which the test suites "
        "share); beyond the pool, requests wait in Backpack's queue. A trial sweep with "
        "PG 2 workers (1 round of 3 s each, on a machine other work kept ~30 % busy) of "
        "pools 4, 10, 20 and 40: 4 was 10-15 % slower on (a), 10 to 40 were within the "
        "noise of each other on (a) and (d). `--pool N` reruns with another size.",
        "- Realtime: a fresh `serve-instance --workers 2` on its own database and prefix. "
        f"{args.subscribers} subscribers open WebSockets from {args.processes} subscriber "
        "processes (bench/realtime_client.py, `--per-connection` so each reports its client "
        "port and its own latencies); the kernel hands each connection to one of the "
        "workers. The harness maps every connection to the worker process that accepted it "
        "(/proc/net/tcp inode of the server-side socket → /proc/PID/fd of each worker). The "
        "writer (bench.realtime's Writer: at most 8 records ahead of a probe subscriber, 4 "
        "creates in flight) sends on connections accepted by the worker holding fewer "
        "subscribers (it opens connections until 4 land there). Two runs, each with its own "
        f"{args.subscribers} new subscribers: paced at {args.rt_rate:g} records/s (the "
        "target's run: the latency of a change when the server keeps up), then saturating "
        "(as fast as the probe subscriber receives: the throughput). Every event reaches the "
        "other worker's subscribers through the Redis bus: their latency is the "
        "cross-worker latency. Latency = receive time - the record's `t`, set by the writer "
        "just before its POST: it includes the create itself (a PostgreSQL commit).",
        "- Cleanup: each PostgreSQL server's database is dropped (`WITH (FORCE)`) and its "
        "Redis keys deleted when the server stops; at the end the harness drops any database "
        "and deletes any key still named with this run's tag, also after an error, Ctrl-C or "
        "--time-limit. A run killed with SIGKILL leaves them; the next run removes those of "
        "harness processes that no longer exist.",
        "- Machine: servers, PostgreSQL, Redis, wrk and the subscriber processes share the "
        "same cores, as in bench.run.",
    ]


# --------------------------------------------------------------------------- entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scaleout",
        description="Backpack on PostgreSQL + Redis with 1 and 2 workers vs embedded and "
        "PocketBase, (a)-(d) with wrk, then realtime across 2 workers.",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured warm-up")
    p.add_argument("--rounds", type=int, default=3, help="times each scenario runs per server")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--connections", type=int, default=None, help="override every scenario's")
    p.add_argument("--scenarios", default=SCENARIO_KEYS, help="letters among abcd")
    p.add_argument(
        "--servers", default=",".join(SERVER_NAMES), help="among " + ", ".join(SERVER_NAMES)
    )
    p.add_argument("--parts", default="records,realtime", help="records, realtime or both")
    p.add_argument(
        "--pool", type=int, default=DEFAULT_POOL, help="BACKPACK_DATABASE_POOL per worker"
    )
    p.add_argument("--pg-url", default=DEFAULT_PG_URL, help="cluster URL (creates databases)")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument("--subscribers", type=int, default=1000, help="realtime subscribers")
    p.add_argument("--processes", type=int, default=4, help="subscriber processes")
    p.add_argument(
        "--rt-duration", type=float, default=10.0, help="seconds of realtime writes, per run"
    )
    p.add_argument(
        "--rt-rate",
        type=float,
        default=DEFAULT_RT_RATE,
        help="records/s of the paced realtime run (the latency target's)",
    )
    add_run_options(p, DEFAULT_OUTPUT, time_limit=1800.0, noisy_retries=6, wait_idle=30.0)
    args = p.parse_args(argv)
    if not args.scenarios or set(args.scenarios) - set(SCENARIO_KEYS):
        p.error(f"--scenarios takes letters among {SCENARIO_KEYS}")
    args.keys = "".join(k for k in SCENARIO_KEYS if k in args.scenarios)
    args.server_names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if not args.server_names or set(args.server_names) - set(SERVER_NAMES):
        p.error(f"--servers takes names among {', '.join(SERVER_NAMES)}")
    args.part_names = [n.strip() for n in args.parts.split(",") if n.strip()]
    if not args.part_names or set(args.part_names) - {"records", "realtime"}:
        p.error("--parts takes records and/or realtime")
    if args.rounds < 1 or args.duration < 1 or args.threads < 1 or args.rt_duration < 1:
        p.error("--rounds, --duration, --rt-duration and --threads must be positive")
    if not 1 <= args.pool <= 1000:
        p.error("--pool takes 1 to 1000")
    # What bench.run.run_benchmark reads besides the above.
    args.only = "both"
    args.backpack_args = ""
    args.pocketbase_request_logs = False
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(
        parse_args(argv),
        "scaleout",
        {"servers": {}, "runs": [], "blob_dirs": [], "realtime": []},
        run_scaleout,
        render,
        lambda report: bool(report["runs"] or report.get("realtime")),
    )


if __name__ == "__main__":
    sys.exit(main())
