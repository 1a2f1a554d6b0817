"""The control plane's targets (issue 7), measured on 127.0.0.1 in one run.

    .venv/bin/python -m bench.control [--count 100] [--rounds 3] [--pairs 3] [--quick]
                                      [--output FILE]

Starts a fresh `backpack serve` and, beside it, a `backpack serve-instance`, then:

1. creates --count backpacks one after another through `POST /admin/api/instances`
   (milliseconds per create, as the client sees them);
2. compares the RSS of serve's process tree with 0 backpacks and with all of them, each
   having served one request (idle memory added per backpack);
3. runs scenario (a) of bench/run.py (GET one record by random id of 10,000 seeded) on
   backpack #1 and on the last one, by Host header (#N as fast as #1);
4. runs (a) on the serve-instance and on backpack #1 by Host header and by path (/i/NAME):
   the router's cost against a backpack served alone. The host form and the serve-instance
   are measured on --pairs independent pairs of processes (each serve with --count
   backpacks of its own), because one process differs from the next by several per cent.

Writes bench/CONTROL.md. Every process it starts is ended when it finishes, fails, is
interrupted or runs past --time-limit.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cpu, data
from bench.memory import process_tree, tree_rss_kb
from bench.run import (
    OTHER_CPU_WARN_PCT,
    ServerInfo,
    _write_lines,
    add_run_options,
    busy_check,
    log,
    machine_facts,
    mb,
    not_idle_warning,
    prepare_records,
    run_checks,
    run_main,
    wait_for_idle,
)
from bench.servers import HOST, Backpack, ServerError, free_port, http_json, http_raw
from bench.wrk import GET_BY_ID_LUA, Load, WrkResult, find_wrk, run_wrk

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = BENCH_DIR / "CONTROL.md"
ADMIN_API = "/admin/api"
ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "bench-admin-password-1234"
NAME_FORMAT = "bench-{:03d}"
CONNECTIONS = 100  # as (a) in bench/run.py
CREATE_TARGET_MS = 100.0  # median per create
CREATE_READY_MS = 500.0  # the issue: "returns a ready backpack in < 500 ms"
MEMORY_TARGET_MB = 2.0  # idle memory added per backpack
SPREAD_TARGET = 0.10  # #N within 10 % of #1
ROUTER_TARGET = 0.95  # host router / serve-instance


# --------------------------------------------------------------------------- the servers


class Deployment(Backpack):
    """`backpack serve`: the control plane and every backpack in one process."""

    name = "serve"
    label = "backpack serve"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.admin_token = ""

    def start(self, extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._cmd = [
            str(self.executable),
            "serve",
            "--data",
            str(self.data_dir),
            "--host",
            HOST,
            "--port",
            str(self.port),
            *extra_args,
        ]
        self._spawn(self._cmd)
        self._wait_ready("/api/health")

    def command_line(self) -> str:
        return " ".join(self._cmd)

    def admin(self, method: str, path: str) -> Any:
        """One control-plane API call as the admin; returns the parsed body."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        status, answer = http_json(method, self.base_url + ADMIN_API + path, None, headers)
        self.check_ok(f"{method} {ADMIN_API}{path}", status, answer, (200,))
        return answer

    def set_up_admin(self) -> None:
        """First-run setup: the first admin, signed in."""
        body = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        status, answer = http_json("POST", self.base_url + ADMIN_API + "/setup", body)
        self.check_ok("first-run setup", status, answer, (201,))
        self.admin_token = str(answer["token"])

    def create(self, name: str) -> float:
        """Create backpack `name`; returns the seconds the request took, as the client saw it."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        url = self.base_url + ADMIN_API + "/instances"
        started = time.perf_counter()
        status, answer = http_json("POST", url, {"name": name}, headers)
        seconds = time.perf_counter() - started
        self.check_ok(f"create {name}", status, answer, (201,))
        if answer.get("status") != "running":
            raise ServerError(f"{name} was created {answer.get('status')!r}, not running")
        return seconds

    def hosted(self, name: str) -> Hosted:
        key = self.admin("GET", f"/instances/{name}/keys")["secret_key"]
        return Hosted(self, name, str(key))

    def host_header(self, name: str) -> str:
        return f"{name}.localhost:{self.port}"


class Hosted(Backpack):
    """One backpack of a `backpack serve`, set up through its path form like a serve-instance."""

    def __init__(self, deployment: Deployment, instance: str, key: str) -> None:
        super().__init__(deployment.workdir)
        self.workdir = deployment.workdir / instance
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.deployment = deployment
        self.instance = instance
        self.secret_key = key
        self.label = f"{deployment.label}: {instance}"

    @property
    def base_url(self) -> str:
        return f"{self.deployment.base_url}/i/{self.instance}"


# --------------------------------------------------------------------------- loads


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    load: Load
    server: Backpack  # the process that serves it (its CPU is the server's)
    first_id: str  # of the seeded records, for the probe
    host: str | None = None  # the Host header sent, if not 127.0.0.1:PORT


def host_script(workdir: Path, host: str) -> Path:
    """bench/lua/get_by_id.lua with a fixed Host header (wrk still connects to 127.0.0.1)."""
    path = workdir / f"get_by_id@{host.split('.')[0]}.lua"
    path.write_text(
        "-- Written by bench/control.py: scenario (a) with the Host header of one backpack.\n"
        f'wrk.headers["Host"] = {json.dumps(host)}\n'
        f"dofile({json.dumps(str(GET_BY_ID_LUA))})\n"
    )
    return path


def probe(target: Target) -> None:
    """One request as wrk will send it: the first seeded record, by id."""
    prefix = target.load.script_args[1]
    url = target.load.url.rstrip("/") + prefix + target.first_id
    headers = {"Accept": "application/json"} | ({"Host": target.host} if target.host else {})
    status, raw = http_raw("GET", url, headers=headers)
    target.server.check_ok(f"probe of {target.label}", status, raw[:300], (200,))
    if json.loads(raw).get("id") != target.first_id:
        raise ServerError(f"{target.label}: the probe answered another record: {raw[:200]!r}")


# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    target: str
    round: int
    result: WrkResult
    cpu: cpu.CpuUse
    discarded_other_pct: list[float] = field(default_factory=list)

    @property
    def other_cpu_pct(self) -> float:
        return self.cpu.share(self.result.duration_s, self.cpu.other_s)

    @property
    def server_cpu_pct(self) -> float:
        return self.cpu.share(self.result.duration_s, self.cpu.server_s)

    @property
    def cpu_us_per_request(self) -> float | None:
        return 1e6 * self.cpu.server_s / self.result.requests if self.result.requests else None


@dataclass
class Creation:
    count: int
    create_ms: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)  # right after each create
    rss_empty_kb: int = 0  # settled, 0 backpacks
    rss_full_kb: int = 0  # settled, all created, each served one request

    @property
    def per_backpack_kb(self) -> float:
        return (self.rss_full_kb - self.rss_empty_kb) / self.count


def settled_rss_kb(pid: int, samples: int = 5) -> int:
    """Median RSS of the process tree over about two seconds, after a pause."""
    time.sleep(1.0)
    values = []
    for _ in range(samples):
        values.append(tree_rss_kb(process_tree(pid)))
        time.sleep(0.2)
    return int(statistics.median(values))


def measure(wrk: str, args: argparse.Namespace, target: Target, rnd: int) -> Run:
    load = functools.partial(
        run_wrk,
        wrk,
        target.load,
        threads=wrk_threads(args),
        connections=CONNECTIONS,
        cpus=None if args.cpus is None else args.cpus[1],
    )
    load(duration_s=args.warmup)
    start = cpu.snapshot(target.server.pid)
    result = load(duration_s=args.duration)
    return Run(target.key, rnd, result, cpu.since(start, target.server.pid))


def measure_quietly(
    wrk: str, args: argparse.Namespace, target: Target, rnd: int, retries: list[int]
) -> Run:
    """measure(), repeated while other processes took the CPU (see bench/run.py)."""
    attempts = [measure(wrk, args, target, rnd)]
    while attempts[-1].other_cpu_pct > OTHER_CPU_WARN_PCT and retries[0] > 0:
        retries[0] -= 1
        log("other processes took the CPU during that run; waiting for them")
        if wait_for_idle(20.0) > OTHER_CPU_WARN_PCT:
            log("the machine stays busy: keeping the least disturbed attempt")
            break
        attempts.append(measure(wrk, args, target, rnd))
    run = min(attempts, key=lambda r: r.other_cpu_pct)
    run.discarded_other_pct = [r.other_cpu_pct for r in attempts if r is not run]
    return run


def create_backpacks(serve: Deployment, creation: Creation) -> None:
    """(1) and (2): create the backpacks one by one, each then answers one request."""
    count = creation.count
    creation.rss_empty_kb = settled_rss_kb(serve.pid)
    log(f"{serve.label}: RSS {mb(creation.rss_empty_kb):.1f} MB with 0 backpacks")
    for i in range(1, count + 1):
        creation.create_ms.append(1000 * serve.create(NAME_FORMAT.format(i)))
        creation.rss_kb.append(tree_rss_kb(process_tree(serve.pid)))
    log(
        f"{serve.label}: created {count} backpacks, median "
        f"{statistics.median(creation.create_ms):.1f} ms, max {max(creation.create_ms):.1f} ms"
    )
    for i in range(1, count + 1):
        url = f"{serve.base_url}/i/{NAME_FORMAT.format(i)}/api/health"
        status, body = http_json("GET", url)
        serve.check_ok(f"GET {url}", status, body, (200,))
    listed = serve.admin("GET", "/instances")["items"]
    running = sum(1 for item in listed if item.get("status") == "running")
    if len(listed) != count or running != count:
        raise ServerError(f"{len(listed)} backpacks listed, {running} running, not {count}")
    creation.rss_full_kb = settled_rss_kb(serve.pid)
    log(
        f"{serve.label}: RSS {mb(creation.rss_full_kb):.1f} MB with {count} backpacks "
        f"({mb(int(creation.per_backpack_kb)):.2f} MB each)"
    )


@dataclass
class Pair:
    """A serve-instance and a serve with --count backpacks, #1 and #N of them seeded (#N on
    the first pair only), the same data in each. Pair 1 also measures (1) to (3)."""

    number: int
    alone: Backpack
    serve: Deployment
    first: Hosted | None = None
    last: Hosted | None = None

    @property
    def suffix(self) -> str:
        """Of its targets' keys and labels: none for pair 1, else ' #2' …"""
        return "" if self.number == 1 else f" #{self.number}"


