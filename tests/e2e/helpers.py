"""Assertions shared by the end-to-end tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

ALL_TRUE = {op: True for op in ("list", "read", "create", "update", "delete")}


def inside_one_rate_window(seconds: float = 20.0) -> None:
    """Wait until at least `seconds` are left in the current wall-clock minute.

    Shared (Redis) rate-limit windows are wall-clock minutes, as every worker must agree
    on them: a test that counts hits up to a limit must not straddle two of them.
    """
    while 60 - time.time() % 60 < seconds:
        time.sleep(0.5)


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
