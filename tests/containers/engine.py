"""Podman as the tests' Docker engine: the image, the API socket, and cleaning up.

No Docker engine runs on these machines; Debian's podman does, as
`podman --runtime /usr/sbin/runc --cgroup-manager=cgroupfs` (deploy/podman.sh)
with every container on the host network and loopback addresses. The image is
built from a registry-free base (deploy/base-image.sh, debootstrap) by
deploy/build-image.sh, tagged with a hash of the sources so that a changed
checkout is rebuilt and an unchanged one is not. `podman system service` gives
the `docker` SDK its Engine API on a socket of this test process; every
container and volume the tests make carries this session's label and is removed
at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PODMAN = [str(REPO / "deploy" / "podman.sh")]
RUN_FLAGS = ["--network", "host", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
SESSION_LABEL = "io.backpack.test-session"
SESSION = uuid.uuid4().hex[:12]
ENABLE_ENV = "BACKPACK_TEST_CONTAINERS"  # `make test-containers`: run them, or fail saying why
_SOURCES = ("pyproject.toml", "README.md", "backpack", "sdks/js/src/index.js", "deploy")


def wanted() -> bool:
    """Whether the container tests are collected: podman is usable, or they were asked for."""
    return bool(os.environ.get(ENABLE_ENV)) or problem() is None


@functools.cache
def problem() -> str | None:
    """Why podman cannot run the container tests here, or None when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed"
    if not Path("/usr/sbin/runc").exists():
        return "runc is not installed (/usr/sbin/runc)"
    answer = podman("image", "exists", "backpack-base", check=False)
    if answer.returncode != 0 and shutil.which("debootstrap") is None:
        return "debootstrap is not installed and there is no backpack-base image"
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if info.returncode != 0:
        return f"`podman info` failed: {info.stderr.strip()[-300:]}"
    return None


def require() -> None:
    """Fail (never skip) with what to install when podman is not usable."""
    why = problem()
    if why is not None:
        pytest.fail(
            f"The container tests need podman: {why}. Install them with "
            "`apt-get install -y podman runc debootstrap` (Debian), then run "
            "`make test-containers`.",
            pytrace=False,
        )


def podman(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def _source_hash() -> str:
    digest = hashlib.sha256()
    for top in _SOURCES:
        path = REPO / top
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts and "wheels" not in file.parts:
                digest.update(str(file.relative_to(REPO)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def image() -> str:
    """The project's image built from this checkout (once per change of the sources)."""
    require()
    tag = f"localhost/backpack:test-{_source_hash()}"
    if podman("image", "exists", tag, check=False).returncode != 0:
        built = subprocess.run(
            [str(REPO / "deploy" / "build-image.sh"), tag],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=REPO,
        )
        if built.returncode != 0:
            pytest.fail(f"Building the image failed:\n{built.stderr[-3000:]}", pytrace=False)
        for old in podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
            if old.startswith("localhost/backpack:test-") and old != tag:
                podman("rmi", "--force", old, check=False)
    return tag


@functools.cache
def api_url() -> str:
    """The Docker-compatible API of podman, on a socket of this process (stopped at exit)."""
    require()
    folder = Path(tempfile.mkdtemp(prefix="backpack-podman-"))
    sock = folder / "podman.sock"
    service = subprocess.Popen(
        [*PODMAN, "system", "service", "--time=0", f"unix://{sock}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(_shut_down, service, folder)
    deadline = time.monotonic() + 20
    while not sock.exists():
        if service.poll() is not None or time.monotonic() > deadline:
            pytest.fail("`podman system service` did not open its socket.", pytrace=False)
        time.sleep(0.05)
    return f"unix://{sock}"


@functools.cache
def client() -> Any:
    """A `docker.DockerClient` of podman's API (one per test process)."""
    from backpack.platform.runtime_docker import connect

    return connect(api_url())


def _shut_down(service: subprocess.Popen[bytes], folder: Path) -> None:
    label = f"label={SESSION_LABEL}={SESSION}"
    with contextlib.suppress(Exception):
        ids = podman("ps", "-aq", "--filter", label, check=False).stdout.split()
        if ids:
            podman("rm", "--force", "--time", "0", *ids, check=False)
        podman("volume", "prune", "--force", "--filter", label, check=False)
    service.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        service.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)


def volume_path(name: str) -> Path:
    """Where podman keeps the volume `name` on this host (the tests run as root)."""
    return Path(client().volumes.get(name).attrs["Mountpoint"])