def make_pair(number: int, workdir: Path) -> Pair:
    base = workdir if number == 1 else workdir / f"pair-{number}"
    serve, alone = Deployment(base), Backpack(base)
    pair = Pair(number, alone, serve)
    serve.label += pair.suffix
    alone.label = "serve-instance" + pair.suffix
    return pair


def make_targets(pair: Pair, seeded: dict[str, list[str]]) -> list[Target]:
    """What wrk hits: the serve-instance and #1 by Host header; on pair 1 also #N by Host
    header and #1 by path."""
    prefix = Backpack.RECORDS + "/"
    serve, first, last, tag = pair.serve, pair.first, pair.last, pair.suffix

    def ids_of(server: Backpack) -> tuple[str, str]:
        ids = seeded[server.label]
        return _write_lines(server.workdir / "ids.txt", ids), ids[0]

    ids_file, first_id = ids_of(pair.alone)
    load = Load(pair.alone.base_url + "/", GET_BY_ID_LUA, (ids_file, prefix))
    targets = [Target("alone" + tag, pair.alone.label, load, pair.alone, first_id)]
    for key, hosted in (("host_first", first), ("host_last", last)):
        if hosted is None:
            continue
        ids_file, first_id = ids_of(hosted)
        host = serve.host_header(hosted.instance)
        load = Load(serve.base_url + "/", host_script(hosted.workdir, host), (ids_file, prefix))
        label = f"serve{tag}, Host {host}"
        targets.append(Target(key + tag, label, load, serve, first_id, host))
    if first is not None and pair.number == 1:
        ids_file, first_id = ids_of(first)
        path_prefix = f"/i/{first.instance}{prefix}"
        load = Load(serve.base_url + "/", GET_BY_ID_LUA, (ids_file, path_prefix))
        targets.append(Target("path_first", f"serve, /i/{first.instance}", load, serve, first_id))
    return targets


