"""Fixtures for browser tests: Debian's Chromium driven by Playwright, and a static file server.

A missing Playwright or Chromium is a test failure with a clear message, never a skip:
these tests are part of `make test`.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"


# Module scope: Playwright's sync API keeps an event loop running while it is open,
# which the asyncio tests that follow must not inherit.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Playwright for Python is not installed: run `.venv/bin/pip install playwright` "
            "(the browser is Debian's Chromium; never `playwright install`)",
            pytrace=False,
        )
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not executable:
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `apt-get install -y chromium`",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@pytest.fixture(scope="module")
def static_site(request: pytest.FixtureRequest) -> Iterator[str]:
    """Serves the directory named by the module's `STATIC_DIR` on a loopback port."""
    directory = Path(request.module.STATIC_DIR)
    handler = partial(_QuietHandler, directory=str(directory))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """tests/artifacts/<test name>/, emptied first, for screenshots."""
    directory: Path = ARTIFACTS / str(request.node.name)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    return directory
