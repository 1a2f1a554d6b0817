"""Schemathesis against the live OpenAPI document: no 5xx, no response off the schema."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, shared_server
from tests.e2e.helpers import make_collection


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[RunningServer]:
    # A server of its own: the fuzzer changes settings and buckets (even `default`).
    yield from shared_server(tmp_path / "data")


def test_schemathesis_finds_nothing(fuzzed: RunningServer, tmp_path: Path) -> None:
    server = fuzzed
    with server.client() as admin:
        make_collection(admin, "items", indexes=[{"fields": ["n"]}])
        admin.post("/api/collections/items/records", json={"id": "seed", "n": 1})
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{server.url}/api/openapi.json",
            "-H",
            f"Authorization: Bearer {server.key}",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,"
            "content_type_conformance",
            "--max-time",
            os.environ.get("BACKPACK_FUZZ_SECONDS", "45"),
            # One worker thread: with two, hypothesis's lambda descriptions call ast.parse in
            # both at once, and CPython 3.11 (seen on 3.11.7) may then fail with "SystemError:
            # AST constructor recursion depth mismatch" (like python/cpython#106905): not ours.
            "--workers",
            "1",
            "--seed",
            "20261127",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # schemathesis keeps a cache in the working directory
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Traceback" not in server.log()
