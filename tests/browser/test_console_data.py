"""The console's data tabs (collections, data, users, files) in Chromium against `backpack serve`.

Each tab is driven through the page and checked against the backpack's API: schema, indexes
and rules saved from the field editor; records filtered, sorted, paged (10,000 of them, timed
with the Performance API), edited inline, created live; users; buckets and files. Bad input is
shown at the field and changes nothing. Screenshots: tests/artifacts/console-<tab>-<width>.png.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import admin_cookie, confirm_dialog, new_page, png, shoot
from tests.e2e.control_helpers import Deployment, create_instance, running_deployment, secret_key

RECORDS = 10_000
RED = (200, 30, 60)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from running_deployment(tmp_path_factory.mktemp("console-data") / "data")


@pytest.fixture(scope="module")
def name(deployment: Deployment) -> str:
    return create_instance(deployment, "data")


@pytest.fixture(scope="module")
def api(deployment: Deployment, name: str) -> Iterator[httpx.Client]:
    """The backpack's API with its secret key."""
    with deployment.backpack(name, secret_key(deployment, name)) as client:
        yield client


@pytest.fixture
def page(browser: Any, deployment: Deployment) -> Iterator[Any]:
    """A signed-in console page; fails the test on any script error."""
    errors: list[str] = []
    page = new_page(browser, errors)
    admin_cookie(page, deployment.token)
    yield page
    page.context.close()
    assert errors == []


def open_tab(page: Any, deployment: Deployment, name: str, tab: str, query: str = "") -> None:
    page.goto(f"{deployment.url}/admin/#/b/{name}/{tab}{'?' + query if query else ''}")
    page.locator("#tab-panel h2").first.wait_for()


def toast_error(page: Any) -> str:
    """The text of the newest error message, which is then dismissed."""
    toast = page.locator("#toasts .toast.error").last
    toast.wait_for()
    text: str = toast.inner_text()
    toast.get_by_role("button", name="Dismiss").click()
    return text


