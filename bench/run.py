"""Backpack vs PocketBase on loopback: same machine, same run, same data, same wrk load.

    .venv/bin/python -m bench.run [--only pocketbase|backpack] [--duration 10] ...

Writes bench/RESULTS.md (ratios Backpack/PocketBase first). Every process it starts is
ended when it finishes, fails, is interrupted or runs past --time-limit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

from bench import cpu, data
from bench.bigupload import BigUpload, run_big_upload
from bench.memory import MemorySampler, process_tree, tree_hwm_kb, tree_rss_kb
from bench.servers import (
    COLLECTION,
    OWNED,
    SERVERS,
    Backpack,
    BenchUser,
    PocketBase,
    Server,
    ServerError,
    http_json,
    http_raw,
    parse_json,
)
from bench.wrk import (
    AUTH_GET_LUA,
    CREATE_LUA,
    FIXED_LUA,
    GET_BY_ID_LUA,
    LOGIN_LUA,
    RUN_ARG,
    THREADS_ARG,
    UPLOAD_LUA,
    Load,
    WrkResult,
    find_wrk,
    run_wrk,
    wrk_version,
)

BENCH_DIR = Path(__file__).resolve().parent
WORK_ROOT = BENCH_DIR / ".work"  # git-ignored scratch space
DEFAULT_OUTPUT = BENCH_DIR / "RESULTS.md"
MEMORY_TARGET_MB = 150.0  # Backpack's peak RSS during (a)-(d)
SESSION_OVERHEAD_TARGET_PCT = 5.0  # (g)
BIG_UPLOAD_GROWTH_TARGET_MB = 64.0  # (k)
OTHER_CPU_WARN_PCT = 10.0  # share of all cores used by other processes that taints a run
UPLOAD_MARKER = "BENCH-UPLOAD-MARKER-" + "-" * 28  # 48 bytes, replaced per request in (j)


@dataclass(frozen=True)
class Scenario:
    key: str
    group: str  # records | auth | files
    title: str
    kind: str
    connections: int
    target: float | None  # Backpack/PocketBase requests/s ratio to reach; None: no ratio target
    only: str | None = None  # the only server it runs on

    def runs_on(self, server: str) -> bool:
        return self.only in (None, server)


SCENARIOS = (
    Scenario("a", "records", "GET one record by id (random of 10,000)", "get", 100, 1.2),
    Scenario(
        "b",
        "records",
        "list 20, `score > 500 and done`, sort -score, no total",
        "list",
        100,
        1.0,
    ),
    Scenario("c", "records", "the same list with the total count", "list_count", 100, 2.0),
    Scenario("d", "records", "create a record (POST JSON)", "create", 100, 1.5),
    Scenario(
        "e",
        "auth",
        "signed-in GET one record, owner-only rule (random of the user's 100)",
        "owner_get",
        100,
        1.2,
    ),
    Scenario(
        "f",
        "auth",
        "signed-in list 20 of 10,000, owner-only rule, sort -created, no total",
        "owner_list",
        100,
        1.0,
    ),
    Scenario(
        "g",
        "auth",
        "session check overhead, (a)'s GET with a session token",
        "session",
        100,
        None,
        "backpack",
    ),
    Scenario("h", "auth", "sign in with the correct password", "login", 20, None),
    Scenario("i", "files", "download one 1 MiB public file", "download", 50, 1.0),
    Scenario("j", "files", "upload a 1 MiB file (multipart)", "upload", 20, 1.0),
    Scenario("k", "files", "upload one 1 GiB file, streamed", "big_upload", 1, None, "backpack"),
)
SCENARIO_KEYS = "".join(s.key for s in SCENARIOS)
GROUPS = {"records": "abcd", "auth": "efgh", "files": "ijk"}
READ_KINDS = ("get", "list", "list_count", "owner_get", "owner_list", "session", "download")
# Run one after the other, all rounds of each phase: reads on the seeded data first, then
# sign-ins (Backpack stores a session per sign-in), then what grows the tables and the disk.
PHASES = (READ_KINDS, ("login",), ("create",), ("upload",))
SESSION_VARIANTS = ("anonymous", "session")


@dataclass
class Run:
    scenario: Scenario
    server: str
    variant: str  # "" or, for (g), one of SESSION_VARIANTS
    round: int
    warmup: WrkResult
    result: WrkResult
    count_before: int | None  # records (a)-(d) or uploaded files (j); None: not counted
    count_after: int | None
    rss_peak_kb: int = 0
    cpu: cpu.CpuUse | None = None
    discarded_other_pct: list[float] = field(default_factory=list)  # repeated, too noisy

    def cpu_pct(self, value: float) -> float:
        return self.cpu.share(self.result.duration_s, value) if self.cpu else 0.0

    @property
    def other_cpu_pct(self) -> float:
        return self.cpu_pct(self.cpu.other_s) if self.cpu else 0.0


@dataclass
class ServerInfo:
    label: str
    version: str = ""
    command: str = ""
    durability: str = ""
    seed_s: float | None = None
    users_s: float | None = None
    owned_seed_s: float | None = None
    hashing: str = ""
    peak_rss_kb: int = 0
    max_processes: int = 0
    samples: int = 0
    hwm_kb: int = 0
    setup_rss_kb: dict[str, int] = field(default_factory=dict)  # group -> RSS once set up
    checks: list[str] = field(default_factory=list)


class TimeLimitExceeded(Exception):
    pass


# --------------------------------------------------------------------------- arguments


def add_run_options(
    p: argparse.ArgumentParser,
    output: Path,
    *,
    time_limit: float,
    noisy_retries: int | None,
    wait_idle: float | None,
) -> None:
    """--output, --time-limit, --noisy-retries, --wait-idle and --keep-work (see run_main)."""
    p.add_argument("--output", type=Path, default=output, help="Markdown report path")
    p.add_argument(
        "--time-limit",
        type=float,
        default=time_limit,
        help="abort (and clean up) after this many s",
    )
    p.add_argument(
        "--noisy-retries",
        type=int,
        default=noisy_retries,
        help="how many runs (in all) may be repeated because other processes used the CPU",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=wait_idle,
        help="wait up to this many s for other processes to leave the CPU idle before starting",
    )
    p.add_argument("--keep-work", action="store_true", help=f"keep data and logs in {WORK_ROOT}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark Backpack against PocketBase on 127.0.0.1 with wrk.",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured warm-up")
    p.add_argument("--rounds", type=int, default=3, help="times each scenario runs per server")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument(
        "--connections", type=int, default=None, help="override every scenario's connections"
    )
    p.add_argument(
        "--only",
        choices=["both", *SERVERS],
        default="both",
        help="run one server only (no ratios then)",
    )
    p.add_argument(
        "--groups",
        default=",".join(GROUPS),
        help="comma-separated scenario groups: "
        + ", ".join(f"{g} ({'-'.join((k[0], k[-1]))})" for g, k in GROUPS.items())
        + " (default: all)",
    )
    p.add_argument(
        "--scenarios",
        default=SCENARIO_KEYS,
        help=f"scenario letters to run, within --groups (default {SCENARIO_KEYS})",
    )
    p.add_argument(
        "--backpack-args",
        default=os.environ.get("BACKPACK_BENCH_ARGS", ""),
        help="extra flags for `backpack serve-instance`, e.g. '--workers 2' "
        "(default: $BACKPACK_BENCH_ARGS)",
    )
    p.add_argument(
        "--pocketbase-request-logs",
        action="store_true",
        help="keep PocketBase's default of storing every request in its log database",
    )
    add_run_options(p, DEFAULT_OUTPUT, time_limit=1200.0, noisy_retries=6, wait_idle=30.0)
    args = p.parse_args(argv)
    if set(args.scenarios) - set(SCENARIO_KEYS) or not args.scenarios:
        p.error(f"--scenarios takes letters among {SCENARIO_KEYS}")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    if not groups or set(groups) - set(GROUPS):
        p.error(f"--groups takes names among {', '.join(GROUPS)}")
    in_groups = "".join(GROUPS[g] for g in groups)
    args.keys = "".join(k for k in SCENARIO_KEYS if k in args.scenarios and k in in_groups)
    if not args.keys:
        p.error("--groups and --scenarios select no scenario together")
    if args.only != "both" and not any(
        s.runs_on(args.only) for s in SCENARIOS if s.key in args.keys
    ):
        p.error(f"none of the selected scenarios runs on {args.only}")
    if args.rounds < 1 or args.duration < 1 or args.threads < 1:
        p.error("--rounds, --duration and --threads must be positive")
    return args


# --------------------------------------------------------------------------- machine facts


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _git(*args: str) -> str:
    """Read-only git query on the work tree; empty on any failure."""
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def machine_facts(wrk: str) -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal")
        ),
        "unknown",
    )
    osname = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in _read("/etc/os-release").splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        platform.platform(),
    )
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--", "backpack", "pyproject.toml"):
        commit += " (with uncommitted changes in backpack/ or pyproject.toml)"
    return {
        "nproc": f"{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "CPU": cpu,
        "Memory": f"{int(mem.split()[0]) / 2**20:.1f} GiB" if mem.endswith("kB") else mem,
        "OS": f"{osname}, Linux {platform.release()}",
        "Python": platform.python_version(),
        "wrk": wrk_version(wrk),
        "git commit": commit or "none yet",
    }


# --------------------------------------------------------------------------- the run


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def targets(scenario: Scenario, names: list[str]) -> list[tuple[str, str]]:
    """(server, variant) pairs a scenario measures, in the order of `names`."""
    if scenario.kind == "session":
        return [(n, v) for n in names if scenario.runs_on(n) for v in SESSION_VARIANTS]
    return [(n, "") for n in names if scenario.runs_on(n)]


def count_for(server: Server, scenario: Scenario) -> int | None:
    """What a run changes (or, for (a)-(c), must not): records, or (j) uploaded files."""
    if scenario.kind in ("get", "list", "list_count", "create"):
        return server.count()
    if scenario.kind == "upload":
        return server.count_uploads()
    return None


def settled_count(server: Server, scenario: Scenario, max_wait_s: float = 5.0) -> int | None:
    """The count once requests still in flight when wrk stopped have landed."""
    last = count_for(server, scenario)
    if last is None:
        return None
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = count_for(server, scenario)
        if now == last:
            break
        last = now
    return last


def _write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def probe(server: Server, load: Load, record: dict[str, Any]) -> None:
    """One request as wrk will send it, so a wrong path or rule fails before the load."""
    base = load.url.rstrip("/")
    status: int
    body: Any
    if load.script == GET_BY_ID_LUA:
        ids_file, prefix = load.script_args
        first_id = Path(ids_file).read_text().split("\n", 1)[0]
        status, body = http_json("GET", base + prefix + first_id)
    elif load.script == CREATE_LUA:
        status, body = http_json("POST", base + load.script_args[0], record)
    elif load.script == AUTH_GET_LUA:
        _user, auth, path = Path(load.script_args[0]).read_text().split("\n", 1)[0].split("\t")
        status, body = http_json(
            "GET", base + path, headers={"Authorization": auth} if auth else {}
        )
    elif load.script == LOGIN_LUA:
        login = json.loads(Path(load.script_args[0]).read_text().split("\n", 1)[0].split("\t")[1])
        status, body = http_json("POST", base + load.script_args[1], login)
    elif load.script == UPLOAD_LUA:
        template, path, ctype, marker, _run = load.script_args
        raw = (
            Path(template).read_bytes().replace(marker.encode(), b"probe".ljust(len(marker), b"x"))
        )
        status, answer = http_raw("POST", base + path, raw, {"Content-Type": ctype})
        body = parse_json(answer)
    else:
        status, answer = http_raw("GET", load.url)
        body = answer[:200]
    server.check_ok(f"probe of {load.script.name}", status, body, (200, 201))


def prepare_records(server: Server, records: list[dict[str, Any]], info: ServerInfo) -> list[str]:
    """Create `items`, seed, check; returns the ids (for (a) and (g))."""
    server.setup()
    t0 = time.monotonic()
    ids = server.seed(records)
    info.seed_s = time.monotonic() - t0
    log(f"{server.label}: seeded {len(ids)} records in {info.seed_s:.1f}s")
    if len(set(ids)) != len(records):
        raise ServerError(f"{server.label}: seeding returned {len(set(ids))} distinct ids")
    count = server.count()
    if count != len(records):
        raise ServerError(f"{server.label}: {count} records after seeding, not {len(records)}")

    # Same data, same query: the first page and the total must match what we inserted.
    want_scores = data.expected_top_scores(records)
    want_total = data.expected_matches(records)
    for with_count in (False, True):
        scores, total = server.first_page(with_count)
        what = "(c) list with count" if with_count else "(b) list"
        if scores != want_scores:
            raise ServerError(
                f"{server.label}: {what} returned scores {scores}, expected {want_scores}"
            )
        if with_count and total != want_total:
            raise ServerError(f"{server.label}: {what} total {total}, expected {want_total}")
        info.checks.append(
            f"{what}: first page scores match the data"
            + (f"; total {total} = expected {want_total}" if with_count else "")
        )
    info.checks.append(f"{count} records after seeding (expected {len(records)})")
    return ids


def check_owned(
    server: Server, users: list[BenchUser], owned_ids: list[str], info: ServerInfo
) -> None:
    """The owner-only rule is in force: owners read, others and anonymous callers do not."""
    owner, other = users[0], users[1]
    path = server.base_url + server.record_path(OWNED, owned_ids[0])
    as_owner = {"Authorization": server.authorization(owner.token)}
    status, body = http_json("GET", path, headers=as_owner)
    server.check_ok("(e) GET by the owner", status, body, (200,))
    if body.get("owner") != owner.id:
        raise ServerError(f"{server.label}: (e) record owner {body.get('owner')!r} != {owner.id}")
    refused: list[str] = []
    for who, headers in (
        ("another user", {"Authorization": server.authorization(other.token)}),
        ("an anonymous caller", {}),
    ):
        status, body = http_json("GET", path, headers=headers)
        if status not in (403, 404):
            raise ServerError(f"{server.label}: (e) {who} read a record it does not own: {status}")
        refused.append(f"{who} gets {status}")
    status, body = http_json("GET", server.base_url + server.owned_list_path(True), None, as_owner)
    server.check_ok("(f) list with count", status, body, (200,))
    items = body.get("items", [])
    total = body.get("total", body.get("totalItems"))
    per_user = len(owned_ids) // len(users)
    if len(items) != min(20, per_user) or any(r.get("owner") != owner.id for r in items):
        raise ServerError(f"{server.label}: (f) first page is not 20 of the user's own records")
    if total != per_user:
        raise ServerError(f"{server.label}: (f) total {total}, expected {per_user}")
    status, body = http_json("GET", server.base_url + server.owned_list_path(False))
    if status == 200 and body.get("items"):
        raise ServerError(f"{server.label}: (f) an anonymous list returned records")
    info.checks.append(
        f"owner-only rule: the owner reads a record, {' and '.join(refused)}; (f) first page "
        f"is 20 of the user's own records, total {total} = expected {per_user}; an anonymous "
        "list is empty"
    )


@dataclass
class Prepared:
    """What a server has been given so far (groups are set up one after the other)."""

    ids: list[str] = field(default_factory=list)  # of the seeded `items`
    users: list[BenchUser] = field(default_factory=list)
    loads: dict[tuple[str, str], Load] = field(default_factory=dict)


def start_server(server: Server, info: ServerInfo, extra: list[str]) -> None:
    log(f"{server.label}: starting")
    server.start(extra)
    info.command = server.command_line()
    info.version = server.version()


def prepare_group(
    server: Server, group: str, scenarios: list[Scenario], info: ServerInfo, state: Prepared
) -> None:
    """Give the server what this group's scenarios need; adds their loads to `state`."""
    kinds = {s.kind for s in scenarios}
    key = {s.kind: s.key for s in scenarios}
    _prepare_data(server, kinds, key, info, state)
    info.setup_rss_kb[group] = tree_rss_kb(process_tree(server.pid))


