"""Container runtimes: every backpack its own container (`docker`) or Swarm service (`swarm`).

Both speak the Docker Engine API through the `docker` SDK (the `[docker]` extra)
and run the project's image (deploy/Dockerfile) as `backpack serve-instance`.
The control plane keeps, per backpack, a directory of its own (the secret key,
the request log, the metrics, the site) exactly like the embedded runtime; the
backpack's data lives in a Docker volume (`docker`) or in the shared
PostgreSQL/S3 (`swarm`).

Requests reach a container through `ContainerInstance`, an ASGI reverse proxy
(httpx, streamed both ways; realtime WebSockets are relayed frame by frame), so
`/i/NAME` and `NAME.DOMAIN` on the control plane work as with `embedded`;
Traefik may also route `NAME.DOMAIN` straight to the container by its labels.

The secret key is never in a container's environment: the `docker` runtime
writes it into the data volume as `secret_key` (mode 0600, the image's user)
before each start, the `swarm` runtime hands it over as a Swarm secret file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from backpack.api.app import error_response, request_id_of
from backpack.api.http import Receive, Scope, Send
from backpack.errors import BadRequest, Conflict, Unavailable
from backpack.platform.backup import SITE_DIR, create_backup, restore_backup
from backpack.platform.backup import Progress as BackupProgress
from backpack.platform.instance import (
    BLOBS_DIR,
    DATABASE_FILE,
    KEY_FILE,
    new_secret_key,
    store_secret_key,
)
from backpack.platform.names import check_name
from backpack.platform.runtime import (
    FAILED,
    RUNNING,
    STOPPED,
    EmbeddedInstance,
    EmbeddedRuntime,
    Stats,
    _swap_in,
)

log = logging.getLogger("backpack.runtime.docker")

IMAGE_UID: Final = 10001  # the image's user (deploy/Dockerfile)
DATA_MOUNT: Final = "/data"
CONTAINER_PORT: Final = 8000
LABEL: Final = "io.backpack"
_PROJECT: Final = re.compile(r"[a-z][a-z0-9-]{0,19}")
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"x-request-id",
    }
)
_LOG_TAIL: Final = 8  # lines of a failed container's output in its reason
_BACKUP_TIMEOUT: Final = 6 * 3600  # seconds a helper container may take to archive a volume


class EngineUnreachable(Exception):
    """The Docker API cannot be reached (or the `docker` package is missing)."""


def _sdk() -> Any:
    """The `docker` package (untyped, optional: the `[docker]` extra)."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        raise EngineUnreachable(
            "The container runtimes need the `docker` package: pip install 'backpack-baas[docker]'."
        ) from None
    return docker


def connect(url: str | None = None) -> Any:
    """A client (`docker.DockerClient`) of the Docker Engine API at `url`, checked to answer.

    Without `url`: DOCKER_HOST, else the local socket.
    """
    docker = _sdk()

    def client(version: str, timeout: int) -> Any:
        if url:
            return docker.DockerClient(base_url=url, version=version, timeout=timeout)
        return docker.from_env(version=version, timeout=timeout)

    where = url or os.environ.get("DOCKER_HOST") or docker.constants.DEFAULT_UNIX_SOCKET
    if where.startswith(("unix://", "http+unix://")):
        path = where.split("://", 1)[1]
        if not _is_socket(path):  # checked first: the SDK leaks a socket on this failure
            raise EngineUnreachable(f"No Docker API answers at {where}: {path} is no socket.")
    probe = client(docker.constants.MINIMUM_DOCKER_API_VERSION, 10)
    try:
        probe.ping()
    except Exception as exc:  # the SDK raises requests', urllib3's and its own errors
        raise EngineUnreachable(f"No Docker API answers at {where}: {exc}") from None
    finally:
        probe.close()
    return client("auto", 60)


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


@dataclass(frozen=True)
class ContainerConfig:
    """How backpacks run as containers; one per deployment."""

    image: str = "backpack:latest"
    project: str = "backpack"  # prefix of container, volume and service names; a label too
    network: str = "host"  # "host": each on a loopback port; else a network the plane shares
    domain: str = "localhost"  # Traefik routes Host(NAME.DOMAIN)
    tls: bool = False  # Traefik's websecure entrypoint and its `letsencrypt` resolver
    memory: str = "512m"
    cpus: float = 1.0
    pids: int = 512
    nofile: int = 4096
    nproc: int = 4096
    start_timeout: float = 30.0
    health_interval: float = 5.0
    health_timeout: float = 3.0
    health_retries: int = 3
    labels: dict[str, str] = field(default_factory=dict)  # added to every object made

    def __post_init__(self) -> None:
        if not _PROJECT.fullmatch(self.project):
            raise BadRequest(
                f"The project name '{self.project[:40]}' must be 1 to 20 lower-case letters, "
                "digits or '-', starting with a letter."
            )

    def object_name(self, name: str) -> str:
        """The container's or service's name: a DNS label (<= 61 characters)."""
        return f"{self.project}-{name}"

    def volume_name(self, name: str) -> str:
        return f"{self.project}-{name}-data"

    def labels_for(self, name: str, port: int) -> dict[str, str]:
        """Labels that find the backpack again and let Traefik route NAME.DOMAIN to it."""
        router = self.object_name(name)
        entrypoint = "websecure" if self.tls else "web"
        labels = {
            **self.labels,
            f"{LABEL}.project": self.project,
            f"{LABEL}.name": name,
            "traefik.enable": "true",
            f"traefik.http.routers.{router}.rule": f"Host(`{name}.{self.domain}`)",
            f"traefik.http.routers.{router}.entrypoints": entrypoint,
            f"traefik.http.services.{router}.loadbalancer.server.port": str(port),
        }
        if self.tls:
            labels[f"traefik.http.routers.{router}.tls.certresolver"] = "letsencrypt"
        if self.network != "host":
            labels["traefik.docker.network"] = self.network
        return labels


