"""A real `backpack serve` in a subprocess, and the control-plane calls the e2e tests share."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests import engine
from tests.conftest import free_port, launch, stop_process
from tests.pg import database_exists, pg_admin, run_elsewhere

ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "admin password 1"


@dataclass
class Deployment:
    """One `backpack serve --domain localhost` process; `token` is an admin session once set."""

    port: int
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    token: str = ""
    logs: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def host(self, name: str) -> str:
        """The Host header of backpack `name` in the host form."""
        return f"{name}.localhost:{self.port}"

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        """A client signed in with the deployment's admin session."""
        assert self.token, "no admin session yet"
        return self.client(self.token)

    def backpack(self, name: str, token: str | None = None) -> httpx.Client:
        """A client of backpack `name` in the path form (`/i/NAME`)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=f"{self.url}/i/{name}", headers=headers, timeout=30)

    def by_host(self, name: str, token: str | None = None) -> httpx.Client:
        """A client of backpack `name` in the host form (`Host: NAME.localhost:PORT`)."""
        headers = {"Host": self.host(name)}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        stop_process(self.process)
        self.logs.append(self.log_path.read_text(errors="replace"))

    def restart(self) -> None:
        """Stop the process and start a new one on the same data directory and port."""
        self.stop()
        started = start_deployment(self.data_dir, port=self.port, env=self.env)
        self.process, self.log_path = started.process, started.log_path

    def log(self) -> str:
        """Everything every process of this deployment wrote."""
        current = "" if self.process.poll() is not None else self.log_path.read_text()
        return "".join(self.logs) + current


def clean_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without BACKPACK_* settings, plus `extra`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BACKPACK_")}
    return {**base, **extra}


def deployment_environment(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `backpack serve` or a CLI command on `data_dir`: the test engine's
    services (tests/engine.py), plus `extra`."""
    return clean_environment({**engine.deployment_env(data_dir), **(extra or {})})


def start_deployment(
    data_dir: Path, *, port: int | None = None, env: dict[str, str] | None = None
) -> Deployment:
    """`backpack serve --data DATA_DIR --domain localhost` on a loopback port, once it answers."""
    port = port or free_port()
    extra = env or {}
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"serve-{port}-{secrets.token_hex(3)}.log"
    command = [sys.executable, "-m", "backpack", "serve", "--data", str(data_dir)]
    command += ["--port", str(port), "--domain", "localhost"]
    url = f"http://127.0.0.1:{port}"
    environment = deployment_environment(data_dir, extra)
    process = launch(command, url, log_path, environment, "backpack serve")
    return Deployment(port, data_dir, extra, process, log_path)


def set_up(deployment: Deployment) -> str:
    """Create the first admin; its session becomes the deployment's `token`."""
    response = httpx.post(
        deployment.url + "/admin/api/setup",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    assert token.startswith("bpa_")
    deployment.token = token
    return token


def running_deployment(
    data_dir: Path, env: dict[str, str] | None = None, *, setup: bool = True
) -> Iterator[Deployment]:
    """A deployment for a fixture (its first admin set up unless `setup` is false); fails the
    tests if it ever logged a traceback."""
    deployment = start_deployment(data_dir, env=env)
    try:
        if setup:
            set_up(deployment)
        yield deployment
    finally:
        deployment.stop()
    assert "Traceback" not in deployment.log(), deployment.log()


def unique_name(prefix: str = "bp") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def create_instance(deployment: Deployment, name: str | None = None) -> str:
    """Create a backpack (a fresh name unless given) and return its name."""
    name = name or unique_name()
    with deployment.admin() as admin:
        response = admin.post("/admin/api/instances", json={"name": name})
    assert response.status_code == 201, response.text
    return name


def secret_key(deployment: Deployment, name: str) -> str:
    with deployment.admin() as admin:
        response = admin.get(f"/admin/api/instances/{name}/keys")
    assert response.status_code == 200, response.text
    key: str = response.json()["secret_key"]
    assert key.startswith("bpk_")
    return key


def instance(deployment: Deployment, name: str) -> dict[str, Any]:
    with deployment.admin() as admin:
        response = admin.get(f"/admin/api/instances/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def add_record(client: httpx.Client, data: dict[str, Any], collection: str = "notes") -> str:
    """Create a record as the client's caller (the secret key creates the collection)."""
    response = client.post(f"/api/collections/{collection}/records", json=data)
    assert response.status_code == 201, response.text
    record_id: str = response.json()["id"]
    return record_id


def record_texts(client: httpx.Client, collection: str = "notes") -> list[str]:
    """The `text` of every record of `collection`, by id; [] when there is no such collection."""
    response = client.get(f"/api/collections/{collection}/records", params={"sort": "id"})
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [item["text"] for item in response.json()["items"]]


def storage_exists(data_dir: Path, name: str) -> bool:
    """Whether backpack `name` of the deployment on `data_dir` has its records' store: its
    SQLite file, or on the postgres test engine its database."""
    if not engine.POSTGRES:
        return (data_dir / "instances" / name / "backpack.db").is_file()
    return database_exists(engine.backpack_database(data_dir, name))


def corrupt_storage(data_dir: Path, name: str) -> None:
    """Make backpack `name`'s records unreadable (its server stopped): garbage in place of its
    SQLite file, or on PostgreSQL a collection registry of the wrong shape."""
    if engine.POSTGRES:
        sql = "DROP TABLE _collections; CREATE TABLE _collections (garbage text)"
        run_elsewhere(lambda: pg_admin(sql, engine.backpack_database(data_dir, name)))
        return
    database = data_dir / "instances" / name / "backpack.db"
    for leftover in database.parent.glob("backpack.db-*"):
        leftover.unlink()
    database.write_bytes(b"this is not a database " * 400)


def make_zip(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A zip of `entries` (name → bytes) and symbolic links (name → target)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (0o120777 << 16) & 0xFFFF0000
            archive.writestr(info, target)
    return buffer.getvalue()