def run_benchmark(args: argparse.Namespace, workdir: Path, report: dict[str, Any]) -> None:
    wrk = find_wrk()
    report["machine"] = machine_facts(wrk)
    busy = cpu.busy_share(2.0)
    if busy > OTHER_CPU_WARN_PCT and args.wait_idle > 0:
        log(f"machine CPU {busy:.0f}% busy; waiting up to {args.wait_idle:.0f}s for it to idle")
        busy = wait_for_idle(args.wait_idle)
    report["busy_before_pct"] = busy
    log(f"machine CPU busy before starting: {busy:.0f}% of {os.cpu_count()} cores")

    pairs = [make_pair(number, workdir) for number in range(1, args.pairs + 1)]
    serve = pairs[0].serve
    infos: dict[str, ServerInfo] = report["servers"]
    try:
        for pair in pairs:
            for server in (pair.serve, pair.alone):
                log(f"{server.label}: starting")
                server.start()
                infos[server.label] = ServerInfo(
                    server.label, server.version(), server.command_line()
                )
        serve.set_up_admin()
        report["creation"] = creation = Creation(args.count)
        create_backpacks(serve, creation)
        for pair in pairs[1:]:  # the same backpacks, not timed: only (4) runs on them
            pair.serve.set_up_admin()
            for i in range(1, args.count + 1):
                pair.serve.create(NAME_FORMAT.format(i))
            log(f"{pair.serve.label}: created {args.count} backpacks")

        records = data.make_records()
        seeded: dict[str, list[str]] = {}
        targets: list[Target] = []
        for pair in pairs:
            pair.first = pair.serve.hosted(NAME_FORMAT.format(1))
            if pair.number == 1:
                pair.last = pair.serve.hosted(NAME_FORMAT.format(args.count))
            for one in (pair.alone, pair.first, pair.last):
                if one is not None:
                    info = infos.setdefault(one.label, ServerInfo(one.label))
                    seeded[one.label] = prepare_records(one, records, info)
            targets += make_targets(pair, seeded)
        report["targets"] = {t.key: t.label for t in targets}
        for target in targets:
            probe(target)
        # Isolation, and proof that the Host header routes: #1's record is not found in #N.
        first, last = pairs[0].first, pairs[0].last
        assert first is not None and last is not None
        url = f"{serve.base_url}{Backpack.RECORDS}/{seeded[first.label][0]}"
        status, _ = http_raw("GET", url, headers={"Host": serve.host_header(last.instance)})
        if status != 404:
            raise ServerError(f"{first.instance}'s record read through {last.instance}: {status}")
        report["checks"].append(
            "each load's first request answered its own first record (serve-instance, host "
            f"form by Host header, path form); {first.instance}'s record asked of "
            f"{last.instance}'s Host got 404"
        )

        if args.cpus is not None:  # each server on one CPU, wrk on the others
            for pair in pairs:
                for server in (pair.serve, pair.alone):
                    cpu.pin_tree(server.pid, args.cpus[0])
        runs: list[Run] = report["runs"]
        retries = [args.noisy_retries]
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(targets)
            for target in targets[shift:] + targets[:shift]:  # each target leads once
                run = measure_quietly(wrk, args, target, rnd, retries)
                runs.append(run)
                res = run.result
                log(
                    f"round {rnd} {target.label:38s} {res.rps:8.0f} req/s  p50 "
                    f"{res.lat_p50_ms:6.2f} ms  p99 {res.lat_p99_ms:6.2f} ms  non-2xx "
                    f"{res.errors_status}  socket errors {res.socket_errors}  server CPU "
                    f"{run.server_cpu_pct:.0f}%  other CPU {run.other_cpu_pct:.0f}%"
                )
        report["rss_end_kb"] = tree_rss_kb(process_tree(serve.pid))
    finally:
        for pair in pairs:
            for server in (pair.serve, pair.alone):
                server.stop()


