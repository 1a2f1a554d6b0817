"""The `docker` runtime's own promises, beyond the runtime contract, against podman's API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backpack.errors import ValidationFailed
from backpack.platform.runtime import FAILED, RUNNING
from backpack.platform.runtime_docker import (
    ContainerConfig,
    DockerRuntime,
    EngineUnreachable,
    connect,
    project_for,
)
from tests.containers import engine
from tests.contract.test_runtime_contract import assert_error, call


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[DockerRuntime]:
    config = ContainerConfig(
        image=engine.image(),
        project=project_for(tmp_path),
        labels={engine.SESSION_LABEL: engine.SESSION},
        domain="example.test",
        memory="256m",
        cpus=0.5,
        health_interval=0.3,
        health_timeout=0.5,
        health_retries=2,
    )
    made = DockerRuntime(tmp_path / "instances", engine.client(), config)
    yield made
    await made.close()


def _inspect(runtime: DockerRuntime, name: str) -> dict[str, Any]:
    inspected: dict[str, Any] = engine.client().api.inspect_container(
        runtime.config.object_name(name)
    )
    return inspected


async def test_the_secret_key_is_a_file_never_in_the_environment(runtime: DockerRuntime) -> None:
    await runtime.create("alpha")
    key = await runtime.secret_key("alpha")
    inspected = _inspect(runtime, "alpha")
    assert key not in json.dumps(inspected)
    assert not any(item.startswith("BACKPACK_SECRET_KEY") for item in inspected["Config"]["Env"])
    answer = await call(runtime.endpoint("alpha"), "GET", "/api/settings", key=key)
    assert answer.status == 200


async def test_the_container_has_limits_labels_and_its_volume(runtime: DockerRuntime) -> None:
    await runtime.create("alpha")
    inspected = _inspect(runtime, "alpha")
    host = inspected["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (256 * 2**20, 5 * 10**8, 512)
    labels = inspected["Config"]["Labels"]
    router = runtime.config.object_name("alpha")
    assert labels["traefik.enable"] == "true"
    assert labels[f"traefik.http.routers.{router}.rule"] == "Host(`alpha.example.test`)"
    assert labels["io.backpack.name"] == "alpha"
    assert inspected["Config"]["User"] == "10001:10001"
    mounts = {m["Destination"]: m for m in inspected["Mounts"]}
    assert mounts["/data"]["Name"] == runtime.config.volume_name("alpha")


async def test_a_container_failing_its_health_check_is_failed_with_its_last_log_lines(
    runtime: DockerRuntime,
) -> None:
    await runtime.create("alpha")
    await runtime.create("beta")
    container = engine.client().containers.get(runtime.config.object_name("alpha"))
    container.pause()  # alive, but answers nothing
    for _ in range(100):
        if runtime.status("alpha").state == FAILED:
            break
        await asyncio.sleep(0.1)
    status = runtime.status("alpha")
    assert status.state == FAILED
    assert status.reason is not None
    assert "health checks" in status.reason
    assert "serving /data" in status.reason  # the container's own last words
    error = assert_error(
        await call(runtime.endpoint("alpha"), "GET", "/api/health"), 503, "unavailable"
    )
    assert status.reason in error["message"]
    assert runtime.status("beta").state == RUNNING

    await runtime.start("alpha")  # a new container: the backpack comes back
    assert runtime.status("alpha").state == RUNNING
    assert (await call(runtime.endpoint("alpha"), "GET", "/api/health")).status == 200


async def test_a_container_that_exits_is_failed(runtime: DockerRuntime) -> None:
    await runtime.create("alpha")
    engine.client().containers.get(runtime.config.object_name("alpha")).kill()
    for _ in range(100):
        if runtime.status("alpha").state == FAILED:
            break
        await asyncio.sleep(0.1)
    reason = runtime.status("alpha").reason
    assert reason is not None and "exited with code" in reason


async def test_deleting_a_backpack_whose_container_is_gone(runtime: DockerRuntime) -> None:
    await runtime.create("alpha")
    engine.client().containers.get(runtime.config.object_name("alpha")).remove(force=True)
    await runtime.remove("alpha")
    assert runtime.endpoint("alpha") is None
    assert not engine.client().volumes.list(filters={"name": runtime.config.volume_name("alpha")})


@pytest.mark.parametrize("name", ["Alpha", "al_pha", "a", "alpha-", "xn--alpha", "api", "-a"])
async def test_a_name_that_is_no_dns_label_is_refused(runtime: DockerRuntime, name: str) -> None:
    with pytest.raises(ValidationFailed):
        await runtime.create(name)
    assert runtime.names() == []


def test_an_unreachable_docker_api_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(EngineUnreachable, match="No Docker API answers at unix://"):
        connect(f"unix://{tmp_path}/nothing.sock")


async def test_realtime_is_relayed_to_the_container(runtime: DockerRuntime) -> None:
    await runtime.create("alpha")
    endpoint = runtime.endpoint("alpha")
    assert endpoint is not None
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    scope = {
        "type": "websocket",
        "path": "/api/realtime",
        "raw_path": b"/api/realtime",
        "query_string": b"",
        "headers": [(b"host", b"alpha.localhost")],
        "scheme": "ws",
        "root_path": "",
    }
    relay = asyncio.create_task(endpoint(scope, inbox.get, outbox.put))
    assert (await asyncio.wait_for(outbox.get(), 10))["type"] == "websocket.accept"
    ready = json.loads((await asyncio.wait_for(outbox.get(), 10))["text"])
    assert ready["type"] == "ready"
    assert (await runtime.stats("alpha")).realtime_connections == 1
    await inbox.put({"type": "websocket.receive", "text": json.dumps({"type": "ping"})})
    pong = json.loads((await asyncio.wait_for(outbox.get(), 10))["text"])
    assert pong == {"type": "pong"}
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(relay, 10)
    assert (await runtime.stats("alpha")).realtime_connections == 0