def _prepare_data(
    server: Server, kinds: set[str], key: dict[str, str], info: ServerInfo, state: Prepared
) -> None:
    base = server.base_url + "/"
    loads = state.loads
    records = data.make_records()

    if kinds & {"get", "list", "list_count", "create", "session"} and not state.ids:
        state.ids = prepare_records(server, records, info)
    ids = state.ids
    if kinds & {"get", "list", "list_count", "create"}:
        ids_file = _write_lines(server.workdir / "ids.txt", ids)
        if "get" in kinds:
            loads[key["get"], ""] = server.load_get_by_id(Path(ids_file))
        if "list" in kinds:
            loads[key["list"], ""] = server.load_list(with_count=False)
        if "list_count" in kinds:
            loads[key["list_count"], ""] = server.load_list(with_count=True)
        if "create" in kinds:
            loads[key["create"], ""] = server.load_create()

    if kinds & {"owner_get", "owner_list", "session", "login"} and not state.users:
        t0 = time.monotonic()
        state.users = server.make_users(data.make_users())
        users = state.users
        info.users_s = time.monotonic() - t0
        log(f"{server.label}: {len(users)} users created and signed in in {info.users_s:.1f}s")
        info.hashing = server.password_hashing()
        info.checks.append(f"{len(users)} users created, each signed in once")

    users = state.users

    def auth(user: BenchUser) -> str:
        return server.authorization(user.token)

    n = len(users)
    if kinds & {"owner_get", "owner_list"}:
        server.setup_owned()
        owned = [r | {"owner": users[i % n].id} for i, r in enumerate(records)]
        t0 = time.monotonic()
        owned_ids = server.seed(owned, OWNED)
        info.owned_seed_s = time.monotonic() - t0
        log(f"{server.label}: seeded {len(owned_ids)} owned records in {info.owned_seed_s:.1f}s")
        check_owned(server, users, owned_ids, info)
        if "owner_get" in kinds:
            lines = [
                f"{i % n}\t{auth(users[i % n])}\t{server.record_path(OWNED, rid)}"
                for i, rid in enumerate(owned_ids)
            ]
            path = _write_lines(server.workdir / "owned_get.txt", lines)
            loads[key["owner_get"], ""] = Load(base, AUTH_GET_LUA, (path, THREADS_ARG))
        if "owner_list" in kinds:
            lines = [f"{u.index}\t{auth(u)}\t{server.owned_list_path(False)}" for u in users]
            path = _write_lines(server.workdir / "owned_list.txt", lines)
            loads[key["owner_list"], ""] = Load(base, AUTH_GET_LUA, (path, THREADS_ARG))

    if "session" in kinds:
        for variant in SESSION_VARIANTS:
            lines = [
                f"{i % n}\t{auth(users[i % n]) if variant == 'session' else ''}\t"
                f"{server.record_path(COLLECTION, rid)}"
                for i, rid in enumerate(ids)
            ]
            path = _write_lines(server.workdir / f"items_{variant}.txt", lines)
            loads[key["session"], variant] = Load(base, AUTH_GET_LUA, (path, THREADS_ARG))

    if "login" in kinds:
        lines = [f"{u.index}\t{json.dumps(server.login_body(u.email, u.password))}" for u in users]
        path = _write_lines(server.workdir / "logins.txt", lines)
        loads[key["login"], ""] = Load(base, LOGIN_LUA, (path, server.login_path, THREADS_ARG))

    payload = data.file_payload()
    if "download" in kinds:
        path = server.setup_download(payload)
        status, raw = http_raw("GET", server.base_url + path)
        server.check_ok("(i) download", status, raw[:200], (200,))
        if hashlib.sha256(raw).digest() != hashlib.sha256(payload).digest():
            raise ServerError(f"{server.label}: (i) served {len(raw)} bytes that differ")
        info.checks.append(f"(i) serves the {len(payload)} bytes uploaded, unchanged")
        loads[key["download"], ""] = Load(server.base_url + path, FIXED_LUA)

    if "upload" in kinds:
        server.setup_uploads()
        content = UPLOAD_MARKER.encode() + payload[len(UPLOAD_MARKER) :]
        path, ctype, body = server.upload_request(content)
        template = server.workdir / "upload_body.bin"
        template.write_bytes(body)
        loads[key["upload"], ""] = Load(
            base, UPLOAD_LUA, (str(template), path, ctype, UPLOAD_MARKER, RUN_ARG)
        )


