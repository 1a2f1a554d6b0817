"""`backpack serve-instance --workers N` on PostgreSQL + Redis: one port, N processes,
realtime across them, and a worker killed with SIGKILL is replaced."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, free_port, launch, stop_process
from tests.e2e.helpers import ALL_TRUE
from tests.e2e.test_realtime import open_ws
from tests.services import PrivatePostgres, PrivateRedis, private_postgres, private_redis

BACKPACK = (sys.executable, "-m", "backpack")


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(entry))
    return found


def workers_of(pid: int) -> set[int]:
    """uvicorn's worker processes under the server (multiprocessing adds a tracker too)."""
    return {child for child in children(pid) if b"spawn_main" in _cmdline(child)}


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    with private_postgres() as postgres, private_redis() as redis:
        yield postgres, redis


def start(tmp_path: Path, env: dict[str, str], workers: int = 2) -> RunningServer:
    port = free_port()
    key = "bpk_" + secrets.token_urlsafe(32)
    data = tmp_path / "data"
    command = [sys.executable, "-m", "backpack", "serve-instance", "--data", str(data)]
    command += ["--port", str(port), "--workers", str(workers)]
    environ = {**os.environ, **env, "BACKPACK_SECRET_KEY": key}
    url = f"http://127.0.0.1:{port}"
    process = launch(command, url, tmp_path / "server.log", environ, "serve-instance")
    return RunningServer(url, key, data, process, tmp_path / "server.log")


async def test_two_workers_share_events_and_survive_sigkill(
    tmp_path: Path, services: tuple[PrivatePostgres, PrivateRedis]
) -> None:
    postgres, redis = services
    database = postgres.create_database(f"w{secrets.token_hex(5)}")
    server = start(tmp_path, {"BACKPACK_DATABASE_URL": database, "BACKPACK_REDIS_URL": redis.url})
    try:
        deadline = time.monotonic() + 30
        while len(workers_of(server.process.pid)) < 2:
            assert time.monotonic() < deadline, "two workers did not start"
            time.sleep(0.1)
        api = server.client()
        assert api.post("/api/collections", json={"name": "w", "rules": ALL_TRUE}).is_success
        # Sockets land on both workers; every one of them gets each change, whichever
        # worker took the write.
        sockets = [await open_ws(server) for _ in range(8)]
        for ws in sockets:
            await ws.subscribe("s", "w")
        for number in range(4):
            with server.client() as fresh:  # a new connection each time: any worker
                created = fresh.post("/api/collections/w/records", json={"n": number})
                assert created.status_code == 201, created.text
            for ws in sockets:
                assert (await ws.expect("change"))["record"]["n"] == number

        # SIGKILL one worker: the other answers meanwhile; a new one takes its place.
        before = workers_of(server.process.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        answered = 0
        deadline = time.monotonic() + 30
        while True:
            with server.client() as fresh:
                if fresh.get("/api/health").status_code == 200:
                    answered += 1
            now = workers_of(server.process.pid)
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, f"no replacement worker: {now}"
            await asyncio.sleep(0.05)
        assert answered > 0
        for ws in sockets:
            await ws.close()
        api.close()
    finally:
        stop_process(server.process)
    assert "Traceback" not in server.log(), server.log()


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_definitions_changed_through_one_worker_hold_on_all(
    engine: str, tmp_path: Path, services: tuple[PrivatePostgres, PrivateRedis]
) -> None:
    """Collections, rules, settings and buckets are cached per process: a change made
    through one worker reaches the others over the bus (records on PostgreSQL, or in one
    SQLite file that both workers open)."""
    postgres, redis = services
    env = {"BACKPACK_REDIS_URL": redis.url}
    if engine == "postgres":
        env["BACKPACK_DATABASE_URL"] = postgres.create_database(f"d{secrets.token_hex(5)}")
    server = start(tmp_path, env)

    def everywhere(check: Callable[[httpx.Client], bool], what: str) -> None:
        """`check` holds on 12 fresh connections in a row (they land on both workers)."""
        deadline = time.monotonic() + 5
        streak = 0
        while streak < 12:
            assert time.monotonic() < deadline, f"not every worker sees {what}"
            with server.client() as fresh:
                streak = streak + 1 if check(fresh) else 0

    try:
        with server.client() as api:
            made = api.post("/api/collections", json={"name": "docs", "rules": ALL_TRUE})
            assert made.status_code == 201, made.text
            api.post("/api/collections/docs/records", json={"n": 1}).raise_for_status()
        anonymous = httpx.Client(base_url=server.url)
        everywhere(lambda c: c.get("/api/collections/docs/records").status_code == 200, "docs")
        with server.client() as api:
            locked = api.patch("/api/collections/docs", json={"rules": {"list": None}})
            assert locked.status_code == 200, locked.text
        everywhere(
            lambda c: anonymous.get("/api/collections/docs/records").status_code == 403,
            "the new list rule",
        )
        with server.client() as api:
            api.patch("/api/settings", json={"allowed_origins": ["https://app.example"]})
        everywhere(
            lambda c: c.get("/api/settings").json()["allowed_origins"] == ["https://app.example"],
            "the new settings",
        )
        with server.client() as api:
            bucket = api.put("/api/buckets/pics", json={"rules": {"read": True}, "max_size": 10})
            assert bucket.status_code in (200, 201), bucket.text
        everywhere(
            lambda c: c.get("/api/buckets/pics").json().get("max_size") == 10, "the new bucket"
        )
        anonymous.close()
    finally:
        stop_process(server.process)
    assert "Traceback" not in server.log(), server.log()


def test_writes_right_after_a_collection_appears_never_conflict(
    tmp_path: Path, services: tuple[PrivatePostgres, PrivateRedis]
) -> None:
    """A write that makes a collection on one worker, and writes to it at once on the other
    (which has not heard of it yet): the second worker learns it instead of answering 409."""
    postgres, redis = services
    database = postgres.create_database(f"c{secrets.token_hex(5)}")
    server = start(tmp_path, {"BACKPACK_DATABASE_URL": database, "BACKPACK_REDIS_URL": redis.url})
    try:
        statuses: list[int] = []

        def write(name: str, number: int) -> None:
            with server.client() as fresh:  # a connection of its own: either worker
                response = fresh.post(f"/api/collections/{name}/records", json={"n": number})
                statuses.append(response.status_code)

        for round_ in range(8):
            name = f"made_{round_}"
            threads = [threading.Thread(target=write, args=(name, n)) for n in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert statuses == [201] * 48, statuses
    finally:
        stop_process(server.process)
    assert "Traceback" not in server.log(), server.log()


def test_workers_need_a_shared_bus(tmp_path: Path) -> None:
    result = subprocess.run(
        [*BACKPACK, "serve-instance", "--data", str(tmp_path / "d"), *("--workers", "2")],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("BACKPACK_")},
    )
    assert result.returncode == 1
    assert "BACKPACK_REDIS_URL" in result.stderr and "Traceback" not in result.stderr
