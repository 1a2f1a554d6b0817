"""`backpack serve` end to end: admins, instances, routing, keys, monitoring, backups and sites.

Every test talks to a real `backpack serve` subprocess over HTTP or WebSocket.
Most share one deployment; those that restart the server or spend the admin
sign-in budget (10 per minute from one address) start their own.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from tests.e2e.control_helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Deployment,
    add_record,
    corrupt_storage,
    create_instance,
    instance,
    make_zip,
    record_texts,
    running_deployment,
    secret_key,
    set_up,
    start_deployment,
    storage_exists,
    unique_name,
)
from tests.e2e.helpers import error_of

INSTANCES = "/admin/api/instances"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from running_deployment(tmp_path_factory.mktemp("control") / "data")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Deployment]:
    """A deployment of this test alone, not set up yet."""
    deployment = start_deployment(tmp_path / "data")
    yield deployment
    deployment.stop()
    assert "Traceback" not in deployment.log(), deployment.log()


# admins


def test_first_run_setup_sessions_and_login_rate_limit(fresh: Deployment) -> None:
    with fresh.client() as client:
        assert client.get("/admin/api/setup").json() == {"needed": True}
        error_of(client.get("/admin/api/me"), 401, "unauthorized")
        bad = client.post("/admin/api/setup", json={"email": "root@example.com", "password": "x"})
        error_of(bad, 400, "validation_failed")
        assert client.get("/admin/api/setup").json() == {"needed": True}

        setup = client.post(
            "/admin/api/setup", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        assert setup.status_code == 201, setup.text
        assert setup.json()["admin"]["email"] == ADMIN_EMAIL
        first = setup.json()["token"]
        assert first.startswith("bpa_")
        assert client.get("/admin/api/setup").json() == {"needed": False}
        again = client.post(
            "/admin/api/setup", json={"email": "other@example.com", "password": "another pass"}
        )
        error_of(again, 409, "conflict")

        login = client.post(
            "/admin/api/login", json={"email": ADMIN_EMAIL.upper(), "password": ADMIN_PASSWORD}
        )
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"]
        token = login.json()["token"]
        assert cookie.startswith(f"bp_admin={token};")
        assert "Path=/admin" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        headers = {"Authorization": f"Bearer {token}"}
        me = client.get("/admin/api/me", headers=headers)
        assert me.status_code == 200 and me.json()["email"] == ADMIN_EMAIL

        # the only admin cannot be deleted
        admin_id = me.json()["id"]
        error_of(client.delete(f"/admin/api/admins/{admin_id}", headers=headers), 409, "conflict")
        assert client.get("/admin/api/me", headers=headers).status_code == 200

        logout = client.post("/admin/api/logout", headers=headers)
        assert logout.status_code == 204
        error_of(client.get("/admin/api/me", headers=headers), 401, "unauthorized")
        first_me = client.get("/admin/api/me", headers={"Authorization": f"Bearer {first}"})
        assert first_me.status_code == 200  # other sessions stay

        wrong = client.post(
            "/admin/api/login", json={"email": ADMIN_EMAIL, "password": "wrong password"}
        )
        unknown = client.post(
            "/admin/api/login", json={"email": "nobody@example.com", "password": ADMIN_PASSWORD}
        )
        assert "token" not in wrong.text and "set-cookie" not in wrong.headers
        message = error_of(wrong, 401, "unauthorized")["message"]
        assert error_of(unknown, 401, "unauthorized")["message"] == message

        # 4 sign-ins so far from this address (setup signs in too); the limit is 10 a minute
        statuses = []
        for _ in range(10):
            response = client.post(
                "/admin/api/login", json={"email": ADMIN_EMAIL, "password": "wrong password"}
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        assert statuses[-1] == 429, statuses
        assert set(statuses[:-1]) == {401}
        limited = error_of(response, 429, "rate_limited")
        assert limited["message"]
        assert int(response.headers["retry-after"]) >= 1
        right = client.post(
            "/admin/api/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        error_of(right, 429, "rate_limited")


def test_admins_invite_list_delete(dep: Deployment) -> None:
    email = f"{unique_name('ops')}@example.com"
    with dep.admin() as admin:
        invited = admin.post("/admin/api/admins", json={"email": email, "password": "ops password"})
        assert invited.status_code == 201, invited.text
        assert invited.json()["email"] == email and "password" not in invited.text
        twice = admin.post("/admin/api/admins", json={"email": email, "password": "ops password"})
        error_of(twice, 409, "conflict")
        short = admin.post(
            "/admin/api/admins", json={"email": "short@example.com", "password": "short"}
        )
        error_of(short, 400, "validation_failed")
        listed = [a["email"] for a in admin.get("/admin/api/admins").json()["items"]]
        assert ADMIN_EMAIL in listed and email in listed and "short@example.com" not in listed

        login = httpx.post(
            dep.url + "/admin/api/login", json={"email": email, "password": "ops password"}
        )
        assert login.status_code == 200, login.text
        their_token = login.json()["token"]
        with dep.client(their_token) as theirs:
            assert theirs.get("/admin/api/me").json()["email"] == email

            deleted = admin.delete(f"/admin/api/admins/{invited.json()['id']}")
            assert deleted.status_code == 204
            error_of(theirs.get("/admin/api/me"), 401, "unauthorized")
        error_of(admin.delete(f"/admin/api/admins/{invited.json()['id']}"), 404, "not_found")
        listed = [a["email"] for a in admin.get("/admin/api/admins").json()["items"]]
        assert email not in listed


def _admin_endpoints(name: str) -> list[tuple[str, str]]:
    i = f"{INSTANCES}/{name}"
    return [
        ("GET", "/admin/api/me"),
        ("GET", "/admin/api/admins"),
        ("POST", "/admin/api/admins"),
        ("DELETE", "/admin/api/admins/someone"),
        ("GET", INSTANCES),
        ("POST", INSTANCES),
        ("GET", i),
        ("PATCH", i),
        ("DELETE", f"{i}?confirm={name}"),
        ("POST", f"{i}/start"),
        ("POST", f"{i}/stop"),
        ("POST", f"{i}/restart"),
        ("GET", f"{i}/keys"),
        ("POST", f"{i}/keys/rotate"),
        ("POST", f"{i}/token"),
        ("GET", f"{i}/metrics"),
        ("GET", f"{i}/logs"),
        ("POST", f"{i}/backup"),
        ("POST", f"{i}/restore"),
        ("GET", f"{i}/site"),
        ("PUT", f"{i}/site"),
        ("DELETE", f"{i}/site"),
        ("GET", "/metrics"),
    ]


def test_admin_endpoints_refuse_other_credentials(dep: Deployment) -> None:
    name = create_instance(dep)
    key = secret_key(dep, name)
    with dep.backpack(name) as anon:
        signup = anon.post(
            "/api/auth/signup", json={"email": "u@example.com", "password": "user password"}
        )
    assert signup.status_code == 201, signup.text
    user_token = signup.json()["token"]
    with dep.admin() as admin:
        console = admin.post(f"{INSTANCES}/{name}/token").json()["token"]
    body = {"name": unique_name("x"), "email": "evil@example.com", "password": "evil password"}
    with dep.client() as client:
        for method, path in _admin_endpoints(name):
            request = client.build_request(method, path, json=body)
            error_of(client.send(request), 401, "unauthorized")
            for token in (user_token, key, console):
                request = client.build_request(
                    method, path, json=body, headers={"Authorization": f"Bearer {token}"}
                )
                response = client.send(request)
                code = {401: "unauthorized", 403: "forbidden"}.get(response.status_code)
                assert code is not None, (method, path, response.text)
                error_of(response, response.status_code, code)
            forged = client.build_request(
                method, path, json=body, headers={"Authorization": "Bearer bpa_forged"}
            )
            error_of(client.send(forged), 401, "unauthorized")
    # nothing was done by any of them
    assert instance(dep, name)["status"] == "running"
    assert secret_key(dep, name) == key
    with dep.admin() as admin:
        names = [item["name"] for item in admin.get(INSTANCES).json()["items"]]
        assert body["name"] not in names
        emails = [a["email"] for a in admin.get("/admin/api/admins").json()["items"]]
        assert "evil@example.com" not in emails


def test_cookie_sessions_need_the_console_origin_for_changes(dep: Deployment) -> None:
    cookie = {"Cookie": f"bp_admin={dep.token}"}
    name = unique_name("ck")
    with dep.client() as client:
        me = client.get("/admin/api/me", headers=cookie)
        assert me.status_code == 200 and me.json()["email"] == ADMIN_EMAIL
        for origin in (None, "http://evil.example.com", f"http://localhost:{dep.port}"):
            headers = dict(cookie) if origin is None else {**cookie, "Origin": origin}
            refused = client.post(INSTANCES, json={"name": name}, headers=headers)
            error_of(refused, 403, "forbidden")
        error_of(client.get(f"{INSTANCES}/{name}", headers=cookie), 404, "not_found")
        allowed = client.post(INSTANCES, json={"name": name}, headers={**cookie, "Origin": dep.url})
        assert allowed.status_code == 201, allowed.text


# instances


def test_create_list_get_and_ready_at_once(dep: Deployment) -> None:
    name = unique_name("new")
    with dep.admin() as admin, dep.client() as client:
        created = admin.post(INSTANCES, json={"name": name})
        path_health = client.get(f"/i/{name}/api/health")
        host_health = client.get("/api/health", headers={"Host": dep.host(name)})
        assert created.status_code == 201, created.text
        assert path_health.status_code == 200 and path_health.json()["status"] == "ok"
        assert host_health.status_code == 200 and host_health.json()["status"] == "ok"
        body = created.json()
        assert body["name"] == name and body["status"] == "running"
        assert body["runtime"] == "embedded"
        assert body["urls"]["api"].endswith(f"/i/{name}")
        assert body["urls"]["site"].endswith(f"/i/{name}/site/")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["created"])
        assert storage_exists(dep.data_dir, name)

        listed = admin.get(INSTANCES).json()["items"]
        assert next(item for item in listed if item["name"] == name)["status"] == "running"
        got = admin.get(f"{INSTANCES}/{name}").json()
        assert got["name"] == name and got["status"] == "running"
        assert set(got["stats"]) >= {"records", "users", "storage_bytes"}
        error_of(admin.get(f"{INSTANCES}/{unique_name('none')}"), 404, "not_found")


@pytest.mark.parametrize(
    "name",
    ["admin", "api", "www", "i", "a" + "b" * 40, "Todo", "a", "xn--abc", "todo-", 42, None, ""],
)
def test_bad_names_are_refused_and_nothing_is_made(dep: Deployment, name: object) -> None:
    with dep.admin() as admin:
        before = admin.get(INSTANCES).json()["items"]
        response = admin.post(INSTANCES, json={"name": name})
        error = error_of(response, 400, "validation_failed")
        assert "name" in error["details"]["fields"]
        assert admin.get(INSTANCES).json()["items"] == before
    if isinstance(name, str) and name:
        assert not (dep.data_dir / "instances" / name).exists()


def test_forty_characters_is_long_enough(dep: Deployment) -> None:
    name = "a" + unique_name("b")[:8].replace("-", "x") + "c" * 31
    assert len(name) == 40
    create_instance(dep, name)


def test_duplicate_names_conflict(dep: Deployment) -> None:
    name = create_instance(dep)
    key = secret_key(dep, name)
    with dep.admin() as admin:
        error_of(admin.post(INSTANCES, json={"name": name}), 409, "conflict")
    assert secret_key(dep, name) == key  # the existing one is untouched


async def test_two_concurrent_creates_one_wins(dep: Deployment) -> None:
    name = unique_name("race")
    headers = {"Authorization": f"Bearer {dep.token}"}
    async with httpx.AsyncClient(base_url=dep.url, headers=headers, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post(INSTANCES, json={"name": name}) for _ in range(2))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409], [r.text for r in responses]
    error_of(next(r for r in responses if r.status_code == 409), 409, "conflict")
    assert instance(dep, name)["status"] == "running"
    with dep.backpack(name) as client:
        assert client.get("/api/health").status_code == 200


# routing and isolation


def test_backpacks_are_isolated(dep: Deployment) -> None:
    a, b = create_instance(dep), create_instance(dep)
    key_a, key_b = secret_key(dep, a), secret_key(dep, b)
    assert key_a != key_b
    with dep.backpack(a, key_a) as in_a, dep.backpack(b, key_b) as in_b:
        add_record(in_a, {"text": "only in a"})
        assert record_texts(in_a) == ["only in a"]
        assert record_texts(in_b) == []
        error_of(in_b.get("/api/collections/notes"), 404, "not_found")
    with dep.backpack(b, key_a) as wrong_key:
        error_of(wrong_key.get("/api/collections"), 401, "unauthorized")

    credentials = {"email": "same@example.com", "password": "user password"}
    with dep.backpack(a) as anon_a:
        signup = anon_a.post("/api/auth/signup", json=credentials)
    assert signup.status_code == 201, signup.text
    assert "Path=/i/" + a + ";" in signup.headers["set-cookie"]
    user_a = signup.json()["token"]
    assert user_a.startswith("bps_")
    with dep.backpack(a, user_a) as as_user_a, dep.backpack(b, user_a) as in_b_as_a:
        assert as_user_a.get("/api/auth/me").json()["email"] == credentials["email"]
        error_of(in_b_as_a.get("/api/auth/me"), 401, "unauthorized")
    with dep.backpack(b) as anon_b:
        error_of(anon_b.post("/api/auth/login", json=credentials), 401, "unauthorized")

    with dep.by_host(b) as host_b:
        signup_b = host_b.post("/api/auth/signup", json=credentials)
    assert signup_b.status_code == 201, signup_b.text
    assert "Path=/;" in signup_b.headers["set-cookie"]
    assert signup_b.json()["user"]["id"] != signup.json()["user"]["id"]


def test_a_local_proxys_forwarded_scheme_reaches_both_forms(dep: Deployment) -> None:
    """Behind a TLS-terminating proxy on 127.0.0.1 (X-Forwarded-Proto: https) a backpack's
    session cookie is Secure, by host and by path; a direct request's is not."""
    name = create_instance(dep)
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.20"}
    for number, client in enumerate((dep.by_host(name), dep.backpack(name))):
        credentials = {"email": f"proxied{number}@example.com", "password": "user password"}
        with client:
            signup = client.post("/api/auth/signup", json=credentials, headers=proxy)
            direct = client.post("/api/auth/login", json=credentials)
        assert signup.status_code == 201, signup.text
        assert "; Secure" in signup.headers["set-cookie"]
        assert direct.status_code == 200, direct.text
        assert "Secure" not in direct.headers["set-cookie"]