# --------------------------------------------------------------------------- report


def of_key(run: Run, key: str) -> bool:
    """Whether `run` is of target `key`; `KEY*` is that target on every pair (KEY, KEY #2 …)."""
    if key.endswith("*"):
        return run.target == key[:-1] or run.target.startswith(key[:-1] + " #")
    return run.target == key


def median_rps(runs: list[Run], key: str) -> float | None:
    values = [r.result.rps for r in runs if of_key(r, key)]
    return statistics.median(values) if values else None


def per_round(runs: list[Run], key: str, base: str) -> list[float]:
    """key / base requests/s (medians over the pairs) of each round in which both ran."""
    out = []
    for rnd in sorted({r.round for r in runs}):
        a = median_rps([r for r in runs if r.round == rnd], key)
        b = median_rps([r for r in runs if r.round == rnd], base)
        if a is not None and b:
            out.append(a / b)
    return out


def ratio_row(
    runs: list[Run], title: str, key: str, base: str, target: str, met: bool | None
) -> str:
    num, den = median_rps(runs, key), median_rps(runs, base)
    ratio = f"{num / den:.2f}" if num is not None and den else "n/a"
    rounds = ", ".join(f"{x:.2f}" for x in per_round(runs, key, base)) or "—"
    shown = "—" if met is None else ("yes" if met else "**no**")
    return f"| {title} | {ratio} | {rounds} | {target} | {shown} |"


