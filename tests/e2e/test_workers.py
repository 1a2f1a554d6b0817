"""`backpack serve --workers 2`: one port, two processes, one deployment.

Each response names the worker that answered (`X-Backpack-Worker`), so a test
can put a request or a WebSocket on the worker it wants: it opens connections
until one lands there. The deployment runs on the machine's PostgreSQL and
Redis under a deployment name of its own; its databases and Redis keys are
dropped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import free_port, launch
from tests.e2e.control_helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Deployment,
    clean_environment,
    create_instance,
    secret_key,
    set_up,
)
from tests.e2e.helpers import error_of, inside_one_rate_window
from tests.pg import PG_SERVER, drop_databases_named, run_elsewhere

T = TypeVar("T")
REDIS = "redis://127.0.0.1:6379/0"
WORKER = "x-backpack-worker"
SEEN_WITHIN = 1.0  # seconds: a change through one worker reaches the other within this
STARTED = re.compile(r"Worker ([0-9]+) started \(pid ([0-9]+)\)")


def scale_out_env(deployment: str) -> dict[str, str]:
    return {
        "BACKPACK_DATABASE_URL": f"{PG_SERVER}/postgres",
        "BACKPACK_REDIS_URL": REDIS,
        "BACKPACK_DEPLOYMENT": deployment,
    }


def drop_deployment(deployment: str) -> None:
    """Drop the deployment's databases and delete its Redis keys."""

    async def keys() -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS)
        try:
            found = [key async for key in client.scan_iter(match=f"{deployment}:*", count=1000)]
            if found:
                await client.delete(*found)
        finally:
            await client.aclose()

    drop_databases_named(deployment + "_")
    run_elsewhere(keys)


def start_workers(data_dir: Path, env: dict[str, str], workers: int = 2) -> Deployment:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"serve-{port}.log"
    command = [sys.executable, "-m", "backpack", "serve", "--data", str(data_dir)]
    command += ["--port", str(port), "--domain", "localhost", "--workers", str(workers)]
    command += ["--log-level", "info"]
    process = launch(
        command, f"http://127.0.0.1:{port}", log_path, clean_environment(env), "serve --workers"
    )
    return Deployment(port, data_dir, env, process, log_path)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    name = f"tw{secrets.token_hex(5)}"
    running = start_workers(tmp_path_factory.mktemp("workers") / "data", scale_out_env(name))
    try:
        set_up(running)
        yield running
    finally:
        running.stop()
        drop_deployment(name)
    log = running.log()
    assert "Traceback" not in log, log


def worker_pids(deployment: Deployment) -> dict[int, int]:
    """Worker number → pid of its latest start, as the supervisor logged it."""
    found: dict[int, int] = {}
    for match in STARTED.finditer(deployment.log_path.read_text()):
        found[int(match[1])] = int(match[2])
    return found


