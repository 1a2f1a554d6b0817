"""The image (deploy/Dockerfile) run by podman: one backpack in a container, used over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.containers import engine


def _run(*args: str) -> str:
    """`podman run -d` with this session's label; the container's id."""
    started = engine.podman(
        "run", "-d", *engine.RUN_FLAGS, "--label", f"{engine.SESSION_LABEL}={engine.SESSION}", *args
    )
    return started.stdout.strip()


def _wait_healthy(base: str, container: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    logs = engine.podman("logs", container, check=False)
    pytest.fail(f"The container never answered:\n{logs.stdout}{logs.stderr}")


@pytest.fixture
def instance() -> Iterator[tuple[str, str]]:
    """`serve-instance` in a container on a loopback port, with a fresh volume."""
    port = free_port()
    volume = f"bp-image-test-{engine.SESSION}"
    container = _run(
        "-v",
        f"{volume}:/data",
        engine.image(),
        "serve-instance",
        "--data",
        "/data",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    try:
        yield f"http://127.0.0.1:{port}", container
    finally:
        engine.podman("rm", "--force", "--time", "0", container, check=False)
        engine.podman("volume", "rm", "--force", volume, check=False)


def test_serve_instance_in_a_container_keeps_records(instance: tuple[str, str]) -> None:
    base, container = instance
    _wait_healthy(base, container)
    key = engine.podman("exec", container, "cat", "/data/secret_key").stdout.strip()
    auth = {"Authorization": f"Bearer {key}"}
    notes = {"name": "notes", "rules": {"list": True, "read": True}}
    assert httpx.post(f"{base}/api/collections", json=notes, headers=auth).status_code == 201
    created = httpx.post(
        f"{base}/api/collections/notes/records", json={"title": "packed"}, headers=auth
    )
    assert created.status_code == 201, created.text
    record = created.json()["id"]
    read = httpx.get(f"{base}/api/collections/notes/records/{record}")
    assert (read.status_code, read.json()["title"]) == (200, "packed")

    # The data is in the volume: a restarted container serves the same record.
    engine.podman("restart", "--time", "5", container)
    _wait_healthy(base, container)
    again = httpx.get(f"{base}/api/collections/notes/records/{record}")
    assert again.json()["title"] == "packed"
    engine.podman("stop", "--time", "5", container)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/api/health", timeout=2)


def test_the_image_runs_as_its_own_user_with_a_health_check_and_a_volume() -> None:
    inspected = json.loads(engine.podman("image", "inspect", engine.image()).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert "/data" in config["Volumes"]
    health = inspected["Healthcheck"]  # podman's place; Docker has Config.Healthcheck
    assert any("/api/health" in part for part in health["Test"])
    assert config["Entrypoint"] == ["backpack-entrypoint"]
    assert config["Cmd"][0] == "serve"
    whoami = engine.podman("run", "--rm", *engine.RUN_FLAGS, "--entrypoint", "id", engine.image())
    assert whoami.stdout.startswith("uid=10001(backpack)")


def test_the_image_refuses_to_run_as_root() -> None:
    ran = engine.podman(
        "run", "--rm", *engine.RUN_FLAGS, "--user", "0", engine.image(), "--version", check=False
    )
    assert ran.returncode == 78
    assert "refusing to run as root" in ran.stderr


def test_secrets_come_from_files_not_from_the_environment(tmp_path: Path) -> None:
    """BACKPACK_SECRET_KEY_FILE: the key is read from the file, `inspect` shows only the path."""
    key = "bpk_" + "k" * 43
    secret = tmp_path / "key"
    secret.write_text(key + "\n")
    secret.chmod(0o444)
    port = free_port()
    container = _run(
        "-v",
        f"{secret}:/run/secrets/backpack_secret_key:ro",
        "-e",
        "BACKPACK_SECRET_KEY_FILE=/run/secrets/backpack_secret_key",
        "-v",
        f"bp-secret-test-{engine.SESSION}:/data",
        engine.image(),
        "serve-instance",
        "--data",
        "/data",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, container)
        answer = httpx.get(f"{base}/api/settings", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
        inspected = engine.podman("inspect", container).stdout
        assert key not in inspected
        assert "BACKPACK_SECRET_KEY_FILE=/run/secrets/backpack_secret_key" in inspected
        listed = engine.podman("exec", container, "ls", "/data").stdout.split()
        assert "secret_key" not in listed  # taken from the file, not generated
    finally:
        engine.podman("rm", "--force", "--time", "0", container, check=False)
        engine.podman("volume", "rm", "--force", f"bp-secret-test-{engine.SESSION}", check=False)