class ContainerFailed(Exception):
    """A container did not come up or stopped answering; the message is the reason."""


class ContainerInstance(EmbeddedInstance):
    """One backpack of the `docker` runtime: its container, and the proxy in front of it."""

    def __init__(self, name: str, directory: Path, runtime: DockerRuntime) -> None:
        super().__init__(name, directory, None)
        self.runtime = runtime
        self.base_url: str | None = None  # where the running container answers
        self.websockets = 0  # realtime connections relayed now
        self._misses = 0  # health probes failed in a row
        self.seed: Path | None = None  # a restored backpack's data, put into its new volume

    # lifecycle

    async def start(self) -> None:
        async with self._lock:
            if self.state == RUNNING:
                return
            try:
                self.base_url = await self.runtime.run_container(self)
                await self._wait_ready()
            except Exception as exc:  # one backpack's failure must not stop the others
                await self._fail(_reason(exc))
                return
            self.state, self.reason, self._misses = RUNNING, None, 0
            self.log.event("started", "Started.")

    async def stop(self) -> None:
        async with self._lock:
            was_running = self.state == RUNNING
            self.base_url = None
            if self.state != FAILED:
                self.state, self.reason = STOPPED, None
            await self.runtime.stop_container(self.name)
            if was_running:
                self.log.event("stopped", "Stopped.")
            self.metrics.flush()
            self.log.flush()

    async def restart(self) -> None:
        """Recreate the container (a new key takes effect); no stop/start events."""
        async with self._lock:
            if self.state != RUNNING:
                return
            self.base_url = None
            try:
                self.base_url = await self.runtime.run_container(self)
                await self._wait_ready()
            except Exception as exc:
                await self._fail(_reason(exc))

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.runtime.config.start_timeout
        while True:
            if await self.probe():
                return
            exited = await self.runtime.exit_code(self.name)
            if exited is not None:
                raise ContainerFailed(f"The container exited with code {exited}")
            if time.monotonic() > deadline:
                raise ContainerFailed(
                    f"The container did not answer /api/health within "
                    f"{self.runtime.config.start_timeout:g} s"
                )
            await asyncio.sleep(0.1)

    async def probe(self) -> bool:
        if self.base_url is None:
            return False
        try:
            answer = await self.runtime.http.get(
                self.base_url + "/api/health", timeout=self.runtime.config.health_timeout
            )
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    async def check_health(self) -> None:
        """One round of the health monitor: exited or unanswering containers are `failed`."""
        if self.state != RUNNING or self._lock.locked():
            return
        exited = await self.runtime.exit_code(self.name)
        if exited is not None:
            why = f"The container exited with code {exited}"
        elif await self.probe():
            self._misses = 0
            return
        else:
            self._misses += 1
            if self._misses < self.runtime.config.health_retries:
                return
            why = f"The container failed {self._misses} health checks in a row"
        async with self._lock:
            if self.state == RUNNING:
                await self._fail(why)

    async def _fail(self, why: str) -> None:
        tail = await self.runtime.last_log_lines(self.name, _LOG_TAIL)
        reason = f"{why}; its last log lines: {tail}" if tail else why
        self.state, self.reason, self.base_url = FAILED, reason, None
        log.warning("backpack %s failed: %s", self.name, reason)
        self.log.event("failed", f"Failed: {reason}")
        await self.runtime.stop_container(self.name)

    # serving

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        base = self.base_url
        if base is None or self.state != RUNNING:
            await self._unavailable(scope, send)
        elif scope["type"] == "http":
            await self._observed(
                lambda s, r, w: self._relay_http(base, s, r, w), scope, receive, send
            )
        elif scope["type"] == "websocket":
            await self._relay_socket(base, scope, receive, send)

    @property
    def serving(self) -> bool:
        return self.state == RUNNING

    async def _relay_http(self, base: str, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        scope["backpack.request_id"] = request_id.decode()
        query: bytes = scope.get("query_string", b"")
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        url = base + target + ("?" + query.decode("latin-1") if query else "")
        headers = _forwarded_headers(scope, request_id)

        async def body() -> Any:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        http = self.runtime.http
        request = http.build_request(scope["method"], url, headers=headers, content=body())
        try:
            response = await http.send(request, stream=True)
        except httpx.HTTPError as exc:
            error = Unavailable(
                f"The backpack '{self.name}' is not answering ({type(exc).__name__}).",
                {"backpack": self.name, "status": self.state},
            )
            await error_response(error).send(send, [(b"x-request-id", request_id)])
            return
        try:
            out = [
                (k.lower(), v)
                for k, v in response.headers.raw
                if k.lower() not in _HOP_BY_HOP and k.lower() != b"content-length"
            ]
            out.append((b"x-request-id", request_id))
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": out}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _relay_socket(self, base: str, scope: Scope, receive: Receive, send: Send) -> None:
        from websockets.asyncio.client import connect as ws_connect
        from websockets.exceptions import ConnectionClosed

        query: bytes = scope.get("query_string", b"")
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        url = "ws" + base[4:] + target + ("?" + query.decode("latin-1") if query else "")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k in (b"cookie", b"origin", b"authorization", b"user-agent")
        ]
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            upstream = await ws_connect(
                url, additional_headers=headers, open_timeout=10, max_size=None, compression=None
            )
        except Exception:
            await send({"type": "websocket.close", "code": 1013})
            return
        await send({"type": "websocket.accept"})
        self.websockets += 1

        async def client_to_backpack() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close(message.get("code", 1000))
                    return
                data = (
                    message.get("text") if message.get("text") is not None else message.get("bytes")
                )
                if data is not None:
                    await upstream.send(data)

        async def backpack_to_client() -> None:
            code = 1000
            try:
                async for data in upstream:
                    key = "text" if isinstance(data, str) else "bytes"
                    await send({"type": "websocket.send", key: data})
            except ConnectionClosed:
                pass
            if upstream.close_code is not None:
                code = upstream.close_code
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code})

        tasks = [
            asyncio.create_task(client_to_backpack()),
            asyncio.create_task(backpack_to_client()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await upstream.close()
            self.websockets -= 1


def path_prefix(name: str) -> str:
    """Where the control plane serves the backpack `name` by path; the container is told
    (`serve-instance --forwarded-prefix`), so its cookies and links there carry it."""
    return f"/i/{name}"


def _forwarded_headers(scope: Scope, request_id: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP - {b"host"}]
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", str(client[0]).encode()))
    headers.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()))
    root_path: str = scope.get("root_path", "")
    if root_path:
        headers.append((b"x-forwarded-prefix", root_path.encode()))
    headers.append((b"x-request-id", request_id))
    return headers