def measure(
    wrk: str,
    args: argparse.Namespace,
    server: Server,
    scenario: Scenario,
    variant: str,
    rnd: int,
    load: Load,
    connections: int,
    sampler: MemorySampler,
) -> Run:
    """Warm-up, then one measured wrk run, with counts, memory and CPU around it."""
    before = count_for(server, scenario)
    sampler.reset_window()
    warm = run_wrk(wrk, load, threads=args.threads, connections=connections, duration_s=args.warmup)
    services_start = server.service_cpu_s()
    cpu_start = cpu.snapshot(server.pid)
    res = run_wrk(
        wrk, load, threads=args.threads, connections=connections, duration_s=args.duration
    )
    cpu_use = cpu.since(cpu_start, server.pid)
    services_end = server.service_cpu_s()
    if services_end:  # CPU of the server's database and cache processes is the server's
        used = sum(t - services_start.get(pid, 0.0) for pid, t in services_end.items())
        used = min(max(0.0, used), cpu_use.other_s)
        cpu_use = cpu.CpuUse(cpu_use.server_s + used, cpu_use.harness_s, cpu_use.other_s - used)
    sampler.sample_now()
    rss = sampler.window_kb[server.name]
    after = settled_count(server, scenario)
    if scenario.kind == "upload":
        t0 = time.monotonic()
        deleted = server.delete_uploads()  # gigabytes: the next run starts from none again
        log(f"{server.label}: deleted {deleted} uploaded files in {time.monotonic() - t0:.1f}s")
    return Run(scenario, server.name, variant, rnd, warm, res, before, after, rss, cpu_use)


