"""The example app (examples/todo) in Chromium, as two users and as one user in two tabs.

Checks that todos, attachments and presence appear live where they should and never
where they should not. Screenshots of each step go to tests/artifacts/<test name>/.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import RunningServer, start_server

STATIC_DIR = Path(__file__).resolve().parents[2] / "examples" / "todo"
TIMEOUT = 20_000  # ms, for every expectation: CI machines are slow
PASSWORD = "correct horse battery"

# Records every todo title and presence email a page ever shows, so "never" is checked
# over the whole run, not only at the moment of an assertion.
WATCH = """() => {
  window.__seenTodos = new Set();
  const record = () => {
    for (const el of document.querySelectorAll("#todos .title")) {
      window.__seenTodos.add(el.textContent);
    }
  };
  record();
  const options = {subtree: true, childList: true, characterData: true};
  new MutationObserver(record).observe(document.body, options);
}"""


@pytest.fixture(scope="module")
def backpack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    key = "bpk_" + secrets.token_urlsafe(32)
    running = start_server(tmp_path_factory.mktemp("todo-app") / "data", key=key)
    with running.client() as admin:
        admin.patch(
            "/api/settings", json={"rate_limits": {"auth_per_minute": 0}}
        ).raise_for_status()
        # Owner-only default rules: each user sees only their own todos.
        admin.post("/api/collections", json={"name": "todos"}).raise_for_status()
        owner = {"owner": "@auth.id"}
        rules = {"list": owner, "read": owner, "create": {"@auth": {"$ne": None}}}
        rules |= {"update": owner, "delete": owner}
        bucket = {"rules": rules, "max_size": 5 * 1024 * 1024, "allowed_types": ["image/*"]}
        admin.put("/api/buckets/attachments", json=bucket).raise_for_status()
    yield running
    running.stop()
    assert "Traceback" not in running.log(), running.log()


def png(width: int = 160, height: int = 120) -> bytes:
    image = Image.new("RGB", (width, height), (47, 111, 237))
    for x in range(width // 2):
        for y in range(height // 2):
            image.putpixel((x, y), (255, 176, 32))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def open_app(context: Any, url: str, errors: list[str]) -> Any:
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    page.goto(url)
    try:
        page.wait_for_function("document.documentElement.dataset.ready === 'true'")
    except Exception as error:
        raise AssertionError(f"the app did not start: {errors}") from error
    return page


def sign_up(page: Any, email: str) -> None:
    from playwright.sync_api import expect

    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("#who-email")).to_have_text(email, timeout=TIMEOUT)


def todo(page: Any, title: str) -> Any:
    return page.locator("#todos li").filter(has=page.get_by_text(title, exact=True))


def test_todo_app_live_in_two_contexts_and_two_tabs(
    browser: Any, backpack: RunningServer, static_site: str, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT)
    url = f"{static_site}/index.html?backpack={backpack.url}"
    run = secrets.token_hex(3)
    email_a, email_b = f"ann-{run}@example.com", f"bob-{run}@example.com"
    errors: list[str] = []

    ctx_a = browser.new_context(viewport={"width": 1000, "height": 720})
    ctx_b = browser.new_context(viewport={"width": 1000, "height": 720}, color_scheme="dark")
    try:
        # Sign up A and B in separate contexts (separate localStorage = separate sessions).
        a1 = open_app(ctx_a, url, errors)
        expect(a1.get_by_role("heading", name="Sign in or create an account")).to_be_visible()
        a1.screenshot(path=artifacts / "01-sign-in.png")
        sign_up(a1, email_a)
        b = open_app(ctx_b, url, errors)
        sign_up(b, email_b)

        # A second tab of A's context shares the session through localStorage.
        a2 = open_app(ctx_a, url, errors)
        expect(a2.locator("#who-email")).to_have_text(email_a)
        for page in (a1, a2, b):
            page.evaluate(WATCH)

        # Presence: both users online, A listed once although A has two tabs.
        for page in (a1, a2, b):
            expect(page.locator("#online li")).to_have_count(2, timeout=TIMEOUT)
            expect(page.locator(f'#online li[data-email="{email_a}"]')).to_be_visible()
            expect(page.locator(f'#online li[data-email="{email_b}"]')).to_be_visible()
        a1.screenshot(path=artifacts / "02-presence-a.png")

        # B's todo stays with B.
        b.get_by_label("New todo").fill("Bob's secret plan")
        b.get_by_label("New todo").press("Enter")  # keyboard: Enter submits
        expect(todo(b, "Bob's secret plan")).to_have_count(1)

        # A adds a todo: it appears live in A's other tab.
        a1.get_by_label("New todo").fill("Buy milk")
        a1.get_by_role("button", name="Add", exact=True).click()
        expect(todo(a1, "Buy milk")).to_have_count(1)
        expect(todo(a2, "Buy milk")).to_have_count(1, timeout=TIMEOUT)
        a1.get_by_label("New todo").fill("Call the plumber")
        a1.get_by_label("New todo").press("Enter")
        expect(todo(a2, "Call the plumber")).to_have_count(1, timeout=TIMEOUT)
        a2.screenshot(path=artifacts / "03-added-live-in-second-tab.png")

        # Toggling in one tab shows in the other.
        todo(a2, "Buy milk").get_by_role("checkbox").check()
        expect(todo(a1, "Buy milk").get_by_role("checkbox")).to_be_checked(timeout=TIMEOUT)
        expect(todo(a1, "Buy milk")).to_have_class("todo is-done")
        a1.screenshot(path=artifacts / "04-toggled-live.png")
        todo(a1, "Buy milk").get_by_role("checkbox").uncheck()
        expect(todo(a2, "Buy milk").get_by_role("checkbox")).not_to_be_checked(timeout=TIMEOUT)

        # Deleting in one tab removes it from the other.
        todo(a1, "Call the plumber").get_by_role("button", name="Delete").click()
        expect(todo(a1, "Call the plumber")).to_have_count(0)
        expect(todo(a2, "Call the plumber")).to_have_count(0, timeout=TIMEOUT)
        a2.screenshot(path=artifacts / "05-deleted-live.png")

        # An attachment: upload an image, its 64x64 thumbnail shows in both of A's tabs.
        attach = todo(a1, "Buy milk").get_by_label("Attach image to Buy milk")
        attach.set_input_files({"name": "milk.png", "mimeType": "image/png", "buffer": png()})
        for page in (a1, a2):
            thumb = todo(page, "Buy milk").get_by_role("img", name="Attachment: milk.png")
            expect(thumb).to_be_visible(timeout=TIMEOUT)
            expect(thumb).to_have_attribute("src", _blob_url(), timeout=TIMEOUT)
            page.wait_for_function(
                "el => el.complete && el.naturalWidth === 64 && el.naturalHeight === 64",
                arg=thumb.element_handle(),
                timeout=TIMEOUT,
            )
        a1.screenshot(path=artifacts / "06-attachment-thumbnail.png")

        # The private file is not readable by B, nor anonymously.
        file_id = todo(a1, "Buy milk").locator(".attachment").get_attribute("data-file")
        assert file_id
        token_b = b.evaluate("() => JSON.parse(Object.values(localStorage)[0]).token")
        denied = httpx.get(
            f"{backpack.url}/api/files/{file_id}/content",
            headers={"Authorization": f"Bearer {token_b}"},
        )
        assert denied.status_code == 404, denied.text
        assert httpx.get(f"{backpack.url}/api/files/{file_id}/content").status_code == 404

        # A broadcast in the room: B waves, A sees it in both tabs.
        b.get_by_role("button", name="Wave").click()
        expect(b.locator("#feed")).to_contain_text("You waved")
        for page in (a1, a2):
            expect(page.locator("#feed")).to_contain_text(f"{email_b} waved", timeout=TIMEOUT)
        b.screenshot(path=artifacts / "07-user-b-dark.png")

        # Isolation, over the whole run: B never saw A's todos, A never saw B's.
        expect(todo(b, "Bob's secret plan")).to_have_count(1)
        seen_b = set(b.evaluate("() => [...window.__seenTodos]"))
        assert seen_b == {"Bob's secret plan"}, seen_b
        for page in (a1, a2):
            seen_a = set(page.evaluate("() => [...window.__seenTodos]"))
            assert "Bob's secret plan" not in seen_a, seen_a
            assert "Buy milk" in seen_a, seen_a

        # B leaves (closes the page): B disappears from A's online list.
        b.close()
        for page in (a1, a2):
            expect(page.locator(f'#online li[data-email="{email_b}"]')).to_have_count(
                0, timeout=TIMEOUT
            )
            expect(page.locator("#online li")).to_have_count(1)
            expect(page.locator("#feed")).to_contain_text(f"{email_b} left")
        a1.screenshot(path=artifacts / "08-b-left.png")

        # Signing out in one tab signs out the other (the session is shared).
        a2.get_by_role("button", name="Sign out").click()
        for page in (a1, a2):
            expect(page.get_by_role("heading", name="Sign in or create an account")).to_be_visible(
                timeout=TIMEOUT
            )
            expect(page.locator("#todos li")).to_have_count(0)
        a1.screenshot(path=artifacts / "09-signed-out.png")
        assert not errors, errors
    finally:
        ctx_a.close()
        ctx_b.close()


def _blob_url() -> Any:
    import re

    return re.compile(r"^blob:")
