"""Faults of a scale-out backpack (issue 9): its PostgreSQL restarts, its Redis goes away,
500 clients at once against a small connection pool.

Each test runs a real `serve-instance` on PostgreSQL + Redis servers of its own
(tests/services.py), so it can stop and kill them without touching the machine's.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, start_server
from tests.e2e.helpers import ALL_TRUE, error_of
from tests.e2e.test_realtime import open_ws
from tests.services import PrivatePostgres, PrivateRedis, private_postgres, private_redis


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


def scale_out_server(
    tmp_path: Path, postgres: PrivatePostgres, redis: PrivateRedis, **env: str
) -> RunningServer:
    database = postgres.create_database(f"f{secrets.token_hex(5)}")
    key = "bpk_" + secrets.token_urlsafe(32)
    environment = {"BACKPACK_DATABASE_URL": database, "BACKPACK_REDIS_URL": redis.url, **env}
    return start_server(tmp_path / "data", key=key, env=environment)


def answers_503_in_shape(response: httpx.Response) -> None:
    error_of(response, 503, "unavailable")


def test_postgres_restarts_while_writes_flow(
    tmp_path: Path, postgres: PrivatePostgres, redis: PrivateRedis
) -> None:
    server = scale_out_server(tmp_path, postgres, redis)
    try:
        api = server.client()
        assert api.post("/api/collections", json={"name": "notes", "rules": ALL_TRUE}).is_success
        acknowledged: list[str] = []
        refused: list[httpx.Response] = []
        stop = threading.Event()

        def write() -> None:
            with server.client() as client:
                number = 0
                while not stop.is_set():
                    number += 1
                    try:
                        response = client.post(
                            "/api/collections/notes/records", json={"n": number}, timeout=30
                        )
                    except httpx.TransportError:
                        continue
                    if response.status_code == 201:
                        acknowledged.append(response.json()["id"])
                    else:
                        refused.append(response)

        writers = [threading.Thread(target=write) for _ in range(4)]
        for thread in writers:
            thread.start()
        time.sleep(1.0)
        before = len(acknowledged)
        postgres.restart()
        time.sleep(3.0)  # writes go on once the server is back, without restarting Backpack
        stop.set()
        for thread in writers:
            thread.join(60)
        assert before > 0
        assert len(acknowledged) > before, "no write succeeded after PostgreSQL came back"
        for response in refused:  # in flight during the restart: 503, the contract's shape
            answers_503_in_shape(response)
        # No acknowledged write is lost.
        stored: set[str] = set()
        after: str | None = None
        while True:
            params = {"limit": "500", **({"after": after} if after else {})}
            page = api.get("/api/collections/notes/records", params=params).json()
            stored.update(item["id"] for item in page["items"])
            after = page.get("next")
            if not after:
                break
        assert set(acknowledged) <= stored
        api.close()
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


async def test_redis_down_sessions_and_realtime_carry_on(
    tmp_path: Path, postgres: PrivatePostgres, redis: PrivateRedis
) -> None:
    server = scale_out_server(tmp_path, postgres, redis)
    try:
        api = server.client()
        assert api.post("/api/collections", json={"name": "live", "rules": ALL_TRUE}).is_success
        signup = httpx.post(
            server.url + "/api/auth/signup",
            json={"email": "r@example.com", "password": "redis is down"},
        )
        assert signup.status_code == 201, signup.text
        token = signup.json()["token"]
        ws = await open_ws(server, token)
        await ws.subscribe("s", "live")
        created = api.post("/api/collections/live/records", json={"n": 1})
        assert (await ws.expect("change"))["record"]["n"] == 1

        redis.kill()
        # Sessions are checked against the database; writes do not wait for the bus.
        me = httpx.get(server.url + "/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        for number in (2, 3):
            response = api.post("/api/collections/live/records", json={"n": number})
            assert response.status_code == 201, response.text
        assert created.status_code == 201
        login = httpx.post(
            server.url + "/api/auth/login",
            json={"email": "r@example.com", "password": "redis is down"},
        )
        assert login.status_code == 200, login.text

        redis.start()  # same port: the bus reconnects and tells subscribers to refetch
        message = await ws.recv(timeout=30)
        while message["type"] == "change":  # events that made it before the bus noticed
            message = await ws.recv(timeout=30)
        assert message["type"] == "resync", message
        deadline = time.monotonic() + 30
        while True:  # events flow again once the subscription is back
            api.post("/api/collections/live/records", json={"n": 99})
            try:
                got = await ws.recv(timeout=1)
            except TimeoutError:
                assert time.monotonic() < deadline, "no event after Redis came back"
                continue
            if got["type"] == "change" and got["record"]["n"] == 99:
                break
        await ws.close()
        api.close()
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


async def test_500_clients_on_a_small_pool_queue_and_never_500(
    tmp_path: Path, postgres: PrivatePostgres, redis: PrivateRedis
) -> None:
    server = scale_out_server(tmp_path, postgres, redis, BACKPACK_DATABASE_POOL="4")
    try:
        with server.client() as api:
            made = api.post("/api/collections", json={"name": "busy", "rules": ALL_TRUE})
            assert made.status_code == 201, made.text
            first = api.post("/api/collections/busy/records", json={"n": 0}).json()["id"]
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
        statuses: dict[int, int] = {}
        async with httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.key}"},
            limits=limits,
            timeout=120,
        ) as client:

            async def one(number: int) -> httpx.Response:
                if number % 2:
                    return await client.get(f"/api/collections/busy/records/{first}")
                return await client.post("/api/collections/busy/records", json={"n": number})

            responses = await asyncio.gather(*(one(n) for n in range(500)))
        bad: list[Any] = []
        for response in responses:
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 503:
                answers_503_in_shape(response)
            elif response.status_code not in (200, 201):
                bad.append((response.status_code, response.text[:200]))
        assert not bad, bad
        assert statuses.get(200, 0) + statuses.get(201, 0) >= 450, statuses
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()
