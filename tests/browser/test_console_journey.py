"""The whole journey of issue 8 in Chromium, on a fresh `backpack serve`.

Setup → create a backpack → a collection with a schema and rules → a record → a user → a
file → a site → a backup and a restore → delete, checking what the page shows after each step
and against the APIs. Screenshots: tests/artifacts/console-journey-<step>-<width>.png.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import confirm_dialog, new_page, png, shoot
from tests.e2e.control_helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Deployment,
    make_zip,
    running_deployment,
)

NAME = "journey"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from running_deployment(tmp_path_factory.mktemp("journey") / "data", setup=False)


def open_tab(page: Any, label: str) -> None:
    page.locator("nav.tabs").get_by_role("link", name=label, exact=True).click()
    page.locator("#tab-panel h2").first.wait_for()


class Api:
    """The backpack's API with its current secret key (a restore brings back the old one)."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    def client(self) -> httpx.Client:
        with self.deployment.admin() as admin:
            key = admin.get(f"/admin/api/instances/{NAME}/keys").json()["secret_key"]
        return self.deployment.backpack(NAME, key)

    def get(self, path: str, **params: Any) -> Any:
        with self.client() as client:
            response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        with self.client() as client:
            response = client.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()


def test_the_whole_journey(browser: Any, deployment: Deployment) -> None:
    errors: list[str] = []
    page = new_page(browser, errors)
    api = Api(deployment)

    # 1. Setup of the first admin.
    page.goto(f"{deployment.url}/admin")
    page.get_by_role("heading", name="Welcome to Backpack").wait_for()
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
    page.get_by_label("Repeat the password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Create admin").click()
    page.get_by_role("heading", name="Backpacks").wait_for()
    page.get_by_text("No backpack yet").wait_for()
    with deployment.client() as client:
        response = client.post(
            "/admin/api/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
    deployment.token = response.json()["token"]
    shoot(page, "journey-1-dashboard")

    # 2. Create a backpack.
    page.get_by_label("New backpack name").fill(NAME)
    page.get_by_role("button", name="Create backpack").click()
    page.locator("section.created").get_by_role("heading", name=f"{NAME} is ready").wait_for()
    assert page.locator(f"tr[data-name={NAME}] .status").inner_text() == "running"
    assert httpx.get(f"{deployment.url}/i/{NAME}/api/health").status_code == 200
    shoot(page, "journey-2-created")

    # 3. A collection with a schema and rules.
    page.get_by_role("link", name=f"Open {NAME}").click()
    page.locator("#tab-panel h2").first.wait_for()
    page.get_by_role("button", name="New collection").click()
    page.locator("dialog[open]").get_by_label("Name").fill("todos")
    page.locator("dialog[open]").get_by_label("Rules").select_option("owner_only")
    confirm_dialog(page)
    editor = page.locator("section.collection-editor")
    editor.get_by_role("heading", name="Collection todos").wait_for()
    schema_form = editor.locator("form[aria-label=Schema]")
    schema_form.get_by_label("Use a schema").check()
    schema_form.get_by_role("button", name="Add field").click()
    row = schema_form.locator("fieldset.field-row").last
    row.get_by_label("Field name").fill("title")
    row.get_by_label("Field type").select_option("string")
    row.get_by_label("required").check()
    schema_form.get_by_role("button", name="Save schema").click()
    page.locator("#toasts .toast.success", has_text="Schema saved").wait_for()
    todos = api.get("/api/collections/todos")
    assert todos["schema"]["fields"]["title"] == {"type": "string", "required": True}
    assert todos["rules"]["read"] == {"owner": "@auth.id"}
    shoot(page, "journey-3-collection")

    # 4. A record, created in the data tab.
    page.goto(f"{deployment.url}/admin/#/b/{NAME}/data?collection=todos")
    page.get_by_text("No records yet.").wait_for()
    page.get_by_role("button", name="New record").click()
    record_editor = page.locator("form.record-editor")
    record_editor.locator("textarea").fill('{"title": "Buy milk"}')
    record_editor.get_by_role("button", name="Create").click()
    page.locator("table.records td", has_text="Buy milk").wait_for()
    assert [r["title"] for r in api.get("/api/collections/todos/records")["items"]] == ["Buy milk"]
    shoot(page, "journey-4-records")

    # 5. A user.
    open_tab(page, "Users")
    page.get_by_role("button", name="New user").click()
    page.locator("dialog[open]").get_by_label("Email").fill("ann@example.com")
    page.locator("dialog[open]").get_by_label("Password").fill("correct horse battery")
    confirm_dialog(page)
    page.locator("#tab-panel tr", has_text="ann@example.com").wait_for()
    users = api.get("/api/users")["items"]
    assert [u["email"] for u in users] == ["ann@example.com"]
    shoot(page, "journey-5-users")

    # 6. A file.
    open_tab(page, "Files")
    image = png(40, 30, (20, 120, 200))
    page.get_by_label("Files to upload").set_input_files(
        [{"name": "logo.png", "mimeType": "image/png", "buffer": image}]
    )
    page.locator("form.upload").get_by_role("button", name="Upload", exact=True).click()
    page.locator("table.files tr", has_text="logo.png").wait_for()
    (stored,) = api.get("/api/files")["items"]
    assert (stored["name"], stored["size"]) == ("logo.png", len(image))
    shoot(page, "journey-6-files")

    # 7. A site.
    open_tab(page, "Site")
    page.get_by_text("No site is published.").wait_for()
    page.get_by_label("Site zip").set_input_files(
        files=[
            {
                "name": "site.zip",
                "mimeType": "application/zip",
                "buffer": make_zip({"dist/index.html": b"<h1>Journey</h1>"}),
            }
        ]
    )
    page.get_by_role("button", name="Publish").click()
    page.locator("p.published", has_text="1 files").wait_for()
    assert "Journey" in httpx.get(f"{deployment.url}/i/{NAME}/site/").text
    shoot(page, "journey-7-site")

    # 8. A backup, a change, and a restore that undoes the change.
    open_tab(page, "Backups")
    with page.expect_download() as download:
        page.get_by_role("button", name="Create backup").click()
    archive = Path(download.value.path())
    assert tarfile.is_tarfile(archive)
    api.post("/api/collections/todos/records", {"title": "After the backup"})
    assert len(api.get("/api/collections/todos/records")["items"]) == 2
    page.get_by_label("Backup archive (.tar)").set_input_files(str(archive))
    page.locator("form[aria-label=Restore]").get_by_role("button", name="Restore").click()
    confirm_dialog(page)
    page.get_by_text(f"{NAME} is running").wait_for()
    shoot(page, "journey-8-restored")
    titles = [r["title"] for r in api.get("/api/collections/todos/records")["items"]]
    assert titles == ["Buy milk"]
    assert [f["name"] for f in api.get("/api/files")["items"]] == ["logo.png"]
    page.goto(f"{deployment.url}/admin/#/b/{NAME}/data?collection=todos")
    page.locator("table.records td", has_text="Buy milk").wait_for()
    assert page.locator("table.records td", has_text="After the backup").count() == 0

    # 9. Delete, typing the name.
    page.locator("header.top").get_by_role("link", name="Backpacks").click()
    page.locator(f"tr[data-name={NAME}]").get_by_role("button", name=f"Delete {NAME}").click()
    confirm_dialog(page, NAME)
    page.get_by_text("No backpack yet").wait_for()
    assert httpx.get(f"{deployment.url}/i/{NAME}/api/health").status_code == 404
    assert not (deployment.data_dir / "instances" / NAME).exists()
    shoot(page, "journey-9-deleted")
    page.context.close()
    assert errors == []
