"""Fixtures for browser tests: Debian's Chromium driven by Playwright, and a static file server.

A missing Playwright or Chromium is a test failure with a clear message, never a skip:
these tests are part of `make test`.
"""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

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
TIMEOUT = 20_000  # ms
WIDTHS = (1280, 390)
# Chromium logs every 4xx/5xx answer as a console error; the tests provoke some on purpose.
EXPECTED_CONSOLE = "Failed to load resource"


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


def new_page(browser: Any, errors: list[str], *, console: bool = True) -> Any:
    """A page at 1280x900 in a context of its own; script errors (and, with `console`, console
    errors other than failed loads) are appended to `errors`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))

    def on_console(message: Any) -> None:
        if message.type == "error" and EXPECTED_CONSOLE not in message.text:
            errors.append(f"console: {message.text}")

    if console:
        page.on("console", on_console)
    return page


def admin_cookie(page: Any, token: str) -> None:
    """Sign the page's console in with the admin session `token` (the `bp_admin` cookie)."""
    page.context.add_cookies(
        [{"name": "bp_admin", "value": token, "domain": "127.0.0.1", "path": "/admin"}]
    )


def shoot(page: Any, screen: str) -> None:
    """console-<screen>-<width>.png at both widths, without the passing toasts; the layout
    must not scroll sideways."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate(
        "document.querySelectorAll('#toasts .toast:not(.error)').forEach((t) => t.remove())"
    )
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(150)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{screen} scrolls sideways by {overflow}px at {width}px"
        page.screenshot(path=str(ARTIFACTS / f"console-{screen}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def confirm_dialog(page: Any, typed: str | None = None) -> None:
    """Submit the open dialog, after typing `typed` into its first field if given."""
    box = page.locator("dialog[open]")
    if typed is not None:
        box.locator("input").first.fill(typed)
    box.locator("button[type=submit]").click()
    box.wait_for(state="detached")


def png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    """A PNG image of one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()
