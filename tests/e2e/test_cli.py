"""The `backpack` command: help texts and the secret key's first start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import start_server
from tests.engine import instance_env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`backpack ARGS`; with `--data DIR`, on the services of the server on DIR."""
    env = None
    if "--data" in args:
        env = {**os.environ, **instance_env(Path(args[args.index("--data") + 1]))}
    return subprocess.run(
        [sys.executable, "-m", "backpack", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_help_explains_itself() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    assert "serve-instance" in top.stdout and "self-hosted backend" in top.stdout
    sub = run_cli("serve-instance", "--help")
    assert sub.returncode == 0
    for words in ("--data", "--host", "--port", "BACKPACK_SECRET_KEY", "0600"):
        assert words in sub.stdout


def test_generated_key_is_stored_privately_and_printed_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BACKPACK_SECRET_KEY"}
    data = tmp_path / "data"
    first = start_server(data, env=env)
    try:
        key_file = data / "secret_key"
        key = key_file.read_text().strip()
        assert key.startswith("bpk_") and len(key) >= 36
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(first.url + "/api/collections", headers=headers).status_code == 200
    finally:
        first.stop()
    assert first.log().count(key) == 1

    second = start_server(data, env=env)
    try:
        assert httpx.get(second.url + "/api/collections", headers=headers).status_code == 200
    finally:
        second.stop()
    assert key not in second.log()


def test_key_from_environment_and_bad_key(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "backpack", "serve-instance", "--data", str(tmp_path / "d")],
        env={**os.environ, "BACKPACK_SECRET_KEY": "not-a-key"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "BACKPACK_SECRET_KEY" in bad.stderr and "Traceback" not in bad.stderr
    key = "bpk_" + "k" * 40
    server = start_server(tmp_path / "env", key=key)
    try:
        response = httpx.get(
            server.url + "/api/collections", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200
        assert not (tmp_path / "env" / "secret_key").exists()
    finally:
        server.stop()


def test_data_survives_restart(tmp_path: Path) -> None:
    key = "bpk_" + "r" * 40
    headers = {"Authorization": f"Bearer {key}"}
    server = start_server(tmp_path / "data", key=key)
    try:
        created = httpx.post(
            server.url + "/api/collections/notes/records", json={"text": "kept"}, headers=headers
        )
        assert created.status_code == 201
    finally:
        server.stop()
    again = start_server(tmp_path / "data", key=key)
    try:
        record = httpx.get(
            f"{again.url}/api/collections/notes/records/{created.json()['id']}", headers=headers
        )
        assert record.json()["text"] == "kept"
    finally:
        again.stop()


def test_users_commands_against_a_running_backpack(tmp_path: Path) -> None:
    key = "bpk_" + "u" * 40
    data = tmp_path / "data"
    server = start_server(data, key=key)
    env_args = ("--data", str(data))
    try:
        help_text = run_cli("users", "--help").stdout
        for command in ("create", "list", "set-password", "delete", "reset-link"):
            assert command in help_text
        created = run_cli(
            "users",
            "create",
            *env_args,
            "--email",
            "Ops@Example.com",
            "--password",
            "first password",
            "--role",
            "editor",
        )
        assert created.returncode == 0, created.stderr
        login = httpx.post(
            server.url + "/api/auth/login",
            json={"email": "ops@example.com", "password": "first password"},
        )
        assert login.status_code == 200 and login.json()["user"]["role"] == "editor"
        listed = run_cli("users", "list", *env_args)
        assert "ops@example.com" in listed.stdout and "editor" in listed.stdout
        duplicate = run_cli(
            "users", "create", *env_args, "--email", "ops@example.com", "--password", "x" * 10
        )
        assert duplicate.returncode != 0 and "already exists" in duplicate.stderr
        assert "Traceback" not in duplicate.stderr
        changed = run_cli(
            "users",
            "set-password",
            *env_args,
            "--email",
            "ops@example.com",
            "--password",
            "second password",
        )
        assert changed.returncode == 0, changed.stderr
        me = httpx.get(
            server.url + "/api/auth/me",
            headers={"Authorization": f"Bearer {login.json()['token']}"},
        )
        assert me.status_code == 401  # signed out everywhere
        link = run_cli(
            "users", "reset-link", *env_args, "--email", "ops@example.com", "--base-url", server.url
        ).stdout.strip()
        assert link.startswith(server.url + "/auth/reset?token=bpr_")
        token = link.split("token=")[1]
        reset = httpx.post(
            server.url + "/api/auth/password/confirm",
            json={"token": token, "password": "third password"},
        )
        assert reset.status_code == 204, reset.text
        missing = run_cli("users", "reset-link", *env_args, "--email", "nobody@example.com")
        assert missing.returncode != 0 and "Traceback" not in missing.stderr
        deleted = run_cli("users", "delete", *env_args, "--email", "ops@example.com", "--yes")
        assert deleted.returncode == 0, deleted.stderr
        again = httpx.post(
            server.url + "/api/auth/login",
            json={"email": "ops@example.com", "password": "third password"},
        )
        assert again.status_code == 401
    finally:
        server.stop()


def test_backup_data_archives_a_serving_instance(tmp_path: Path) -> None:
    """`backpack backup-data` backs up a `serve-instance` data directory while it serves,
    on either engine; the archive verifies, and refuses to be written into nowhere."""
    from backpack.platform.backup import verify_backup

    data = tmp_path / "data"
    running = start_server(data, key="bpk_" + "k" * 43)
    try:
        admin = {"Authorization": f"Bearer {running.key}"}
        httpx.post(
            running.url + "/api/collections", json={"name": "notes"}, headers=admin
        ).raise_for_status()
        for title in ("one", "two", "three"):
            httpx.post(
                running.url + "/api/collections/notes/records", json={"title": title}, headers=admin
            ).raise_for_status()
        archive = tmp_path / "notes.tar"
        done = run_cli("backup-data", "--data", str(data), "-o", str(archive))
        assert done.returncode == 0, done.stderr
        manifest = verify_backup(archive)
        assert manifest.records.get("notes") == 3
        assert httpx.get(running.url + "/api/health").status_code == 200  # still serving
        nowhere = run_cli("backup-data", "--data", str(data), "-o", str(tmp_path / "no/x.tar"))
        assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
        assert "no folder" in nowhere.stderr
    finally:
        running.stop()
