"""The runtime contract: every runtime creates, serves, stops, starts and removes backpacks alike.

The suite speaks only the `Runtime` Protocol and the ASGI endpoints it hands out
(driven directly with a scope, `receive` and `send`: no server, no mocks). Each
runtime adds a factory to RUNTIMES: `embedded`, and `docker` (containers through
podman's Docker API, see tests/containers/engine.py) wherever podman is usable or
`make test-containers` asks for it (then a missing podman fails, saying so).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from backpack.errors import BackpackError, BadRequest, Conflict, NotFound
from backpack.platform.instance import DATABASE_FILE, new_secret_key
from backpack.platform.logs import LogFilter
from backpack.platform.runtime import FAILED, RUNNING, STOPPED, EmbeddedRuntime, Endpoint, Runtime
from tests.containers import engine as containers

EVERYTHING = LogFilter()
NOTES = {
    "name": "notes",
    "schema": {"fields": {"title": {"type": "string"}}},
    "rules": {"list": True, "read": True, "create": None, "update": None, "delete": None},
}


@dataclass
class RuntimeUnderTest:
    """A runtime and what the suite needs to reach behind it (its storage)."""

    runtime: Runtime
    corrupt_database: Callable[[str], None]  # make a stopped backpack's database unreadable
    has_storage: Callable[[str], bool]  # whether any of the backpack's data is left


def embedded(root: Path) -> RuntimeUnderTest:
    def corrupt_database(name: str) -> None:
        directory = root / name
        for suffix in ("-wal", "-shm"):
            (directory / (DATABASE_FILE + suffix)).unlink(missing_ok=True)
        (directory / DATABASE_FILE).write_bytes(b"this is not a database\n" * 512)

    return RuntimeUnderTest(EmbeddedRuntime(root), corrupt_database, lambda n: (root / n).exists())


def docker(root: Path) -> RuntimeUnderTest:
    from backpack.platform.runtime_docker import ContainerConfig, DockerRuntime, project_for

    config = ContainerConfig(
        image=containers.image(),
        project=project_for(root),
        labels={containers.SESSION_LABEL: containers.SESSION},
        health_interval=1.0,
    )
    client = containers.client()

    def corrupt_database(name: str) -> None:
        directory = containers.volume_path(config.volume_name(name))
        for suffix in ("-wal", "-shm"):
            (directory / (DATABASE_FILE + suffix)).unlink(missing_ok=True)
        (directory / DATABASE_FILE).write_bytes(b"this is not a database\n" * 512)

    def has_storage(name: str) -> bool:
        volumes = client.volumes.list(filters={"name": config.volume_name(name)})
        containers_left = client.containers.list(
            all=True, filters={"name": config.object_name(name)}
        )
        return (root / name).exists() or bool(volumes) or bool(containers_left)

    return RuntimeUnderTest(DockerRuntime(root, client, config), corrupt_database, has_storage)


RUNTIMES: dict[str, Callable[[Path], RuntimeUnderTest]] = {"embedded": embedded}
if containers.wanted():
    RUNTIMES["docker"] = docker


@pytest.fixture(params=sorted(RUNTIMES))
def make_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], RuntimeUnderTest]:
    """Makes runtimes over one root (a second one is the same deployment restarted)."""
    factory = RUNTIMES[request.param]
    return lambda: factory(tmp_path / "instances")


@pytest.fixture
async def under_test(
    make_runtime: Callable[[], RuntimeUnderTest],
) -> AsyncIterator[RuntimeUnderTest]:
    made = make_runtime()
    yield made
    await made.runtime.close()


@pytest.fixture
def runtime(under_test: RuntimeUnderTest) -> Runtime:
    return under_test.runtime


# --------------------------------------------------------------------------- driving an endpoint


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(
    endpoint: Endpoint | None,
    method: str,
    target: str,
    *,
    key: str | None = None,
    body: Any = None,
    request_id: str | None = None,
    root_path: str = "",
) -> Answer:
    """One HTTP request through the endpoint's ASGI interface (`root_path`: as the control
    plane's router sets it for `/i/NAME/…`)."""
    assert endpoint is not None, "the runtime has no endpoint for this backpack"
    raw = b"" if body is None else orjson.dumps(body)
    headers = [(b"host", b"contract.localhost")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    if body is not None:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    pending = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await endpoint(scope, receive, send)
    assert sent and sent[0]["type"] == "http.response.start", sent
    assert not sent[-1].get("more_body", False), "the response never ended"
    return Answer(
        sent[0]["status"],
        {bytes(k): bytes(v) for k, v in sent[0].get("headers", [])},
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


def assert_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    """The contract's error shape; returns the error object."""
    assert answer.status == status, answer.body
    body = answer.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"status", "code", "message", "details"}
    assert (error["status"], error["code"]) == (status, code)
    assert isinstance(error["message"], str) and error["message"]
    return error


async def add_note(runtime: Runtime, name: str, title: str) -> str:
    """Create `notes` if needed and one record in it (secret key); returns the record's id."""
    key = await runtime.secret_key(name)
    endpoint = runtime.endpoint(name)
    if (await call(endpoint, "GET", "/api/collections/notes", key=key)).status == 404:
        created = await call(endpoint, "POST", "/api/collections", key=key, body=NOTES)
        assert created.status in (200, 201), created.body
    answer = await call(
        endpoint, "POST", "/api/collections/notes/records", key=key, body={"title": title}
    )
    assert answer.status in (200, 201), answer.body
    return str(answer.json()["id"])


async def note_title(runtime: Runtime, name: str, record_id: str) -> str:
    answer = await call(
        runtime.endpoint(name), "GET", f"/api/collections/notes/records/{record_id}"
    )
    assert answer.status == 200, answer.body
    return str(answer.json()["title"])


# --------------------------------------------------------------------------- create


async def test_create_serves_at_once(runtime: Runtime) -> None:
    await runtime.create("alpha")
    assert runtime.status("alpha").state == RUNNING
    assert runtime.status("alpha").reason is None
    assert "alpha" in runtime.names()
    answer = await call(runtime.endpoint("alpha"), "GET", "/api/health")
    assert answer.status == 200
    assert answer.json()["status"] == "ok"
    assert (await runtime.secret_key("alpha")).startswith("bpk_")


async def test_backpacks_are_isolated(runtime: Runtime) -> None:
    await runtime.create("alpha")
    await runtime.create("beta")
    assert await runtime.secret_key("alpha") != await runtime.secret_key("beta")
    record = await add_note(runtime, "alpha", "only in alpha")
    beta = runtime.endpoint("beta")
    assert_error(
        await call(beta, "GET", f"/api/collections/notes/records/{record}"), 404, "not_found"
    )
    alpha_key = await runtime.secret_key("alpha")
    assert_error(await call(beta, "GET", "/api/settings", key=alpha_key), 401, "unauthorized")


async def test_a_backpack_reached_by_path_scopes_its_cookies_to_the_path(
    runtime: Runtime,
) -> None:
    """`/i/NAME` and `NAME.DOMAIN` behave alike, and two backpacks on one origin never see
    each other's sessions: by path, the session cookie is scoped to `/i/NAME`."""
    await runtime.create("alpha")
    endpoint = runtime.endpoint("alpha")
    key = await runtime.secret_key("alpha")
    user = {"email": "ann@example.com", "password": "correct horse battery"}
    assert (await call(endpoint, "POST", "/api/users", key=key, body=user)).status == 201
    by_host = await call(endpoint, "POST", "/api/auth/login", body=user)
    by_path = await call(endpoint, "POST", "/api/auth/login", body=user, root_path="/i/alpha")
    assert by_host.status == by_path.status == 200, (by_host.body, by_path.body)
    assert b"; Path=/;" in by_host.headers[b"set-cookie"]
    assert b"; Path=/i/alpha;" in by_path.headers[b"set-cookie"]
    token = by_path.json()["token"]
    me = await call(endpoint, "GET", "/api/auth/me", key=token, root_path="/i/alpha")
    assert me.status == 200 and me.json()["email"] == user["email"]


async def note_titles(runtime: Runtime, name: str) -> list[str]:
    key = await runtime.secret_key(name)
    answer = await call(
        runtime.endpoint(name), "GET", "/api/collections/notes/records?sort=title", key=key
    )
    assert answer.status == 200, answer.body
    return [str(item["title"]) for item in answer.json()["items"]]


async def test_backup_restores_as_a_new_backpack_and_over_the_old_one(
    runtime: Runtime, tmp_path: Path
) -> None:
    await runtime.create("alpha")
    await add_note(runtime, "alpha", "before the backup")
    key = await runtime.secret_key("alpha")
    user = {"email": "ann@example.com", "password": "correct horse battery"}
    added = await call(runtime.endpoint("alpha"), "POST", "/api/users", key=key, body=user)
    assert added.status == 201, added.body
    archive = tmp_path / "alpha.tar"
    await runtime.backup("alpha", archive)  # online
    await add_note(runtime, "alpha", "after the backup")

    await runtime.restore("beta", archive)
    assert runtime.status("beta").state == RUNNING
    assert await runtime.secret_key("beta") == key
    assert await note_titles(runtime, "beta") == ["before the backup"]
    login = await call(runtime.endpoint("beta"), "POST", "/api/auth/login", body=user)
    assert login.status == 200, login.body
    assert await note_titles(runtime, "alpha") == ["after the backup", "before the backup"]

    await runtime.restore("alpha", archive)
    assert runtime.status("alpha").state == RUNNING
    assert await note_titles(runtime, "alpha") == ["before the backup"]
    await add_note(runtime, "alpha", "written after the restore")
    assert len(await note_titles(runtime, "alpha")) == 2


async def test_a_stopped_backpack_backs_up_and_a_tampered_archive_changes_nothing(
    runtime: Runtime, tmp_path: Path
) -> None:
    await runtime.create("alpha")
    await add_note(runtime, "alpha", "kept")
    await runtime.stop("alpha")
    archive = tmp_path / "alpha.tar"
    await runtime.backup("alpha", archive)
    await runtime.start("alpha")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered = tmp_path / "tampered.tar"
    tampered.write_bytes(bytes(data))
    for target in ("alpha", "gamma"):
        with pytest.raises(BackpackError):
            await runtime.restore(target, tampered)
    assert runtime.status("alpha").state == RUNNING
    assert await note_titles(runtime, "alpha") == ["kept"]
    assert runtime.endpoint("gamma") is None
    assert sorted(p.name for p in (tmp_path / "instances").iterdir()) == ["alpha"]


async def test_create_twice_is_a_conflict_and_changes_nothing(runtime: Runtime) -> None:
    await runtime.create("alpha")
    key = await runtime.secret_key("alpha")
    record = await add_note(runtime, "alpha", "kept")
    with pytest.raises(Conflict):
        await runtime.create("alpha")
    assert runtime.status("alpha").state == RUNNING
    assert await runtime.secret_key("alpha") == key
    assert await note_title(runtime, "alpha", record) == "kept"
    assert runtime.names().count("alpha") == 1


async def test_two_concurrent_creates_of_one_name_one_wins(runtime: Runtime) -> None:
    # The race is decided by thread timing: 25 pairs, so that a runtime that lets the loser
    # fail with anything but Conflict is caught in practice every time.
    for i in range(25):
        name = f"race-{i}"
        outcomes = await asyncio.gather(
            runtime.create(name), runtime.create(name), return_exceptions=True
        )
        errors = [o for o in outcomes if o is not None]
        assert len(errors) == 1, outcomes
        if not isinstance(errors[0], Conflict):
            raise errors[0]
        assert runtime.status(name).state == RUNNING
        assert (await call(runtime.endpoint(name), "GET", "/api/health")).status == 200


async def test_create_of_a_name_a_restarted_runtime_finds_on_disk_is_a_conflict(
    make_runtime: Callable[[], RuntimeUnderTest],
) -> None:
    first = make_runtime().runtime
    await first.create("alpha")
    record = await add_note(first, "alpha", "survives a restart")
    await first.close()
    second = make_runtime().runtime
    try:
        with pytest.raises(Conflict):
            await second.create("alpha")
        second.attach("alpha")
        assert second.status("alpha").state == STOPPED
        await second.start("alpha")
        assert await note_title(second, "alpha", record) == "survives a restart"
    finally:
        await second.close()


# --------------------------------------------------------------------------- stop and start


async def test_stop_answers_503_and_start_brings_the_data_back(runtime: Runtime) -> None:
    await runtime.create("alpha")
    record = await add_note(runtime, "alpha", "before the stop")
    await runtime.stop("alpha")
    assert runtime.status("alpha").state == STOPPED
    for target in ("/api/health", f"/api/collections/notes/records/{record}"):
        error = assert_error(
            await call(runtime.endpoint("alpha"), "GET", target), 503, "unavailable"
        )
        assert "alpha" in error["message"]
        assert error["details"] == {"backpack": "alpha", "status": STOPPED}
    await runtime.stop("alpha")  # stopping a stopped backpack is harmless
    assert runtime.status("alpha").state == STOPPED

    await runtime.start("alpha")
    assert runtime.status("alpha").state == RUNNING
    assert await note_title(runtime, "alpha", record) == "before the stop"
    await runtime.start("alpha")  # starting a running one too
    assert (await call(runtime.endpoint("alpha"), "GET", "/api/health")).status == 200


async def test_stopping_one_backpack_leaves_the_others_serving(runtime: Runtime) -> None:
    await runtime.create("alpha")
    await runtime.create("beta")
    record = await add_note(runtime, "beta", "beta's")
    await runtime.stop("alpha")
    assert runtime.status("beta").state == RUNNING
    assert await note_title(runtime, "beta", record) == "beta's"


# --------------------------------------------------------------------------- keys


async def test_rotate_key_retires_the_old_key_at_once(runtime: Runtime) -> None:
    await runtime.create("alpha")
    old = await runtime.secret_key("alpha")
    endpoint = runtime.endpoint("alpha")
    assert (await call(endpoint, "GET", "/api/settings", key=old)).status == 200
    new = new_secret_key()
    await runtime.rotate_key("alpha", new)
    assert await runtime.secret_key("alpha") == new
    assert_error(await call(endpoint, "GET", "/api/settings", key=old), 401, "unauthorized")
    assert (await call(endpoint, "GET", "/api/settings", key=new)).status == 200

    await runtime.stop("alpha")  # the new key is the one kept
    assert await runtime.secret_key("alpha") == new
    await runtime.start("alpha")
    endpoint = runtime.endpoint("alpha")
    assert_error(await call(endpoint, "GET", "/api/settings", key=old), 401, "unauthorized")
    assert (await call(endpoint, "GET", "/api/settings", key=new)).status == 200


async def test_a_malformed_key_is_refused_and_the_current_one_stays(runtime: Runtime) -> None:
    await runtime.create("alpha")
    key = await runtime.secret_key("alpha")
    for bad in ("", "bpk_short", "not-a-key-" + "x" * 40, "bpk_" + "é" * 40):
        with pytest.raises(BadRequest):
            await runtime.rotate_key("alpha", bad)
    assert await runtime.secret_key("alpha") == key
    assert (await call(runtime.endpoint("alpha"), "GET", "/api/settings", key=key)).status == 200


async def test_a_rotated_key_of_a_stopped_backpack_is_in_force_when_it_starts(
    runtime: Runtime,
) -> None:
    await runtime.create("alpha")
    old = await runtime.secret_key("alpha")
    await runtime.stop("alpha")
    new = new_secret_key()
    await runtime.rotate_key("alpha", new)
    await runtime.start("alpha")
    endpoint = runtime.endpoint("alpha")
    assert_error(await call(endpoint, "GET", "/api/settings", key=old), 401, "unauthorized")
    assert (await call(endpoint, "GET", "/api/settings", key=new)).status == 200


# --------------------------------------------------------------------------- stats and logs


async def test_stats_count_what_the_backpack_holds(runtime: Runtime) -> None:
    await runtime.create("alpha")
    empty = await runtime.stats("alpha")
    assert (empty.records, empty.users, empty.files, empty.realtime_connections) == (0, 0, 0, 0)
    await add_note(runtime, "alpha", "one")
    await add_note(runtime, "alpha", "two")
    user = {"email": "ada@example.com", "password": "correct horse 42", "verified": True}
    key = await runtime.secret_key("alpha")
    created = await call(runtime.endpoint("alpha"), "POST", "/api/users", key=key, body=user)
    assert created.status in (200, 201), created.body
    stats = await runtime.stats("alpha")
    assert (stats.records, stats.users, stats.files, stats.realtime_connections) == (2, 1, 0, 0)
    assert stats.storage_bytes > 0
    assert set(stats.to_json()) == {
        "records",
        "users",
        "files",
        "storage_bytes",
        "realtime_connections",
    }


async def test_logs_list_requests_in_order_with_a_cursor(runtime: Runtime) -> None:
    await runtime.create("alpha")
    endpoint = runtime.endpoint("alpha")
    assert (await call(endpoint, "GET", "/api/health", request_id="contract-1")).status == 200
    missing = await call(
        endpoint, "GET", "/api/collections/nope/records?secret=x", request_id="c-2"
    )
    assert missing.status == 404
    entries = runtime.logs("alpha", None, 100, EVERYTHING)
    ids = [str(e["id"]) for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    requests = [e for e in entries if e["type"] == "request"]
    assert [(e["method"], e["path"], e["status"], e["request_id"]) for e in requests] == [
        ("GET", "/api/health", 200, "contract-1"),
        ("GET", "/api/collections/nope/records", 404, "c-2"),
    ]
    assert [e["type"] for e in entries] == ["event"] * (len(entries) - 2) + ["request"] * 2
    assert "secret=x" not in orjson.dumps(entries).decode()

    cursor = ids[-1]
    assert runtime.logs("alpha", cursor, 100, EVERYTHING) == []
    await call(endpoint, "GET", "/api/health", request_id="contract-3")
    (after,) = runtime.logs("alpha", cursor, 100, EVERYTHING)
    assert after["request_id"] == "contract-3" and str(after["id"]) > cursor
    only_failed = runtime.logs("alpha", None, 100, LogFilter(min_status=400))
    assert [e["request_id"] for e in only_failed] == ["c-2"]
    assert len(runtime.logs("alpha", None, 1, EVERYTHING)) == 1
    with pytest.raises(BadRequest):
        runtime.logs("alpha", None, 0, EVERYTHING)


async def test_logs_record_stop_and_start(runtime: Runtime) -> None:
    await runtime.create("alpha")
    cursor = str(runtime.logs("alpha", None, 1, EVERYTHING)[-1]["id"])
    await runtime.stop("alpha")
    await runtime.start("alpha")
    events = runtime.logs("alpha", cursor, 100, LogFilter(entry_type="event"))
    assert [e["kind"] for e in events] == ["stopped", "started"]


# --------------------------------------------------------------------------- remove


async def test_remove_deletes_every_byte(under_test: RuntimeUnderTest) -> None:
    runtime = under_test.runtime
    await runtime.create("alpha")
    await runtime.create("beta")
    record = await add_note(runtime, "alpha", "gone soon")
    beta_record = await add_note(runtime, "beta", "stays")
    await runtime.remove("alpha")
    assert runtime.endpoint("alpha") is None
    assert "alpha" not in runtime.names()
    assert not under_test.has_storage("alpha")
    with pytest.raises(NotFound):
        runtime.status("alpha")
    with pytest.raises(NotFound):
        await runtime.secret_key("alpha")
    assert await note_title(runtime, "beta", beta_record) == "stays"

    await runtime.create("alpha")  # the name is free again, and nothing of the old one is back
    answer = await call(
        runtime.endpoint("alpha"), "GET", f"/api/collections/notes/records/{record}"
    )
    assert_error(answer, 404, "not_found")


async def test_remove_of_a_stopped_backpack(under_test: RuntimeUnderTest) -> None:
    runtime = under_test.runtime
    await runtime.create("alpha")
    await runtime.stop("alpha")
    await runtime.remove("alpha")
    assert runtime.endpoint("alpha") is None
    assert not under_test.has_storage("alpha")


async def test_unknown_backpacks_are_not_found(runtime: Runtime) -> None:
    assert runtime.endpoint("ghost") is None
    with pytest.raises(NotFound):
        runtime.status("ghost")
    with pytest.raises(NotFound):
        await runtime.start("ghost")  # start never makes a backpack: create does
    assert runtime.endpoint("ghost") is None
    with pytest.raises(NotFound):
        await runtime.stop("ghost")
    with pytest.raises(NotFound):
        await runtime.secret_key("ghost")
    with pytest.raises(NotFound):
        await runtime.rotate_key("ghost", new_secret_key())
    with pytest.raises(NotFound):
        await runtime.stats("ghost")
    with pytest.raises(NotFound):
        runtime.logs("ghost", None, 10, EVERYTHING)
    assert runtime.names() == []


# --------------------------------------------------------------------------- failures


async def test_a_corrupt_database_fails_that_backpack_only(under_test: RuntimeUnderTest) -> None:
    runtime = under_test.runtime
    await runtime.create("alpha")
    await runtime.create("beta")
    record = await add_note(runtime, "beta", "beta keeps serving")
    await runtime.stop("alpha")
    under_test.corrupt_database("alpha")

    await runtime.start("alpha")  # does not raise: the failure is the backpack's state
    status = runtime.status("alpha")
    assert status.state == FAILED
    assert status.reason
    error = assert_error(
        await call(runtime.endpoint("alpha"), "GET", "/api/health"), 503, "unavailable"
    )
    assert status.reason in error["message"]
    assert error["details"] == {"backpack": "alpha", "status": FAILED}
    events = runtime.logs("alpha", None, 100, LogFilter(entry_type="event"))
    assert events[-1]["kind"] == "failed"

    assert runtime.status("beta").state == RUNNING
    assert await note_title(runtime, "beta", record) == "beta keeps serving"
    await runtime.stop("alpha")  # a failed backpack can be stopped and removed
    await runtime.remove("alpha")
    assert runtime.endpoint("alpha") is None
    assert not under_test.has_storage("alpha")


# --------------------------------------------------------------------------- close


async def test_close_stops_every_backpack_and_keeps_their_data(
    make_runtime: Callable[[], RuntimeUnderTest],
) -> None:
    runtime = make_runtime().runtime
    records = {}
    for name in ("alpha", "beta"):
        await runtime.create(name)
        records[name] = await add_note(runtime, name, f"{name}'s note")
    endpoints = {name: runtime.endpoint(name) for name in records}
    await runtime.close()
    for name, endpoint in endpoints.items():
        assert runtime.status(name).state == STOPPED
        assert_error(await call(endpoint, "GET", "/api/health"), 503, "unavailable")

    again = make_runtime().runtime
    try:
        for name, record in records.items():
            again.attach(name)
            await again.start(name)
            assert await note_title(again, name, record) == f"{name}'s note"
    finally:
        await again.close()
