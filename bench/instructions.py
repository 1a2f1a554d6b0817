"""Instructions per request, counted by valgrind's callgrind: overheads that wall-clock
benchmarks on a shared machine cannot resolve.

    .venv/bin/python -m bench.instructions            # writes bench/INSTRUCTIONS.md

Requests/s moves with whatever else the machine runs; the number of instructions a
server executes for one request does not (callgrind counts them, whatever the load).
Two overheads are measured so:

- issue 3 (g): a GET of a public record with a user's session token vs the same GET
  without one, on `backpack serve-instance`: the cost of checking the session;
- issue 7: the same GET through `backpack serve` (host routing, metrics and the request
  log of the control plane) vs `serve-instance` alone.

Each server runs under `valgrind --tool=callgrind --instr-atstart=no`; after a warm-up
(unmeasured) the bench switches counting on, sends `--requests` identical GETs on one
keep-alive connection, switches it off and dumps. Counts are user-space instructions of
the whole server process (uvicorn, the app, SQLite); the kernel's share is not counted.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.servers import free_port, venv_script

REPORT = Path(__file__).resolve().parent / "INSTRUCTIONS.md"
SESSION_TARGET_PCT = 5.0
ROUTER_TARGET = 0.95
_TOTAL = re.compile(r"^\s*([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", re.MULTILINE)
START_TIMEOUT_S = 120.0  # servers start slowly under valgrind


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    out_prefix: Path
    key: str  # the secret key of serve-instance (serve ignores it)

    def control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.process.pid)], check=True, capture_output=True
        )


@contextmanager
def under_callgrind(command: list[str], workdir: Path, label: str) -> Iterator[Server]:
    port = free_port()
    out_prefix = workdir / f"{label}.callgrind"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    valgrind.append(f"--callgrind-out-file={out_prefix}.%n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPACK_")}
    env["BACKPACK_SECRET_KEY"] = "bpk_" + secrets.token_urlsafe(32)
    with (workdir / f"{label}.log").open("wb") as log:
        process = subprocess.Popen(
            [*valgrind, *command, "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", out_prefix, env["BACKPACK_SECRET_KEY"])
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{label} exited while starting; see {workdir}/{label}.log")
            try:
                if httpx.get(server.url + "/api/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{label} did not start in {START_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(server: Server, client: httpx.Client, url: str, requests: int, tag: str) -> float:
    """Instructions per GET of `url`, averaged over `requests`."""
    for _ in range(min(300, requests)):  # warm-up: caches, code paths, the session cache
        client.get(url).raise_for_status()
    server.control("--zero")
    server.control("--instr=on")
    for _ in range(requests):
        client.get(url).raise_for_status()
    server.control("--instr=off")
    server.control("--dump=" + tag)
    time.sleep(0.5)
    dumps = sorted(server.out_prefix.parent.glob(server.out_prefix.name + ".*"))
    annotate = subprocess.run(
        ["callgrind_annotate", str(dumps[-1])], check=True, capture_output=True, text=True
    ).stdout
    match = _TOTAL.search(annotate)
    if match is None:
        raise SystemExit(f"no total in {dumps[-1]}")
    return int(match[1].replace(",", "")) / requests


def admin_client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def seed(api: httpx.Client) -> str:
    api.patch("/api/settings", json={"rate_limits": {"auth_per_minute": 0}}).raise_for_status()
    rules = {"list": True, "read": True}
    api.post("/api/collections", json={"name": "items", "rules": rules}).raise_for_status()
    record = api.post("/api/collections/items/records", json={"title": "x", "score": 1})
    record.raise_for_status()
    record_id: str = record.json()["id"]
    return record_id


def run(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    backpack = venv_script("backpack")
    if backpack is None:
        raise SystemExit("the `backpack` command was not found: make .venv/.installed")
    result: dict[str, float] = {}
    instance = [str(backpack), "serve-instance", "--data", str(workdir / "instance")]
    with under_callgrind(instance, workdir, "instance") as server:
        with admin_client(server.url, server.key) as api:
            record_id = seed(api)
        signup = httpx.post(
            server.url + "/api/auth/signup",
            json={"email": "bench@example.com", "password": "bench-password"},
            timeout=60,
        )
        signup.raise_for_status()
        token = signup.json()["token"]
        url = f"/api/collections/items/records/{record_id}"
        with httpx.Client(base_url=server.url, timeout=60) as anonymous:
            result["instance_anonymous"] = measure(
                server, anonymous, url, args.requests, "anonymous"
            )
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as signed_in:
            result["instance_session"] = measure(server, signed_in, url, args.requests, "session")

    deployment = [str(backpack), "serve", "--data", str(workdir / "deployment")]
    with under_callgrind(deployment, workdir, "serve") as server:
        setup = httpx.post(
            server.url + "/admin/api/setup",
            json={"email": "bench@example.com", "password": "bench-password"},
            timeout=60,
        )
        setup.raise_for_status()
        with admin_client(server.url, setup.json()["token"]) as admin:
            admin.post("/admin/api/instances", json={"name": "bench"}).raise_for_status()
            key = admin.get("/admin/api/instances/bench/keys").json()["secret_key"]
        with admin_client(server.url + "/i/bench", key) as api:
            record_id = seed(api)
        url = f"/api/collections/items/records/{record_id}"
        host = {"Host": "bench.localhost"}
        with httpx.Client(base_url=server.url, headers=host, timeout=60) as routed:
            result["router_host"] = measure(server, routed, url, args.requests, "router")
    return result


def render(args: argparse.Namespace, result: dict[str, float], command: str) -> str:
    anonymous = result["instance_anonymous"]
    session = result["instance_session"]
    routed = result["router_host"]
    session_pct = (session - anonymous) / anonymous * 100
    router_ratio = anonymous / routed
    lines = [
        "# Instructions per request (callgrind)",
        "",
        f"Command: `{command}`",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"{args.requests} requests per measure. Counts do not depend on the machine's load: "
        "they are what the server executes, not how long it took (see bench/instructions.py).",
        "",
        "| Measure | Instructions per request | Result | Target |",
        "|---|---:|---:|---:|",
        f"| `serve-instance`, GET one record, anonymous | {anonymous:,.0f} | — | — |",
        f"| the same GET with a user's session token | {session:,.0f} | "
        f"+{session_pct:.1f} % | < {SESSION_TARGET_PCT:.0f} % (issue 3 (g)) |",
        f"| the same GET through `serve` (host routing, metrics, request log) | {routed:,.0f} | "
        f"{router_ratio:.3f} | ≥ {ROUTER_TARGET} (issue 7) |",
        "",
        "The router's result is `serve-instance`'s instructions ÷ `serve`'s: the share of "
        "`serve-instance`'s throughput the router would reach if the CPU were the only limit.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("--requests", type=int, default=2000, help="GETs counted per measure")
    p.add_argument("--output", type=Path, default=REPORT)
    p.add_argument("--keep", type=Path, help="copy the callgrind files and logs here")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is missing: apt-get install -y valgrind")
    command = "python -m bench.instructions " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="bp-instructions-") as scratch:
        result = run(args, Path(scratch))
        if args.keep:
            shutil.copytree(scratch, args.keep, dirs_exist_ok=True)
    report = render(args, result, command.strip())
    args.output.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