def _put_archive(container: Any, path: str, archive: bytes | Path, attempts: int = 3) -> None:
    """Copy `archive` (a tar, or a tar file) into the container; podman's API sometimes drops
    the copy ("passing bulk input to subprocess: … broken pipe"), so a failed copy is tried
    again."""
    docker = _sdk()
    for attempt in range(attempts):
        try:
            if isinstance(archive, Path):
                with archive.open("rb") as stream:
                    container.put_archive(path, stream)
            else:
                container.put_archive(path, archive)
            return
        except docker.errors.APIError as exc:
            if "broken pipe" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ContainerFailed):
        return str(exc)
    explanation = getattr(exc, "explanation", None)
    return f"The Docker API refused: {explanation or exc}"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A member as the image's user owns its data: 0700 folders, 0600 files."""
    info.uid = info.gid = IMAGE_UID
    info.uname = info.gname = ""
    info.mode = 0o700 if info.isdir() else 0o600
    return info


def _volume_archive(staging: Path, out: Path) -> None:
    """The volume's part of an unpacked backup (records and files) as a tar for put_archive."""
    with tarfile.open(out, "w") as tar:
        for part in (DATABASE_FILE, BLOBS_DIR):
            if (staging / part).exists():
                tar.add(staging / part, arcname=part, filter=_owned)


def _control_side_of(staging: Path, control: Path) -> None:
    """The control plane's directory of a restored backpack: its key and site."""
    control.mkdir(mode=0o700)
    shutil.copyfile(staging / KEY_FILE, control / KEY_FILE)
    os.chmod(control / KEY_FILE, 0o600)
    if (staging / SITE_DIR).is_dir():
        os.replace(staging / SITE_DIR, control / SITE_DIR)


def _add_control_side(control: Path, staging: Path) -> None:
    """Into an unpacked backup of the volume: the control plane's key (the one in force)
    and the published site."""
    shutil.copyfile(control / KEY_FILE, staging / KEY_FILE)
    if (control / SITE_DIR).is_dir():
        shutil.rmtree(staging / SITE_DIR, ignore_errors=True)
        shutil.copytree(control / SITE_DIR, staging / SITE_DIR, symlinks=True)