def on_worker(
    deployment: Deployment,
    worker: int,
    call: Callable[[httpx.Client], T],
    *,
    token: str | None = None,
) -> T:
    """Run `call` with a client whose connection is served by `worker`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(200):
        with httpx.Client(base_url=deployment.url, headers=headers, timeout=30) as client:
            if client.get("/api/health").headers[WORKER] == str(worker):
                return call(client)  # the same keep-alive connection, at once
    raise AssertionError(f"no connection reached worker {worker}")


def request_on(
    deployment: Deployment, worker: int, method: str, path: str, token: str = "", **kw: Any
) -> httpx.Response:
    token = token or deployment.token
    response = on_worker(deployment, worker, lambda c: c.request(method, path, **kw), token=token)
    assert response.headers[WORKER] == str(worker)
    return response


def until(check: Callable[[], bool], within: float = SEEN_WITHIN) -> None:
    """Poll `check` until true; fail unless a check begun within `within` seconds passed."""
    started = time.monotonic()
    while True:
        began = time.monotonic() - started
        if check():
            break
        assert began < within, f"not seen within {within} s"
        time.sleep(0.02)
    assert began <= within, f"seen only after {began:.2f} s"


def new_backpack(deployment: Deployment) -> tuple[str, str]:
    """A new backpack and its key, once both workers serve it."""
    name = create_instance(deployment)
    key = secret_key(deployment, name)
    for worker in (1, 2):
        served_by(deployment, worker, name, key)
    return name, key


def served_by(deployment: Deployment, worker: int, name: str, key: str) -> None:
    path = f"/i/{name}/api/collections"
    until(lambda: request_on(deployment, worker, "GET", path, key).is_success)


async def socket_on(deployment: Deployment, worker: int, path: str) -> ClientConnection:
    """A WebSocket to `path` accepted by `worker`."""
    url = deployment.url.replace("http://", "ws://") + path
    for _ in range(200):
        ws = await connect(url, open_timeout=10)
        assert ws.response is not None
        if ws.response.headers.get(WORKER) == str(worker):
            return ws
        await ws.close()
    raise AssertionError(f"no WebSocket reached worker {worker}")


async def receive(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


def test_both_workers_answer_on_one_port(deployment: Deployment) -> None:
    seen = set()
    for _ in range(100):
        seen.add(httpx.get(deployment.url + "/api/health").headers[WORKER])
        if seen == {"1", "2"}:
            break
    assert seen == {"1", "2"}


async def test_a_write_through_one_worker_reaches_a_subscriber_on_the_other(
    deployment: Deployment,
) -> None:
    name, key = new_backpack(deployment)
    made = request_on(
        deployment, 1, "POST", f"/i/{name}/api/collections", key, json={"name": "notes"}
    )
    assert made.status_code == 201, made.text
    # Worker 2 learns of the new collection over the bus.
    until(
        lambda: request_on(deployment, 2, "GET", f"/i/{name}/api/collections/notes", key).is_success
    )
    ws = await socket_on(deployment, 2, f"/i/{name}/api/realtime?token={key}")
    try:
        assert (await receive(ws))["type"] == "ready"
        await ws.send(json.dumps({"type": "subscribe", "id": "s", "collection": "notes"}))
        assert (await receive(ws)) == {"type": "ack", "id": "s"}
        for text in ("one", "two"):
            written = request_on(
                deployment,
                1,
                "POST",
                f"/i/{name}/api/collections/notes/records",
                key,
                json={"text": text},
            )
            assert written.status_code == 201, written.text
            change = await receive(ws)
            assert change["type"] == "change" and change["action"] == "create", change
            assert change["record"] == written.json()
    finally:
        await ws.close()


def test_create_stop_start_delete_through_one_worker_are_seen_by_the_other(
    deployment: Deployment,
) -> None:
    name = f"seen-{secrets.token_hex(3)}"
    created = request_on(deployment, 1, "POST", "/admin/api/instances", json={"name": name})
    assert created.status_code == 201, created.text
    key = request_on(deployment, 1, "GET", f"/admin/api/instances/{name}/keys").json()["secret_key"]

    def status_on_2() -> int:
        return request_on(deployment, 2, "GET", f"/i/{name}/api/collections", key).status_code

    until(lambda: status_on_2() == 200)
    # The registry's view is the same through either worker.
    shown = request_on(deployment, 2, "GET", f"/admin/api/instances/{name}")
    assert shown.status_code == 200 and shown.json()["status"] == "running", shown.text

    stopped = request_on(deployment, 1, "POST", f"/admin/api/instances/{name}/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped", stopped.text
    until(lambda: status_on_2() == 503)
    shown = request_on(deployment, 2, "GET", f"/admin/api/instances/{name}")
    assert shown.json()["status"] == "stopped"

    started = request_on(deployment, 2, "POST", f"/admin/api/instances/{name}/start")
    assert started.status_code == 200, started.text

    def status_on_1() -> int:
        return request_on(deployment, 1, "GET", f"/i/{name}/api/collections", key).status_code

    until(lambda: status_on_1() == 200)

    deleted = request_on(
        deployment, 1, "DELETE", f"/admin/api/instances/{name}", params={"confirm": name}
    )
    assert deleted.status_code == 204, deleted.text
    until(lambda: status_on_2() == 404)
    gone = request_on(deployment, 2, "GET", f"/admin/api/instances/{name}")
    assert gone.status_code == 404


def test_a_rotated_key_works_at_once_on_both_workers(deployment: Deployment) -> None:
    name, old = new_backpack(deployment)
    for worker in (1, 2):
        seen = request_on(deployment, worker, "GET", f"/i/{name}/api/collections", old)
        assert seen.status_code == 200, seen.text

    rotated = request_on(deployment, 1, "POST", f"/admin/api/instances/{name}/keys/rotate")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret_key"]
    assert new != old
    # At once on the worker that rotated it …
    assert request_on(deployment, 1, "GET", f"/i/{name}/api/collections", old).status_code == 401
    assert request_on(deployment, 1, "GET", f"/i/{name}/api/collections", new).status_code == 200

    # … and within a second on the other.
    def worker_2_takes(key: str) -> bool:
        return request_on(deployment, 2, "GET", f"/i/{name}/api/collections", key).is_success

    until(lambda: worker_2_takes(new) and not worker_2_takes(old))
    keys = request_on(deployment, 2, "GET", f"/admin/api/instances/{name}/keys")
    assert keys.json()["secret_key"] == new


def test_a_restore_through_one_worker_is_served_by_both(deployment: Deployment) -> None:
    name, key = new_backpack(deployment)
    notes = f"/i/{name}/api/collections/notes/records"
    for text in ("kept", "also kept"):
        made = request_on(deployment, 1, "POST", notes, key, json={"text": text})
        assert made.status_code == 201, made.text
    archive = request_on(deployment, 1, "POST", f"/admin/api/instances/{name}/backup")
    assert archive.status_code == 200, archive.text
    made = request_on(deployment, 1, "POST", notes, key, json={"text": "after the backup"})
    assert made.status_code == 201, made.text

    restored = request_on(
        deployment,
        2,
        "POST",
        f"/admin/api/instances/{name}/restore",
        content=archive.content,
        headers={"content-type": "application/x-tar"},
    )
    assert restored.status_code == 200, restored.text
    assert restored.json()["status"] == "running"

    def texts_on(worker: int) -> list[str]:
        response = request_on(deployment, worker, "GET", notes, key, params={"sort": "id"})
        if response.status_code != 200:
            return []
        return [item["text"] for item in response.json()["items"]]

    for worker in (1, 2):
        until(lambda: texts_on(worker) == ["kept", "also kept"])  # noqa: B023


def test_metrics_and_logs_count_both_workers(deployment: Deployment) -> None:
    name, key = new_backpack(deployment)
    ids: dict[int, set[str]] = {1: set(), 2: set()}
    for worker in (1, 2):
        for _ in range(3):
            got = request_on(deployment, worker, "GET", f"/i/{name}/api/collections", key)
            assert got.status_code == 200
            ids[worker].add(got.headers["x-request-id"])
    everyone = ids[1] | ids[2]

    def logged(worker: int) -> set[str]:
        response = request_on(
            deployment, worker, "GET", f"/admin/api/instances/{name}/logs", params={"limit": 100}
        )
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        assert [item["id"] for item in items] == sorted(item["id"] for item in items)
        return {item["request_id"] for item in items if item["type"] == "request"}

    # Each worker flushes its log about once a second; either one then shows both.
    until(lambda: everyone <= logged(1) and everyone <= logged(2), within=5)

    def requests_counted(worker: int) -> int:
        response = request_on(
            deployment,
            worker,
            "GET",
            f"/admin/api/instances/{name}/metrics",
            params={"window": "5m"},
        )
        assert response.status_code == 200, response.text
        count: int = response.json()["totals"]["requests"]
        return count

    until(lambda: requests_counted(1) >= 6 and requests_counted(2) >= 6, within=5)

    text = request_on(deployment, 1, "GET", "/metrics").text
    mine = [
        line
        for line in text.splitlines()
        if line.startswith("backpack_requests_total{") and f'instance="{name}"' in line
    ]
    by_worker = {
        worker: sum(int(line.rsplit(" ", 1)[1]) for line in mine if f'worker="{worker}"' in line)
        for worker in (1, 2)
    }
    assert by_worker[1] >= 3 and by_worker[2] >= 3, mine


async def test_the_log_stream_on_one_worker_shows_requests_served_by_the_other(
    deployment: Deployment,
) -> None:
    name, key = new_backpack(deployment)
    path = f"/admin/api/instances/{name}/logs/stream?token={deployment.token}&type=request"
    ws = await socket_on(deployment, 1, path)
    try:
        served = request_on(deployment, 2, "GET", f"/i/{name}/api/collections", key)
        request_id = served.headers["x-request-id"]
        deadline = time.monotonic() + 5
        while True:
            entry = await receive(ws, max(0.1, deadline - time.monotonic()))
            if entry.get("request_id") == request_id:
                break
    finally:
        await ws.close()


def test_a_killed_worker_is_restarted_while_the_other_serves(deployment: Deployment) -> None:
    pids = worker_pids(deployment)
    assert set(pids) == {1, 2}, pids
    name, key = new_backpack(deployment)
    os.kill(pids[1], signal.SIGKILL)
    # Every request meanwhile is answered (by worker 2 until worker 1 is back).
    answered: set[str] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with httpx.Client(base_url=deployment.url, timeout=10) as client:
            response = client.get(
                f"/i/{name}/api/collections", headers={"Authorization": f"Bearer {key}"}
            )
        assert response.status_code == 200, response.text
        answered.add(response.headers[WORKER])
        if "1" in answered and worker_pids(deployment).get(1, pids[1]) != pids[1]:
            break
        time.sleep(0.05)
    assert answered == {"1", "2"}
    restarted = worker_pids(deployment)
    assert restarted[1] != pids[1] and restarted[2] == pids[2]
    assert "Worker 1 ended (exit status -9); starting it again." in deployment.log_path.read_text()


def test_admin_sign_in_attempts_are_counted_across_workers(deployment: Deployment) -> None:
    """The limit (10 a minute per address and per email) holds for the deployment, not per
    worker: alternating workers does not buy an attacker twice the guesses. (Last of the
    module's tests on the deployment: it uses up this address's sign-ins for a minute.)"""
    attempt = {"email": "intruder@example.com", "password": "a guess of twelve"}
    inside_one_rate_window()  # the attempts never straddle two shared windows
    statuses: list[int] = []
    response = None
    for number in range(1, 23):  # 10 a minute in each worker would let 20 through
        response = request_on(deployment, 1 + number % 2, "POST", "/admin/api/login", json=attempt)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
        time.sleep(0.05)  # each worker's hits reach Redis, and the totals come back, meanwhile
    assert response is not None and statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {401}, statuses
    assert len(statuses) <= 12, statuses  # the 11th attempt, or one more in flight
    assert error_of(response, 429, "rate_limited")["message"]
    assert int(response.headers["retry-after"]) >= 1
    # The admin's own sign-in from this address waits too, on either worker.
    admin = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    for worker in (1, 2):
        refused = request_on(deployment, worker, "POST", "/admin/api/login", json=admin)
        error_of(refused, 429, "rate_limited")


def test_more_workers_need_redis_or_postgres(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "backpack", "serve", "--data", str(tmp_path / "data")]
    command += ["--port", str(free_port()), "--workers", "2"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=clean_environment({})
    )
    assert result.returncode == 1
    assert "BACKPACK_REDIS_URL" in result.stderr and "BACKPACK_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "serve.lock").exists()
