"""Run wrk (Debian's `wrk` package) and read the JSON line its Lua `done` hook prints."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_DIR = Path(__file__).resolve().parent / "lua"
GET_BY_ID_LUA = LUA_DIR / "get_by_id.lua"
CREATE_LUA = LUA_DIR / "create.lua"
FIXED_LUA = LUA_DIR / "fixed.lua"
AUTH_GET_LUA = LUA_DIR / "auth_get.lua"
LOGIN_LUA = LUA_DIR / "login.lua"
UPLOAD_LUA = LUA_DIR / "upload.lua"

# Placeholders in Load.script_args that run_wrk fills in per invocation.
THREADS_ARG = "{threads}"  # the number of wrk threads
RUN_ARG = "{run}"  # a string unique to this wrk invocation
_INVOCATIONS = itertools.count(1)

INSTALL_HINT = "apt-get install -y wrk"
_MARKER = "BENCH_JSON "


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Load:
    """What one wrk run sends: a base URL, a Lua script and its arguments.

    `{threads}` and `{run}` in script_args are replaced when wrk starts (see run_wrk).
    """

    url: str
    script: Path
    script_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors_connect: int
    errors_read: int
    errors_write: int
    errors_status: int  # responses with a status >= 400 (wrk's "Non-2xx or 3xx")
    errors_timeout: int
    lat_p50_ms: float
    lat_p90_ms: float
    lat_p99_ms: float
    lat_max_ms: float
    lat_mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def socket_errors(self) -> int:
        return self.errors_connect + self.errors_read + self.errors_write + self.errors_timeout

    @property
    def ok_requests(self) -> int:
        """Completed responses with a status below 400."""
        return self.requests - self.errors_status


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded now: the child below only calls into it
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: get SIGKILL if the harness dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _pinned_child(cpus: set[int]) -> None:
    die_with_parent()
    os.sched_setaffinity(0, cpus)


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(f"wrk is not installed; install it with: {INSTALL_HINT}")
    return path


def wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (proc.stdout + proc.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def run_wrk(
    wrk: str,
    load: Load,
    *,
    threads: int,
    connections: int,
    duration_s: float,
    timeout_s: float = 10.0,
    cpus: set[int] | None = None,
) -> WrkResult:
    """One wrk run of `load`; on `cpus` only, when given."""
    cmd = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        f"--script={load.script}",
        load.url,
    ]
    if load.script_args:
        run_id = f"{os.getpid():x}.{next(_INVOCATIONS)}"
        cmd += [
            "--",
            *(
                a.replace(THREADS_ARG, str(threads)).replace(RUN_ARG, run_id)
                for a in load.script_args
            ),
        ]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=duration_s + timeout_s + 30,
            check=False,
            preexec_fn=die_with_parent if cpus is None else lambda: _pinned_child(cpus),
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish in time: {' '.join(cmd)}") from exc
    line = next((x for x in proc.stdout.splitlines() if x.startswith(_MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise WrkError(
            f"wrk failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
        )
    raw = json.loads(line[len(_MARKER) :])

    def ms(key: str) -> float:
        return float(raw[key]) / 1000.0

    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=float(raw["duration_us"]) / 1e6,
        errors_connect=int(raw["errors_connect"]),
        errors_read=int(raw["errors_read"]),
        errors_write=int(raw["errors_write"]),
        errors_status=int(raw["errors_status"]),
        errors_timeout=int(raw["errors_timeout"]),
        lat_p50_ms=ms("lat_p50_us"),
        lat_p90_ms=ms("lat_p90_us"),
        lat_p99_ms=ms("lat_p99_us"),
        lat_max_ms=ms("lat_max_us"),
        lat_mean_ms=ms("lat_mean_us"),
    )