def _key_archive(key: str) -> bytes:
    """A tar holding `secret_key` as the image's user reads it (0600, uid 10001)."""
    data = (key + "\n").encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(KEY_FILE)
        info.size, info.mode, info.uid, info.gid = len(data), 0o600, IMAGE_UID, IMAGE_UID
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class DockerRuntime(EmbeddedRuntime):
    """Each backpack a container of the project's image running `backpack serve-instance`.

    `root` holds the control plane's side of every backpack (key, log, metrics,
    site); the data is in the volume `PROJECT-NAME-data`, mounted at /data.
    """

    name = "docker"

    def __init__(self, root: Path, client: Any, config: ContainerConfig | None = None) -> None:
        super().__init__(root)
        self.client = client
        self.config = config or ContainerConfig()
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(300.0, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            follow_redirects=False,
        )
        self._monitor: asyncio.Task[None] | None = None

    def _register(self, name: str) -> EmbeddedInstance:
        instance = self._instances.get(name)
        if instance is None:
            instance = ContainerInstance(name, self.root / name, self)
            self._instances[name] = instance
        return instance

    def _container(self, name: str) -> ContainerInstance:
        instance = self._get(name)
        assert isinstance(instance, ContainerInstance)
        return instance

    async def create(self, name: str) -> None:
        check_name(name)  # also a DNS label: PROJECT-NAME stays within 61 characters
        directory = self.root / name
        if name in self._instances or directory.exists():
            raise Conflict(f"A backpack named '{name}' exists already.", {"name": name})
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
        instance = self._register(name)  # before any await: of two creates, one wins
        try:
            if await asyncio.to_thread(self._volume_exists, name):
                raise Conflict(f"A backpack named '{name}' exists already.", {"name": name})
            await asyncio.to_thread(store_secret_key, directory, new_secret_key())
        except BaseException:
            self._instances.pop(name, None)
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise
        await instance.start()
        if instance.state == FAILED:
            reason = instance.reason
            await self.remove(name)
            raise Unavailable(f"The backpack '{name}' could not start: {reason}.")
        self._watch()

    async def start(self, name: str) -> None:
        await self._get(name).start()
        self._watch()

    async def remove(self, name: str) -> None:
        instance = self._instances.pop(name, None)
        if instance is not None:
            await instance.stop()
            instance.log.close()
        await asyncio.to_thread(self._remove_objects, name)
        await asyncio.to_thread(shutil.rmtree, self.root / name, True)

    async def backup(self, name: str, out: Path, progress: BackupProgress | None = None) -> None:
        """The backpack's archive, taken online: a helper container of the image runs
        `backpack backup-data` on the data volume (beside the running one, or alone when
        it is stopped); its archive is checked, given the control plane's side (the key,
        the site) and written to `out` in the layout every runtime restores."""
        instance = self._container(name)
        work = Path(tempfile.mkdtemp(prefix=f".backup-{name}-", dir=self.root))
        try:
            from_volume = work / "volume.tar"
            await asyncio.to_thread(self._backup_volume, name, from_volume)
            staging = work / "backpack"
            await asyncio.to_thread(restore_backup, from_volume, staging)  # checks every sum
            await asyncio.to_thread(_add_control_side, instance.directory, staging)
            await asyncio.to_thread(create_backup, staging, out, name=name, progress=progress)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def restore(self, name: str, archive: Path) -> None:
        """Make the backpack `name` what `archive` holds: verified and unpacked first; then
        its container and volume are replaced by new ones, the volume seeded with the
        archive's records and files, and the key and site go to the control plane's side."""
        check_name(name)
        tag = secrets.token_hex(4)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".restore-{name}-{tag}"
        await asyncio.to_thread(restore_backup, archive, staging)
        try:
            seed = staging / ".volume.tar"  # inside: a leftover dot-folder is cleaned at start
            await asyncio.to_thread(_volume_archive, staging, seed)
            control = self.root / f".restore-{name}-{tag}-control"
            await asyncio.to_thread(_control_side_of, staging, control)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise
        try:
            old = self._instances.pop(name, None)
            if old is not None:
                await old.stop()
                old.log.close()
            await asyncio.to_thread(self._remove_objects, name)
            replaced = self.root / f".replaced-{name}-{tag}"
            await asyncio.to_thread(_swap_in, control, self.root / name, replaced)
            instance = self._register(name)
            assert isinstance(instance, ContainerInstance)
            instance.seed = seed
            instance.log.event("restored", "Restored from a backup.")
            await instance.start()
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        self._watch()

    async def rotate_key(self, name: str, new_key: str) -> None:
        await super().rotate_key(name, new_key)
        await self._container(name).restart()  # serve-instance reads its key at start

    async def stats(self, name: str) -> Stats:
        instance = self._container(name)
        base = instance.base_url
        if base is None or instance.state != RUNNING:
            return Stats(0, 0, 0, 0, 0)
        key = await self.secret_key(name)
        auth = {"authorization": f"Bearer {key}"}
        collections = await self._json(f"{base}/api/collections", auth)
        records = 0
        for item in collections.get("items", []):
            collection = str(item["name"])
            if not collection.startswith("_"):
                records += await self._total(f"{base}/api/collections/{collection}/records", auth)
        users = await self._total(f"{base}/api/users", auth)
        files = await self._total(f"{base}/api/files", auth)
        storage = await asyncio.to_thread(self._data_bytes, name)
        return Stats(records, users, files, storage, instance.websockets)

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        await super().close()
        await self.http.aclose()

    # health

    def _watch(self) -> None:
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.create_task(self._watch_health())

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval)
            for instance in list(self._instances.values()):
                assert isinstance(instance, ContainerInstance)
                try:
                    await instance.check_health()
                except Exception:
                    log.exception("health check of backpack %s failed", instance.name)

    # the Docker Engine API (blocking: called through asyncio.to_thread)

    async def run_container(self, instance: ContainerInstance) -> str:
        """(Re)create and start the backpack's container with its key; its base URL.
        A restored backpack's volume is seeded with its archive's data first, once."""
        key = await self.secret_key(instance.name)
        url = await asyncio.to_thread(self._run_container, instance.name, key, instance.seed)
        instance.seed = None
        return url

    def _common(self, name: str) -> dict[str, Any]:
        """What every container of the backpack `name` gets: its volume, limits, no privileges."""
        docker = _sdk()
        config = self.config
        return {
            "network_mode": config.network,
            "mounts": [docker.types.Mount(DATA_MOUNT, self._volume(name), type="volume")],
            "mem_limit": config.memory,
            "nano_cpus": int(config.cpus * 1e9),
            "pids_limit": config.pids,
            "ulimits": [
                docker.types.Ulimit(name="nofile", soft=config.nofile, hard=config.nofile),
                docker.types.Ulimit(name="nproc", soft=config.nproc, hard=config.nproc),
            ],
            "read_only": False,
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
        }

    def _backup_volume(self, name: str, out: Path) -> None:
        """Run `backpack backup-data` on the volume in a helper container; its archive to `out`."""
        docker = _sdk()
        config = self.config
        inside = "/tmp/backup.tar"
        helper = self.client.containers.create(
            config.image,
            ["backup-data", "--data", DATA_MOUNT, "-o", inside],
            name=f"{config.object_name(name)}-backup-{secrets.token_hex(3)}",
            labels={
                **config.labels,
                f"{LABEL}.project": config.project,
                f"{LABEL}.name": name,
                f"{LABEL}.role": "backup",
            },
            **self._common(name),
        )
        try:
            helper.start()
            status = helper.wait(timeout=_BACKUP_TIMEOUT)
            if status.get("StatusCode") != 0:
                tail = helper.logs(tail=_LOG_TAIL).decode("utf-8", "replace").strip()
                raise Unavailable(f"The backup of '{name}' failed in its container: {tail[-500:]}")
            stream, _ = helper.get_archive(inside)
            with tempfile.TemporaryFile(dir=out.parent) as raw:
                for chunk in stream:
                    raw.write(chunk)
                raw.seek(0)
                with tarfile.open(fileobj=raw) as tar:
                    member = tar.next()
                    source = tar.extractfile(member) if member is not None else None
                    if source is None:
                        raise Unavailable(f"The backup of '{name}' came back empty.")
                    with source, out.open("wb") as target:
                        shutil.copyfileobj(source, target, 1024 * 1024)
        finally:
            with contextlib.suppress(docker.errors.APIError):
                helper.remove(force=True)

    def _run_container(self, name: str, key: str, seed: Path | None = None) -> str:
        config = self.config
        self._remove_container(name)
        if config.network == "host":
            port, host, address = _free_loopback_port(), "127.0.0.1", "127.0.0.1"
        else:
            port, host, address = CONTAINER_PORT, "0.0.0.0", config.object_name(name)
        container = self.client.containers.create(
            config.image,
            ["serve-instance", "--data", DATA_MOUNT, "--host", host, "--port", str(port)],
            name=config.object_name(name),
            hostname=config.object_name(name),
            labels=config.labels_for(name, port),
            environment={
                "BACKPACK_HEALTH_PORT": str(port),
                "BACKPACK_FORWARDED_PREFIX": path_prefix(name),
            },
            healthcheck={
                "test": [
                    "CMD",
                    "python3",
                    "-c",
                    "import urllib.request as u; "
                    f"u.urlopen('http://127.0.0.1:{port}/api/health', timeout=2)",
                ],
                "interval": int(config.health_interval * 1e9),
                "timeout": int(config.health_timeout * 1e9),
                "retries": config.health_retries,
            },
            detach=True,
            **self._common(name),
        )
        _put_archive(container, DATA_MOUNT, _key_archive(key))
        if seed is not None:
            _put_archive(container, DATA_MOUNT, seed)
        container.start()
        return f"http://{address}:{port}"

    def _find(self, name: str) -> Any:
        docker = _sdk()
        try:
            return self.client.containers.get(self.config.object_name(name))
        except docker.errors.NotFound:
            return None

    async def exit_code(self, name: str) -> int | None:
        """The container's exit code when it is no longer running, else None."""

        def inspect() -> int | None:
            container = self._find(name)
            if container is None:
                return -1
            state = container.attrs.get("State", {})
            if state.get("Running") or state.get("Status") in ("running", "created"):
                return None
            return int(state.get("ExitCode", -1))

        return await asyncio.to_thread(inspect)

    async def last_log_lines(self, name: str, lines: int) -> str:
        def tail() -> str:
            container = self._find(name)
            if container is None:
                return ""
            try:
                raw: bytes = container.logs(tail=lines)
            except Exception:
                return ""
            text = raw.decode("utf-8", "replace").strip().splitlines()
            return " | ".join(line.strip() for line in text if line.strip())[-1000:]

        return await asyncio.to_thread(tail)

    async def stop_container(self, name: str) -> None:
        def stop() -> None:
            container = self._find(name)
            if container is None:
                return
            with contextlib.suppress(Exception):  # gone or stopped meanwhile: stopped either way
                container.stop(timeout=10)

        await asyncio.to_thread(stop)

    def _remove_container(self, name: str) -> None:
        docker = _sdk()
        container = self._find(name)
        if container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    def _remove_objects(self, name: str) -> None:
        docker = _sdk()
        self._remove_container(name)
        with contextlib.suppress(docker.errors.NotFound):
            self.client.volumes.get(self.config.volume_name(name)).remove(force=True)

    def _volume(self, name: str) -> str:
        """The backpack's data volume, made (with this deployment's labels) when missing."""
        docker = _sdk()
        volume = self.config.volume_name(name)
        try:
            self.client.volumes.get(volume)
        except docker.errors.NotFound:
            labels = {**self.config.labels, f"{LABEL}.project": self.config.project}
            self.client.volumes.create(volume, labels={**labels, f"{LABEL}.name": name})
        return volume

    def _volume_exists(self, name: str) -> bool:
        docker = _sdk()
        try:
            self.client.volumes.get(self.config.volume_name(name))
        except docker.errors.NotFound:
            return False
        return True

    def _data_bytes(self, name: str) -> int:
        container = self._find(name)
        if container is None:
            return 0
        result = container.exec_run(["du", "-sb", DATA_MOUNT], user=str(IMAGE_UID))
        if result.exit_code != 0:
            return 0
        return int(result.output.split()[0])

    async def _json(self, url: str, headers: dict[str, str]) -> dict[str, Any]:
        answer = await self.http.get(url, headers=headers)
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    async def _total(self, url: str, headers: dict[str, str]) -> int:
        body = await self._json(url + "?limit=1&count=true", headers)
        return int(body.get("total", 0))


