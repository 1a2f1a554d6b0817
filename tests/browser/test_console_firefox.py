"""The console's journey in Firefox (Debian's firefox-esr, headless) on a fresh `backpack serve`.

Setup → sign out and in → create a backpack → a collection with a schema → records, one
arriving live → a user → a file with its preview → monitoring charts → the log tail →
settings → a backup → the dark theme → the 390 px layout → the keyboard → sign out, checking
what the page shows after each step and against the APIs, and failing on any console error
or uncaught exception. Screenshots: tests/artifacts/firefox-<screen>-<width>.png.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import ARTIFACTS, png
from tests.browser.firefox import ENTER, TAB, FirefoxPage, firefox_page
from tests.e2e.control_helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Deployment,
    running_deployment,
    secret_key,
)

NAME = "fox"
BOTH = (1280, 390)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from running_deployment(tmp_path_factory.mktemp("firefox") / "data", setup=False)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("firefox-downloads")


@pytest.fixture(scope="module")
def page(downloads: Path) -> Iterator[FirefoxPage]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("firefox-*.png"):
        old.unlink()
    yield from firefox_page(ARTIFACTS, downloads)


def backpack_api(deployment: Deployment) -> httpx.Client:
    return deployment.backpack(NAME, secret_key(deployment, NAME))


def get_json(deployment: Deployment, path: str, **params: Any) -> Any:
    with backpack_api(deployment) as client:
        response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def open_tab(page: FirefoxPage, label: str, heading: str) -> None:
    page.link(label, scope="nav.tabs").click()
    page.find("#tab-panel h2", heading)


def confirm_dialog(page: FirefoxPage) -> None:
    page.find("dialog[open] button[type=submit]").click()
    page.gone("dialog[open]")


def sign_in(page: FirefoxPage, password: str) -> None:
    page.field("Email").fill(ADMIN_EMAIL)
    page.field("Password").fill(password)
    page.button("Sign in").click()


def test_console_journey_in_firefox(
    page: FirefoxPage, deployment: Deployment, downloads: Path, tmp_path: Path
) -> None:
    version = page.driver.capabilities["browserVersion"]
    print(f"\nFirefox {version} (firefox-esr, headless, geckodriver + WebDriver BiDi)")
    assert int(version.split(".")[0]) >= 115

    # 1. First run: /admin goes to the setup of the first admin, who is then signed in.
    page.goto(f"{deployment.url}/admin")
    page.find("h1", "Welcome to Backpack")
    assert page.url.endswith("/admin#/setup")
    page.field("Email").fill(ADMIN_EMAIL)
    page.field("Password").fill(ADMIN_PASSWORD)
    page.field("Repeat the password").fill("something else")
    page.button("Create admin").click()
    assert "differ" in page.text("main [role=alert]")
    page.field("Repeat the password").fill(ADMIN_PASSWORD)
    page.button("Create admin").click()
    page.find("h1", "Backpacks")
    assert ADMIN_EMAIL in page.text("#nav")
    with deployment.client() as client:
        assert client.get("/admin/api/setup").json() == {"needed": False}
        login = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        deployment.token = client.post("/admin/api/login", json=login).json()["token"]

    # 2. Sign out, a wrong password is refused in the page, the right one signs in.
    page.button("Sign out").click()
    page.find("h1", "Sign in")
    assert page.evaluate("return document.getElementById('nav').textContent") == ""
    sign_in(page, "wrong password")
    assert page.text("main [role=alert]")
    page.shoot("login", BOTH)
    sign_in(page, ADMIN_PASSWORD)
    page.find("h1", "Backpacks")
    page.find("main p", "No backpack yet")

    # 3. Create a backpack: name → ready, with its API URL and the SDK snippet.
    page.field("New backpack name").fill(NAME)
    page.button("Create backpack").click()
    page.find("section.created h2", f"{NAME} is ready")
    host = f"http://{NAME}.localhost:{deployment.port}"
    assert page.find("section.created a", host).attribute("href") == host
    assert f'createClient("{host}")' in page.text("section.created pre")
    assert page.text(f"tr[data-name={NAME}] .status") == "running"
    with httpx.Client(base_url=f"{deployment.url}/i/{NAME}") as anonymous:
        for _ in range(5):
            assert anonymous.get("/api/health").status_code == 200
    page.find(f"tr[data-name={NAME}] .requests svg")
    page.shoot("dashboard", BOTH)

    # 4. Open it; a collection with a schema field.
    page.link(f"Open {NAME}").click()
    page.find("#tab-panel h2", "Collections")
    page.button("New collection").click()
    page.field("Name", scope="dialog[open]").fill("notes")
    assert page.field("Rules", scope="dialog[open]").value() == "owner_only"
    confirm_dialog(page)
    page.find("section.collection-editor h2", "Collection notes")
    schema_form = "form[aria-label=Schema]"
    page.field("Use a schema", scope=schema_form).click()
    page.button("Add field", scope=schema_form).click()
    row = f"{schema_form} fieldset.field-row"
    page.field("Field name", scope=row).fill("title")
    page.field("Field type", scope=row).select("string")
    page.field("required", scope=row).click()
    page.button("Save schema", scope=schema_form).click()
    page.find("#toasts .toast.success", "Schema saved")
    notes = get_json(deployment, "/api/collections/notes")
    assert notes["schema"]["fields"]["title"] == {"type": "string", "required": True}
    assert notes["rules"]["read"] == {"owner": "@auth.id"}
    page.shoot("collection", BOTH)

    # 5. Data: a record created in the page; records created and changed through the API
    # arrive live over the realtime subscription, without a reload.
    page.link("Browse records").click()
    page.find("#tab-panel h2", "Records")
    page.find("#tab-panel p", "No records yet.")
    page.button("New record").click()
    page.find("form.record-editor textarea").fill('{"title": 5}')
    page.button("Create", scope="form.record-editor").click()
    assert "title" in page.text("form.record-editor .field-error")
    page.find("form.record-editor textarea").fill('{"title": "Buy milk"}')
    page.button("Create", scope="form.record-editor").click()
    page.find("table.records td", "Buy milk")
    (milk,) = get_json(deployment, "/api/collections/notes/records")["items"]
    assert milk["title"] == "Buy milk"
    page.find(".list-meta .live", "Live")
    page.evaluate("window.__marker = 1;")
    with backpack_api(deployment) as client:
        created = client.post("/api/collections/notes/records", json={"title": "From the API"})
        assert created.status_code == 201, created.text
        page.find("table.records td", "From the API")
        changed = client.patch(
            f"/api/collections/notes/records/{milk['id']}", json={"title": "Buy oat milk"}
        )
        assert changed.status_code == 200, changed.text
    page.find(f"tr[data-id='{milk['id']}'] td", "Buy oat milk")
    assert page.evaluate("return window.__marker") == 1
    page.shoot("data", BOTH)

    # 6. Users: create one.
    open_tab(page, "Users", "Users")
    page.button("New user").click()
    page.field("Email", scope="dialog[open]").fill("ann@example.com")
    page.field("Password", scope="dialog[open]").fill("correct horse battery")
    confirm_dialog(page)
    page.find("#tab-panel tr", "ann@example.com")
    users = get_json(deployment, "/api/users")["items"]
    assert [u["email"] for u in users] == ["ann@example.com"]
    page.shoot("users", BOTH)

    # 7. Files: upload an image; it is listed with its preview.
    open_tab(page, "Files", "Buckets")
    image = tmp_path / "logo.png"
    image.write_bytes(png(64, 48, (20, 120, 200)))
    page.field("Files to upload").send_keys(str(image))
    page.button("Upload", scope="form.upload").click()
    page.find("table.files tr", "logo.png")
    thumb = page.find("table.files tr img.thumb")
    page.wait_for_js(
        "const img = arguments[0]; return img.complete && img.naturalWidth > 0;",
        thumb.resolve(),
        message="the image preview to load",
    )
    assert page.evaluate("return arguments[0].naturalWidth", thumb.resolve()) == 48
    (stored,) = get_json(deployment, "/api/files")["items"]
    assert (stored["name"], stored["size"], stored["type"]) == (
        "logo.png",
        image.stat().st_size,
        "image/png",
    )
    page.shoot("files", BOTH)

    # 8. Monitoring: six SVG charts, the requests one with a line.
    open_tab(page, "Monitoring", "Monitoring")
    page.find("figure.chart", "Storage")
    assert page.count("figure.chart svg") == 6
    requests_chart = page.find("figure.chart", "Requests per minute")
    assert requests_chart.count("svg path.line") == 1
    requests_total = page.text(".stat strong", scope=".stats .stat:first-child")
    assert int(requests_total) >= 5
    page.shoot("monitoring", BOTH)

    # 9. Logs: the tail shows past requests, and new ones live.
    open_tab(page, "Logs", "Logs")
    page.find("table.logs tbody td", "/api/health")
    page.find(".live", "Live")
    with httpx.Client(base_url=f"{deployment.url}/i/{NAME}") as anonymous:
        assert anonymous.get("/api/firefox-probe").status_code == 404
    page.find("table.logs tbody td", "/api/firefox-probe")
    page.field("Path contains").fill("firefox-probe")
    page.wait_until(lambda: page.count("table.logs tbody tr") == 1, "the path filter")
    page.shoot("logs", BOTH)

    # 10. Settings: the allowed origins are saved through the backpack's API.
    open_tab(page, "Settings", "Settings")
    origins = "form[aria-label='Origins and sessions']"
    page.find(f"{origins} textarea").fill("https://fox.example.com\nhttp://localhost:*")
    page.button("Save", scope=origins).click()
    page.find("#toasts .toast", "Origins and sessions: saved")
    settings = get_json(deployment, "/api/settings")
    assert settings["allowed_origins"] == ["https://fox.example.com", "http://localhost:*"]
    page.shoot("settings", BOTH)

    # 11. Backups: a backup is made and saved by the browser as a tar archive.
    open_tab(page, "Backups", "Backups")
    page.button("Create backup").click()
    saved = page.find("a.download").text
    assert saved.startswith(f"Save {NAME}-") and saved.endswith(".tar")
    assert "Backup ready" in page.text("section[aria-label='Create a backup'] .result")
    archive = downloads / saved.removeprefix("Save ")
    page.wait_until(lambda: archive.exists() and tarfile.is_tarfile(archive), "the saved backup")
    with tarfile.open(archive) as tar:
        assert tar.getnames()
    page.shoot("backups", BOTH)

    # 12. The dark theme: the colours change, and the choice survives a reload.
    page.link("Backpacks", scope="header.top").click()
    page.find(f"tr[data-name={NAME}]")
    background = "return getComputedStyle(document.body).backgroundColor"
    theme = page.evaluate("return document.documentElement.dataset.theme")
    before = page.evaluate(background)
    page.button("Switch between light and dark theme").click()
    other = "dark" if theme == "light" else "light"
    assert page.evaluate("return document.documentElement.dataset.theme") == other
    assert page.evaluate(background) != before
    page.reload()
    page.find(f"tr[data-name={NAME}]")
    assert page.evaluate("return document.documentElement.dataset.theme") == other
    page.shoot(f"dashboard-{other}", BOTH)
    page.button("Switch between light and dark theme").click()
    assert page.evaluate(background) == before

    # 13. At 390 px: the table turns into cards and nothing scrolls sideways.
    page.set_viewport(390, 900)
    assert page.overflow() <= 1
    thead = "return getComputedStyle(document.querySelector('table.backpacks thead')).display"
    assert page.evaluate(thead) == "none"
    page.link(NAME, scope=f"tr[data-name={NAME}]").click()
    page.find("nav.tabs")
    assert page.overflow() <= 1
    # The tab strip stays inside the screen and scrolls by itself; its last tab still opens.
    assert (
        page.evaluate("return document.querySelector('nav.tabs').getBoundingClientRect().right")
        <= 390
    )
    open_tab(page, "Site", "Site")
    assert page.overflow() <= 1
    page.shoot("backpack-narrow", (390,))
    page.link("Backpacks", scope="header.top").click()
    page.find(f"tr[data-name={NAME}]")

    # 14. The keyboard alone: Tab to the name field, type, Tab to the create button, Enter.
    page.evaluate("document.getElementById('main').focus();")
    name_field = page.field("New backpack name")
    create_button = page.button("Create backpack")
    for _ in range(20):
        page.press(TAB)
        if page.focused(name_field):
            break
    assert page.focused(name_field), "Tab never reached the backpack name"
    page.press("kbd")
    page.press(TAB)
    assert page.focused(create_button), "Tab from the name did not reach Create backpack"
    outline = page.evaluate(
        "return getComputedStyle(arguments[0]).outlineStyle", create_button.resolve()
    )
    assert outline != "none", "the focused button shows no focus ring"
    page.press(ENTER)
    page.find("section.created h2", "kbd is ready")
    page.find("tr[data-name=kbd] .status", "running")
    page.set_viewport(1280, 900)

    # 15. Sign out: back to the sign-in page, and the session is gone.
    page.button("Sign out").click()
    page.find("h1", "Sign in")
    assert page.evaluate_async("fetch('/admin/api/me').then((r) => r.status)") == 401
    assert page.evaluate("return document.getElementById('nav').textContent") == ""
    assert page.errors == []