def wrk_threads(args: argparse.Namespace) -> int:
    threads: int = args.threads
    return threads if args.cpus is None else min(threads, len(args.cpus[1]))


def pinning(args: argparse.Namespace) -> str:
    if args.cpus is None:
        return (
            "- wrk runs on the same machine as the servers, on any CPU, so it takes CPU from "
            "them too; the same for every target."
        )
    server, load = (",".join(map(str, sorted(cpus))) for cpus in args.cpus)
    return (
        f"- While (3) and (4) are measured, every server process (all its threads) runs on "
        f"CPU {server} only and wrk on CPU {load} (`--no-pin` lets both run anywhere): a "
        "Python server uses one CPU at most, and without pinning the scheduler moves it "
        "and wrk between CPUs run by run, which spread the same process's requests/s over "
        "±20 % here, against ±5 % pinned."
    )


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def render(args: argparse.Namespace, report: dict[str, Any]) -> str:
    runs: list[Run] = report["runs"]
    creation: Creation | None = report.get("creation")
    labels: dict[str, str] = report.get("targets", {})
    n = args.count
    out = ["# Control plane — benchmark results", ""]
    out.append(
        f"- Command: `{report['command']}`"
        + (" (run by `make bench`)" if os.environ.get("MAKELEVEL") else "")
    )
    out.append(f"- Date: {report['started']} (took {report.get('elapsed', 0):.0f} s)")
    status = report.get("error")
    out.append(f"- Status: {'FAILED — ' + status if status else 'completed'}")
    out.append(f"- git commit: {report.get('machine', {}).get('git commit', 'unknown')}")
    if args.quick:
        out.append("- **--quick: a smoke run (few backpacks, short loads); not for the record.**")
    out.append("")

    out += [
        "## Targets",
        "",
        "| Measure | Result | Per round | Target | Met |",
        "|---|---|---|---:|:---:|",
    ]
    if creation is not None and creation.create_ms:
        ms = creation.create_ms
        median = statistics.median(ms)
        out.append(
            f"| (1) create a backpack, {len(ms)} one after another (`POST {ADMIN_API}/instances`)"
            f" | median {median:.1f} ms, p95 {percentile(ms, 95):.1f} ms, max {max(ms):.1f} ms "
            f"| — | median < {CREATE_TARGET_MS:g} ms | "
            f"{'yes' if median < CREATE_TARGET_MS else '**no**'} |"
        )
    if creation is not None and creation.rss_full_kb:
        each = mb(int(creation.per_backpack_kb))
        out.append(
            f"| (2) idle memory added per backpack (RSS with {n} - RSS with 0) / {n} "
            f"| {each:.2f} MB ({mb(creation.rss_empty_kb):.1f} → "
            f"{mb(creation.rss_full_kb):.1f} MB) | — | < {MEMORY_TARGET_MB:g} MB | "
            f"{'yes' if each < MEMORY_TARGET_MB else '**no**'} |"
        )
    if runs:
        last, first = median_rps(runs, "host_last"), median_rps(runs, "host_first")
        spread = abs(last / first - 1) if last is not None and first else None
        out.append(
            ratio_row(
                runs,
                f"(3) (a) on backpack #{n} / on #1, host form",
                "host_last",
                "host_first",
                f"{1 - SPREAD_TARGET:.2f} to {1 + SPREAD_TARGET:.2f}",
                None if spread is None else spread <= SPREAD_TARGET,
            )
        )
        host, alone = median_rps(runs, "host_first*"), median_rps(runs, "alone*")
        pairs = f" ({args.pairs} pairs of processes)" if args.pairs > 1 else ""
        out.append(
            ratio_row(
                runs,
                f"(4) (a) through the host router / on `serve-instance`{pairs}",
                "host_first*",
                "alone*",
                f"≥ {ROUTER_TARGET}",
                None if host is None or not alone else host / alone >= ROUTER_TARGET,
            )
        )
        out.append(
            ratio_row(
                runs,
                "(4) (a) through the path form (/i/NAME) on pair 1 / on `serve-instance`s",
                "path_first",
                "alone*",
                "report only",
                None,
            )
        )
    out.append("")
    if runs:
        out.append(
            "Ratios are of the median requests/s over the rounds (and, for a target measured "
            "on every pair, over the pairs); 'per round' divides the medians of one round. "
            "Server CPU per request (median over rounds, less sensitive than "
            "requests/s to other processes): "
            + "; ".join(
                f"{labels.get(key, key)} {us:.0f} µs"
                for key in labels
                if (
                    us := statistics.median(
                        [x for r in runs if r.target == key and (x := r.cpu_us_per_request)]
                        or [0.0]
                    )
                )
            )
            + "."
        )
        out.append("")

    busy = report.get("busy_before_pct", 0.0)
    worst = max((r.other_cpu_pct for r in runs), default=0.0)
    out += not_idle_warning(busy, worst, "numbers")
    env = sorted(k for k in os.environ if k.startswith("BACKPACK_"))
    if env:
        out += [
            f"**Warning: set in the environment (the servers inherit them): {', '.join(env)}.**",
            "",
        ]

    out += ["## Checks", ""]
    out.append(busy_check(busy, worst))
    if creation is not None and creation.create_ms:
        slow = [i + 1 for i, x in enumerate(creation.create_ms) if x >= CREATE_READY_MS]
        out.append(
            f"- Every create answered 201 with status `running`; each backpack then answered "
            f"`GET /i/NAME/api/health` with 200 and the list showed {n} running. Creates of "
            f"{CREATE_READY_MS:g} ms or more (the issue's 'ready in < 500 ms'): "
            + (", ".join(f"#{i}" for i in slow) if slow else "none")
            + "."
        )
    for info in report["servers"].values():
        for check in info.checks:
            out.append(f"- {info.label}: {check}.")
    for check in report["checks"]:
        out.append(f"- {check}.")
    out += run_checks(
        runs, lambda r: labels.get(r.target, r.target), lambda w: f"{w.socket_errors} socket errors"
    )
    out.append("")

    if creation is not None and creation.create_ms:
        ms, rss = creation.create_ms, creation.rss_kb
        marks = sorted({max(1, round(len(ms) * q / 10)) for q in range(0, 11)})
        out += [
            "## Creating backpacks",
            "",
            "Milliseconds per `POST /admin/api/instances`, as the client saw it (one request "
            "at a time, a new connection each), and serve's RSS right after the create.",
            "",
            "| Backpack # | Create ms | Median so far ms | RSS MB |",
            "|---:|---:|---:|---:|",
        ]
        for i in marks:
            out.append(
                f"| {i} | {ms[i - 1]:.1f} | {statistics.median(ms[:i]):.1f} | "
                f"{mb(rss[i - 1]):.1f} |"
            )
        out.append("")

    if runs:
        out += [
            "## Absolute numbers",
            "",
            f"wrk: {wrk_threads(args)} threads, {CONNECTIONS} connections, {args.warmup:g} s "
            f"warm-up (discarded) then {args.duration:g} s measured, per target, per round.",
            "",
            "| Target | Round | Requests/s | p50 ms | p99 ms | max ms | Requests | Non-2xx "
            "| Socket errors | Server CPU % | CPU µs/request | Other CPU % |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        order = list(labels)
        for r in sorted(runs, key=lambda r: (order.index(r.target), r.round)):
            res = r.result
            per = r.cpu_us_per_request
            out.append(
                f"| {labels[r.target]} | {r.round} | {res.rps:.0f} | {res.lat_p50_ms:.2f} | "
                f"{res.lat_p99_ms:.2f} | {res.lat_max_ms:.1f} | {res.requests} | "
                f"{res.errors_status} | {res.socket_errors} | {r.server_cpu_pct:.0f} | "
                f"{'—' if per is None else f'{per:.0f}'} | {r.other_cpu_pct:.0f} |"
            )
        if report.get("rss_end_kb"):
            out += ["", f"serve's RSS at the end: {mb(report['rss_end_kb']):.1f} MB."]
        out.append("")

    out += ["## Setup", ""]
    for key, value in report.get("machine", {}).items():
        out.append(f"- {key}: {value}")
    for info in report["servers"].values():
        if info.command:
            out.append(f"- {info.label}: {info.version}; started as: `{info.command}`")
        if info.seed_s is not None:
            out.append(
                f"- {info.label}: seeding {data.RECORD_COUNT} records took {info.seed_s:.1f} s"
            )
    out += ["", "## Method", ""]
    out += [
        f"- {args.pairs} pair(s) of processes, each a fresh `backpack serve` (new data "
        "directory, SQLite control store) and a `backpack serve-instance`, run side by side on "
        "127.0.0.1 for the whole run; the load goes to one target at a time. Pair 1 measures "
        "(1) to (4); the other pairs each create the same backpacks and seed the same data, "
        "and serve only (4): one Python process runs a few per cent faster or slower than the "
        "next with the same code and data (memory layout, hash seeds: seen here as up to 5 % "
        "between two serve-instances), a bias that more rounds of the same process do not "
        "average out and more processes do.",
        f"- (1) After first-run setup (one admin, signed in), backpacks `{NAME_FORMAT.format(1)}`"
        f" … `{NAME_FORMAT.format(n)}` are created one after another with `POST "
        f"{ADMIN_API}/instances` (admin bearer token), timed around each request by the "
        "client (urllib, a new connection per request, so a connection setup is included).",
        "- (2) RSS = VmRSS summed over serve's process tree (bench/memory.py), the median of 5 "
        "samples 0.2 s apart after a 1 s pause: once after setup with 0 backpacks, once when "
        f"all {n} exist and each has answered one `GET /i/NAME/api/health`; the difference is "
        f"divided by {n}. Measured before any data is seeded. MB = 10^6 bytes.",
        f"- (3)/(4) Scenario (a) of bench/run.py: collection `items`, {data.RECORD_COUNT} "
        f"records from seed {data.SEED} seeded through the batch API into the serve-instance, "
        f"into backpack #1 and into #{n} (through /i/NAME); GET one record by random id with "
        "bench/lua/get_by_id.lua (fixed per-thread seed). The host form connects to "
        "127.0.0.1:PORT and sends `Host: NAME.localhost:PORT` (a generated Lua wrapper sets "
        "wrk.headers and runs get_by_id.lua); the path form GETs `/i/NAME/api/…`.",
        f"- Per round every target runs once (warm-up, then measured), in a fixed order "
        "rotated by one each round so that each target leads once. The host-form runs on "
        "backpack #1 of pair 1 serve both (3) and (4). Runs in which other processes used "
        f"more than {OTHER_CPU_WARN_PCT:g}% of the CPU are repeated after waiting for an idle "
        f"machine (at most --noisy-retries {args.noisy_retries} in all), keeping the least "
        "disturbed.",
        pinning(args),
        "- Non-2xx counts wrk's `status >= 400` responses: a request the router sent to the "
        "wrong place (or nowhere) would be counted there.",
    ]
    out.append("")
    if status and report.get("traceback"):
        out += ["## Error", "", "```", report["traceback"].rstrip(), "```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.control",
        description="Measure the control plane's targets (creates, memory, routing) with wrk.",
    )
    p.add_argument("--count", type=int, default=None, help="backpacks to create (default 100)")
    p.add_argument("--duration", type=float, default=None, help="seconds measured per run (10)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per run (3)")
    p.add_argument("--rounds", type=int, default=None, help="rounds over every target (3)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (at most its CPUs)")
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the servers and wrk run on any CPU (by default, while (3) and (4) are "
        "measured, every server runs on the first CPU and wrk on the others)",
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="pairs of serve-instance and serve processes that (4) is measured on (3)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 20 backpacks, 1 round of 1 s warm-up + 3 s, no repeats and no wait "
        "for an idle machine (~40 s; else --noisy-retries 4 --wait-idle 30)",
    )
    add_run_options(p, DEFAULT_OUTPUT, time_limit=900.0, noisy_retries=None, wait_idle=None)
    args = p.parse_args(argv)
    quick = {"count": 20, "duration": 3.0, "warmup": 1.0, "rounds": 1, "pairs": 1}
    full = {"count": 100, "duration": 10.0, "warmup": 3.0, "rounds": 3, "pairs": 3}
    if args.quick:
        defaults = quick | {"noisy_retries": 0, "wait_idle": 0.0}
    else:
        defaults = full | {"noisy_retries": 4, "wait_idle": 30.0}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.count < 2 or args.count > 999:
        p.error("--count must be from 2 to 999")
    if min(args.rounds, args.duration, args.warmup, args.threads, args.pairs) < 1:
        p.error("--rounds, --duration, --warmup, --threads and --pairs must be positive")
    args.cpus = cpu.split_cpus() if args.pin else None
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(
        parse_args(argv),
        "control",
        {"servers": {}, "runs": [], "checks": []},
        run_benchmark,
        render,
        lambda report: report.get("creation") is not None,  # else: keep the previous report
    )


if __name__ == "__main__":
    sys.exit(main())