def project_for(root: Path) -> str:
    """A project name derived from a path: runtimes over one root share it."""
    return "bp" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- swarm

KEY_SECRET_FILE: Final = "backpack_secret_key"
DATABASE_SECRET_FILE: Final = "backpack_database_url"
_SECOND: Final = 1_000_000_000  # the Engine API counts durations in nanoseconds


@dataclass(frozen=True)
class SwarmConfig:
    """What only Swarm services have: replicas, placement, rollout, the shared database."""

    replicas: int = 1
    constraints: tuple[str, ...] = ()  # e.g. ("node.labels.backpack == true",)
    spread: str | None = None  # a node label to spread replicas over, e.g. "node.labels.zone"
    database_secret: str | None = None  # a Swarm secret holding BACKPACK_DATABASE_URL


def secret_spec(name: str, config: ContainerConfig, key: str) -> dict[str, Any]:
    """The SecretSpec of a backpack's key; its name changes with the key (secrets are fixed)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return {
        "Name": f"{config.object_name(name)}-key-{digest}",
        "Labels": {**config.labels, f"{LABEL}.project": config.project, f"{LABEL}.name": name},
        "Data": base64.b64encode(key.encode()).decode(),
    }


def service_spec(
    name: str,
    config: ContainerConfig,
    swarm: SwarmConfig,
    key_secret: tuple[str, str],
    database_secret: tuple[str, str] | None,
    replicas: int,
) -> dict[str, Any]:
    """The ServiceSpec (Engine API) that runs backpack `name` as `serve-instance` replicas.

    `key_secret` and `database_secret` are (id, name) of Swarm secrets; they reach
    the container as files under /run/secrets, named by BACKPACK_*_FILE.
    """
    service = config.object_name(name)
    labels = {**config.labels, f"{LABEL}.project": config.project, f"{LABEL}.name": name}
    secrets = [_secret_reference(KEY_SECRET_FILE, *key_secret)]
    env = [
        f"BACKPACK_SECRET_KEY_FILE=/run/secrets/{KEY_SECRET_FILE}",
        f"BACKPACK_HEALTH_PORT={CONTAINER_PORT}",
        f"BACKPACK_FORWARDED_PREFIX={path_prefix(name)}",
    ]
    if database_secret is not None:
        secrets.append(_secret_reference(DATABASE_SECRET_FILE, *database_secret))
        env.append(f"BACKPACK_DATABASE_URL_FILE=/run/secrets/{DATABASE_SECRET_FILE}")
    placement: dict[str, Any] = {"Constraints": list(swarm.constraints)}
    if swarm.spread:
        placement["Preferences"] = [{"Spread": {"SpreadDescriptor": swarm.spread}}]
    return {
        "Name": service,
        "Labels": {**labels, **config.labels_for(name, CONTAINER_PORT)},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": config.image,
                "Args": [
                    "serve-instance",
                    "--data",
                    DATA_MOUNT,
                    "--host",
                    "0.0.0.0",
                    "--port",
                    str(CONTAINER_PORT),
                ],
                "Labels": labels,
                "Hostname": service,
                "Env": env,
                "User": f"{IMAGE_UID}:{IMAGE_UID}",
                "Mounts": [
                    {
                        "Target": DATA_MOUNT,
                        "Source": config.volume_name(name),
                        "Type": "volume",
                        "VolumeOptions": {"Labels": labels},
                    }
                ],
                "StopGracePeriod": 10 * _SECOND,
                "HealthCheck": {
                    "Test": [
                        "CMD",
                        "python3",
                        "-c",
                        "import urllib.request as u; "
                        f"u.urlopen('http://127.0.0.1:{CONTAINER_PORT}/api/health', timeout=2)",
                    ],
                    "Interval": int(config.health_interval * _SECOND),
                    "Timeout": int(config.health_timeout * _SECOND),
                    "Retries": config.health_retries,
                    "StartPeriod": int(config.start_timeout * _SECOND),
                },
                "Secrets": secrets,
                "CapabilityDrop": ["ALL"],
                "Ulimits": [
                    {"Name": "nofile", "Soft": config.nofile, "Hard": config.nofile},
                    {"Name": "nproc", "Soft": config.nproc, "Hard": config.nproc},
                ],
            },
            "Resources": {
                "Limits": {
                    "NanoCPUs": int(config.cpus * _SECOND),
                    "MemoryBytes": _bytes(config.memory),
                    "Pids": config.pids,
                },
            },
            "RestartPolicy": {
                "Condition": "on-failure",
                "Delay": 5 * _SECOND,
                "MaxAttempts": 5,
                "Window": 120 * _SECOND,
            },
            "Placement": placement,
            "Networks": [{"Target": config.network, "Aliases": [service]}],
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": {
            "Parallelism": 1,
            "Delay": 5 * _SECOND,
            "FailureAction": "rollback",
            "Monitor": 30 * _SECOND,
            "MaxFailureRatio": 0,
            "Order": "start-first",
        },
        "RollbackConfig": {
            "Parallelism": 1,
            "Delay": 0,
            "FailureAction": "pause",
            "Monitor": 30 * _SECOND,
            "MaxFailureRatio": 0,
            "Order": "stop-first",
        },
        "EndpointSpec": {"Mode": "vip"},
    }


def _secret_reference(file_name: str, secret_id: str, secret_name: str) -> dict[str, Any]:
    return {
        "File": {"Name": file_name, "UID": str(IMAGE_UID), "GID": str(IMAGE_UID), "Mode": 0o400},
        "SecretID": secret_id,
        "SecretName": secret_name,
    }


_UNITS: Final = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def _bytes(size: str) -> int:
    """'512m' → 536870912 (Docker's units: b, k, m, g; powers of 1024)."""
    text = size.strip().lower()
    unit = text[-1] if text and text[-1] in _UNITS else ""
    return int(float(text[: len(text) - len(unit)]) * _UNITS[unit])


_SWARM_BACKUPS: Final = (
    "Backups are not available with the swarm runtime yet: its backpacks' records and files "
    "live in the shared PostgreSQL and S3; back those up (docs/deploy.md)."
)


class SwarmRuntime(DockerRuntime):
    """Each backpack a Swarm service of `serve-instance` replicas on an overlay network.

    The control plane runs on a manager, attached to `config.network`, and reaches
    a backpack at http://PROJECT-NAME:8000 (the service's VIP); Traefik routes
    NAME.DOMAIN by the service's labels. Stop scales the service to 0; the key is
    a Swarm secret, replaced (with a rolling update) when rotated.
    """

    name = "swarm"

    def __init__(
        self,
        root: Path,
        client: Any,
        config: ContainerConfig | None = None,
        swarm: SwarmConfig | None = None,
    ) -> None:
        config = config or ContainerConfig(network="backpack")
        if config.network == "host":
            raise BadRequest("The swarm runtime needs an overlay network, not 'host'.")
        super().__init__(root, client, config)
        self.swarm = swarm or SwarmConfig()

    async def backup(self, name: str, out: Path, progress: BackupProgress | None = None) -> None:
        raise BadRequest(_SWARM_BACKUPS)

    async def restore(self, name: str, archive: Path) -> None:
        raise BadRequest(_SWARM_BACKUPS)

    def _run_container(self, name: str, key: str, seed: Path | None = None) -> str:
        spec = service_spec(
            name,
            self.config,
            self.swarm,
            self._key_secret(name, key),
            self._database_secret(),
            self.swarm.replicas,
        )
        self._apply(name, spec)
        return f"http://{self.config.object_name(name)}:{CONTAINER_PORT}"

    def _apply(self, name: str, spec: dict[str, Any]) -> None:
        """Create the service, or update it to `spec` (a rolling update)."""
        api = self.client.api
        current = self._service(name)
        if current is None:
            api._result(api._post_json(api._url("/services/create"), data=spec), True)
            return
        version = current["Version"]["Index"]
        url = api._url("/services/{0}/update", current["ID"])
        api._result(api._post_json(url, data=spec, params={"version": version}), True)

    def _service(self, name: str) -> dict[str, Any] | None:
        docker = _sdk()
        try:
            service: dict[str, Any] = self.client.api.inspect_service(self.config.object_name(name))
        except docker.errors.NotFound:
            return None
        return service

    def _key_secret(self, name: str, key: str) -> tuple[str, str]:
        spec = secret_spec(name, self.config, key)
        for secret in self.client.api.secrets(filters={"name": spec["Name"]}):
            if secret["Spec"]["Name"] == spec["Name"]:
                return str(secret["ID"]), spec["Name"]
        created = self.client.api._result(
            self.client.api._post_json(self.client.api._url("/secrets/create"), data=spec), True
        )
        return str(created["ID"]), spec["Name"]

    def _database_secret(self) -> tuple[str, str] | None:
        wanted = self.swarm.database_secret
        if wanted is None:
            return None
        for secret in self.client.api.secrets(filters={"name": wanted}):
            if secret["Spec"]["Name"] == wanted:
                return str(secret["ID"]), wanted
        raise BadRequest(f"There is no Swarm secret '{wanted}' (the database URL).")

    async def stop_container(self, name: str) -> None:
        def scale_to_zero() -> None:
            current = self._service(name)
            if current is None:
                return
            spec = current["Spec"]
            spec["Mode"] = {"Replicated": {"Replicas": 0}}
            self._apply(name, spec)

        await asyncio.to_thread(scale_to_zero)

    async def exit_code(self, name: str) -> int | None:
        """A code when no task runs and the newest one ended (failed, rejected, …)."""

        def newest_task() -> int | None:
            tasks = self.client.api.tasks(filters={"service": self.config.object_name(name)})
            if not tasks:
                return None
            if any(t["Status"]["State"] in ("running", "starting", "preparing") for t in tasks):
                return None
            newest = max(tasks, key=lambda t: t["UpdatedAt"])
            if newest["Status"]["State"] in ("failed", "rejected", "shutdown", "complete"):
                return int(newest["Status"].get("ContainerStatus", {}).get("ExitCode", -1))
            return None

        return await asyncio.to_thread(newest_task)

    async def last_log_lines(self, name: str, lines: int) -> str:
        def tail() -> str:
            try:
                raw = self.client.api.service_logs(
                    self.config.object_name(name), stdout=True, stderr=True, tail=lines
                )
                text = b"".join(raw).decode("utf-8", "replace").splitlines()
            except Exception:
                return ""
            return " | ".join(line.strip() for line in text if line.strip())[-1000:]

        return await asyncio.to_thread(tail)

    def _remove_objects(self, name: str) -> None:
        docker = _sdk()
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_service(self.config.object_name(name))
        label = f"{LABEL}.name={name}"
        for secret in self.client.api.secrets(filters={"label": label}):
            if secret["Spec"]["Labels"].get(f"{LABEL}.project") == self.config.project:
                with contextlib.suppress(docker.errors.APIError):
                    self.client.api.remove_secret(secret["ID"])

    def _volume_exists(self, name: str) -> bool:
        return self._service(name) is not None

    def _data_bytes(self, name: str) -> int:
        return 0  # the data lives on the nodes' volumes and in the shared database


def runtime_from_env(kind: str, root: Path, domain: str) -> DockerRuntime:
    """The `docker` or `swarm` runtime of `backpack serve --runtime`, configured from the
    environment: DOCKER_HOST, BACKPACK_IMAGE, BACKPACK_PROJECT, BACKPACK_DOCKER_NETWORK,
    BACKPACK_TLS=1, BACKPACK_REPLICAS and BACKPACK_DATABASE_SECRET (swarm)."""
    client = connect()
    env = os.environ
    network = env.get("BACKPACK_DOCKER_NETWORK") or ("backpack" if kind == "swarm" else "host")
    config = ContainerConfig(
        image=env.get("BACKPACK_IMAGE") or ContainerConfig.image,
        project=env.get("BACKPACK_PROJECT") or ContainerConfig.project,
        network=network,
        domain=domain,
        tls=env.get("BACKPACK_TLS") == "1",
    )
    if kind == "swarm":
        swarm = SwarmConfig(
            replicas=int(env.get("BACKPACK_REPLICAS") or 1),
            database_secret=env.get("BACKPACK_DATABASE_SECRET") or None,
        )
        return SwarmRuntime(root, client, config, swarm)
    return DockerRuntime(root, client, config)


__all__ = [
    "ContainerConfig",
    "ContainerInstance",
    "DockerRuntime",
    "EngineUnreachable",
    "SwarmConfig",
    "SwarmRuntime",
    "connect",
    "project_for",
    "runtime_from_env",
    "secret_spec",
    "service_spec",
]
