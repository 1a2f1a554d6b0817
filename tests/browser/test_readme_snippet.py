"""The README's five-line page really shows a live list (Chromium, real server)."""

from __future__ import annotations

import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]
ALL_TRUE = {op: True for op in ("list", "read", "create", "update", "delete")}


def readme_page(backpack_url: str) -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"```html\n(<ul id=\"list\">.*?)```", readme, re.S)
    assert found, "the README's five-line snippet is missing"
    snippet = found.group(1)
    body_lines = [line for line in snippet.splitlines() if line.strip() and "script" not in line]
    assert len(body_lines) <= 5 + 1  # the five lines, plus the <ul> they fill
    # The README addresses backpack `todo` of `make run`; this test serves it alone.
    return snippet.replace("http://localhost:8000/i/todo", backpack_url)


def test_readme_snippet_shows_a_live_list(
    browser: Any, server: RunningServer, admin: httpx.Client, artifacts: Path, tmp_path: Path
) -> None:
    admin.delete("/api/collections/todos")
    assert (
        admin.post("/api/collections", json={"name": "todos", "rules": ALL_TRUE}).status_code == 201
    )
    admin.post("/api/collections/todos/records", json={"title": "first"})
    html = readme_page(server.url)
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Served by a real local server, like a dev server (allowed_origins: http://127.0.0.1:*).
    (tmp_path / "index.html").write_text(html)
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
        page.wait_for_function("document.querySelectorAll('#list li').length === 1", timeout=20000)
        admin.post("/api/collections/todos/records", json={"title": "second, live"})
        page.wait_for_function("document.querySelectorAll('#list li').length === 2", timeout=20000)
        assert page.locator("#list li").first.inner_text() == "second, live"
        page.screenshot(path=str(artifacts / "live-list.png"))
    finally:
        context.close()
        httpd.shutdown()
        httpd.server_close()
    assert errors == []
