"""A deployment on PostgreSQL + Redis: a database per backpack, backups either way, and
`backpack instances move` between the embedded SQLite file and PostgreSQL.

These run in every mode of the suite: they set the scale-out services themselves.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.control_helpers import (
    Deployment,
    add_record,
    clean_environment,
    create_instance,
    record_texts,
    running_deployment,
    secret_key,
)
from tests.e2e.helpers import error_of
from tests.pg import PG_SERVER, databases_named, drop_databases_named

REDIS = "redis://127.0.0.1:6379/0"


def databases(prefix: str) -> set[str]:
    return databases_named(prefix + "_")


@pytest.fixture
def scale_out() -> Iterator[dict[str, str]]:
    """The environment of a deployment on the machine's PostgreSQL and Redis, its own name."""
    deployment = f"te{secrets.token_hex(5)}"
    yield {
        "BACKPACK_DATABASE_URL": f"{PG_SERVER}/postgres",
        "BACKPACK_REDIS_URL": REDIS,
        "BACKPACK_DEPLOYMENT": deployment,
    }
    drop_databases_named(deployment + "_")


def cli(data: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backpack", *args, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_environment({**env, "COLUMNS": "200"}),
    )


def engine_of(deployment: Deployment, name: str) -> str:
    return (deployment.data_dir / "instances" / name / "engine").read_text().strip()


def backup(deployment: Deployment, name: str) -> bytes:
    with deployment.admin() as admin:
        response = admin.post(f"/admin/api/instances/{name}/backup")
    assert response.status_code == 200, response.text
    return response.content


def restore(deployment: Deployment, name: str, archive: bytes) -> httpx.Response:
    with deployment.admin() as admin:
        return admin.post(
            f"/admin/api/instances/{name}/restore",
            content=archive,
            headers={"content-type": "application/x-tar"},
        )


def test_backpacks_live_in_their_own_databases(scale_out: dict[str, str], tmp_path: Path) -> None:
    prefix = scale_out["BACKPACK_DEPLOYMENT"]
    data = tmp_path / "data"
    for deployment in running_deployment(data, scale_out):
        name = create_instance(deployment, "alpha")
        assert databases(prefix) == {f"{prefix}_alpha"}
        assert engine_of(deployment, name) == "postgres"
        key = secret_key(deployment, name)
        with deployment.backpack(name, key) as client:
            add_record(client, {"text": "one"})
            add_record(client, {"text": "two"})
            signup = client.post(
                "/api/auth/signup", json={"email": "ada@example.com", "password": "pw-123456"}
            )
            assert signup.status_code == 201, signup.text
            assert not (deployment.data_dir / "instances" / name / "backpack.db").exists()

            # A backup of a PostgreSQL backpack restores as a new one, on PostgreSQL too.
            archive = backup(deployment, name)
            add_record(client, {"text": "after the backup"})
        response = restore(deployment, "beta", archive)
        assert response.status_code == 200, response.text
        assert databases(prefix) == {f"{prefix}_alpha", f"{prefix}_beta"}
        with deployment.backpack("beta", key) as client:
            assert sorted(record_texts(client)) == ["one", "two"]
            login = client.post(
                "/api/auth/login", json={"email": "ada@example.com", "password": "pw-123456"}
            )
            assert login.status_code == 200, login.text

        # Restoring over a backpack replaces its database; the others stay.
        response = restore(deployment, name, archive)
        assert response.status_code == 200, response.text
        with deployment.backpack(name, key) as client:
            assert sorted(record_texts(client)) == ["one", "two"]
        assert databases(prefix) == {f"{prefix}_alpha", f"{prefix}_beta"}

        # A damaged archive changes nothing.
        response = restore(deployment, name, archive[: len(archive) // 2])
        error_of(response, 400, "bad_request")
        with deployment.backpack(name, key) as client:
            assert sorted(record_texts(client)) == ["one", "two"]

        with deployment.admin() as admin:
            gone = admin.delete("/admin/api/instances/beta", params={"confirm": "beta"})
        assert gone.status_code == 204, gone.text
        assert databases(prefix) == {f"{prefix}_alpha"}


def test_move_to_sqlite_and_back(scale_out: dict[str, str], tmp_path: Path) -> None:
    prefix = scale_out["BACKPACK_DEPLOYMENT"]
    data = tmp_path / "data"
    for deployment in running_deployment(data, scale_out):
        name = create_instance(deployment, "gamma")
        key = secret_key(deployment, name)
        with deployment.backpack(name, key) as client:
            for number in range(30):
                add_record(client, {"text": f"note {number:02}"})
        # Moving needs the server stopped: the CLI says so while it runs.
        busy = cli(data, scale_out, "instances", "move", name, "--to", "sqlite")
        assert busy.returncode == 1 and "`backpack serve` is running" in busy.stderr
    expected = [f"note {number:02}" for number in range(30)]
    folder = data / "instances" / name

    moved = cli(data, scale_out, "instances", "move", name, "--to", "sqlite")
    assert moved.returncode == 0, moved.stderr
    assert "verified" in moved.stdout and "notes" in moved.stdout
    assert (folder / "engine").read_text().strip() == "sqlite"
    assert (folder / "backpack.db").is_file()
    assert databases(prefix) == set()

    again = cli(data, scale_out, "instances", "move", name, "--to", "embedded")
    assert again.returncode == 1 and "on sqlite already" in again.stderr
    assert "Traceback" not in again.stderr

    for deployment in running_deployment(data, scale_out, setup=False):
        deployment.token = login_token(deployment)
        with deployment.backpack(name, key) as client:
            assert record_texts(client) == expected

    back = cli(data, scale_out, "instances", "move", name, "--to", "postgres")
    assert back.returncode == 0, back.stderr
    assert databases(prefix) == {f"{prefix}_gamma"}
    assert not (folder / "backpack.db").exists()
    for deployment in running_deployment(data, scale_out, setup=False):
        deployment.token = login_token(deployment)
        with deployment.backpack(name, key) as client:
            assert record_texts(client) == expected


def test_move_needs_postgres_configured(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = cli(data, {}, "instances", "create", "solo")
    assert made.returncode == 0, made.stderr
    refused = cli(data, {}, "instances", "move", "solo", "--to", "postgres")
    assert refused.returncode == 1
    assert "BACKPACK_DATABASE_URL" in refused.stderr and "Traceback" not in refused.stderr
    assert (data / "instances" / "solo" / "backpack.db").is_file()


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("BACKPACK_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/x", "is unreachable"),
        ("BACKPACK_DATABASE_URL", "mysql://127.0.0.1/x", "must be a postgresql:// URL"),
        ("BACKPACK_REDIS_URL", "redis://127.0.0.1:1/0", "is unreachable"),
        ("BACKPACK_DEPLOYMENT", "Bad Name!", "BACKPACK_DEPLOYMENT must be"),
    ],
)
def test_a_misconfigured_service_stops_serve_with_one_sentence(
    variable: str, value: str, says: str, tmp_path: Path
) -> None:
    for command in (["serve", "--port", "1"], ["serve-instance", "--port", "1"]):
        result = subprocess.run(
            [sys.executable, "-m", "backpack", *command, "--data", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_environment({variable: value}),
        )
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert variable in result.stderr and says in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def login_token(deployment: Deployment) -> str:
    from tests.e2e.control_helpers import ADMIN_EMAIL, ADMIN_PASSWORD

    response = httpx.post(
        deployment.url + "/admin/api/login",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token