def get_json(api: httpx.Client, path: str, **params: Any) -> Any:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_collections_tab(page: Any, deployment: Deployment, name: str, api: httpx.Client) -> None:
    open_tab(page, deployment, name, "collections")
    page.locator("#tab-panel").get_by_text("No collections yet").wait_for()

    # Create with a preset.
    page.get_by_role("button", name="New collection").click()
    dialog = page.locator("dialog[open]")
    dialog.get_by_label("Name").fill("todos")
    dialog.get_by_label("Rules").select_option("public_read")
    confirm_dialog(page)
    editor = page.locator("section.collection-editor")
    editor.get_by_role("heading", name="Collection todos").wait_for()
    todos = get_json(api, "/api/collections/todos")
    assert todos["rules"]["list"] is True
    assert todos["rules"]["update"] == {"owner": "@auth.id"}
    assert todos["schema"] is None

    # Schema from the field editor: every row type a different set of options.
    schema_form = editor.locator("form[aria-label=Schema]")
    schema_form.get_by_label("Use a schema").check()

    def add_field(field: str, kind: str) -> Any:
        rows = schema_form.locator("fieldset.field-row")
        count = rows.count()
        schema_form.get_by_role("button", name="Add field").click()
        row = rows.nth(count)
        row.get_by_label("Field name").fill(field)
        row.get_by_label("Field type").select_option(kind)
        return row

    title = add_field("title", "string")
    title.get_by_label("required").check()
    title.get_by_label("maxLength").fill("20")
    title.get_by_label("pattern").fill("(")  # not a valid regular expression
    done = add_field("done", "boolean")
    done.get_by_label("default").fill("false")
    priority = add_field("priority", "integer")
    priority.get_by_label("min").fill("1")
    priority.get_by_label("max").fill("5")
    tags = add_field("tags", "array")
    tags.get_by_label("Item type").select_option("string")
    tags.get_by_label("maxLength").first.fill("3")
    add_field("due", "date").get_by_label("min").fill("2020-01-01")
    add_field("kind", "string").get_by_label("enum").fill('["home", "work"]')
    schema_form.get_by_role("button", name="Save schema").click()

    # The server refuses the pattern: the error is shown at that option; nothing is saved.
    pattern_error = title.locator("label.option", has_text="pattern").locator(".field-error")
    pattern_error.wait_for()
    assert "schema.fields.title.pattern" in pattern_error.inner_text()
    assert "pattern" in schema_form.locator("ul.field-errors").inner_text()
    assert get_json(api, "/api/collections/todos")["schema"] is None

    # A default that is not JSON is caught before sending.
    done.get_by_label("default").fill("nope")
    schema_form.get_by_role("button", name="Save schema").click()
    assert "Not valid JSON" in done.locator(".field-error").first.inner_text()

    done.get_by_label("default").fill("false")
    title.get_by_label("pattern").fill("^[^<>]*$")
    schema_form.get_by_role("button", name="Save schema").click()
    page.locator("#toasts .toast.success", has_text="Schema saved").wait_for()
    schema = get_json(api, "/api/collections/todos")["schema"]
    assert schema["strict"] is False
    assert schema["fields"] == {
        "title": {"type": "string", "required": True, "maxLength": 20, "pattern": "^[^<>]*$"},
        "done": {"type": "boolean", "default": False},
        "priority": {"type": "integer", "min": 1, "max": 5},
        "tags": {"type": "array", "items": {"type": "string"}, "maxLength": 3},
        "due": {"type": "date", "min": "2020-01-01"},
        "kind": {"type": "string", "enum": ["home", "work"]},
    }

    # Indexes.
    indexes_form = editor.locator("form[aria-label=Indexes]")
    indexes_form.get_by_role("button", name="Add index").click()
    indexes_form.get_by_label("Index fields").fill("done, -priority")
    indexes_form.get_by_role("button", name="Save indexes").click()
    page.locator("#toasts .toast.success", has_text="Indexes saved").wait_for()
    indexes = get_json(api, "/api/collections/todos")["indexes"]
    assert indexes == [{"fields": ["done", "-priority"], "unique": False}]

    # Rules: the raw editor validates as you type; nothing bad is sent.
    rules_form = editor.locator("form[aria-label=Rules]")
    list_rule = rules_form.get_by_label("list rule")
    list_rule.fill("{")
    assert "Not valid JSON" in rules_form.locator(".json-field .field-error").first.inner_text()
    list_rule.fill('{"owner": {"$foo": 1}}')
    assert "unknown operator" in rules_form.locator(".json-field .field-error").first.inner_text()
    rules_form.get_by_label("read rule").fill('{"owner": "@body.owner"}')
    assert "@body" in rules_form.locator(".json-field .field-error").nth(1).inner_text()
    rules_form.get_by_role("button", name="Save rules").click()
    assert "fix the rules" in rules_form.locator("ul.field-errors").inner_text()
    assert get_json(api, "/api/collections/todos")["rules"]["list"] is True
    shoot(page, "collections-rules")

    # A preset fills every operation; saved rules equal the server's preset.
    rules_form.get_by_label("Preset").select_option("signed_in_read_owner_write")
    assert rules_form.locator(".json-field .field-error:visible").count() == 0
    rules_form.get_by_label("create rule").fill('{"@auth.verified": true, "title": "@body.title"}')
    assert rules_form.get_by_label("Preset").input_value() == ""
    rules_form.get_by_role("button", name="Save rules").click()
    page.locator("#toasts .toast.success", has_text="Rules saved").wait_for()
    rules = get_json(api, "/api/collections/todos")["rules"]
    signed_in = {"@auth": {"$ne": None}}
    assert rules == {
        "list": signed_in,
        "read": signed_in,
        "create": {"@auth.verified": True, "title": "@body.title"},
        "update": {"owner": "@auth.id"},
        "delete": {"owner": "@auth.id"},
    }
    assert "Custom" in page.locator("#tab-panel table").inner_text()
    shoot(page, "collections")

    # Delete asks for the name: a wrong one deletes nothing.
    assert api.post("/api/collections", json={"name": "scratch"}).status_code == 201
    page.reload()
    row = page.locator("#tab-panel tr", has_text="scratch")
    row.get_by_role("button", name="Delete").click()
    confirm_dialog(page, "scratc")
    page.locator("#toasts .toast", has_text="Nothing was deleted").wait_for()
    assert api.get("/api/collections/scratch").status_code == 200
    row.get_by_role("button", name="Delete").click()
    confirm_dialog(page, "scratch")
    row.wait_for(state="detached")
    assert api.get("/api/collections/scratch").status_code == 404


