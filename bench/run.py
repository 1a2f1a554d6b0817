"""Backpack vs PocketBase on loopback: same machine, same run, same data, same wrk load.

    .venv/bin/python -m bench.run [--only pocketbase|backpack] [--duration 10] ...

Writes bench/RESULTS.md (ratios Backpack/PocketBase first). Every process it starts is
ended when it finishes, fails, is interrupted or runs past --time-limit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
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
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench import cpu, data
from bench.memory import MemorySampler, tree_hwm_kb
from bench.servers import SERVERS, PocketBase, Server, ServerError, http_json
from bench.wrk import Load, WrkResult, find_wrk, run_wrk, wrk_version

BENCH_DIR = Path(__file__).resolve().parent
WORK_ROOT = BENCH_DIR / ".work"  # git-ignored scratch space
DEFAULT_OUTPUT = BENCH_DIR / "RESULTS.md"
MEMORY_TARGET_MB = 150.0
OTHER_CPU_WARN_PCT = 10.0  # share of all cores used by other processes that taints a run


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # get | list | list_count | create
    connections: int
    target: float  # Backpack/PocketBase requests/s ratio to reach


SCENARIOS = (
    Scenario("a", "GET one record by id (random of 10,000)", "get", 100, 1.2),
    Scenario("b", "list 20, `score > 500 and done`, sort -score, no total", "list", 100, 1.0),
    Scenario("c", "the same list with the total count", "list_count", 100, 2.0),
    Scenario("d", "create a record (POST JSON)", "create", 100, 1.5),
)


@dataclass
class Run:
    scenario: Scenario
    server: str
    round: int
    warmup: WrkResult
    result: WrkResult
    count_before: int
    count_after: int
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
    seed_s: float = 0.0
    peak_rss_kb: int = 0
    max_processes: int = 0
    samples: int = 0
    hwm_kb: int = 0
    checks: list[str] = field(default_factory=list)


class TimeLimitExceeded(Exception):
    pass


# --------------------------------------------------------------------------- arguments


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
        "--scenarios", default="abcd", help="subset of scenario letters to run (default abcd)"
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
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown report path")
    p.add_argument(
        "--time-limit", type=float, default=660.0, help="abort (and clean up) after this many s"
    )
    p.add_argument(
        "--noisy-retries",
        type=int,
        default=6,
        help="how many runs (in all) may be repeated because other processes used the CPU",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=30.0,
        help="wait up to this many s for other processes to leave the CPU idle before starting",
    )
    p.add_argument("--keep-work", action="store_true", help=f"keep data and logs in {WORK_ROOT}")
    args = p.parse_args(argv)
    if set(args.scenarios) - {s.key for s in SCENARIOS} or not args.scenarios:
        p.error("--scenarios takes letters among abcd")
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


def load_for(server: Server, scenario: Scenario, ids_file: Path) -> Load:
    if scenario.kind == "get":
        return server.load_get_by_id(ids_file)
    if scenario.kind == "list":
        return server.load_list(with_count=False)
    if scenario.kind == "list_count":
        return server.load_list(with_count=True)
    return server.load_create()


def settled_count(server: Server, max_wait_s: float = 5.0) -> int:
    """Record count once requests still in flight when wrk stopped have landed."""
    deadline = time.monotonic() + max_wait_s
    last = server.count()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = server.count()
        if now == last:
            break
        last = now
    return last


def probe(server: Server, scenario: Scenario, load: Load, record: dict[str, Any]) -> None:
    base = load.url.rstrip("/")
    if scenario.kind == "get":
        ids_file, prefix = load.script_args
        first_id = Path(ids_file).read_text().split("\n", 1)[0]
        status, body = http_json("GET", base + prefix + first_id)
    elif scenario.kind == "create":
        status, body = http_json("POST", base + load.script_args[0], record)
    else:
        status, body = http_json("GET", load.url)
    server.check_ok(f"scenario ({scenario.key}) probe", status, body, (200, 201))


def prepare(
    server: Server, records: list[dict[str, Any]], info: ServerInfo, extra: list[str]
) -> Path:
    """Start, create `items`, seed, check; returns the file of ids for scenario (a)."""
    log(f"{server.label}: starting")
    server.start(extra)
    info.command = server.command_line()
    info.version = server.version()
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
    ids_file = server.workdir / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")

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
    return ids_file


def measure(
    wrk: str,
    args: argparse.Namespace,
    server: Server,
    scenario: Scenario,
    rnd: int,
    load: Load,
    connections: int,
    sampler: MemorySampler,
) -> Run:
    """Warm-up, then one measured wrk run, with counts, memory and CPU around it."""
    before = server.count()
    sampler.reset_window()
    warm = run_wrk(wrk, load, threads=args.threads, connections=connections, duration_s=args.warmup)
    cpu_start = cpu.snapshot(server.pid)
    res = run_wrk(
        wrk, load, threads=args.threads, connections=connections, duration_s=args.duration
    )
    cpu_use = cpu.since(cpu_start, server.pid)
    sampler.sample_now()
    rss = sampler.window_kb[server.name]
    after = settled_count(server)
    return Run(scenario, server.name, rnd, warm, res, before, after, rss, cpu_use)


def wait_for_idle(max_wait_s: float) -> float:
    """Wait (up to max_wait_s) until other processes leave the CPU; returns the last busy %."""
    deadline = time.monotonic() + max_wait_s
    busy = cpu.busy_share(1.0)
    while busy > OTHER_CPU_WARN_PCT and time.monotonic() < deadline:
        busy = cpu.busy_share(1.0)
    return busy


def run_benchmark(args: argparse.Namespace, workdir: Path, report: dict[str, Any]) -> None:
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
    names = list(SERVERS) if args.only == "both" else [args.only]
    scenarios = [s for s in SCENARIOS if s.key in args.scenarios]
    records = data.make_records()
    servers: dict[str, Server] = {}
    infos: dict[str, ServerInfo] = report["servers"]
    sampler: MemorySampler | None = None
    try:
        for name in names:
            server = SERVERS[name](workdir)
            if isinstance(server, PocketBase):
                server.request_logs = args.pocketbase_request_logs
            servers[name] = server
            infos[name] = ServerInfo(server.label)
        extra: dict[str, list[str]] = {name: [] for name in names}
        if "backpack" in extra:
            extra["backpack"] = shlex.split(args.backpack_args)
        ids_files = {n: prepare(s, records, infos[n], extra[n]) for n, s in servers.items()}

        # One request of each scenario first, on the exact paths wrk will use, so a
        # missing endpoint fails fast instead of producing a run of errors.
        for name, server in servers.items():
            for scenario in scenarios:
                probe(server, scenario, load_for(server, scenario, ids_files[name]), records[0])

        sampler = MemorySampler({n: s.pid for n, s in servers.items()})
        sampler.start()
        runs: list[Run] = report["runs"]
        # Reads first, all rounds, on the seeded table; then the creates, which grow it.
        reads = [s for s in scenarios if s.kind != "create"]
        writes = [s for s in scenarios if s.kind == "create"]
        rounds = range(1, args.rounds + 1)
        schedule = [(r, s) for r in rounds for s in reads] + [
            (r, s) for r in rounds for s in writes
        ]
        for step, (rnd, scenario) in enumerate(schedule):
            order = list(servers.items())
            if step % 2:  # alternate which server goes first
                order.reverse()
            for name, server in order:
                load = load_for(server, scenario, ids_files[name])
                conns = args.connections or scenario.connections
                attempts: list[Run] = []
                while True:
                    run = measure(wrk, args, server, scenario, rnd, load, conns, sampler)
                    attempts.append(run)
                    log(
                        f"round {rnd} ({scenario.key}) {server.label:10s} "
                        f"{run.result.rps:9.0f} req/s  p50 {run.result.lat_p50_ms:7.2f} ms  "
                        f"p99 {run.result.lat_p99_ms:7.2f} ms  "
                        f"non-2xx {run.result.errors_status}  "
                        f"socket errors {run.result.socket_errors}  records {run.count_after}  "
                        f"RSS {mb(run.rss_peak_kb):.0f} MB  other CPU {run.other_cpu_pct:.0f}%"
                    )
                    left = len(schedule) * len(servers) - len(runs) - 1
                    per_run = args.warmup + args.duration + 2
                    room = args.time_limit - (time.monotonic() - start) - left * per_run - 60
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
    finally:
        if sampler is not None:
            sampler.stop()
            for name, server in servers.items():
                collect_server_facts(server, infos[name], sampler)
        for server in servers.values():
            server.stop()


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


def median_rps(runs: list[Run], key: str, server: str) -> float | None:
    values = [r.result.rps for r in runs if r.scenario.key == key and r.server == server]
    return statistics.median(values) if values else None


def render(args: argparse.Namespace, report: dict[str, Any]) -> str:
    runs: list[Run] = report["runs"]
    infos: dict[str, ServerInfo] = report["servers"]
    both = "pocketbase" in infos and "backpack" in infos
    scenarios = [s for s in SCENARIOS if s.key in args.scenarios]
    out: list[str] = ["# Backpack vs PocketBase — benchmark results", ""]
    out.append(
        f"- Command: `{report['command']}`"
        + (" (run by `make bench`)" if os.environ.get("MAKELEVEL") else "")
    )
    out.append(f"- Date: {report['started']} (took {report.get('elapsed', 0):.0f} s)")
    status = report.get("error")
    out.append(f"- Status: {'FAILED — ' + status if status else 'completed'}")
    if not both:
        out.append(f"- Only {', '.join(i.label for i in infos.values())} ran: no ratios.")
    out.append("")

    out += [
        "## Headline: Backpack / PocketBase requests per second",
        "",
        "Ratio of the median requests/s over the rounds; above 1 means Backpack served more. "
        "Same wrk settings, data and machine for both, in the same run.",
        "",
        "| Scenario | Connections | Ratio BP/PB | Per round | Target | Met |",
        "|---|---:|---:|---|---:|:---:|",
    ]
    for s in scenarios:
        pb, bp = median_rps(runs, s.key, "pocketbase"), median_rps(runs, s.key, "backpack")
        ratio = bp / pb if (pb and bp is not None) else None
        per_round = []
        for rnd in range(1, args.rounds + 1):
            a = [r for r in runs if r.scenario.key == s.key and r.round == rnd]
            p = next((r.result.rps for r in a if r.server == "pocketbase"), None)
            b = next((r.result.rps for r in a if r.server == "backpack"), None)
            if p and b is not None:
                per_round.append(f"{b / p:.2f}")
        met = "—" if ratio is None else ("yes" if ratio >= s.target else "**no**")
        out.append(
            f"| ({s.key}) {s.title} | {args.connections or s.connections} | "
            f"{fmt_ratio(ratio)} | {', '.join(per_round) or '—'} | ≥ {s.target} | {met} |"
        )
    out += [
        "",
        "| Memory | Peak RSS during (a)-(d) | Processes | Target | Met |",
        "|---|---:|---:|---:|:---:|",
    ]
    for name in ("backpack", "pocketbase"):
        info = infos.get(name)
        if info is None or not info.samples:
            continue
        peak = mb(info.peak_rss_kb)
        target, met = "—", "—"
        if name == "backpack":
            target = f"≤ {MEMORY_TARGET_MB:.0f} MB"
            met = "yes" if peak <= MEMORY_TARGET_MB else "**no**"
        out.append(
            f"| {info.label} (server process tree) | {peak:.1f} MB | {info.max_processes} | "
            f"{target} | {met} |"
        )
    out.append("")

    busy = report.get("busy_before_pct", 0.0)
    worst = max((r.other_cpu_pct for r in runs), default=0.0)
    if busy > OTHER_CPU_WARN_PCT or worst > OTHER_CPU_WARN_PCT:
        out += [
            f"**Warning: the machine was not idle.** Other processes used {busy:.0f}% of the "
            f"CPU just before the run and up to {worst:.0f}% during a measured run (see "
            "'Other CPU %' below). These ratios are skewed; rerun on an idle machine.",
            "",
        ]

    # Checks
    out += ["## Checks", ""]
    out.append(
        f"- Machine CPU busy (all processes) in the 2 s before the servers started: "
        f"{busy:.0f}%; highest share used by other processes during a measured run: "
        f"{worst:.0f}%."
    )
    for r in runs:
        if r.discarded_other_pct:
            shares = ", ".join(f"{x:.0f}%" for x in r.discarded_other_pct)
            out.append(
                f"- {infos[r.server].label} ({r.scenario.key}) round {r.round} was repeated: "
                f"other processes used {shares} of the CPU in the discarded attempt(s); "
                f"the kept one had {r.other_cpu_pct:.0f}%."
            )
    bad = [r for r in runs if r.result.errors_status or r.result.socket_errors]
    if runs and not bad:
        out.append("- Every measured run: 0 non-2xx responses and 0 socket errors.")
    for r in bad:
        out.append(
            f"- **{infos[r.server].label} ({r.scenario.key}) round {r.round}: "
            f"{r.result.errors_status} non-2xx responses, socket errors: "
            f"connect {r.result.errors_connect}, read {r.result.errors_read}, "
            f"write {r.result.errors_write}, timeout {r.result.errors_timeout}.**"
        )
    for r in runs:
        if r.scenario.kind != "create":
            continue
        acked = r.warmup.ok_requests + r.result.ok_requests
        found = r.count_after - r.count_before
        verdict = "ok" if found >= acked else f"**{acked - found} acknowledged creates missing**"
        out.append(
            f"- {infos[r.server].label} (d) round {r.round}: {acked} creates acknowledged "
            f"(warm-up + measured), records went {r.count_before} → {r.count_after} "
            f"(+{found}; extra = requests in flight when wrk stopped): {verdict}."
        )
    for info in infos.values():
        for check in info.checks:
            out.append(f"- {info.label}: {check}.")
    out.append("")

    # Absolute numbers
    out += [
        "## Absolute numbers (secondary)",
        "",
        f"wrk: {args.threads} threads, {args.warmup:g} s warm-up (discarded) then "
        f"{args.duration:g} s measured, per scenario, per server, per round.",
        "",
        "| Scenario | Server | Round | Requests/s | p50 ms | p99 ms | max ms "
        "| Requests | Non-2xx | Socket errors | Records after | Peak RSS MB "
        "| Server CPU % | Other CPU % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r.scenario.key, r.server, r.round)):
        x = r.result
        out.append(
            f"| ({r.scenario.key}) | {infos[r.server].label} | {r.round} | {x.rps:.0f} | "
            f"{x.lat_p50_ms:.2f} | {x.lat_p99_ms:.2f} | {x.lat_max_ms:.1f} | {x.requests} | "
            f"{x.errors_status} | {x.socket_errors} | {r.count_after} | {mb(r.rss_peak_kb):.1f} | "
            f"{r.cpu_pct(r.cpu.server_s) if r.cpu else 0:.0f} | {r.other_cpu_pct:.0f} |"
        )
    out.append("")

    out += [
        "## Memory",
        "",
        "Peak = highest sum of VmRSS over the server process and all its descendants, sampled "
        "every 0.2 s from /proc during (a)-(d). VmHWM = sum of each live process's own "
        "lifetime peak at the end (includes seeding; an upper bound for multi-process servers). "
        "MB = 10^6 bytes.",
        "",
        "| Server | Peak RSS (a)-(d) | Processes | VmHWM sum | Samples |",
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
        out.append(f"  - seeding 10,000 records took {info.seed_s:.1f} s (batches of 1000)")
    out += [
        "",
        "## Method",
        "",
        f"- Data: collection `items`, {data.RECORD_COUNT} records generated with seed "
        f"{data.SEED} (title ~{data.TITLE_LENGTH} chars, score 0..1000, done bool), index on "
        "`score`, public rules, no auth header in the load. Identical on both servers.",
        "- Both servers run on 127.0.0.1 for the whole run; the load alternates between them "
        "(never both at once), and which goes first alternates from one scenario to the next.",
        "- (a) uses bench/lua/get_by_id.lua (random id from the seeded ids, fixed per-thread "
        "seed); (b)/(c) a fixed URL (bench/lua/fixed.lua); (d) bench/lua/create.lua (POST "
        "JSON). All rounds of (a)-(c) run first on the seeded table, then the rounds of (d), "
        "which grow it.",
        "- wrk runs on the same 2-core machine as the servers, so it takes CPU from them too; "
        "the same for both servers.",
        "- PocketBase: (b) `?filter=(score>500 && done=true)&sort=-score&perPage=20"
        "&skipTotal=1`, (c) the same without skipTotal. Its `items` collection has the "
        "`created`/`updated` autodate fields its dashboard adds by default, as Backpack's records "
        "carry `created`/`updated`. "
        + (
            "Its request log is left on (its default: every request stored in auxiliary.db)."
            if args.pocketbase_request_logs
            else "Its request log (on by default: every request stored in auxiliary.db) is "
            "turned off with `logs.maxDays=0`, as Backpack stores no per-request log; "
            "`--pocketbase-request-logs` keeps it."
        ),
        '- Backpack: (b) `?filter={"score":{"$gt":500},"done":true}&sort=-score&limit=20`, '
        "(c) the same plus `&count=true`.",
        "- (c) runs on a table that does not change: a server that caches totals until the "
        "next write is measured on that cache.",
        "- Non-2xx counts wrk's `status >= 400` responses.",
        "- CPU % columns are shares of all cores over the measured run, from /proc: the "
        "server's process tree, and everything except the server, wrk and this harness "
        "('Other').",
        "",
    ]
    if status and report.get("traceback"):
        out += ["## Error", "", "```", report["traceback"].rstrip(), "```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- entry


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    # Once: the cleanup that follows (ending the servers) must not be interrupted again.
    for sig in (*_STOP_SIGNALS, signal.SIGALRM):
        signal.signal(sig, signal.SIG_IGN)
    if signum == signal.SIGALRM:
        raise TimeLimitExceeded("time limit reached")
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (*_STOP_SIGNALS, signal.SIGALRM):
        signal.signal(sig, _raise_on_signal)
    signal.setitimer(signal.ITIMER_REAL, args.time_limit)
    started = dt.datetime.now(dt.UTC)
    workdir = WORK_ROOT / started.strftime("run-%Y%m%dT%H%M%SZ")
    report: dict[str, Any] = {
        "command": "python -m bench.run"
        + ("" if not sys.argv[1:] else " " + shlex.join(sys.argv[1:])),
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "servers": {},
        "runs": [],
    }
    t0 = time.monotonic()
    code = 0
    try:
        run_benchmark(args, workdir, report)
    except (Exception, KeyboardInterrupt) as exc:
        code = 1
        report["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        report["traceback"] = "".join(traceback.format_exception(exc))
        print(f"\nbench failed: {exc}", file=sys.stderr, flush=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    report["elapsed"] = time.monotonic() - t0
    if report["runs"]:  # a run that measured nothing leaves the previous report alone
        args.output.write_text(render(args, report))
        log(f"wrote {args.output}")
    if workdir.exists():
        if code == 0 and not args.keep_work:
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(OSError):
                WORK_ROOT.rmdir()  # only if empty
        else:
            log(f"data and server logs kept in {workdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