def test_unknown_backpacks_and_other_domains_are_not_found(dep: Deployment) -> None:
    name = create_instance(dep)
    key = secret_key(dep, name)
    missing = unique_name("nope")
    with dep.client(key) as client:
        for response in (
            client.get(f"/i/{missing}/api/health"),
            client.get(f"/i/{missing}"),
            client.get("/api/health", headers={"Host": dep.host(missing)}),
            client.get("/", headers={"Host": dep.host(missing)}),
        ):
            error = error_of(response, 404, "not_found")
            assert missing in error["message"]
        # the backpack itself answers with its key, in both forms
        assert client.get(f"/i/{name}/api/collections").status_code == 200
        assert client.get("/api/collections", headers={"Host": dep.host(name)}).status_code == 200
        for host in (
            f"{name}.example.com",
            f"{name}.example.com:{dep.port}",
            f"x.{name}.localhost",
        ):
            response = client.get("/api/collections", headers={"Host": host})
            error_of(response, 404, "not_found")
        error_of(client.get("/nothing/here"), 404, "not_found")


def test_stop_start_restart_and_delete(dep: Deployment) -> None:
    name = create_instance(dep)
    key = secret_key(dep, name)
    directory = dep.data_dir / "instances" / name
    with dep.admin() as admin, dep.backpack(name, key) as bp:
        add_record(bp, {"text": "kept"})
        stopped = admin.post(f"{INSTANCES}/{name}/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        error_of(bp.get("/api/collections/notes/records"), 503, "unavailable")
        with dep.by_host(name, key) as host:
            error_of(host.get("/api/health"), 503, "unavailable")
        assert admin.get(f"{INSTANCES}/{name}").json()["status"] == "stopped"
        assert storage_exists(dep.data_dir, name)

        started = admin.post(f"{INSTANCES}/{name}/start")
        assert started.status_code == 200 and started.json()["status"] == "running"
        assert record_texts(bp) == ["kept"]
        restarted = admin.post(f"{INSTANCES}/{name}/restart")
        assert restarted.status_code == 200 and restarted.json()["status"] == "running"
        assert record_texts(bp) == ["kept"]

        for query in ("", "?confirm=", f"?confirm={name}x", f"?confirm={name.upper()}"):
            error_of(admin.delete(f"{INSTANCES}/{name}{query}"), 400, "bad_request")
            assert directory.is_dir()
            assert record_texts(bp) == ["kept"]
        assert admin.delete(f"{INSTANCES}/{name}?confirm={name}").status_code == 204
        assert not directory.exists() and not storage_exists(dep.data_dir, name)
        error_of(admin.get(f"{INSTANCES}/{name}"), 404, "not_found")
        error_of(bp.get("/api/health"), 404, "not_found")
        assert name not in [item["name"] for item in admin.get(INSTANCES).json()["items"]]

        assert admin.post(INSTANCES, json={"name": name}).status_code == 201
        new_key = secret_key(dep, name)
        assert new_key != key
        with dep.backpack(name, new_key) as again:
            assert again.get("/api/collections").json()["items"] == []
            assert record_texts(again) == []
        error_of(bp.get("/api/collections"), 401, "unauthorized")


def test_restart_of_serve_brings_every_backpack_back(fresh: Deployment) -> None:
    set_up(fresh)
    running, stopped = create_instance(fresh, "alpha"), create_instance(fresh, "beta")
    keys = {name: secret_key(fresh, name) for name in (running, stopped)}
    for name in (running, stopped):
        with fresh.backpack(name, keys[name]) as bp:
            add_record(bp, {"text": f"in {name}"})
    with fresh.admin() as admin:
        assert admin.post(f"{INSTANCES}/{stopped}/stop").status_code == 200

    fresh.restart()
    with fresh.admin() as admin:  # the admin session survives the restart
        items = {item["name"]: item["status"] for item in admin.get(INSTANCES).json()["items"]}
        assert items == {running: "running", stopped: "stopped"}
        with fresh.backpack(running, keys[running]) as bp:
            assert record_texts(bp) == [f"in {running}"]
        with fresh.backpack(stopped, keys[stopped]) as bp:
            error_of(bp.get("/api/health"), 503, "unavailable")
            assert admin.post(f"{INSTANCES}/{stopped}/start").status_code == 200
            assert record_texts(bp) == [f"in {stopped}"]

    # a corrupt database: that backpack fails, the others keep serving
    fresh.stop()
    corrupt_storage(fresh.data_dir, stopped)
    fresh.restart()
    with fresh.admin() as admin:
        items = {item["name"]: item for item in admin.get(INSTANCES).json()["items"]}
        assert items[stopped]["status"] == "failed"
        assert isinstance(items[stopped]["reason"], str) and items[stopped]["reason"]
        assert items[running]["status"] == "running" and "reason" not in items[running]
        with fresh.backpack(stopped, keys[stopped]) as bp:
            error = error_of(bp.get("/api/health"), 503, "unavailable")
            assert "failed" in error["message"]
        with fresh.backpack(running, keys[running]) as bp:
            assert record_texts(bp) == [f"in {running}"]
            add_record(bp, {"text": "still writable"})
        events = admin.get(f"{INSTANCES}/{stopped}/logs", params={"type": "event"}).json()
        assert "failed" in [entry["kind"] for entry in events["items"]]


# keys and console tokens


def test_keys_rotate_and_console_tokens(dep: Deployment) -> None:
    name, other = create_instance(dep), create_instance(dep)
    old = secret_key(dep, name)
    with dep.admin() as admin, dep.client() as client:
        assert admin.get(f"{INSTANCES}/{name}/keys").json() == {"secret_key": old}
        with_old = {"Authorization": f"Bearer {old}"}
        assert client.get(f"/i/{name}/api/settings", headers=with_old).status_code == 200

        minted = admin.post(f"{INSTANCES}/{name}/token")
        assert minted.status_code == 200, minted.text
        console = minted.json()["token"]
        assert console.startswith("bpa_") and 0 < minted.json()["expires_in"] <= 3600
        assert old not in console
        by_console = {"Authorization": f"Bearer {console}"}
        assert client.get(f"/i/{name}/api/settings", headers=by_console).status_code == 200
        created = client.post(
            f"/i/{name}/api/collections/notes/records", json={"text": "x"}, headers=by_console
        )
        assert created.status_code == 201, created.text
        host_headers = {**by_console, "Host": dep.host(name)}
        assert client.get("/api/settings", headers=host_headers).status_code == 200
        error_of(client.get(f"/i/{other}/api/settings", headers=by_console), 401, "unauthorized")

        rotated = admin.post(f"{INSTANCES}/{name}/keys/rotate")
        assert rotated.status_code == 200
        new = rotated.json()["secret_key"]
        assert new.startswith("bpk_") and new != old
        error_of(client.get(f"/i/{name}/api/settings", headers=with_old), 401, "unauthorized")
        with_new = {"Authorization": f"Bearer {new}"}
        assert client.get(f"/i/{name}/api/settings", headers=with_new).status_code == 200
        assert admin.get(f"{INSTANCES}/{name}/keys").json() == {"secret_key": new}
        error_of(client.get(f"/i/{name}/api/settings", headers=by_console), 401, "unauthorized")
        fresh_console = admin.post(f"{INSTANCES}/{name}/token").json()["token"]
        headers = {"Authorization": f"Bearer {fresh_console}"}
        assert client.get(f"/i/{name}/api/settings", headers=headers).status_code == 200
        assert (dep.data_dir / "instances" / name / "secret_key").read_text().strip() == new
        error_of(admin.get(f"{INSTANCES}/{unique_name()}/keys"), 404, "not_found")


async def test_realtime_takes_console_tokens(dep: Deployment) -> None:
    name, other = create_instance(dep), create_instance(dep)
    with dep.admin() as admin:
        console = admin.post(f"{INSTANCES}/{name}/token").json()["token"]
    base = f"ws://127.0.0.1:{dep.port}/i"
    async with connect(f"{base}/{name}/api/realtime?token={console}") as socket:
        async with asyncio.timeout(10):
            ready = json.loads(await socket.recv())
        assert ready["type"] == "ready", ready
    # Another backpack's realtime refuses it like its HTTP API does.
    async with connect(f"{base}/{other}/api/realtime?token={console}") as socket:
        async with asyncio.timeout(10):
            first = json.loads(await socket.recv())
        assert first["type"] != "ready", first


# monitoring


def test_metrics_series_and_prometheus(dep: Deployment) -> None:
    name = create_instance(dep)
    key = secret_key(dep, name)
    with dep.backpack(name, key) as bp, dep.backpack(name) as anon:
        assert bp.get("/api/health").status_code == 200
        add_record(bp, {"text": "one"})
        add_record(bp, {"text": "two"})
        assert bp.get("/api/collections/notes/records/missing").status_code == 404
        assert anon.get("/api/settings").status_code == 403
        wrong = anon.post("/api/auth/login", json={"email": "x@example.com", "password": "p" * 8})
        assert wrong.status_code == 401
    with dep.admin() as admin:
        response = admin.get(f"{INSTANCES}/{name}/metrics", params={"window": "1h"})
        assert response.status_code == 200, response.text
        series = response.json()
        assert series["window"] == 3600 and series["resolution"] == 60
        points = series["points"]
        assert len(points) == 60
        times = [point["time"] for point in points]
        assert times == sorted(times) and times[0] == series["from"]
        point_keys = {
            "time", "requests", "errors", "client_errors", "p50_ms", "p95_ms", "statuses",
            "groups", "realtime_connections", "records", "users", "storage_bytes",
        }  # fmt: skip
        assert all(set(point) == point_keys for point in points)
        totals = series["totals"]
        assert set(totals) == point_keys - {"time"}
        assert totals["requests"] == 6 == sum(point["requests"] for point in points)
        assert totals["errors"] == 0 and totals["client_errors"] == 3
        assert totals["statuses"] == {"401": 1, "403": 1, "404": 1}
        assert totals["groups"]["records"]["requests"] == 3
        assert totals["groups"]["auth"]["requests"] == 1
        assert totals["groups"]["other"]["requests"] == 2
        assert totals["p50_ms"] > 0 and totals["p95_ms"] >= totals["p50_ms"]
        assert isinstance(totals["storage_bytes"], int) and totals["storage_bytes"] > 0

        short = admin.get(f"{INSTANCES}/{name}/metrics", params={"window": "15m"}).json()
        assert short["window"] == 900 and len(short["points"]) == 15
        for window in ("2d", "25h", "0m", "abc", "", "-1h", "1.5h"):
            bad = admin.get(f"{INSTANCES}/{name}/metrics", params={"window": window})
            error_of(bad, 400, "bad_request")
        error_of(admin.get(f"{INSTANCES}/{unique_name()}/metrics"), 404, "not_found")

        prometheus = admin.get("/metrics")
        assert prometheus.status_code == 200
        assert prometheus.headers["content-type"].startswith("text/plain")
        text = prometheus.text
        assert (
            f'backpack_requests_total{{instance="{name}",group="records",status="201"}} 2' in text
        )
        assert f'backpack_request_duration_seconds_count{{instance="{name}",' in text
    with dep.client() as client:
        error_of(client.get("/metrics"), 401, "unauthorized")
        error_of(
            client.get("/metrics", headers={"Authorization": f"Bearer {key}"}), 403, "forbidden"
        )


def test_logs_are_structured_paged_and_keep_no_query_strings(dep: Deployment) -> None:
    name = create_instance(dep)
    key = secret_key(dep, name)
    with dep.backpack(name, key) as bp:
        first = bp.get("/api/health")
        secret = bp.get("/api/collections", params={"token": "secret123", "q": "x"})
        assert secret.status_code == 200
        for n in range(5):
            bp.get(f"/api/collections/page{n}")
    with dep.admin() as admin:
        logs = admin.get(f"{INSTANCES}/{name}/logs")
        assert logs.status_code == 200
        assert "secret123" not in logs.text
        requests = [e for e in logs.json()["items"] if e["type"] == "request"]
        assert len(requests) == 7
        by_id = {entry["request_id"]: entry for entry in requests}
        health = by_id[first.headers["x-request-id"]]
        assert health["method"] == "GET" and health["path"] == "/api/health"
        assert health["status"] == 200 and health["duration_ms"] >= 0
        assert re.fullmatch(r"\d{16}", health["id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", health["time"])
        assert by_id[secret.headers["x-request-id"]]["path"] == "/api/collections"
        assert [e["status"] for e in requests[-5:]] == [404] * 5

        ids = [entry["id"] for entry in logs.json()["items"]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        page = admin.get(f"{INSTANCES}/{name}/logs", params={"after": "0", "limit": 3}).json()
        collected = page["items"]
        assert len(collected) == 3
        while True:
            after = collected[-1]["id"]
            more = admin.get(
                f"{INSTANCES}/{name}/logs", params={"after": after, "limit": 3}
            ).json()["items"]
            if not more:
                break
            assert all(entry["id"] > after for entry in more)
            collected += more
        assert [entry["id"] for entry in collected] == ids
        errors = admin.get(f"{INSTANCES}/{name}/logs", params={"min_status": "400"}).json()
        assert [e["status"] for e in errors["items"]] == [404] * 5
        for params in ({"after": "abc"}, {"limit": "0"}, {"limit": "1001"}, {"type": "x"}):
            error_of(admin.get(f"{INSTANCES}/{name}/logs", params=params), 400, "bad_request")

        # on disk too: the stop flushes the log
        assert admin.post(f"{INSTANCES}/{name}/stop").status_code == 200
    on_disk = "".join(
        path.read_text() for path in (dep.data_dir / "instances" / name / "logs").iterdir()
    )
    assert "/api/collections/page4" in on_disk and "secret123" not in on_disk
    assert key not in on_disk


async def test_log_stream_over_websocket(dep: Deployment) -> None:
    name = create_instance(dep)
    key = secret_key(dep, name)
    stream = f"ws://127.0.0.1:{dep.port}{INSTANCES}/{name}/logs/stream"
    headers = {"Authorization": f"Bearer {key}"}
    async with connect(f"{stream}?token={dep.token}") as socket:
        async with httpx.AsyncClient(base_url=f"{dep.url}/i/{name}", headers=headers) as bp:
            response = await bp.get("/api/collections/live", params={"token": "secret123"})
        assert response.status_code == 404
        wanted = response.headers["x-request-id"]
        async with asyncio.timeout(10):
            while True:
                message = await socket.recv()
                assert isinstance(message, str) and "secret123" not in message
                entry = json.loads(message)
                if entry.get("request_id") == wanted:
                    break
        assert entry["path"] == "/api/collections/live" and entry["status"] == 404

    for url in (stream, f"{stream}?token=bpa_forged", f"{stream}?token={key}"):
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with connect(url):
                pass
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with connect(f"ws://127.0.0.1:{dep.port}{INSTANCES}/{unique_name()}/logs/stream"):
            pass


async def test_log_stream_with_the_cookie_needs_the_console_origin(dep: Deployment) -> None:
    name = create_instance(dep)
    stream = f"ws://127.0.0.1:{dep.port}{INSTANCES}/{name}/logs/stream"
    cookie = {"Cookie": f"bp_admin={dep.token}"}
    own = {**cookie, "Origin": f"http://127.0.0.1:{dep.port}"}
    async with connect(stream, additional_headers=own) as socket:
        with dep.backpack(name) as bp:
            assert bp.get("/api/health").status_code == 200
        async with asyncio.timeout(10):
            entry = json.loads(await socket.recv())
        assert entry["type"] in ("request", "event")
    # A page of another site may open WebSockets with the admin's cookie: refused.
    for headers in ({**cookie, "Origin": "http://evil.example"}, cookie):
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with connect(stream, additional_headers=headers):
                pass


# backup and restore


def _populate(dep: Deployment, name: str) -> tuple[str, bytes]:
    """Records, a user and a file in backpack `name`; returns the file's id and bytes."""
    content = bytes(range(256)) * 64
    with dep.backpack(name, secret_key(dep, name)) as bp:
        add_record(bp, {"text": "first"})
        add_record(bp, {"text": "second"})
        signup = bp.post(
            "/api/auth/signup", json={"email": "kept@example.com", "password": "user password"}
        )
        assert signup.status_code == 201, signup.text
        upload = bp.post("/api/files", files={"file": ("data.bin", content)})
        assert upload.status_code == 201, upload.text
    return upload.json()["id"], content


def _assert_populated(dep: Deployment, name: str, file_id: str, content: bytes) -> None:
    with dep.backpack(name, secret_key(dep, name)) as bp:
        assert record_texts(bp) == ["first", "second"]
        login = bp.post(
            "/api/auth/login", json={"email": "kept@example.com", "password": "user password"}
        )
        assert login.status_code == 200, login.text
        assert bp.get(f"/api/files/{file_id}/content").content == content


def _tampered(archive: bytes) -> bytes:
    """`archive` with one byte flipped in the middle of its database."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.getmember("backpack.db")
        middle = member.offset_data + member.size // 2
    damaged = bytearray(archive)
    damaged[middle] ^= 0xFF
    return bytes(damaged)


def test_backup_and_restore(dep: Deployment) -> None:
    name = create_instance(dep)
    file_id, content = _populate(dep, name)
    key = secret_key(dep, name)
    with dep.admin() as admin:
        made = admin.post(f"{INSTANCES}/{name}/backup")
        assert made.status_code == 200, made.text
        assert made.headers["content-type"] == "application/x-tar"
        assert name in made.headers["content-disposition"]
        archive = made.content
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            names = tar.getnames()
        assert "backpack.db" in names and "manifest.json" in names

        copy = unique_name("copy")
        restored = admin.post(f"{INSTANCES}/{copy}/restore", content=archive)
        assert restored.status_code == 200, restored.text
        assert restored.json()["name"] == copy and restored.json()["status"] == "running"
        _assert_populated(dep, copy, file_id, content)

        with dep.backpack(name, key) as bp:
            add_record(bp, {"text": "after the backup"})
            first_id = bp.get("/api/collections/notes/records").json()["items"][0]["id"]
            assert bp.delete(f"/api/collections/notes/records/{first_id}").status_code == 204
            assert record_texts(bp) == ["second", "after the backup"]
        back = admin.post(f"{INSTANCES}/{name}/restore", content=archive)
        assert back.status_code == 200, back.text
        _assert_populated(dep, name, file_id, content)

        with dep.backpack(name, key) as bp:
            add_record(bp, {"text": "third"})
        expected = ["first", "second", "third"]
        for damaged in (archive[: len(archive) // 2], _tampered(archive), b"not a tar at all"):
            refused = admin.post(f"{INSTANCES}/{name}/restore", content=damaged)
            error_of(refused, 400, "bad_request")
            assert instance(dep, name)["status"] == "running"
            with dep.backpack(name, key) as bp:
                assert record_texts(bp) == expected
            missing = unique_name("never")
            error_of(
                admin.post(f"{INSTANCES}/{missing}/restore", content=damaged), 400, "bad_request"
            )
            error_of(admin.get(f"{INSTANCES}/{missing}"), 404, "not_found")
            assert not (dep.data_dir / "instances" / missing).exists()
        error_of(admin.post(f"{INSTANCES}/{name}/restore", content=b""), 400, "bad_request")
        bad_name = admin.post(f"{INSTANCES}/Bad-Name/restore", content=archive)
        error_of(bad_name, 400, "validation_failed")
        error_of(admin.post(f"{INSTANCES}/{unique_name()}/backup"), 404, "not_found")
    leftovers = [p.name for p in (dep.data_dir / "instances").iterdir() if p.name.startswith(".")]
    assert leftovers == []


# sites


SITE = {
    "index.html": b"<!doctype html><title>v1</title><script src='assets/app.js'></script>",
    "assets/app.js": b"console.log('v1')",
    "docs/index.html": b"<p>docs</p>",
}


def test_sites_are_served_in_both_forms(dep: Deployment) -> None:
    name = create_instance(dep)
    with dep.admin() as admin, dep.client() as client:
        error_of(client.get(f"/i/{name}/site/"), 404, "not_found")
        put = admin.put(
            f"{INSTANCES}/{name}/site",
            content=make_zip(SITE),
            headers={"Content-Type": "application/zip"},
        )
        assert put.status_code == 200, put.text
        assert put.json()["files"] == 3
        assert admin.get(f"{INSTANCES}/{name}/site").json()["files"] == 3

        page = client.get(f"/i/{name}/site/")
        assert page.status_code == 200 and page.content == SITE["index.html"]
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert csp.startswith("sandbox") and "allow-same-origin" not in csp
        host = {"Host": dep.host(name)}
        root = client.get("/", headers=host)
        assert root.status_code == 200 and root.content == SITE["index.html"]
        assert "content-security-policy" not in root.headers
        assert client.get("/api/health", headers=host).json()["status"] == "ok"
        for path in ("/some/route", "/todos/3"):
            fallback = client.get(path, headers=host)
            assert fallback.status_code == 200 and fallback.content == SITE["index.html"]
            assert client.get(f"/i/{name}/site{path}").content == SITE["index.html"]
        assert client.get("/docs/", headers=host).content == SITE["docs/index.html"]
        script = client.get("/assets/app.js", headers=host)
        assert script.content == SITE["assets/app.js"]
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.headers["x-content-type-options"] == "nosniff"
        path_script = client.get(f"/i/{name}/site/assets/app.js")
        assert path_script.headers["content-type"].startswith("text/javascript")
        assert path_script.headers["content-security-policy"].startswith("sandbox")
        error_of(client.get("/assets/missing.js", headers=host), 404, "not_found")

        for bad in (
            make_zip({**SITE, "../evil": b"x"}),
            make_zip({**SITE, "/abs/evil.html": b"x"}),
            make_zip(SITE, links={"assets/link.js": "/etc/passwd"}),
            make_zip({"other.html": b"no index"}),
            b"not a zip",
        ):
            refused = admin.put(f"{INSTANCES}/{name}/site", content=bad)
            error_of(refused, 400, "bad_request")
            assert client.get("/", headers=host).content == SITE["index.html"]
            assert client.get("/assets/app.js", headers=host).content == SITE["assets/app.js"]
        site_dir = dep.data_dir / "instances" / name / "site"
        assert not any("evil" in str(path) for path in dep.data_dir.rglob("*"))
        assert not any(path.is_symlink() and "link" in path.name for path in site_dir.rglob("*"))

        replaced = admin.put(
            f"{INSTANCES}/{name}/site",
            content=make_zip({"index.html": b"<title>v2</title>"}),
        )
        assert replaced.status_code == 200
        assert client.get("/", headers=host).content == b"<title>v2</title>"
        error_of(client.get("/assets/app.js", headers=host), 404, "not_found")

        assert admin.delete(f"{INSTANCES}/{name}/site").status_code == 204
        error_of(client.get("/", headers=host), 404, "not_found")
        error_of(client.get(f"/i/{name}/site/"), 404, "not_found")
        error_of(admin.delete(f"{INSTANCES}/{name}/site"), 404, "not_found")
        error_of(admin.get(f"{INSTANCES}/{name}/site"), 404, "not_found")
