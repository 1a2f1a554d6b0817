"""The admin console's shell in Chromium against a real `backpack serve`.

Setup → dashboard → create → the backpack page with its monitoring, logs, settings, site and
backups tabs → stop/start → admins → delete → themes → logout; an expired session returning
to the page after signing in; and the dashboard with 100 backpacks, timed in the browser.
Screenshots: tests/artifacts/console-<screen>-<width>.png at 1280 and 390 px.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import admin_cookie, confirm_dialog, new_page, shoot
from tests.conftest import MailServer
from tests.e2e.control_helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Deployment,
    make_zip,
    running_deployment,
    secret_key,
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from running_deployment(tmp_path_factory.mktemp("console") / "data", setup=False)


def admin_token(deployment: Deployment) -> str:
    """An admin session: set up the first admin if needed, otherwise sign in."""
    if deployment.token:
        return deployment.token
    with deployment.client() as client:
        if client.get("/admin/api/setup").json()["needed"]:
            response = client.post(
                "/admin/api/setup", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
        else:
            response = client.post(
                "/admin/api/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
    assert response.status_code in (200, 201), response.text
    deployment.token = response.json()["token"]
    return deployment.token


def open_console(browser: Any, deployment: Deployment, errors: list[str], hash_: str = "") -> Any:
    page = new_page(browser, errors)
    page.goto(f"{deployment.url}/admin/{hash_}")
    return page


def open_tab(page: Any, label: str) -> None:
    page.locator("nav.tabs").get_by_role("link", name=label, exact=True).click()


def alert_text(page: Any, scope: str = "main") -> str:
    locator = page.locator(f"{scope} [role=alert]:visible").first
    locator.wait_for()
    text: str = locator.inner_text()
    return text


def settings_of(deployment: Deployment, name: str) -> dict[str, Any]:
    with deployment.backpack(name, secret_key(deployment, name)) as client:
        response = client.get("/api/settings")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_console_walkthrough(browser: Any, deployment: Deployment, smtp: MailServer) -> None:
    errors: list[str] = []
    page = open_console(browser, deployment, errors)

    # First run: /admin goes to setup; mismatched passwords are refused in the page.
    page.wait_for_url("**/admin/#/setup")
    shoot(page, "setup")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
    page.get_by_label("Repeat the password").fill("something else")
    page.get_by_role("button", name="Create admin").click()
    assert "differ" in alert_text(page)
    with deployment.client() as client:
        assert client.get("/admin/api/setup").json() == {"needed": True}
    page.get_by_label("Repeat the password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Create admin").click()
    page.get_by_role("heading", name="Backpacks").wait_for()
    assert page.locator("#nav").inner_text().count(ADMIN_EMAIL) == 1
    admin_token(deployment)

    # Create: name → ready, with its API URL and a copyable SDK snippet.
    page.get_by_label("New backpack name").fill("shop")
    page.get_by_role("button", name="Create backpack").click()
    created = page.locator("section.created")
    created.get_by_role("heading", name="shop is ready").wait_for()
    host = f"http://shop.localhost:{deployment.port}"
    assert f'createClient("{host}")' in created.locator("pre").inner_text()
    assert created.get_by_role("button", name="Copy snippet").is_visible()
    row = page.locator("tr[data-name=shop]")
    assert row.locator(".status").inner_text() == "running"
    assert host in row.inner_text()

    # A duplicate name: the server's message is shown, nothing more is listed.
    page.get_by_label("New backpack name").fill("shop")
    page.get_by_role("button", name="Create backpack").click()
    assert "shop" in alert_text(page, "form.create")
    assert page.locator("table.backpacks tbody tr").count() == 1

    # Traffic for the charts and the log; the row's sparkline fills in.
    with httpx.Client(base_url=f"{deployment.url}/i/shop") as anonymous:
        for _ in range(5):
            assert anonymous.get("/api/health").status_code == 200
        assert anonymous.get("/api/collections/nothing/records").status_code in (401, 403, 404)
    page.reload()
    page.locator("tr[data-name=shop] .requests svg").wait_for()
    shoot(page, "dashboard")

    # The backpack page: header, URLs, keys shown and rotated with confirmation.
    page.get_by_role("link", name="shop", exact=True).click()
    page.wait_for_url("**#/b/shop")
    page.get_by_role("heading", name="shop").first.wait_for()
    assert page.locator("nav.tabs a").count() == 9
    page.get_by_role("button", name="Show secret key").click()
    first_key = page.locator("code.secret").inner_text()
    assert first_key == secret_key(deployment, "shop")
    page.get_by_role("button", name="Rotate key").click()
    page.locator("dialog[open]").get_by_role("button", name="Cancel").click()
    assert secret_key(deployment, "shop") == first_key
    page.get_by_role("button", name="Rotate key").click()
    confirm_dialog(page)
    page.wait_for_function(
        "old => document.querySelector('code.secret').textContent !== old", arg=first_key
    )
    assert page.locator("code.secret").inner_text() == secret_key(deployment, "shop") != first_key

    # Monitoring: six SVG charts over 1 h, then 24 h.
    open_tab(page, "Monitoring")
    page.locator("figure.chart").nth(5).wait_for()
    assert page.locator("figure.chart").count() == 6
    requests_chart = page.locator("figure.chart", has_text="Requests per minute")
    assert requests_chart.locator("path.line").count() == 1
    assert int(page.locator(".stat", has_text="Requests").locator("strong").inner_text()) >= 6
    shoot(page, "monitoring")
    with page.expect_response("**/metrics?window=24h"):
        page.get_by_role("button", name="24 hours").click()
    assert page.get_by_role("button", name="24 hours").get_attribute("aria-pressed") == "true"

    # Logs: the tail, live entries, filters and pause.
    open_tab(page, "Logs")
    logs = page.locator("table.logs tbody")
    logs.get_by_text("/api/health").first.wait_for()
    page.locator(".live", has_text="Live").wait_for()
    with httpx.Client(base_url=f"{deployment.url}/i/shop") as anonymous:
        assert anonymous.get("/api/live-probe").status_code == 404
    logs.get_by_text("/api/live-probe").wait_for()
    page.get_by_label("Path contains").fill("live-probe")
    assert logs.locator("tr").count() == 1
    page.get_by_label("Path contains").fill("")
    page.get_by_label("Status").select_option("400")
    logs.get_by_text("/api/live-probe").wait_for()
    page.wait_for_function(
        "() => !document.querySelector('table.logs').textContent.includes('/health')"
    )
    statuses = logs.locator("td[data-label=Status]").all_inner_texts()
    assert statuses and all(int(s) >= 400 for s in statuses if s)
    page.get_by_role("button", name="Pause").click()
    with httpx.Client(base_url=f"{deployment.url}/i/shop") as anonymous:
        assert anonymous.get("/api/paused-probe").status_code == 404
    page.locator(".live", has_text="1 new entries held").wait_for()
    assert logs.get_by_text("/api/paused-probe").count() == 0
    page.get_by_role("button", name="Resume").click()
    logs.get_by_text("/api/paused-probe").wait_for()
    shoot(page, "logs")

    # Settings: each section saves through the backpack's API; bad input changes nothing.
    open_tab(page, "Settings")
    general = page.locator("form[aria-label='Origins and sessions']")
    general.locator("textarea").fill("https://app.example.com\nhttp://localhost:*")
    general.get_by_role("button", name="Save").click()
    page.locator(".toast", has_text="Origins and sessions: saved").wait_for()
    assert settings_of(deployment, "shop")["allowed_origins"] == [
        "https://app.example.com",
        "http://localhost:*",
    ]
    channels = page.locator("form[aria-label='Channels rules']")
    channels.locator("textarea").fill("[{")
    assert "Not valid JSON" in channels.locator(".hint").inner_text()
    channels.locator("textarea").fill('[{"pattern": "bad pattern!"}]')
    channels.get_by_role("button", name="Save").click()
    assert "channels.0.pattern" in alert_text(page, "form[aria-label='Channels rules']")
    assert settings_of(deployment, "shop")["channels"] == []
    channels.locator("textarea").fill('[{"pattern": "room:*", "join": true, "broadcast": true}]')
    channels.get_by_role("button", name="Save").click()
    page.locator(".toast", has_text="Channels rules: saved").wait_for()
    assert settings_of(deployment, "shop")["channels"][0]["pattern"] == "room:*"
    mail = page.locator("form[aria-label='Mail (SMTP)']")
    mail.get_by_label("Host").fill(smtp.host)
    mail.get_by_label("Port").fill(str(smtp.port))
    mail.get_by_label("Password").fill("mail secret")
    mail.get_by_label("Sender").fill("Shop <no-reply@example.com>")
    mail.get_by_label("TLS").select_option("none")
    mail.get_by_role("button", name="Save").click()
    page.locator(".toast", has_text="Mail (SMTP): saved").wait_for()
    saved = settings_of(deployment, "shop")["smtp"]
    assert saved["host"] == smtp.host and saved["password"] == "********"
    # The test mail really goes out through the configured server.
    mail = page.locator("form[aria-label='Mail (SMTP)']")
    mail.get_by_role("button", name="Send test mail…").click()
    page.locator("dialog[open]").get_by_label("To").fill("owner@example.com")
    page.locator("dialog[open] button[type=submit]").click()
    page.locator(".toast", has_text="A test mail went to owner@example.com").wait_for()
    assert "test mail" in str(smtp.wait_for("owner@example.com")["Subject"])
    oauth = page.locator("form[aria-label='OAuth providers']")
    oauth.get_by_label("Provider name").fill("github")
    oauth.get_by_label("Client ID").fill("client-1")
    oauth.get_by_label("Client secret").fill("oauth secret")
    oauth.get_by_role("button", name="Save").click()
    page.locator("ul.providers", has_text="github").wait_for()
    assert settings_of(deployment, "shop")["oauth"]["github"]["client_id"] == "client-1"
    limits = page.locator("form[aria-label='Rate limits']")
    limits.get_by_label("API requests per minute").fill("600")
    limits.get_by_role("button", name="Save").click()
    page.locator(".toast", has_text="Rate limits: saved").wait_for()
    assert settings_of(deployment, "shop")["rate_limits"]["api_per_minute"] == 600
    shoot(page, "settings")

    # Site: a bad zip is refused and shown; a good one is published, opened, removed.
    open_tab(page, "Site")
    page.get_by_text("No site is published.").wait_for()
    zip_input = page.get_by_label("Site zip")
    zip_input.set_input_files(
        files=[{"name": "broken.zip", "mimeType": "application/zip", "buffer": b"not a zip"}]
    )
    page.get_by_role("button", name="Publish").click()
    assert "zip" in alert_text(page, "form[aria-label='Publish a site']").lower()
    page.get_by_text("No site is published.").wait_for()
    site = make_zip({"index.html": b"<h1>Shop site</h1>", "app.js": b"console.log(1)"})
    zip_input.set_input_files(
        files=[{"name": "site.zip", "mimeType": "application/zip", "buffer": site}]
    )
    page.get_by_role("button", name="Publish").click()
    page.locator("p.published", has_text="2 files").wait_for()
    path_url = f"{deployment.url}/i/shop/site/"
    panel = page.locator("#tab-panel")
    assert panel.get_by_role("link", name=path_url).get_attribute("href") == path_url
    assert panel.get_by_role("link", name=f"{host}/").get_attribute("href") == f"{host}/"
    assert "Shop site" in httpx.get(path_url).text
    shoot(page, "site")
    page.get_by_role("button", name="Remove site").click()
    confirm_dialog(page)
    page.get_by_text("No site is published.").wait_for()
    assert httpx.get(path_url).status_code == 404

    # Backups: create and download; a damaged archive is refused; restore brings back the data.
    key = secret_key(deployment, "shop")
    with deployment.backpack("shop", key) as client:
        client.post("/api/collections/notes/records", json={"text": "kept"}).raise_for_status()
    open_tab(page, "Backups")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Create backup").click()
    archive = Path(download_info.value.path())
    assert download_info.value.suggested_filename.startswith("shop-")
    assert tarfile.is_tarfile(archive)
    page.get_by_role("link", name="Save shop-").wait_for()
    with deployment.backpack("shop", key) as client:
        client.post("/api/collections/notes/records", json={"text": "later"}).raise_for_status()
    restore_input = page.get_by_label("Backup archive (.tar)")
    restore_input.set_input_files(
        files=[{"name": "bad.tar", "mimeType": "application/x-tar", "buffer": b"x" * 2048}]
    )
    page.locator("form[aria-label=Restore]").get_by_role("button", name="Restore").click()
    confirm_dialog(page)
    assert alert_text(page, "form[aria-label=Restore]")
    assert note_texts(deployment) == ["kept", "later"]
    restore_input.set_input_files(str(archive))
    page.locator("form[aria-label=Restore]").get_by_role("button", name="Restore").click()
    confirm_dialog(page)
    page.get_by_text("shop is running").wait_for()
    assert note_texts(deployment) == ["kept"]
    shoot(page, "backups")

    # Stop and start from the dashboard: a stopped backpack answers 503.
    page.get_by_role("link", name="Backpacks").click()
    row = page.locator("tr[data-name=shop]")
    row.get_by_role("button", name="Stop").click()
    row.locator(".status", has_text="stopped").wait_for()
    assert httpx.get(f"{deployment.url}/i/shop/api/health").status_code == 503
    page.locator("tr[data-name=shop]").get_by_role("button", name="Start").click()
    page.locator("tr[data-name=shop] .status", has_text="running").wait_for()
    assert httpx.get(f"{deployment.url}/i/shop/api/health").status_code == 200

    # Delete: a wrong name deletes nothing; the right one removes the backpack.
    page.get_by_label("New backpack name").fill("scratch")
    page.get_by_role("button", name="Create backpack").click()
    page.locator("tr[data-name=scratch]").wait_for()
    page.locator("tr[data-name=scratch]").get_by_role("button", name="Delete scratch").click()
    confirm_dialog(page, "scratc")
    page.locator(".toast", has_text="Nothing was deleted").wait_for()
    assert httpx.get(f"{deployment.url}/i/scratch/api/health").status_code == 200
    page.locator("tr[data-name=scratch]").get_by_role("button", name="Delete scratch").click()
    shoot(page, "delete")
    confirm_dialog(page, "scratch")
    page.locator("tr[data-name=scratch]").wait_for(state="detached")
    with deployment.admin() as admin:
        assert admin.get("/admin/api/instances/scratch").status_code == 404

    # Admins: invite, a duplicate is refused in the dialog, remove.
    page.get_by_role("link", name="Admins").click()
    page.get_by_role("button", name="Invite an admin").click()
    box = page.locator("dialog[open]")
    box.get_by_label("Email").fill("second@example.com")
    box.get_by_label("Password").fill("second password 1")
    box.get_by_role("button", name="Add admin").click()
    page.get_by_role("cell", name="second@example.com", exact=True).wait_for()
    page.get_by_role("button", name="Invite an admin").click()
    box.get_by_label("Email").fill("second@example.com")
    box.get_by_label("Password").fill("second password 1")
    box.get_by_role("button", name="Add admin").click()
    assert alert_text(page, "dialog[open]")
    box.get_by_role("button", name="Cancel").click()
    shoot(page, "admins")
    page.get_by_role("button", name="Remove second@example.com").click()
    confirm_dialog(page)
    page.get_by_role("cell", name="second@example.com", exact=True).wait_for(state="detached")
    with deployment.admin() as admin:
        emails = [a["email"] for a in admin.get("/admin/api/admins").json()["items"]]
    assert emails == [ADMIN_EMAIL]

    # Both themes: the choice is kept across reloads.
    page.get_by_role("link", name="Backpacks").click()
    theme = page.evaluate("document.documentElement.dataset.theme")
    page.get_by_role("button", name="Switch between light and dark theme").click()
    other = "dark" if theme == "light" else "light"
    assert page.evaluate("document.documentElement.dataset.theme") == other
    page.reload()
    page.locator("tr[data-name=shop]").wait_for()
    assert page.evaluate("document.documentElement.dataset.theme") == other
    shoot(page, f"dashboard-{other}")
    page.get_by_role("button", name="Switch between light and dark theme").click()
    assert page.evaluate("document.documentElement.dataset.theme") == theme

    # Sign out, a wrong password, then back in.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    status = page.evaluate("fetch('/admin/api/me').then((r) => r.status)")
    assert status == 401
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    assert alert_text(page)
    shoot(page, "login")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Backpacks").wait_for()
    page.context.close()
    assert errors == []


def note_texts(deployment: Deployment) -> list[str]:
    with deployment.backpack("shop", secret_key(deployment, "shop")) as client:
        response = client.get("/api/collections/notes/records", params={"sort": "created"})
    assert response.status_code == 200, response.text
    return [item["text"] for item in response.json()["items"]]


def test_expired_session_returns_to_the_page(browser: Any, deployment: Deployment) -> None:
    errors: list[str] = []
    name = ensure_instance(deployment, "expiry")
    # A cookie the server does not know: the console sends the admin to sign in, then back.
    page = open_console(browser, deployment, errors, f"#/b/{name}/logs")
    page.get_by_role("heading", name="Sign in").wait_for()
    assert "next=" in page.url
    admin_cookie(page, "bpa_wrong")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**#/b/{name}/logs")
    page.get_by_role("heading", name="Logs").wait_for()

    # The session ends server-side while the admin works: the next request returns to login.
    open_tab(page, "Monitoring")
    page.get_by_role("button", name="24 hours").wait_for()
    cookie = next(c for c in page.context.cookies() if c["name"] == "bp_admin")
    with deployment.client(cookie["value"]) as client:
        assert client.post("/admin/api/logout").status_code == 204
    page.get_by_role("button", name="24 hours").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    assert f"next=%23%2Fb%2F{name}%2Fmonitoring" in page.url
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**#/b/{name}/monitoring")
    page.locator("figure.chart").first.wait_for()
    page.context.close()
    assert errors == []


def ensure_instance(deployment: Deployment, name: str) -> str:
    with deployment.client(admin_token(deployment)) as admin:
        if admin.get(f"/admin/api/instances/{name}").status_code == 404:
            response = admin.post("/admin/api/instances", json={"name": name})
            assert response.status_code == 201, response.text
    return name


def test_dashboard_with_100_backpacks(browser: Any, deployment: Deployment) -> None:
    token = admin_token(deployment)
    with deployment.client(token) as admin:
        existing = len(admin.get("/admin/api/instances").json()["items"])

    def create(i: int) -> None:
        with deployment.client(token) as admin:
            response = admin.post("/admin/api/instances", json={"name": f"load-{i:03d}"})
            assert response.status_code == 201, response.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(100 - existing)))
    errors: list[str] = []
    page = new_page(browser, errors, console=False)
    admin_cookie(page, admin_token(deployment))
    page.goto(f"{deployment.url}/admin/#/")
    page.locator("table.backpacks tbody tr").nth(99).wait_for()
    assert page.locator("table.backpacks tbody tr").count() == 100
    marks = json.loads(
        page.evaluate(
            "JSON.stringify(performance.getEntriesByName('dashboard-list').map((m) => m.startTime))"
        )
    )
    assert len(marks) == 1
    elapsed = marks[0]
    print(f"\ndashboard with 100 backpacks: list rendered {elapsed:.0f} ms after navigation start")
    assert elapsed < 1000, f"the dashboard took {elapsed:.0f} ms"
    # The sparklines follow, a few requests at a time, for every row.
    page.wait_for_function(
        "() => document.querySelectorAll('table.backpacks .requests svg').length === 100"
    )
    page.context.close()
    assert errors == []


def test_console_files_stay_within_budget() -> None:
    root = Path(__file__).resolve().parents[2] / "backpack" / "admin_ui"
    total = sum(p.stat().st_size for p in root.rglob("*") if p.suffix in (".js", ".css"))
    print(f"\nconsole JS + CSS: {total} bytes")
    assert total < 300 * 1024