def wait_for_idle(max_wait_s: float) -> float:
    """Wait (up to max_wait_s) until other processes leave the CPU; returns the last busy %."""
    deadline = time.monotonic() + max_wait_s
    busy = cpu.busy_share(1.0)
    while busy > OTHER_CPU_WARN_PCT and time.monotonic() < deadline:
        busy = cpu.busy_share(1.0)
    return busy


def run_benchmark(
    args: argparse.Namespace,
    workdir: Path,
    report: dict[str, Any],
    available: Mapping[str, Callable[[Path], Server]] = SERVERS,
) -> None:
    """Every selected scenario on the servers of `available` (name -> factory of a server
    in workdir; bench.scaleout passes its own), interleaved per round."""
    start = time.monotonic()
    retries_left = args.noisy_retries
    wrk = find_wrk()
    report["machine"] = machine_facts(wrk)
    busy = cpu.busy_share(2.0)
    if busy > OTHER_CPU_WARN_PCT and args.wait_idle > 0:
        log(f"machine CPU {busy:.0f}% busy; waiting up to {args.wait_idle:.0f}s for it to idle")
        busy = wait_for_idle(args.wait_idle)
    report["busy_before_pct"] = busy
    log(f"machine CPU busy before starting: {busy:.0f}% of {os.cpu_count()} cores")
    if busy > OTHER_CPU_WARN_PCT:
        log("warning: other processes are using the CPU; results will be skewed")
    scenarios = [s for s in SCENARIOS if s.key in args.keys]
    wanted = list(available) if args.only == "both" else [args.only]
    names = [n for n in wanted if any(s.runs_on(n) for s in scenarios)]
    if not names:
        raise ServerError(f"no selected scenario runs on {args.only}")
    records = data.make_records()
    servers: dict[str, Server] = {}
    infos: dict[str, ServerInfo] = report["servers"]
    sampler: MemorySampler | None = None
    try:
        for name in names:
            server = available[name](workdir)
            if isinstance(server, PocketBase):
                server.request_logs = args.pocketbase_request_logs
            servers[name] = server
            infos[name] = ServerInfo(server.label)
            report["blob_dirs"] += server.blob_dirs()
        extra: dict[str, list[str]] = {name: [] for name in names}
        if "backpack" in extra:
            extra["backpack"] = shlex.split(args.backpack_args)
        for name, server in servers.items():
            start_server(server, infos[name], extra[name])
        states = {name: Prepared() for name in servers}

        sampler = MemorySampler({n: s.pid for n, s in servers.items()})
        sampler.start()
        runs: list[Run] = report["runs"]
        rounds = range(1, args.rounds + 1)
        # Group after group (records, auth, files), each set up just before its load, so a
        # group's memory does not include a later group's setup; within a group, reads
        # first (all rounds), then sign-ins, creates, uploads.
        groups = [g for g in GROUPS if any(s.group == g for s in scenarios)]
        schedule = [
            (g, r, s)
            for g in groups
            for phase in PHASES
            for r in rounds
            for s in scenarios
            if s.group == g and s.kind in phase
        ]
        total_runs = sum(len(targets(s, list(servers))) for _, _, s in schedule)
        big = next((s for s in scenarios if s.kind == "big_upload"), None)
        reserve = 90.0 if big is not None and "backpack" in servers else 0.0  # for (k)
        prepared: set[str] = set()
        for step, (group, rnd, scenario) in enumerate(schedule):
            if group not in prepared:
                prepared.add(group)
                for name, server in servers.items():
                    mine = [x for x in scenarios if x.group == group and x.runs_on(name)]
                    prepare_group(server, group, mine, infos[name], states[name])
                    # One request of each load first, on the exact paths wrk will use, so a
                    # missing endpoint or a wrong rule fails fast, not as a run of errors.
                    for s in mine:
                        for (key, _variant), load in states[name].loads.items():
                            if key == s.key:
                                probe(server, load, records[0])
            order = targets(scenario, list(servers))
            if step % 2:  # alternate which server (or variant) goes first
                order.reverse()
            for name, variant in order:
                server = servers[name]
                load = states[name].loads[scenario.key, variant]
                conns = args.connections or scenario.connections
                what = server.label + (f" {variant}" if variant else "")
                attempts: list[Run] = []
                while True:
                    run = measure(wrk, args, server, scenario, variant, rnd, load, conns, sampler)
                    attempts.append(run)
                    log(
                        f"round {rnd} ({scenario.key}) {what:10s} "
                        f"{run.result.rps:9.0f} req/s  p50 {run.result.lat_p50_ms:7.2f} ms  "
                        f"p99 {run.result.lat_p99_ms:7.2f} ms  "
                        f"non-2xx {run.result.errors_status}  "
                        f"socket errors {run.result.socket_errors}  "
                        + (f"count {run.count_after}  " if run.count_after is not None else "")
                        + f"RSS {mb(run.rss_peak_kb):.0f} MB  other CPU {run.other_cpu_pct:.0f}%"
                    )
                    left = total_runs - len(runs) - 1
                    per_run = args.warmup + args.duration + 2
                    room = (
                        args.time_limit - (time.monotonic() - start) - left * per_run - reserve - 60
                    )
                    if (
                        run.other_cpu_pct <= OTHER_CPU_WARN_PCT
                        or retries_left <= 0
                        or room < per_run + 10
                    ):
                        break
                    retries_left -= 1  # each wait counts, so a busy machine can't stall us
                    log("other processes took the CPU during that run; waiting for them")
                    if wait_for_idle(20.0) > OTHER_CPU_WARN_PCT:
                        log("the machine stays busy: keeping the least disturbed attempt")
                        break
                    log("the machine is idle again: repeating that run")
                # Keep the attempt least disturbed by other processes.
                run = min(attempts, key=lambda r: r.other_cpu_pct)
                run.discarded_other_pct = [r.other_cpu_pct for r in attempts if r is not run]
                runs.append(run)

        backpack = servers.get("backpack")
        if big is not None and isinstance(backpack, Backpack):
            report["big_upload"] = big_upload(args, backpack, scenarios, workdir, report)
    finally:
        if sampler is not None:
            sampler.stop()
            for name, server in servers.items():
                collect_server_facts(server, infos[name], sampler)
        for server in servers.values():
            server.stop()


