"""`backpack serve --runtime`: a missing Docker API is a clear error naming the option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_serve_with_an_unreachable_docker_api_names_the_runtime_option(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    for kind in ("docker", "swarm"):
        ran = subprocess.run(
            [sys.executable, "-m", "backpack", "serve", "--runtime", kind, "--data", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert ran.returncode == 1
        assert f"--runtime {kind} needs the Docker Engine API" in ran.stderr
        assert "no-docker.sock" in ran.stderr
        assert "--runtime embedded" in ran.stderr


def test_an_unknown_runtime_is_refused(tmp_path: Path) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "backpack", "serve", "--runtime", "k8s", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 2
    assert "'k8s' is not one of 'embedded', 'docker', 'swarm'" in ran.stderr
