"""`backpack instances …` and `backpack admins …` as real subprocesses on a data directory."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.e2e.control_helpers import (
    Deployment,
    add_record,
    deployment_environment,
    record_texts,
    start_deployment,
    storage_exists,
)
from tests.e2e.helpers import error_of

KEY = re.compile(r"bpk_[A-Za-z0-9_-]{32,}")
RUNNING_MESSAGE = "`backpack serve` is running on"


def run_cli(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backpack", *args, "--data", str(data)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=deployment_environment(data, {"COLUMNS": "200"}),
    )


def ok(data: Path, *args: str, stdin: str | None = None) -> str:
    result = run_cli(data, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(data: Path, *args: str, says: str, stdin: str | None = None) -> None:
    """The command exits with 1 and a clear message, no traceback."""
    result = run_cli(data, *args, stdin=stdin)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def statuses(data: Path) -> dict[str, str]:
    """name → status, as `instances list` shows them."""
    found = {}
    for line in ok(data, "instances", "list").splitlines():
        match = re.search(r"\b([a-z][a-z0-9-]+)\b\s*│\s*(running|stopped|failed)\b", line)
        if match:
            found[match[1]] = match[2]
    return found


def add_admin(email: str) -> tuple[str, ...]:
    return ("admins", "create", "--email", email, "--password-stdin")


def sign_in(deployment: Deployment, email: str, password: str) -> None:
    response = httpx.post(
        deployment.url + "/admin/api/login", json={"email": email, "password": password}
    )
    assert response.status_code == 200, response.text
    deployment.token = response.json()["token"]


def test_instances_and_admins_offline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ok(data, *add_admin("Ops@Example.com"), stdin="ops password\n")
    first_id = re.search(r"\(([A-Za-z0-9_-]+)\)", first)
    assert first_id is not None, first
    refused(data, *add_admin("ops@example.com"), stdin="other password\n", says="exist")
    refused(data, *add_admin("short@example.com"), stdin="short\n", says="password")
    second = ok(data, *add_admin("two@example.com"), stdin="two password\n")
    second_id = re.search(r"\(([A-Za-z0-9_-]+)\)", second)
    assert second_id is not None, second
    listed = ok(data, "admins", "list")
    assert "ops@example.com" in listed and "two@example.com" in listed
    assert "short@example.com" not in listed
    assert "Deleted" in ok(data, "admins", "delete", second_id[1])
    refused(data, "admins", "delete", first_id[1], says="last")
    listed = ok(data, "admins", "list")
    assert "ops@example.com" in listed and "two@example.com" not in listed

    made = KEY.search(ok(data, "instances", "create", "alpha"))
    assert made is not None
    alpha = data / "instances" / "alpha"
    assert storage_exists(data, "alpha")
    assert (alpha / "secret_key").read_text().strip() == made[0]
    refused(data, "instances", "create", "alpha", says="exists")
    refused(data, "instances", "create", "Alpha", says="upper-case")
    assert sorted(p.name for p in (data / "instances").iterdir()) == ["alpha"]

    assert "Stopped" in ok(data, "instances", "stop", "alpha")
    refused(data, "instances", "stop", "nope", says="no backpack")
    archive = tmp_path / "alpha.tar"
    ok(data, "instances", "backup", "alpha", "-o", str(archive))
    with tarfile.open(archive) as tar:
        assert {"backpack.db", "manifest.json", "secret_key"} <= set(tar.getnames())
    ok(data, "instances", "restore", "beta", str(archive))
    assert statuses(data) == {"alpha": "stopped", "beta": "running"}
    assert "Started" in ok(data, "instances", "start", "alpha")
    assert storage_exists(data, "beta")
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    result = run_cli(data, "instances", "restore", "gamma", str(truncated))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (data / "instances" / "gamma").exists()

    refused(data, "instances", "delete", "alpha", "--confirm", "beta", says="confirm")
    assert alpha.is_dir()
    assert "Deleted" in ok(data, "instances", "delete", "alpha", "--confirm", "alpha")
    assert not alpha.exists() and not storage_exists(data, "alpha")
    assert statuses(data) == {"beta": "running"}


def test_cli_beside_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, *add_admin("ops@example.com"), stdin="ops password\n")
    key_match = KEY.search(ok(data, "instances", "create", "alpha"))
    assert key_match is not None
    key = key_match[0]
    ok(data, "instances", "create", "other")

    deployment = start_deployment(data)
    try:
        sign_in(deployment, "ops@example.com", "ops password")
        with deployment.backpack("alpha", key) as alpha:
            add_record(alpha, {"text": "served"})
            commands = [
                ("instances", "create", "gamma"),
                ("instances", "stop", "alpha"),
                ("instances", "start", "alpha"),
                ("instances", "delete", "alpha", "--confirm", "alpha"),
            ]
            with ThreadPoolExecutor(len(commands)) as pool:  # each is refused alike: run at once
                list(pool.map(lambda args: refused(data, *args, says=RUNNING_MESSAGE), commands))
            archive = tmp_path / "alpha.tar"
            ok(data, "instances", "backup", "alpha", "-o", str(archive))
            with tarfile.open(archive) as tar:
                assert "manifest.json" in tar.getnames()
            refused(data, "instances", "restore", "beta", str(archive), says=RUNNING_MESSAGE)
            assert statuses(data) == {"alpha": "running", "other": "running"}
            assert "ops@example.com" in ok(data, "admins", "list")
            assert record_texts(alpha) == ["served"]
        with deployment.admin() as admin:
            names = [item["name"] for item in admin.get("/admin/api/instances").json()["items"]]
            assert names == ["alpha", "other"]
    finally:
        deployment.stop()
    assert "Traceback" not in deployment.log()
    assert not (data / "instances" / "gamma").exists()

    ok(data, "instances", "restore", "beta", str(archive))
    ok(data, "instances", "stop", "alpha")
    assert "Deleted" in ok(data, "instances", "delete", "other", "--confirm", "other")
    again = start_deployment(data, port=deployment.port)
    try:
        with again.backpack("beta", key) as beta:
            assert record_texts(beta) == ["served"]
        with again.backpack("alpha", key) as alpha:
            error_of(alpha.get("/api/health"), 503, "unavailable")
        with again.backpack("other") as other:
            error_of(other.get("/api/health"), 404, "not_found")
    finally:
        again.stop()
    assert "Traceback" not in again.log()