def big_upload(
    args: argparse.Namespace,
    backpack: Backpack,
    scenarios: list[Scenario],
    workdir: Path,
    report: dict[str, Any],
) -> BigUpload:
    """(k) on a Backpack process that served nothing else: memory the allocator kept from
    earlier scenarios would otherwise absorb (hide) the growth."""
    fresh: Backpack | None = None
    server = backpack
    if any(s.runs_on("backpack") and s.kind != "big_upload" for s in scenarios):
        fresh = server = Backpack(workdir / "k")
        report["blob_dirs"] += fresh.blob_dirs()
        log("(k) Backpack: starting a fresh process for the big upload")
        fresh.start(shlex.split(args.backpack_args))
    try:
        log(f"(k) Backpack: uploading {data.BIG_UPLOAD_BYTES >> 20} MiB, streamed")
        result = run_big_upload(server, data.BIG_UPLOAD_BYTES)
    finally:
        if fresh is not None:
            fresh.stop()
    log(
        f"(k) {result.seconds:.1f}s ({result.mb_per_s:.0f} MB/s), RSS "
        f"{mb(result.rss_before_kb):.0f} MB before, peak {mb(result.rss_peak_kb):.0f} "
        f"MB, growth {mb(result.growth_kb):.1f} MB"
    )
    return result


def collect_server_facts(server: Server, info: ServerInfo, sampler: MemorySampler) -> None:
    """Memory peaks and durability, read while the server still runs (best effort)."""
    peak = sampler.peaks[server.name]
    info.peak_rss_kb, info.max_processes = peak.peak_kb, peak.max_processes
    info.samples = peak.samples
    try:
        info.hwm_kb = tree_hwm_kb(server.pid)
        info.durability = server.durability()
    except (OSError, ServerError) as exc:
        info.durability = f"not determined ({exc})"


# --------------------------------------------------------------------------- report


def mb(kb: int) -> float:
    return kb * 1024 / 1e6


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def median_rps(runs: list[Run], key: str, server: str, variant: str = "") -> float | None:
    values = [
        r.result.rps
        for r in runs
        if r.scenario.key == key and r.server == server and r.variant == variant
    ]
    return statistics.median(values) if values else None


def round_rps(runs: list[Run], key: str, rnd: int, server: str, variant: str = "") -> float | None:
    return next(
        (
            r.result.rps
            for r in runs
            if r.scenario.key == key
            and r.round == rnd
            and r.server == server
            and r.variant == variant
        ),
        None,
    )


def cpu_us_per_request(runs: list[Run], key: str, server: str, variant: str) -> float | None:
    """Median over rounds of the server's CPU time per measured request, in µs."""
    values = [
        1e6 * r.cpu.server_s / r.result.requests
        for r in runs
        if r.scenario.key == key
        and r.server == server
        and r.variant == variant
        and r.cpu is not None
        and r.result.requests
    ]
    return statistics.median(values) if values else None


def overhead_pct(anon: float | None, authed: float | None) -> float | None:
    """(g): (anonymous - with session) / anonymous, in %."""
    return 100.0 * (anon - authed) / anon if anon and authed is not None else None


def run_label(infos: dict[str, ServerInfo], r: Run) -> str:
    return infos[r.server].label + (f" ({r.variant})" if r.variant else "")


def group_span(keys: str) -> str:
    return f"({keys[0]})" if len(keys) == 1 else f"({keys[0]})-({keys[-1]})"


class Measured(Protocol):
    """What the report's checks read of a measured run."""

    round: int
    result: WrkResult
    discarded_other_pct: list[float]

    @property
    def other_cpu_pct(self) -> float: ...


M = TypeVar("M", bound=Measured)


def not_idle_warning(busy: float, worst: float, skewed: str) -> list[str]:
    """The warning (and a blank line) when other processes used the CPU; `skewed`: what."""
    if busy <= OTHER_CPU_WARN_PCT and worst <= OTHER_CPU_WARN_PCT:
        return []
    return [
        f"**Warning: the machine was not idle.** Other processes used {busy:.0f}% of the "
        f"CPU just before the run and up to {worst:.0f}% during a measured run (see "
        f"'Other CPU %' below). These {skewed} are skewed; rerun on an idle machine.",
        "",
    ]


def busy_check(busy: float, worst: float) -> str:
    return (
        f"- Machine CPU busy (all processes) in the 2 s before the servers started: "
        f"{busy:.0f}%; highest share used by other processes during a measured run: "
        f"{worst:.0f}%."
    )


def run_checks(
    runs: Sequence[M], label: Callable[[M], str], socket_errors: Callable[[WrkResult], str]
) -> list[str]:
    """Check lines: the runs repeated because of other CPU use, and those with errors."""
    out = []
    for r in runs:
        if r.discarded_other_pct:
            shares = ", ".join(f"{x:.0f}%" for x in r.discarded_other_pct)
            out.append(
                f"- {label(r)} round {r.round} was repeated: other processes used {shares} of "
                f"the CPU in the discarded attempt(s); the kept one had {r.other_cpu_pct:.0f}%."
            )
    bad = [r for r in runs if r.result.errors_status or r.result.socket_errors]
    if runs and not bad:
        out.append("- Every measured run: 0 non-2xx responses and 0 socket errors.")
    for r in bad:
        out.append(
            f"- **{label(r)} round {r.round}: {r.result.errors_status} non-2xx responses, "
            f"{socket_errors(r.result)}.**"
        )
    return out


