"""Assertions shared by the end-to-end tests."""

from __future__ import annotations

from typing import Any

import httpx

ALL_TRUE = {op: True for op in ("list", "read", "create", "update", "delete")}


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the contract's error shape and return the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["status"] == status
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert response.headers["x-request-id"]
    return error


def make_collection(client: httpx.Client, name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "rules": ALL_TRUE, **extra}
    response = client.post("/api/collections", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result
