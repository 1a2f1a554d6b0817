"""Shared fixtures: a real Backpack server (uvicorn on a loopback port) and clients for it."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path

import httpx
import pytest

from tests import engine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_DROPPED = pytest.StashKey[int]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"engine: {engine.LABEL} ({engine.ENGINE_ENV}={engine.ENGINE})"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the databases the servers of this session ran on (postgres engine only)."""
    dropped = engine.drop_all()
    session.config.stash[_DROPPED] = len(dropped)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    line = f"engine: {engine.LABEL}"
    if engine.POSTGRES:
        line += f", {terminalreporter.config.stash.get(_DROPPED, 0)} test databases dropped"
    terminalreporter.write_line(line)


@dataclass
class RunningServer:
    url: str
    key: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, *, key: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate `process` (killed after 15 s) and wait for it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch(
    command: list[str], url: str, log_path: Path, env: dict[str, str], label: str
) -> subprocess.Popen[bytes]:
    """Run `command` (output to `log_path`) until `url`/api/health answers 200 (30 s at most)."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{label} exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"{label} did not start:\n{log_path.read_text()}")


def start_server(
    data_dir: Path,
    *,
    key: str | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> RunningServer:
    """A real server on a loopback port (`port` to restart one where clients expect it)."""
    port = port or free_port()
    environ = {**os.environ, **engine.instance_env(data_dir), **(env or {})}
    if key is not None:
        environ["BACKPACK_SECRET_KEY"] = key
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}.log"
    command = [sys.executable, "-m", "backpack", "serve-instance", "--data", str(data_dir)]
    url = f"http://127.0.0.1:{port}"
    process = launch([*command, "--port", str(port)], url, log_path, environ, "server")
    return RunningServer(url, key or "", data_dir, process, log_path)


def shared_server(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    """A server many tests share; fails the suite if it ever logged a traceback."""
    key = "bpk_" + secrets.token_urlsafe(32)
    running = start_server(data_dir, key=key, env=env)
    # Every test talks from 127.0.0.1: auth rate limits are tested on servers of their own.
    httpx.patch(
        running.url + "/api/settings",
        json={"rate_limits": {"auth_per_minute": 0}},
        headers={"Authorization": f"Bearer {key}"},
    ).raise_for_status()
    yield running
    running.stop()
    assert "Traceback" not in running.log(), running.log()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from shared_server(tmp_path_factory.mktemp("backpack") / "data")


@pytest.fixture
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def anon(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client(key=False) as client:
        yield client


@pytest.fixture
def collection_name(request: pytest.FixtureRequest) -> str:
    return "c_" + secrets.token_hex(4)


@dataclass
class MailServer:
    host: str
    port: int
    messages: list[Message]

    def settings(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "sender": "Backpack <no-reply@example.com>",
            "tls": "none",
        }

    def wait_for(self, to: str, timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in reversed(self.messages):
                if message["To"] == to:
                    return message
            time.sleep(0.02)
        raise AssertionError(f"no mail to {to}")


class _Collect:
    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        content = envelope.content  # type: ignore[attr-defined]
        self.messages.append(message_from_bytes(content, policy=default_policy))
        return "250 OK"


@pytest.fixture(scope="session")
def smtp() -> Iterator[MailServer]:
    """A real SMTP server (aiosmtpd) on a loopback port; tests read what it received."""
    from aiosmtpd.controller import Controller

    messages: list[Message] = []
    port = free_port()
    controller = Controller(_Collect(messages), hostname="127.0.0.1", port=port)
    controller.start()
    yield MailServer("127.0.0.1", port, messages)
    controller.stop()
