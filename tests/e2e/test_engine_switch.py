"""The servers the tests start run on the engine BACKPACK_TEST_ENGINE names (tests/engine.py).

On `postgres`, records must land in PostgreSQL and rate-limit counters in Redis,
and no SQLite file may appear; on the default, the reverse. A switch that
silently fell back to the embedded default fails here.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import httpx

from tests import engine
from tests.conftest import start_server
from tests.e2e.control_helpers import (
    add_record,
    create_instance,
    running_deployment,
    secret_key,
)
from tests.pg import database_exists, pg_connect, run_elsewhere


def collections_in(database: str) -> list[str]:
    """The collections a backpack's PostgreSQL database holds."""

    async def work() -> list[str]:
        conn = await pg_connect(database)
        try:
            rows = await conn.fetch("SELECT name FROM _collections ORDER BY name")
            return [str(row[0]) for row in rows]
        finally:
            await conn.close()

    return run_elsewhere(work)


def redis_keys(pattern: str) -> list[bytes]:
    from redis.asyncio import Redis

    async def work() -> list[bytes]:
        client = Redis.from_url(engine.REDIS_URL)
        try:
            return [key async for key in client.scan_iter(match=pattern)]
        finally:
            await client.aclose()

    return asyncio.run(work())


def test_a_lone_backpack_runs_on_the_configured_engine(tmp_path: Path) -> None:
    key = "bpk_" + secrets.token_urlsafe(32)
    data = tmp_path / "data"
    server = start_server(data, key=key)
    try:
        with server.client() as client:
            add_record(client, {"text": "where am I"}, collection="proof")
        with server.client(key=False) as anon:
            login = anon.post(
                "/api/auth/login", json={"email": "no@example.com", "password": "wrong password"}
            )
            assert login.status_code == 401, login.text
        if engine.POSTGRES:
            database = engine.instance_database(data)
            assert "proof" in collections_in(database)
            assert not (data / "backpack.db").exists()
            assert redis_keys(f"{engine.INSTANCE_DEPLOYMENT}:{database}:ratelimit:*")
        else:
            assert (data / "backpack.db").is_file()
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_a_deployment_gives_each_backpack_the_configured_engine(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for deployment in running_deployment(data):
        name = create_instance(deployment)
        with deployment.backpack(name, secret_key(deployment, name)) as client:
            add_record(client, {"text": "where am I"})
        directory = data / "instances" / name
        if engine.POSTGRES:
            database = engine.backpack_database(data, name)
            assert "notes" in collections_in(database)
            assert not (directory / "backpack.db").exists()
        else:
            assert (directory / "backpack.db").is_file()
        with deployment.admin() as admin:
            deleted = admin.delete(f"/admin/api/instances/{name}", params={"confirm": name})
            assert deleted.status_code == 204, deleted.text
        if engine.POSTGRES:
            assert not database_exists(database)
        assert httpx.get(f"{deployment.url}/i/{name}/api/health").status_code == 404
