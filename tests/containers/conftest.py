"""The podman-run tests are collected where podman is usable or `make test-containers` runs.

The spec and schema tests (Swarm service specs, compose files) need no engine and
always run.
"""

from __future__ import annotations

from tests.containers import engine

collect_ignore = [] if engine.wanted() else ["test_image.py", "test_docker_runtime.py"]
