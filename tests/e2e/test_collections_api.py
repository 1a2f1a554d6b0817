"""Collections over HTTP against a real server."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.helpers import ALL_TRUE, error_of


def test_create_get_list_patch_delete(admin: httpx.Client, collection_name: str) -> None:
    schema = {"fields": {"title": {"type": "string", "required": True}}, "strict": False}
    created = admin.post(
        "/api/collections",
        json={"name": collection_name, "schema": schema, "indexes": [{"fields": ["title"]}]},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == collection_name
    assert body["schema"]["fields"]["title"]["type"] == "string"
    assert body["indexes"] == [{"fields": ["title"], "unique": False}]
    assert body["rules"]["create"] == {"@auth": {"$ne": None}}
    assert body["rules"]["read"] == {"owner": "@auth.id"}
    assert body["created"].endswith("Z") and len(body["created"]) == 24

    assert admin.get(f"/api/collections/{collection_name}").json() == body
    names = [c["name"] for c in admin.get("/api/collections").json()["items"]]
    assert collection_name in names

    patched = admin.patch(f"/api/collections/{collection_name}", json={"rules": ALL_TRUE})
    assert patched.status_code == 200, patched.text
    assert patched.json()["rules"] == ALL_TRUE
    assert patched.json()["schema"] == body["schema"]

    assert admin.delete(f"/api/collections/{collection_name}").status_code == 204
    error_of(admin.get(f"/api/collections/{collection_name}"), 404, "not_found")


def test_duplicate_and_reserved_names(admin: httpx.Client, collection_name: str) -> None:
    assert admin.post("/api/collections", json={"name": collection_name}).status_code == 201
    error_of(admin.post("/api/collections", json={"name": collection_name}), 409, "conflict")
    error_of(admin.post("/api/collections", json={"name": "_users"}), 400, "bad_request")
    for hostile in ["x'; DROP TABLE _collections; --", 'a"b', "a b", "1abc", "", "a" * 65, "é"]:
        error_of(admin.post("/api/collections", json={"name": hostile}), 400, "bad_request")
    assert admin.get(f"/api/collections/{collection_name}").status_code == 200


def test_collections_need_the_secret_key(anon: httpx.Client, server: object) -> None:
    error_of(anon.get("/api/collections"), 403, "forbidden")
    error_of(anon.post("/api/collections", json={"name": "nope"}), 403, "forbidden")
    bad_key = httpx.get(
        anon.base_url.join("/api/collections"), headers={"Authorization": "Bearer bpk_" + "x" * 43}
    )
    error_of(bad_key, 401, "unauthorized")
    user_token = httpx.get(
        anon.base_url.join("/api/collections"), headers={"Authorization": "Bearer bps_abc"}
    )
    error_of(user_token, 401, "unauthorized")


@pytest.mark.parametrize(
    "schema",
    [
        {"fields": {"x": {"type": "nonsense"}}},
        {"fields": {"x": {"type": "string", "min": 3}}},
        {"fields": {"id": {"type": "string"}}},
        {"fields": {"x": {"type": "relation"}}},
        "not an object",
    ],
)
def test_invalid_schema(admin: httpx.Client, collection_name: str, schema: object) -> None:
    response = admin.post("/api/collections", json={"name": collection_name, "schema": schema})
    error = error_of(response, 400, "validation_failed")
    assert isinstance(error["details"], dict) and error["details"]["fields"]
    error_of(admin.get(f"/api/collections/{collection_name}"), 404, "not_found")


@pytest.mark.parametrize(
    "rules",
    [
        {"read": {"$bogus": 1}},
        {"read": "yes"},
        {"publish": True},
        {"read": {"owner": "@auth.nope"}},
        {"read": False},
    ],
)
def test_invalid_rules(admin: httpx.Client, collection_name: str, rules: object) -> None:
    response = admin.post("/api/collections", json={"name": collection_name, "rules": rules})
    error_of(response, 400, "validation_failed")


def test_invalid_indexes(admin: httpx.Client, collection_name: str) -> None:
    for indexes in [
        [{"fields": []}],
        [{"fields": ["a..b"]}],
        [{"fields": ["ok"], "unique": "yes"}],
        [{"fields": ["ok"], "extra": 1}],
        "x",
    ]:
        response = admin.post(
            "/api/collections", json={"name": collection_name, "indexes": indexes}
        )
        error_of(response, 400, "validation_failed")


def test_schema_change_refused_when_records_violate(
    admin: httpx.Client, collection_name: str
) -> None:
    admin.post("/api/collections", json={"name": collection_name, "rules": ALL_TRUE})
    records = admin.post(
        "/api/batch",
        json={
            "ops": [
                {"op": "create", "collection": collection_name, "data": {"n": 1}},
                {"op": "create", "collection": collection_name, "data": {"n": "two"}},
            ]
        },
    ).json()["results"]
    bad_id = records[1]["id"]
    response = admin.patch(
        f"/api/collections/{collection_name}",
        json={"schema": {"fields": {"n": {"type": "integer"}}}},
    )
    error = error_of(response, 400, "validation_failed")
    details = error["details"]
    assert isinstance(details, dict)
    assert details["records"] == [{"id": bad_id, "fields": {"n": "must be an integer"}}]
    assert admin.get(f"/api/collections/{collection_name}").json()["schema"] is None
    # A schema the records satisfy is accepted.
    ok = admin.patch(
        f"/api/collections/{collection_name}",
        json={"schema": {"fields": {"n": {"type": "json"}}}},
    )
    assert ok.status_code == 200, ok.text


def test_unique_index_refused_over_duplicates(admin: httpx.Client, collection_name: str) -> None:
    for _ in range(2):
        admin.post(f"/api/collections/{collection_name}/records", json={"email": "a@b.co"})
    response = admin.patch(
        f"/api/collections/{collection_name}",
        json={"indexes": [{"fields": ["email"], "unique": True}]},
    )
    error_of(response, 400, "validation_failed")
    assert admin.get(f"/api/collections/{collection_name}").json()["indexes"] == []


def test_implicit_creation_by_secret_key(
    admin: httpx.Client, anon: httpx.Client, collection_name: str
) -> None:
    error_of(
        anon.post(f"/api/collections/{collection_name}/records", json={"a": 1}), 404, "not_found"
    )
    response = admin.post(f"/api/collections/{collection_name}/records", json={"a": 1})
    assert response.status_code == 201, response.text
    collection = admin.get(f"/api/collections/{collection_name}").json()
    assert collection["schema"] is None
    assert collection["rules"]["list"] == {"owner": "@auth.id"}


def test_delete_collection_removes_records(admin: httpx.Client, collection_name: str) -> None:
    admin.post(f"/api/collections/{collection_name}/records", json={"a": 1})
    assert admin.delete(f"/api/collections/{collection_name}").status_code == 204
    admin.post("/api/collections", json={"name": collection_name})
    page = admin.get(f"/api/collections/{collection_name}/records").json()
    assert page["items"] == []