def render(args: argparse.Namespace, report: dict[str, Any]) -> str:
    runs: list[Run] = report["runs"]
    infos: dict[str, ServerInfo] = report["servers"]
    big: BigUpload | None = report.get("big_upload")
    both = "pocketbase" in infos and "backpack" in infos
    scenarios = [s for s in SCENARIOS if s.key in args.keys]
    ran = {r.scenario.key for r in runs} | ({"k"} if big else set())
    out: list[str] = ["# Backpack vs PocketBase — benchmark results", ""]
    out.append(
        f"- Command: `{report['command']}`"
        + (" (run by `make bench`)" if os.environ.get("MAKELEVEL") else "")
    )
    out.append(f"- Date: {report['started']} (took {report.get('elapsed', 0):.0f} s)")
    status = report.get("error")
    out.append(f"- Status: {'FAILED — ' + status if status else 'completed'}")
    out.append(
        "- Scenarios: "
        + ", ".join(
            f"{g} {group_span(''.join(k for k in keys if k in args.keys))}"
            for g, keys in GROUPS.items()
            if any(k in args.keys for k in keys)
        )
    )
    if not both:
        out.append(f"- Only {', '.join(i.label for i in infos.values())} ran: no ratios.")
    out.append("")

    # ---- headline: ratios
    ratio_scenarios = [s for s in scenarios if s.only is None]
    if ratio_scenarios:
        out += [
            "## Headline: Backpack / PocketBase requests per second",
            "",
            "Ratio of the median requests/s over the rounds; above 1 means Backpack served "
            "more. Same wrk settings, data and machine for both, in the same run.",
            "",
            "| Scenario | Connections | Ratio BP/PB | Per round | Target | Met |",
            "|---|---:|---:|---|---:|:---:|",
        ]
    for s in ratio_scenarios:
        pb, bp = median_rps(runs, s.key, "pocketbase"), median_rps(runs, s.key, "backpack")
        ratio = bp / pb if (pb and bp is not None) else None
        per_round = []
        for rnd in range(1, args.rounds + 1):
            p = round_rps(runs, s.key, rnd, "pocketbase")
            b = round_rps(runs, s.key, rnd, "backpack")
            if p and b is not None:
                per_round.append(f"{b / p:.2f}")
        if s.target is None:
            target, met = "report only", "—"
        else:
            target = f"≥ {s.target}"
            met = "—" if ratio is None else ("yes" if ratio >= s.target else "**no**")
        out.append(
            f"| ({s.key}) {s.title} | {args.connections or s.connections} | "
            f"{fmt_ratio(ratio)} | {', '.join(per_round) or '—'} | {target} | {met} |"
        )
    if ratio_scenarios:
        out.append("")
    for s in scenarios:
        if s.kind != "login" or s.key not in ran:
            continue
        parts = []
        for name in ("backpack", "pocketbase"):
            rps = median_rps(runs, s.key, name)
            if rps is not None:
                parts.append(
                    f"{infos[name].label} {rps:.0f} logins/s, password hashing: "
                    f"{infos[name].hashing or 'not determined'}"
                )
        out.append(
            f"- ({s.key}) sign-in throughput, {args.connections or s.connections} connections, "
            f"correct passwords (report only, no target): " + "; ".join(parts) + "."
        )
        out.append("")

    # ---- Backpack-only targets
    only_rows: list[str] = []
    only_notes: list[str] = []
    for s in scenarios:
        if s.kind == "session" and s.key in ran:
            anon = median_rps(runs, s.key, "backpack", "anonymous")
            authed = median_rps(runs, s.key, "backpack", "session")
            # Paired: the two variants of a round run back to back, so the median of the
            # per-round overheads cancels slow drifts that a ratio of medians would not.
            overheads = [
                x
                for rnd in range(1, args.rounds + 1)
                if (
                    x := overhead_pct(
                        round_rps(runs, s.key, rnd, "backpack", "anonymous"),
                        round_rps(runs, s.key, rnd, "backpack", "session"),
                    )
                )
                is not None
            ]
            value = statistics.median(overheads) if overheads else None
            per_round = [f"{x:.1f} %" for x in overheads]
            met = (
                "—"
                if value is None
                else ("yes" if value < SESSION_OVERHEAD_TARGET_PCT else "**no**")
            )
            shown = (
                "n/a"
                if value is None
                else (
                    f"{value:.1f} % (median of the rounds; medians: anonymous {anon:.0f} req/s, "
                    f"with a session {authed:.0f} req/s)"
                )
            )
            cost = {v: cpu_us_per_request(runs, s.key, "backpack", v) for v in SESSION_VARIANTS}
            anon_us, session_us = cost["anonymous"], cost["session"]
            if anon_us and session_us is not None:
                only_notes.append(
                    f"- ({s.key}) Backpack's CPU per request (median over rounds; less "
                    "sensitive than req/s to other processes on the machine): anonymous "
                    f"{anon_us:.0f} µs, with a session {session_us:.0f} µs "
                    f"({100 * (session_us - anon_us) / anon_us:+.1f} %)."
                )
            only_rows.append(
                f"| ({s.key}) {s.title}: (anonymous - with session) / anonymous req/s | "
                f"{args.connections or s.connections} | {shown} | {', '.join(per_round) or '—'} | "
                f"< {SESSION_OVERHEAD_TARGET_PCT:g} % | {met} |"
            )
        if s.kind == "big_upload" and big is not None:
            growth = mb(big.growth_kb)
            met = "yes" if growth < BIG_UPLOAD_GROWTH_TARGET_MB else "**no**"
            only_rows.append(
                f"| ({s.key}) {s.title}: RSS growth over the pre-upload RSS | 1 | "
                f"{growth:.1f} MB (RSS {mb(big.rss_before_kb):.1f} MB before, peak "
                f"{mb(big.rss_peak_kb):.1f} MB; {big.size / 1e6:.0f} MB in {big.seconds:.1f} s, "
                f"{big.mb_per_s:.0f} MB/s) | — | < {BIG_UPLOAD_GROWTH_TARGET_MB:g} MB | {met} |"
            )
    if only_rows:
        out += [
            "## Backpack alone",
            "",
            "| Scenario | Connections | Result | Per round | Target | Met |",
            "|---|---:|---|---|---:|:---:|",
            *only_rows,
            "",
            *only_notes,
            *([""] if only_notes else []),
        ]

    # ---- memory per group
    mem_rows: list[str] = []
    for group in GROUPS:
        group_runs = [r for r in runs if r.scenario.group == group]
        if not group_runs:
            continue
        span = group_span("".join(sorted({r.scenario.key for r in group_runs})))
        cells = []
        for name in ("backpack", "pocketbase"):
            peaks = [r.rss_peak_kb for r in group_runs if r.server == name]
            setup = infos[name].setup_rss_kb.get(group) if name in infos else None
            cells.append(f"{mb(setup):.1f} MB" if setup is not None else "—")
            cells.append(f"{mb(max(peaks)):.1f} MB" if peaks else "—")
        target, met = "—", "—"
        bp_peaks = [r.rss_peak_kb for r in group_runs if r.server == "backpack"]
        if group == "records" and bp_peaks:
            target = f"Backpack peak ≤ {MEMORY_TARGET_MB:.0f} MB"
            met = "yes" if mb(max(bp_peaks)) <= MEMORY_TARGET_MB else "**no**"
        mem_rows.append(f"| {group} {span} | {' | '.join(cells)} | {target} | {met} |")
    if mem_rows:
        out += [
            "| Memory (RSS of the server process tree) | Backpack set up | Backpack peak "
            "| PocketBase set up | PocketBase peak | Target | Met |",
            "|---|---:|---:|---:|---:|---:|:---:|",
            *mem_rows,
            "",
            "Groups run one after the other, each set up (users, files…) right before its "
            "load: 'set up' is the RSS then, 'peak' the highest during the group's runs. A "
            "later group's numbers include what earlier groups left in the process.",
            "",
        ]

    busy = report.get("busy_before_pct", 0.0)
    worst = max((r.other_cpu_pct for r in runs), default=0.0)
    out += not_idle_warning(busy, worst, "ratios")

    # ---- checks
    out += ["## Checks", ""]
    out.append(busy_check(busy, worst))
    out += run_checks(
        runs,
        lambda r: f"{run_label(infos, r)} ({r.scenario.key})",
        lambda w: (
            f"socket errors: connect {w.errors_connect}, read {w.errors_read}, "
            f"write {w.errors_write}, timeout {w.errors_timeout}"
        ),
    )
    for r in runs:
        if r.scenario.kind not in ("create", "upload"):
            continue
        if r.count_before is None or r.count_after is None:
            continue
        what = "creates" if r.scenario.kind == "create" else "uploads"
        things = "records" if r.scenario.kind == "create" else "files"
        acked = r.warmup.ok_requests + r.result.ok_requests
        found = r.count_after - r.count_before
        verdict = "ok" if found >= acked else f"**{acked - found} acknowledged {what} missing**"
        out.append(
            f"- {infos[r.server].label} ({r.scenario.key}) round {r.round}: {acked} {what} "
            f"acknowledged (warm-up + measured), {things} went {r.count_before} → "
            f"{r.count_after} (+{found}; extra = requests in flight when wrk stopped): "
            f"{verdict}."
        )
    for info in infos.values():
        for check in info.checks:
            out.append(f"- {info.label}: {check}.")
    if big is not None:
        for check in big.checks:
            out.append(f"- Backpack (k): {check}.")
    out.append("")

    # ---- absolute numbers
    out += [
        "## Absolute numbers (secondary)",
        "",
        f"wrk: {args.threads} threads, {args.warmup:g} s warm-up (discarded) then "
        f"{args.duration:g} s measured, per scenario, per server, per round. 'Count after': "
        "records in `items` for (a)-(d), files stored for (j).",
        "",
        "| Scenario | Server | Round | Requests/s | p50 ms | p99 ms | max ms "
        "| Requests | Non-2xx | Socket errors | Count after | Peak RSS MB "
        "| Server CPU % | Other CPU % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r.scenario.key, r.server, r.variant, r.round)):
        res = r.result
        count = "—" if r.count_after is None else str(r.count_after)
        out.append(
            f"| ({r.scenario.key}) | {run_label(infos, r)} | {r.round} | {res.rps:.0f} | "
            f"{res.lat_p50_ms:.2f} | {res.lat_p99_ms:.2f} | {res.lat_max_ms:.1f} | "
            f"{res.requests} | {res.errors_status} | {res.socket_errors} | {count} | "
            f"{mb(r.rss_peak_kb):.1f} | "
            f"{r.cpu_pct(r.cpu.server_s) if r.cpu else 0:.0f} | {r.other_cpu_pct:.0f} |"
        )
    out.append("")

    out += [
        "## Memory",
        "",
        "Peak = highest sum of VmRSS over the server process and all its descendants, sampled "
        "every 0.2 s from /proc from the first group's setup to the end (per group above: "
        "during that group's warm-ups and measured runs). VmHWM = sum of each live process's "
        "own lifetime peak at the end (includes all setup; an upper bound for multi-process "
        "servers). "
        "MB = 10^6 bytes.",
        "",
        "| Server | Peak RSS (whole run) | Processes | VmHWM sum | Samples |",
        "|---|---:|---:|---:|---:|",
    ]
    for info in infos.values():
        out.append(
            f"| {info.label} | {mb(info.peak_rss_kb):.1f} MB | {info.max_processes} | "
            f"{mb(info.hwm_kb):.1f} MB | {info.samples} |"
        )
    out.append("")

    out += ["## Setup", ""]
    for key, value in report.get("machine", {}).items():
        out.append(f"- {key}: {value}")
    for info in infos.values():
        out.append(f"- {info.label}: {info.version}")
        out.append(f"  - started as: `{info.command}`")
        out.append(f"  - durability: {info.durability or 'not determined'}")
        if info.seed_s is not None:
            out.append(f"  - seeding 10,000 records took {info.seed_s:.1f} s (batches of 1000)")
        if info.users_s is not None:
            out.append(
                f"  - creating {data.USER_COUNT} users and signing each in once took "
                f"{info.users_s:.1f} s; password hashing: {info.hashing or 'not determined'}"
            )
        if info.owned_seed_s is not None:
            out.append(f"  - seeding 10,000 owned records took {info.owned_seed_s:.1f} s")
    out += ["", "## Method", ""]
    out += method_notes(args, ran)
    out.append("")
    if status and report.get("traceback"):
        out += ["## Error", "", "```", report["traceback"].rstrip(), "```", ""]
    return "\n".join(out)


def method_notes(args: argparse.Namespace, ran: set[str]) -> list[str]:
    out = [
        "- Both servers run on 127.0.0.1 for the whole run; the load alternates between them "
        "(never both at once), and which goes first alternates from one scenario to the next. "
        "Groups run one after the other (records, auth, files), each set up right before its "
        "load; in a group, reads run first (all rounds), then sign-ins, creates or uploads.",
        "- wrk runs on the same 2-core machine as the servers, so it takes CPU from them too; "
        "the same for both servers.",
        "- Non-2xx counts wrk's `status >= 400` responses.",
        "- CPU % columns are shares of all cores over the measured run, from /proc: the "
        "server's process tree, and everything except the server, wrk and this harness "
        "('Other').",
        "- PocketBase: "
        + (
            "its request log is left on (its default: every request stored in auxiliary.db)."
            if args.pocketbase_request_logs
            else "its request log (on by default: every request stored in auxiliary.db) is "
            "turned off with `logs.maxDays=0`, as Backpack stores no per-request log; "
            "`--pocketbase-request-logs` keeps it."
        )
        + " Its collections get the `created`/`updated` autodate fields its dashboard adds by "
        "default, as Backpack's records carry `created`/`updated`.",
    ]
    if ran & set("abcdg"):
        out += [
            f"- Records: collection `items`, {data.RECORD_COUNT} records generated with seed "
            f"{data.SEED} (title ~{data.TITLE_LENGTH} chars, score 0..1000, done bool), index "
            "on `score`, public rules, no auth header in the load. Identical on both servers.",
            "- (a) uses bench/lua/get_by_id.lua (random id from the seeded ids, fixed "
            "per-thread seed); (b)/(c) a fixed URL (bench/lua/fixed.lua); (d) "
            "bench/lua/create.lua (POST JSON). (d) runs after all reads of (a)-(c), and grows "
            "the table (so (g), later, reads 10,000 ids of a bigger table).",
            "- PocketBase: (b) `?filter=(score>500 && done=true)&sort=-score&perPage=20"
            '&skipTotal=1`, (c) the same without skipTotal. Backpack: (b) `?filter={"score":'
            '{"$gt":500},"done":true}&sort=-score&limit=20`, (c) the same plus `&count=true`.',
            "- (c) runs on a table that does not change: a server that caches totals until the "
            "next write is measured on that cache.",
        ]
    if ran & set("efgh"):
        out += [
            f"- Auth: {data.USER_COUNT} verified users with the same emails and passwords on "
            "both, created by the admin (Backpack `POST /api/users`, PocketBase a record of "
            "its default `users` auth collection), each signed in once for a token "
            "(Backpack: a `bps_` session token sent as `Authorization: Bearer …`; PocketBase: "
            "its JWT sent as `Authorization: <token>`).",
            "- Tokens in the load: wrk has no per-connection hook, so each wrk thread owns "
            "half of the users (user index mod threads) and every request picks one of its "
            "own users' lines at random (bench/lua/auth_get.lua, requests formatted once at "
            "start, fixed per-thread seed). So every token is in use all along, by one "
            "thread only.",
            f"- (e)/(f): collection `{OWNED}`, the same {data.RECORD_COUNT} records as `items` "
            f"plus `owner` = user number (i mod {data.USER_COUNT}): 100 records per user. "
            'List/read rule owner only (Backpack `{"owner": "@auth.id"}`, PocketBase '
            "`owner = @request.auth.id` on a relation field to `users`); no create/update/"
            "delete rule (admin only). Indexed on `owner` on both (Backpack indexes `owner` in "
            "every collection; PocketBase gets `CREATE INDEX idx_owner ON owned (owner)`). "
            "(e) GETs a random record the token's user owns; (f) lists the first 20 by "
            "`-created` without a total (PocketBase `perPage=20&skipTotal=1`, Backpack "
            "`limit=20`).",
            "- (g) Backpack only: (a)'s GET on `items`, through the same script and the same "
            "sequence of ids, once without a token and once with a user's `bps_` token; the "
            "order of the two alternates per round. Overhead = (anonymous - with session) / "
            "anonymous requests/s of each round (a pair run back to back); the result is the "
            "median over the rounds.",
            "- (h): `POST` the sign-in endpoint (Backpack `/api/auth/login {email, password}`, "
            "PocketBase `/api/collections/users/auth-with-password {identity, password}`) with "
            "correct passwords of random users (bench/lua/login.lua). Backpack's sign-in rate "
            "limit (10 a minute per IP and account by default) is turned off "
            "(`rate_limits.auth_per_minute=0`); PocketBase's rate limiter is off by default. "
            "PocketBase's 'login from a new location' alert mail is off "
            "(`authAlert.enabled=false`: no mail server here, Backpack sends no such mail). "
            "Each Backpack sign-in stores a session row; PocketBase's tokens are stateless "
            "JWTs. The password hashes are read from each server's database after the users "
            "were created.",
        ]
    if ran & set("ijk"):
        out += [
            f"- (i): the same {data.FILE_BYTES} random bytes (seed {data.SEED}) stored once on "
            "each: Backpack `POST /api/files` with `public=true` (secret key), served by "
            "`GET /api/files/{id}/content`; PocketBase a record of collection `media` (file "
            "field, public view rule), served by `GET /api/files/media/{record}/{file}`. A "
            "fixed URL, no conditional headers (every response is a full 200).",
            "- (j): a multipart body with the same fields on both (a `name` field, Backpack "
            "also `bucket=bench` and `public=false`, then the 1 MiB file part) built once per "
            "server and read by bench/lua/upload.lua. Each request replaces the first 48 bytes "
            "of the file with a tag unique to the wrk invocation, thread and request, so no "
            "two uploads in the whole run have the same content: Backpack's content-addressed "
            "store (sha256, one blob per content) never skips a write through dedup. "
            "Anonymous uploads: Backpack bucket `bench` with rules `{create: true}` (others "
            'admin only); PocketBase collection `uploads` with `createRule: ""` (others '
            "superusers only). Backpack writes each blob to a temp file, fsyncs and renames it; "
            "PocketBase writes the file without fsync (its local filesystem store).",
        ]
    if "k" in ran:
        out += [
            "- (k) Backpack only, after everything else, on a Backpack process started for it "
            "alone (same command; memory the allocator kept from earlier scenarios would hide "
            "growth): `limits.upload_bytes` raised to "
            f"{2 * data.BIG_UPLOAD_BYTES >> 30} GiB, then one {data.BIG_UPLOAD_BYTES >> 30} GiB "
            "multipart upload (secret key, bucket `big`) sent by httpx from a generator, 1 MiB "
            "at a time, with a Content-Length. RSS of the server tree is sampled every 0.05 s; "
            "the baseline is the median over the 1 s before the upload. The server's sha256 "
            "must equal the one computed while sending; the file is then deleted and the blob "
            "store must shrink back.",
        ]
    return out


# --------------------------------------------------------------------------- entry


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    # Once: the cleanup that follows (ending the servers) must not be interrupted again.
    for sig in (*_STOP_SIGNALS, signal.SIGALRM):
        signal.signal(sig, signal.SIG_IGN)
    if signum == signal.SIGALRM:
        raise TimeLimitExceeded("time limit reached")
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def run_main(
    args: argparse.Namespace,
    name: str,
    fields: dict[str, Any],
    run: Callable[[argparse.Namespace, Path, dict[str, Any]], None],
    render: Callable[[argparse.Namespace, dict[str, Any]], str],
    has_results: Callable[[dict[str, Any]], bool],
) -> int:
    """`python -m bench.NAME`: `run` under signals and --time-limit, then report and clean up.

    The report starts with `fields`; it is rendered to --output when `has_results` says so
    (else the previous report stays). Folders in its `blob_dirs` go even when the rest is kept.
    """
    for sig in (*_STOP_SIGNALS, signal.SIGALRM):
        signal.signal(sig, _raise_on_signal)
    signal.setitimer(signal.ITIMER_REAL, args.time_limit)
    started = dt.datetime.now(dt.UTC)
    workdir = WORK_ROOT / started.strftime(f"{name}-%Y%m%dT%H%M%SZ")
    report: dict[str, Any] = {
        "command": f"python -m bench.{name}"
        + ("" if not sys.argv[1:] else " " + shlex.join(sys.argv[1:])),
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        **fields,
    }
    t0 = time.monotonic()
    code = 0
    try:
        run(args, workdir, report)
    except (Exception, KeyboardInterrupt) as exc:
        code = 1
        report["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        report["traceback"] = "".join(traceback.format_exception(exc))
        print(f"\nbench failed: {exc}", file=sys.stderr, flush=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    report["elapsed"] = time.monotonic() - t0
    if has_results(report):
        args.output.write_text(render(args, report))
        log(f"wrote {args.output}")
    if workdir.exists():
        if code == 0 and not args.keep_work:
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(OSError):
                WORK_ROOT.rmdir()  # only if empty
        else:
            if not args.keep_work:
                # Uploaded bytes can be gigabytes: keep the databases and logs, not those.
                for folder in report.get("blob_dirs", []):
                    shutil.rmtree(folder, ignore_errors=True)
            log(f"data and server logs kept in {workdir}")
    return code


def main(argv: list[str] | None = None) -> int:
    return run_main(
        parse_args(argv),
        "run",
        {"servers": {}, "runs": [], "blob_dirs": []},
        run_benchmark,
        render,
        lambda report: bool(report["runs"] or report.get("big_upload")),
    )


if __name__ == "__main__":
    sys.exit(main())