def seed_items(api: httpx.Client) -> None:
    if api.get("/api/collections/items").status_code == 200:
        return
    for start in range(0, RECORDS, 1000):
        ops = [
            {"op": "create", "collection": "items", "data": {"n": i, "label": f"item {i}"}}
            for i in range(start, start + 1000)
        ]
        response = api.post("/api/batch", json={"ops": ops})
        assert response.status_code == 200, response.text


def test_data_tab_pages_filters_and_sorts(
    page: Any, deployment: Deployment, name: str, api: httpx.Client
) -> None:
    seed_items(api)
    open_tab(page, deployment, name, "data", "collection=items")
    table = page.locator("table.records tbody")
    assert page.get_by_label("Collection").input_value() == "items"
    page.locator(".list-meta", has_text=f"{RECORDS} records").wait_for()
    assert table.locator("tr").count() == 50

    # Page through all 10,000 records, one page of 50 at a time, timing each page.
    seen: set[str] = set()
    timings: list[float] = []
    pager = page.locator("nav.pager")
    for index in range(RECORDS // 50):
        if index:
            pager.get_by_role("button", name="Next →").click()
            pager.get_by_text(f"Page {index + 1}", exact=True).wait_for()
        ids = table.locator("tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
        assert len(ids) == 50
        seen.update(ids)
        duration = page.evaluate(
            "() => performance.getEntriesByName('records-page').at(-1).duration"
        )
        timings.append(duration)
    assert len(seen) == RECORDS
    assert pager.get_by_role("button", name="Next →").is_disabled()
    loaded = page.evaluate(
        "() => performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/collections/items/records')).length"
    )
    assert loaded == RECORDS // 50  # one request per page: never everything at once
    print(
        f"\nrecord browser: {len(timings)} pages of 50 of {RECORDS} records; per page "
        f"median {statistics.median(timings):.1f} ms, p95 "
        f"{sorted(timings)[int(len(timings) * 0.95)]:.1f} ms, max {max(timings):.1f} ms"
    )
    # Previous goes back through the kept cursors.
    last_first = table.locator("tr").first.get_attribute("data-id")
    pager.get_by_role("button", name="← Previous").click()
    pager.get_by_text(f"Page {RECORDS // 50 - 1}", exact=True).wait_for()
    pager.get_by_role("button", name="Next →").click()
    pager.get_by_text(f"Page {RECORDS // 50}", exact=True).wait_for()
    assert table.locator("tr").first.get_attribute("data-id") == last_first

    # Sort by clicking a column: ascending, then descending.
    page.locator("th[data-column=n] button").click()
    page.locator("th[data-column=n][aria-sort=ascending]").wait_for()
    assert table.locator("tr").first.locator("td[data-label=n]").inner_text() == "0"
    page.locator("th[data-column=n] button").click()
    page.locator("th[data-column=n][aria-sort=descending]").wait_for()
    assert table.locator("tr").first.locator("td[data-label=n]").inner_text() == "9999"
    pager.get_by_text("Page 1", exact=True).wait_for()

    # Filters: JSON that does not parse, or of the wrong shape, is shown at the field.
    filter_box = page.get_by_label("Filter (JSON")
    error = page.locator("form.filter-form .field-error")
    filter_box.fill('{"n": ')
    assert "Not valid JSON" in error.inner_text()
    filter_box.fill('{"n": {"$within": 3}}')
    assert "n.$within: unknown operator" in error.inner_text()
    page.get_by_role("button", name="Apply filter").click()
    assert table.locator("tr").count() == 50
    # The server's own refusal (a regex RE2 cannot compile) shows at the field too.
    filter_box.fill('{"label": {"$regex": "("}}')
    assert error.is_hidden()
    page.get_by_role("button", name="Apply filter").click()
    error.wait_for()
    assert "regular expression" in error.inner_text().lower() or "regex" in error.inner_text()
    assert table.locator("tr").count() == 50

    filter_box.fill('{"n": {"$lt": 10}}')
    page.get_by_role("button", name="Apply filter").click()
    page.locator(".list-meta", has_text="10 records").wait_for()
    values = table.locator("td[data-label=n]").all_inner_texts()
    assert values == [str(n) for n in range(9, -1, -1)]
    # The sort menu does what the headers do (narrow screens have no header row).
    page.locator("select[name=sort]").select_option("n")
    page.locator("th[data-column=n][aria-sort=ascending]").wait_for()
    assert table.locator("td[data-label=n]").all_inner_texts() == [str(n) for n in range(10)]
    shoot(page, "data")


def test_data_tab_edits_and_live_updates(
    page: Any, deployment: Deployment, name: str, api: httpx.Client
) -> None:
    schema = {
        "fields": {
            "title": {"type": "string", "required": True, "maxLength": 20},
            "done": {"type": "boolean", "default": False},
        }
    }
    response = api.post("/api/collections", json={"name": "notes", "schema": schema})
    assert response.status_code == 201, response.text
    open_tab(page, deployment, name, "data", "collection=notes")
    page.get_by_text("No records yet.").wait_for()

    # Create through the page: the editor starts from the schema.
    page.get_by_role("button", name="New record").click()
    editor = page.locator("form.record-editor")
    assert json.loads(editor.locator("textarea").input_value()) == {"title": "", "done": False}
    editor.locator("textarea").fill("[1, 2]")
    assert "must be a JSON object" in editor.locator(".field-error").inner_text()
    editor.locator("textarea").fill('{"title": "Buy milk"}')
    editor.get_by_role("button", name="Create").click()
    page.locator("table.records td", has_text="Buy milk").wait_for()
    (note,) = get_json(api, "/api/collections/notes/records")["items"]
    assert note["title"] == "Buy milk" and note["done"] is False

    # Edit inline: a schema violation is shown at the field and nothing changes.
    row = page.locator(f"tr[data-id='{note['id']}']")
    row.get_by_role("button", name="Edit").click()
    editor = page.locator("form.record-editor")
    editor.locator("textarea").fill('{"title": "This title is far too long", "done": "yes"}')
    editor.get_by_role("button", name="Save").click()
    field_error = editor.locator(".json-field .field-error")
    field_error.wait_for()
    assert "title:" in field_error.inner_text() and "done:" in field_error.inner_text()
    assert "title" in editor.locator("ul.field-errors").inner_text()
    assert editor.locator("textarea").get_attribute("aria-invalid") == "true"
    assert get_json(api, f"/api/collections/notes/records/{note['id']}")["version"] == 1
    shoot(page, "data-edit")
    editor.locator("textarea").fill('{"title": "Buy bread", "done": true}')
    editor.get_by_role("button", name="Save").click()
    editor.wait_for(state="detached")
    assert "Buy bread" in row.inner_text()
    stored = get_json(api, f"/api/collections/notes/records/{note['id']}")
    assert (stored["title"], stored["done"], stored["version"]) == ("Buy bread", True, 2)

    # Live: records created, changed and deleted through the API appear without a reload.
    page.locator(".list-meta .live").get_by_text("Live", exact=True).wait_for()
    page.evaluate("() => { window.__marker = 1; }")
    created = api.post("/api/collections/notes/records", json={"title": "From the API"})
    assert created.status_code == 201
    page.locator("table.records td", has_text="From the API").wait_for()
    changed = api.patch(f"/api/collections/notes/records/{note['id']}", json={"title": "Changed"})
    assert changed.status_code == 200
    row.locator("td", has_text="Changed").wait_for()
    assert api.delete(f"/api/collections/notes/records/{created.json()['id']}").status_code == 204
    page.locator("table.records td", has_text="From the API").wait_for(state="detached")
    assert page.evaluate("() => window.__marker") == 1  # the page was never reloaded

    # Delete through the page.
    row.get_by_role("button", name="Delete").click()
    confirm_dialog(page)
    page.get_by_text("No records yet.").wait_for()
    assert get_json(api, "/api/collections/notes/records")["items"] == []


def test_users_tab(page: Any, deployment: Deployment, name: str, api: httpx.Client) -> None:
    assert api.post("/api/users", json={"email": "bob@example.com"}).status_code == 201
    open_tab(page, deployment, name, "users")
    page.get_by_role("button", name="New user").click()
    dialog = page.locator("dialog[open]")
    dialog.get_by_label("Email").fill("ann@example.com")
    dialog.get_by_label("Password").fill("correct horse battery")
    dialog.get_by_label("Role").fill("editor")
    confirm_dialog(page)
    row = page.locator("#tab-panel tr", has_text="ann@example.com")
    row.wait_for()
    (ann,) = get_json(api, "/api/users", filter='{"email": "ann@example.com"}')["items"]
    assert (ann["role"], ann["verified"]) == ("editor", False)
    login = {"email": "ann@example.com", "password": "correct horse battery"}
    assert (
        httpx.post(f"{str(api.base_url).rstrip('/')}/api/auth/login", json=login).status_code == 200
    )

    # A taken email: the server's message is shown; no second account.
    page.get_by_role("button", name="New user").click()
    page.locator("dialog[open]").get_by_label("Email").fill("ann@example.com")
    confirm_dialog(page)
    assert "already" in toast_error(page).lower()
    assert len(get_json(api, "/api/users")["items"]) == 2

    # Search.
    page.get_by_label("Search users by email").fill("BOB")
    page.get_by_role("button", name="Search").click()
    page.locator("#tab-panel tr", has_text="ann@example.com").wait_for(state="detached")
    assert "bob@example.com" in page.locator("#tab-panel table").inner_text()
    page.get_by_label("Search users by email").fill("")
    page.get_by_role("button", name="Search").click()
    row.wait_for()

    # Verify, set a role.
    row.get_by_role("button", name="Verify").click()
    row.get_by_role("button", name="Verify").wait_for(state="detached")
    row.get_by_role("button", name="Role…").click()
    role = page.locator("dialog[open]").get_by_label("Role")
    assert role.input_value() == "editor"
    role.fill("admin")
    confirm_dialog(page)
    row.locator("td[data-label=Role]", has_text="admin").wait_for()
    user = get_json(api, f"/api/users/{ann['id']}")
    assert (user["verified"], user["role"]) == (True, "admin")

    # A reset link needs SMTP: the server's explanation is shown.
    row.get_by_role("button", name="Send reset link").click()
    assert "SMTP" in toast_error(page)
    shoot(page, "users")

    # Without SMTP, the admin hands over a link instead; it sets a new password once.
    row.get_by_role("button", name="Reset link…").click()
    link = page.locator("dialog[open] input.reset-link").input_value()
    token = link.split("token=", 1)[1]
    confirm_dialog(page)
    base = str(api.base_url).rstrip("/")
    new_password = {"token": token, "password": "chosen after the reset"}
    assert httpx.post(f"{base}/api/auth/password/confirm", json=new_password).status_code == 204
    login["password"] = "chosen after the reset"

    # Sign out everywhere ends the user's sessions.
    session = httpx.post(f"{base}/api/auth/login", json=login).json()["token"]
    row.get_by_role("button", name="Sign out everywhere").click()
    page.locator("#toasts .toast", has_text="signed out of").wait_for()
    me = httpx.get(f"{base}/api/auth/me", headers={"Authorization": f"Bearer {session}"})
    assert me.status_code == 401

    # Delete asks for the email.
    row.get_by_role("button", name="Delete").click()
    confirm_dialog(page, "ann@example.co")
    page.locator("#toasts .toast", has_text="Nothing was deleted").wait_for()
    assert api.get(f"/api/users/{ann['id']}").status_code == 200
    row.get_by_role("button", name="Delete").click()
    confirm_dialog(page, "ann@example.com")
    row.wait_for(state="detached")
    assert api.get(f"/api/users/{ann['id']}").status_code == 404
    assert (
        httpx.post(f"{str(api.base_url).rstrip('/')}/api/auth/login", json=login).status_code == 401
    )


def test_files_tab(
    page: Any, deployment: Deployment, name: str, api: httpx.Client, tmp_path: Path
) -> None:
    open_tab(page, deployment, name, "files")
    page.locator("#tab-panel h3", has_text="Files in default").wait_for()

    # A new bucket with limits and rules.
    page.get_by_role("button", name="New bucket").click()
    page.locator("dialog[open]").get_by_label("Name").fill("photos")
    confirm_dialog(page)
    settings = page.locator("form[aria-label='Bucket photos settings']")
    settings.wait_for()
    settings.get_by_label("Max size in bytes").fill("200000")
    settings.get_by_label("Allowed types").fill("image/*")
    settings.get_by_label("create rule").fill('{"$where": 1}')
    settings.get_by_role("button", name="Save bucket").click()
    assert "fix the rules" in settings.locator("ul.field-errors").inner_text()
    assert get_json(api, "/api/buckets/photos")["allowed_types"] is None
    settings.get_by_label("Preset").select_option("public_read")
    settings.get_by_role("button", name="Save bucket").click()
    page.locator("#toasts .toast.success", has_text="Bucket photos saved").wait_for()
    bucket = get_json(api, "/api/buckets/photos")
    assert (bucket["max_size"], bucket["allowed_types"]) == (200000, ["image/*"])
    assert bucket["rules"]["list"] is True

    # Upload an image: progress, then the file with a thumbnail preview.
    image = png(64, 48, RED)
    chooser = page.get_by_label("Files to upload")
    chooser.set_input_files([{"name": "red.png", "mimeType": "image/png", "buffer": image}])
    page.locator("form.upload").get_by_role("button", name="Upload", exact=True).click()
    row = page.locator("table.files tr", has_text="red.png")
    row.wait_for()
    thumb = row.locator("img.thumb")
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle()
    )
    assert thumb.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [48, 48]
    (stored,) = get_json(api, "/api/files", bucket="photos")["items"]
    assert (stored["name"], stored["size"], stored["type"]) == ("red.png", len(image), "image/png")

    # A type the bucket refuses: the server's 415 is shown, nothing is stored.
    chooser.set_input_files([{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    page.locator("form.upload").get_by_role("button", name="Upload", exact=True).click()
    assert "text/plain" in toast_error(page)
    assert len(get_json(api, "/api/files", bucket="photos")["items"]) == 1
    # Too large for the bucket: 413.
    big = png(1200, 900, RED)
    big += b"\0" * max(0, 250_000 - len(big))
    chooser.set_input_files([{"name": "big.png", "mimeType": "image/png", "buffer": big}])
    page.locator("form.upload").get_by_role("button", name="Upload", exact=True).click()
    assert "large" in toast_error(page).lower()
    assert len(get_json(api, "/api/files", bucket="photos")["items"]) == 1
    shoot(page, "files")

    # Download gives the same bytes.
    with page.expect_download() as info:
        row.get_by_role("button", name="Download").click()
    target = tmp_path / "red.png"
    info.value.save_as(target)
    assert target.read_bytes() == image

    # Delete.
    row.get_by_role("button", name="Delete").click()
    confirm_dialog(page)
    page.get_by_text("No files in this bucket yet.").wait_for()
    assert get_json(api, "/api/files", bucket="photos")["items"] == []
