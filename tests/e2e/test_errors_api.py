"""The error contract on every path: shape, status, request ids, limits."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.helpers import error_of, make_collection


def test_health_and_request_id(anon: httpx.Client) -> None:
    response = anon.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert len(response.headers["x-request-id"]) >= 8
    echoed = anon.get("/api/health", headers={"X-Request-Id": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    hostile = anon.get("/api/health", headers={"X-Request-Id": "bad id\twith space"})
    assert hostile.headers["x-request-id"] != "bad id\twith space"


def test_unknown_route_and_method(anon: httpx.Client) -> None:
    error_of(anon.get("/api/nothing-here"), 404, "not_found")
    error_of(anon.get("/"), 404, "not_found")
    response = anon.put("/api/health")
    error_of(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"


def test_malformed_json(admin: httpx.Client, collection_name: str) -> None:
    make_collection(admin, collection_name)
    url = f"/api/collections/{collection_name}/records"
    headers = {"Content-Type": "application/json"}
    for raw in [b"{", b'{"a": 1} trailing', b"\xff\xfe", b"{'a': 1}", b"", b"NaN", b'{"a": 1e999}']:
        response = admin.post(url, content=raw, headers=headers)
        error_of(response, 400, "bad_request")
    assert admin.get(url).json()["items"] == []


def test_wrong_content_type(admin: httpx.Client, collection_name: str) -> None:
    make_collection(admin, collection_name)
    url = f"/api/collections/{collection_name}/records"
    error_of(
        admin.post(url, content=b'{"a": 1}', headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    error_of(admin.post(url, content=b'{"a": 1}'), 415, "unsupported_media_type")
    error_of(
        admin.post(
            url, content=b'{"a": 1}', headers={"Content-Type": "application/json; charset=latin-1"}
        ),
        415,
        "unsupported_media_type",
    )
    ok = admin.post(
        url, content=b'{"a": 1}', headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 201


def test_oversized_body(admin: httpx.Client, collection_name: str) -> None:
    make_collection(admin, collection_name)
    url = f"/api/collections/{collection_name}/records"
    big = b'{"a": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    error_of(
        admin.post(url, content=big, headers={"Content-Type": "application/json"}),
        413,
        "payload_too_large",
    )

    def chunks() -> object:
        for _ in range(40):
            yield b"x" * 65536

    streamed = admin.post(url, content=chunks(), headers={"Content-Type": "application/json"})  # type: ignore[arg-type]
    error_of(streamed, 413, "payload_too_large")
    assert admin.get(url).json()["items"] == []


def test_too_deep_json(admin: httpx.Client, collection_name: str) -> None:
    make_collection(admin, collection_name)
    url = f"/api/collections/{collection_name}/records"
    for depth in (33, 1000):
        raw = b'{"a":' * depth + b"1" + b"}" * depth
        error = error_of(
            admin.post(url, content=raw, headers={"Content-Type": "application/json"}),
            400,
            "bad_request",
        )
        assert "deeper" in error["message"]
    ok = b'{"a":' * 31 + b"1" + b"}" * 31
    assert (
        admin.post(url, content=ok, headers={"Content-Type": "application/json"}).status_code == 201
    )


def test_unknown_collection(admin: httpx.Client, anon: httpx.Client) -> None:
    error_of(anon.get("/api/collections/nope_nope/records"), 404, "not_found")
    error_of(admin.get("/api/collections/nope_nope/records"), 404, "not_found")
    error_of(admin.get("/api/collections/nope_nope/records/abc"), 404, "not_found")


@pytest.mark.parametrize(
    "name",
    ["x'; DROP TABLE _collections; --", "a%22b", "_collections", "_sequence", "a.b"],
)
def test_hostile_collection_names_in_paths(admin: httpx.Client, name: str) -> None:
    response = admin.post(f"/api/collections/{name}/records", json={"a": 1})
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"]["code"] in ("bad_request", "not_found")
    assert admin.get("/api/collections").status_code == 200


def test_bad_authorization_headers(anon: httpx.Client) -> None:
    for header in ["Basic abc", "Bearer", "bpk_raw", "Bearer xyz"]:
        response = anon.get("/api/collections", headers={"Authorization": header})
        error_of(response, 401, "unauthorized")


def test_batch_is_atomic(admin: httpx.Client, collection_name: str) -> None:
    make_collection(
        admin, collection_name, schema={"fields": {"n": {"type": "integer", "unique": True}}}
    )
    first = admin.post(
        "/api/batch",
        json={
            "ops": [
                {"op": "create", "collection": collection_name, "id": "a", "data": {"n": 1}},
                {"op": "create", "collection": collection_name, "id": "b", "data": {"n": 2}},
                {"op": "update", "collection": collection_name, "id": "a", "data": {"x": 1}},
                {"op": "delete", "collection": collection_name, "id": "b"},
            ]
        },
    )
    assert first.status_code == 200, first.text
    results = first.json()["results"]
    assert results[2]["version"] == 2 and results[3] == {"id": "b", "deleted": True}
    failing = admin.post(
        "/api/batch",
        json={
            "ops": [
                {"op": "create", "collection": collection_name, "id": "c", "data": {"n": 3}},
                {"op": "replace", "collection": collection_name, "id": "a", "data": {"n": 9}},
                {"op": "create", "collection": collection_name, "id": "d", "data": {"n": 3}},
            ]
        },
    )
    error_of(failing, 409, "conflict")
    items = admin.get(f"/api/collections/{collection_name}/records").json()["items"]
    assert [(r["id"], r["n"]) for r in items] == [("a", 1)]
    invalid = admin.post(
        "/api/batch",
        json={"ops": [{"op": "create", "collection": collection_name, "data": {"n": "x"}}]},
    )
    error = error_of(invalid, 400, "validation_failed")
    assert error["details"]["op"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ops": []},
        {"ops": "x"},
        {"ops": [{"op": "explode", "collection": "a"}]},
        {"ops": [{"op": "update", "collection": "a", "data": {}}]},
        {"ops": [{"op": "create", "collection": "a"}]},
        {"ops": [{"op": "create", "collection": "a", "data": {}}] * 1001},
        [],
    ],
)
def test_bad_batches(admin: httpx.Client, body: object) -> None:
    response = admin.post("/api/batch", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("bad_request", "validation_failed")


def test_openapi_and_docs(anon: httpx.Client) -> None:
    document = anon.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/api/collections/{collection}/records/{id}" in document["paths"]
    assert set(document["paths"]["/api/collections/{collection}/records/{id}"]) == {
        "get",
        "put",
        "patch",
        "delete",
    }
    docs = anon.get("/api/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "/api/batch" in docs.text


def test_sqlite_names_are_plain_collection_names(admin: httpx.Client) -> None:
    for name in ("sqlite_master", "r_1", "_collections"[1:]):
        response = admin.post(f"/api/collections/{name}/records", json={"a": 1})
        assert response.status_code == 201, response.text
        assert admin.get(f"/api/collections/{name}/records").json()["items"][0]["a"] == 1
    assert admin.get("/api/collections").status_code == 200
