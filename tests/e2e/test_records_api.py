"""Records over HTTP: create, read, replace, merge patch, If-Match, delete."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest

from tests.e2e.helpers import error_of, make_collection


def test_record_lifecycle(admin: httpx.Client, collection_name: str) -> None:
    make_collection(admin, collection_name)
    base = f"/api/collections/{collection_name}/records"
    created = admin.post(base, json={"title": "hello", "meta": {"a": 1, "b": 2}})
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["title"] == "hello"
    assert record["version"] == 1
    assert record["owner"] is None
    assert record["created"] == record["updated"]
    assert created.headers["etag"] == '"1"'

    fetched = admin.get(f"{base}/{record['id']}")
    assert fetched.json() == record
    assert fetched.headers["etag"] == '"1"'
    assert admin.get(f"{base}/{record['id']}", headers={"If-None-Match": '"1"'}).status_code == 304

    patched = admin.patch(f"{base}/{record['id']}", json={"meta": {"a": None, "c": 3}, "x": True})
    assert patched.status_code == 200, patched.text
    after = patched.json()
    assert after["meta"] == {"b": 2, "c": 3}
    assert after["x"] is True and after["title"] == "hello"
    assert after["version"] == 2 and after["created"] == record["created"]

    replaced = admin.put(f"{base}/{record['id']}", json={"only": 1})
    assert replaced.status_code == 200
    body = replaced.json()
    assert set(body) == {"id", "created", "updated", "owner", "version", "only"}
    assert body["version"] == 3

    assert admin.delete(f"{base}/{record['id']}").status_code == 204
    error_of(admin.get(f"{base}/{record['id']}"), 404, "not_found")
    error_of(admin.delete(f"{base}/{record['id']}"), 404, "not_found")


def test_system_fields_are_read_only(admin: httpx.Client, collection_name: str) -> None:
    make_collection(admin, collection_name)
    base = f"/api/collections/{collection_name}/records"
    record = admin.post(
        base, json={"version": 99, "created": "2000-01-01T00:00:00.000Z", "owner": "u1", "v": 1}
    ).json()
    assert record["version"] == 1 and record["created"] != "2000-01-01T00:00:00.000Z"
    assert record["owner"] == "u1"  # the secret key may set an owner
    patched = admin.patch(f"{base}/{record['id']}", json={"version": 50, "updated": "x"}).json()
    assert patched["version"] == 2
    error_of(admin.patch(f"{base}/{record['id']}", json={"id": "other"}), 400, "bad_request")


def test_client_supplied_ids(admin: httpx.Client, collection_name: str) -> None:
    make_collection(admin, collection_name)
    base = f"/api/collections/{collection_name}/records"
    assert admin.post(base, json={"id": "my-id_1"}).status_code == 201
    error_of(admin.post(base, json={"id": "my-id_1"}), 409, "conflict")
    for bad in ["a/b", "..", "a\u0000b", "x" * 65, "", "sp ace", 12, "é"]:
        error_of(admin.post(base, json={"id": bad}), 400, "bad_request")
    assert admin.get(f"{base}/my-id_1").status_code == 200
    for bad_path in ["x" * 65, "a%00b", "a%20b"]:
        response = admin.get(f"{base}/{bad_path}")
        assert response.status_code in (400, 404), response.text
        assert response.json()["error"]["code"] in ("bad_request", "not_found")
    assert admin.get(base).json()["items"][0]["id"] == "my-id_1"


def test_if_match(admin: httpx.Client, collection_name: str) -> None:
    make_collection(admin, collection_name)
    base = f"/api/collections/{collection_name}/records"
    record = admin.post(base, json={"n": 0}).json()
    url = f"{base}/{record['id']}"
    ok = admin.patch(url, json={"n": 1}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200
    stale = admin.patch(url, json={"n": 2}, headers={"If-Match": '"1"'})
    error_of(stale, 409, "conflict")
    error_of(admin.put(url, json={"n": 3}, headers={"If-Match": '"7"'}), 409, "conflict")
    error_of(admin.delete(url, headers={"If-Match": '"1"'}), 409, "conflict")
    error_of(admin.patch(url, json={"n": 4}, headers={"If-Match": "garbage"}), 400, "bad_request")
    assert admin.get(url).json()["n"] == 1
    assert admin.put(url, json={"n": 5}, headers={"If-Match": 'W/"2"'}).status_code == 200
    assert admin.delete(url, headers={"If-Match": '"3"'}).status_code == 204


def test_patch_racing_patch_loses_nothing(
    server: object, admin: httpx.Client, collection_name: str
) -> None:
    make_collection(admin, collection_name)
    base = f"/api/collections/{collection_name}/records"
    record = admin.post(base, json={"count": 0}).json()
    url = f"{base}/{record['id']}"

    def increment(_: int) -> int:
        # Read-modify-write with If-Match, retrying on 409: the classic optimistic loop.
        with httpx.Client(base_url=admin.base_url, headers=admin.headers, timeout=30) as client:
            attempts = 0
            while True:
                attempts += 1
                current = client.get(url)
                version = current.headers["etag"]
                response = client.patch(
                    url, json={"count": current.json()["count"] + 1}, headers={"If-Match": version}
                )
                if response.status_code == 200:
                    return attempts
                assert response.status_code == 409, response.text

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        attempts = list(pool.map(increment, range(40)))
    final = admin.get(url).json()
    assert final["count"] == 40
    assert final["version"] == 41
    assert max(attempts) >= 1


def test_plain_patches_race_without_lost_fields(admin: httpx.Client, collection_name: str) -> None:
    make_collection(admin, collection_name)
    base = f"/api/collections/{collection_name}/records"
    record = admin.post(base, json={}).json()
    url = f"{base}/{record['id']}"

    def set_field(i: int) -> int:
        with httpx.Client(base_url=admin.base_url, headers=admin.headers, timeout=30) as client:
            return client.patch(url, json={f"f{i}": i}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(set_field, range(30)))
    assert statuses == [200] * 30
    final = admin.get(url).json()
    assert all(final[f"f{i}"] == i for i in range(30))
    assert final["version"] == 31


def test_unique_violation_under_50_concurrent_writers(
    admin: httpx.Client, collection_name: str
) -> None:
    make_collection(
        admin, collection_name, schema={"fields": {"email": {"type": "email", "unique": True}}}
    )
    base = f"/api/collections/{collection_name}/records"

    def create(i: int) -> int:
        with httpx.Client(base_url=admin.base_url, headers=admin.headers, timeout=30) as client:
            response = client.post(base, json={"email": "same@example.com", "n": i})
            if response.status_code == 409:
                assert response.json()["error"]["details"]["fields"] == ["email"]
            return response.status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(create, range(50)))
    assert statuses.count(201) == 1
    assert statuses.count(409) == 49
    page = admin.get(base, params={"count": "true"}).json()
    assert page["total"] == 1


def test_schema_validation_on_write(admin: httpx.Client, collection_name: str) -> None:
    schema = {
        "fields": {
            "title": {"type": "string", "required": True, "maxLength": 10},
            "done": {"type": "boolean", "default": False},
            "score": {"type": "integer", "min": 0, "max": 10},
        },
        "strict": True,
    }
    make_collection(admin, collection_name, schema=schema)
    base = f"/api/collections/{collection_name}/records"
    created = admin.post(base, json={"title": "ok"}).json()
    assert created["done"] is False
    error = error_of(admin.post(base, json={"score": 11, "extra": 1}), 400, "validation_failed")
    assert set(error["details"]["fields"]) == {"title", "score", "extra"}
    error_of(admin.patch(f"{base}/{created['id']}", json={"title": None}), 400, "validation_failed")
    assert admin.get(f"{base}/{created['id']}").json()["title"] == "ok"


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'"text"', b"42", b"null", b"true"],
)
def test_non_object_bodies(admin: httpx.Client, collection_name: str, body: bytes) -> None:
    make_collection(admin, collection_name)
    response = admin.post(
        f"/api/collections/{collection_name}/records",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    error_of(response, 400, "bad_request")
    assert admin.get(f"/api/collections/{collection_name}/records").json()["items"] == []


def test_anonymous_access_follows_rules(
    admin: httpx.Client, anon: httpx.Client, collection_name: str
) -> None:
    admin.post("/api/collections", json={"name": collection_name})  # default: owner only
    base = f"/api/collections/{collection_name}/records"
    record = admin.post(base, json={"secret": 1}).json()
    error_of(anon.post(base, json={"a": 1}), 403, "forbidden")
    assert anon.get(base).json()["items"] == []
    error_of(anon.get(f"{base}/{record['id']}"), 404, "not_found")
    error_of(anon.patch(f"{base}/{record['id']}", json={"a": 1}), 404, "not_found")
    error_of(anon.delete(f"{base}/{record['id']}"), 404, "not_found")

    admin.patch(
        f"/api/collections/{collection_name}",
        json={"rules": {"list": True, "read": {"public": True}, "create": None}},
    )
    public = admin.post(base, json={"public": True}).json()
    assert {r["id"] for r in anon.get(base).json()["items"]} == {record["id"], public["id"]}
    assert anon.get(f"{base}/{public['id']}").status_code == 200
    error_of(anon.get(f"{base}/{record['id']}"), 404, "not_found")
    error_of(anon.post(base, json={"a": 1}), 403, "forbidden")
    assert admin.get(f"{base}/{record['id']}").json()["secret"] == 1


def test_defaults_apply_on_create_and_replace_not_patch(
    admin: httpx.Client, collection_name: str
) -> None:
    schema = {"fields": {"status": {"type": "string", "default": "new"}, "n": {"type": "integer"}}}
    make_collection(admin, collection_name, schema=schema)
    base = f"/api/collections/{collection_name}/records"
    record = admin.post(base, json={"n": 1}).json()
    assert record["status"] == "new"
    patched = admin.patch(f"{base}/{record['id']}", json={"status": None, "n": 2}).json()
    assert "status" not in patched
    replaced = admin.put(f"{base}/{record['id']}", json={"n": 3}).json()
    assert replaced["status"] == "new"
