"""The JavaScript SDK (sdks/js) against a real server, with Node's test runner.

Needs `node` (>= 18) and, the first time, `npm` to install the test-only
dependency (`ws`) from sdks/js/package-lock.json; later runs reuse node_modules.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer
from tests.engine import instance_env

ROOT = Path(__file__).resolve().parents[2]
SDK_DIR = ROOT / "sdks" / "js"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "`node` (Node.js >= 18) is not on PATH: the JS SDK tests need it. Install Node.js."
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 18:
        pytest.fail(f"Node.js >= 18 is needed for the JS SDK tests; found {version.stdout.strip()}")
    return node


def _install_dev_dependencies() -> None:
    if (SDK_DIR / "node_modules" / "ws" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("sdks/js/node_modules is missing and `npm` is not on PATH to install it.")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=SDK_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"


def test_js_sdk_node_tests(server: RunningServer, tmp_path: Path) -> None:
    node = _node()
    _install_dev_dependencies()
    env = {
        **os.environ,
        # The servers the node tests start run on this suite's engine (one database for them).
        **instance_env(tmp_path / "node-servers"),
        "BACKPACK_URL": server.url,
        "BACKPACK_KEY": server.key,
        # The reconnect tests start and restart servers of their own with this interpreter.
        "BACKPACK_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [node, "--test", "test/"],
        cwd=SDK_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "# fail 0" in output, output
    assert "# skipped 0" in output, output


def test_sdk_served_at_api_sdk_js(server: RunningServer) -> None:
    source = (SDK_DIR / "src" / "index.js").read_bytes()
    response = httpx.get(server.url + "/api/sdk.js")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.content == source
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(source).digest()
    etag = response.headers["etag"]
    again = httpx.get(server.url + "/api/sdk.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["etag"] == etag
