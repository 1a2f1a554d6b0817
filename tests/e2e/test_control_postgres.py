"""`backpack serve` with its admins and registry in PostgreSQL (BACKPACK_CONTROL_DATABASE_URL).

PostgreSQL runs on 127.0.0.1:5432 (user postgres, trust auth); the test makes a
database of its own and drops it afterwards. Without a server it fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.control_helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    add_record,
    create_instance,
    instance,
    record_texts,
    secret_key,
    start_deployment,
)
from tests.e2e.helpers import error_of
from tests.pg import PG_SERVER, fresh_database, pg_connect


def _sql(database: str, sql: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await pg_connect(database)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def control_db() -> Iterator[str]:
    """A fresh, empty PostgreSQL database's name."""
    with fresh_database("bp_control_e2e") as name:
        yield name


def test_admins_and_instances_live_in_postgres(tmp_path: Path, control_db: str) -> None:
    env = {"BACKPACK_CONTROL_DATABASE_URL": f"{PG_SERVER}/{control_db}"}
    data = tmp_path / "data"
    deployment = start_deployment(data, env=env)
    try:
        with deployment.client() as client:
            assert client.get("/admin/api/setup").json() == {"needed": True}
            setup = client.post(
                "/admin/api/setup", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
            assert setup.status_code == 201, setup.text
            error_of(
                client.post(
                    "/admin/api/setup", json={"email": "b@example.com", "password": "b password"}
                ),
                409,
                "conflict",
            )
            login = client.post(
                "/admin/api/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
            assert login.status_code == 200, login.text
            deployment.token = login.json()["token"]
            wrong = client.post(
                "/admin/api/login", json={"email": ADMIN_EMAIL, "password": "not the password"}
            )
            error_of(wrong, 401, "unauthorized")
        emails = [row["email"] for row in _sql(control_db, "SELECT email FROM admins")]
        assert emails == [ADMIN_EMAIL]
        assert not (data / "control.db").exists()

        running, stopped = create_instance(deployment, "kept"), create_instance(deployment, "idle")
        key = secret_key(deployment, running)
        with deployment.backpack(running, key) as bp:
            add_record(bp, {"text": "survives"})
        with deployment.admin() as admin:
            assert admin.post(f"/admin/api/instances/{stopped}/stop").status_code == 200
            error_of(admin.post("/admin/api/instances", json={"name": "kept"}), 409, "conflict")

        deployment.restart()
        assert deployment.token  # the session is in PostgreSQL, so it outlived the process
        assert instance(deployment, running)["status"] == "running"
        assert instance(deployment, stopped)["status"] == "stopped"
        with deployment.backpack(running, key) as bp:
            assert record_texts(bp) == ["survives"]
        with deployment.admin() as admin:
            assert admin.get("/admin/api/setup").json() == {"needed": False}
            assert admin.get("/admin/api/me").json()["email"] == ADMIN_EMAIL
        names = sorted(row["name"] for row in _sql(control_db, "SELECT name FROM instances"))
        assert names == ["idle", "kept"]
        assert not (data / "control.db").exists()
    finally:
        deployment.stop()
    assert "Traceback" not in deployment.log(), deployment.log()
