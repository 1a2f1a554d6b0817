"""Users and sessions over HTTP: sign-up, sign-in, cookies, mail, administration."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MailServer, RunningServer, start_server
from tests.e2e.helpers import error_of, inside_one_rate_window

PASSWORD = "correct horse battery"


def new_email() -> str:
    return f"u{secrets.token_hex(5)}@example.com"


def signup(
    server: RunningServer, email: str | None = None, **extra: Any
) -> tuple[dict[str, Any], str]:
    response = httpx.post(
        server.url + "/api/auth/signup",
        json={"email": email or new_email(), "password": PASSWORD, **extra},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["user"], body["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def no_auth_limits(admin: httpx.Client) -> None:
    # The shared server serves many tests from one IP; limits have their own server below.
    admin.patch("/api/settings", json={"rate_limits": {"auth_per_minute": 0}, "smtp": None})


def test_signup_me_and_cookie(server: RunningServer) -> None:
    email = new_email()
    response = httpx.post(
        server.url + "/api/auth/signup",
        json={"email": email.upper(), "password": PASSWORD, "data": {"name": "Ann"}},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    user, token = body["user"], body["token"]
    assert set(user) >= {"id", "email", "verified", "role", "data", "created", "updated"}
    assert user["email"] == email and user["verified"] is False and user["role"] == "user"
    assert user["data"] == {"name": "Ann"}
    assert re.fullmatch(r"bps_[A-Za-z0-9_-]{43}", token)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"bp_session={token}")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert httpx.get(server.url + "/api/auth/me", headers=bearer(token)).json() == user
    by_cookie = httpx.get(server.url + "/api/auth/me", cookies={"bp_session": token})
    assert by_cookie.json()["id"] == user["id"]
    assert "hash" not in response.text and PASSWORD not in response.text


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, 400, "validation_failed"),
        ({"email": "a@b", "password": PASSWORD}, 400, "validation_failed"),
        ({"email": "sp ace@example.com", "password": PASSWORD}, 400, "validation_failed"),
        ({"email": new_email(), "password": "x" * 7}, 400, "validation_failed"),
        ({"email": new_email(), "password": "x" * 257}, 400, "validation_failed"),
        ({"email": new_email()}, 400, "validation_failed"),
        ({"email": new_email(), "password": PASSWORD, "role": "admin"}, 400, "validation_failed"),
        ({"email": new_email(), "password": PASSWORD, "data": "x"}, 400, "validation_failed"),
    ],
)
def test_bad_signups(server: RunningServer, body: dict[str, Any], status: int, code: str) -> None:
    error_of(httpx.post(server.url + "/api/auth/signup", json=body), status, code)


def test_signup_edge_lengths_and_duplicates(server: RunningServer) -> None:
    email = new_email()
    ok = httpx.post(server.url + "/api/auth/signup", json={"email": email, "password": "x" * 256})
    assert ok.status_code == 201
    again = httpx.post(server.url + "/api/auth/signup", json={"email": email, "password": "y" * 8})
    error = error_of(again, 409, "conflict")
    assert error["details"] == {}
    error_of(
        httpx.post(
            server.url + "/api/auth/signup",
            content=b"",
            headers={"Content-Type": "application/json"},
        ),
        400,
        "bad_request",
    )


def test_login_wrong_email_and_password_look_the_same(server: RunningServer) -> None:
    user, _ = signup(server)
    ok = httpx.post(
        server.url + "/api/auth/login", json={"email": user["email"], "password": PASSWORD}
    )
    assert ok.status_code == 200 and ok.json()["user"]["id"] == user["id"]
    wrong_password = httpx.post(
        server.url + "/api/auth/login", json={"email": user["email"], "password": PASSWORD + "!"}
    )
    wrong_email = httpx.post(
        server.url + "/api/auth/login", json={"email": new_email(), "password": PASSWORD}
    )
    a = error_of(wrong_password, 401, "unauthorized")
    b = error_of(wrong_email, 401, "unauthorized")
    assert a == b
    error_of(httpx.post(server.url + "/api/auth/login", json={}), 400, "validation_failed")
    error_of(
        httpx.post(
            server.url + "/api/auth/login",
            content=b"{",
            headers={"Content-Type": "application/json"},
        ),
        400,
        "bad_request",
    )


def test_logout_and_sessions(server: RunningServer) -> None:
    user, first = signup(server)
    second = httpx.post(
        server.url + "/api/auth/login",
        json={"email": user["email"], "password": PASSWORD},
        headers={"User-Agent": "second-device"},
    ).json()["token"]
    sessions = httpx.get(server.url + "/api/auth/sessions", headers=bearer(first)).json()["items"]
    assert len(sessions) == 2
    assert [s["current"] for s in sessions] == [True, False]
    assert sessions[1]["user_agent"] == "second-device"
    other = sessions[1]["id"]
    revoke = httpx.delete(f"{server.url}/api/auth/sessions/{other}", headers=bearer(first))
    assert revoke.status_code == 204
    error_of(httpx.get(server.url + "/api/auth/me", headers=bearer(second)), 401, "unauthorized")
    # Another user cannot revoke my sessions, even knowing the id.
    _, stranger = signup(server)
    mine = httpx.get(server.url + "/api/auth/sessions", headers=bearer(first)).json()["items"][0][
        "id"
    ]
    error_of(
        httpx.delete(f"{server.url}/api/auth/sessions/{mine}", headers=bearer(stranger)),
        404,
        "not_found",
    )
    out = httpx.post(server.url + "/api/auth/logout", headers=bearer(first))
    assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
    error_of(httpx.get(server.url + "/api/auth/me", headers=bearer(first)), 401, "unauthorized")


def test_tokens_of_the_wrong_kind(server: RunningServer, admin: httpx.Client) -> None:
    _, token = signup(server)
    for bad in [token[:-2], token + "x", "bps_" + "A" * 43, "bpr_" + token[4:], "bpv_" + token[4:]]:
        response = httpx.get(server.url + "/api/auth/me", headers=bearer(bad))
        error_of(response, 401, "unauthorized")
    # A user session can never act as the secret key.
    error_of(httpx.get(server.url + "/api/collections", headers=bearer(token)), 403, "forbidden")
    error_of(httpx.get(server.url + "/api/users", headers=bearer(token)), 403, "forbidden")
    error_of(httpx.get(server.url + "/api/settings", headers=bearer(token)), 403, "forbidden")
    # The secret key is not a user.
    error_of(admin.get("/api/auth/me"), 401, "unauthorized")


def test_update_me(server: RunningServer) -> None:
    user, token = signup(server)
    _, other_device = signup(server, email=None)
    other = httpx.post(
        server.url + "/api/auth/login", json={"email": user["email"], "password": PASSWORD}
    ).json()["token"]
    patched = httpx.patch(
        server.url + "/api/auth/me", json={"data": {"a": 1}}, headers=bearer(token)
    )
    assert patched.json()["data"] == {"a": 1}
    error_of(
        httpx.patch(server.url + "/api/auth/me", json={"role": "admin"}, headers=bearer(token)),
        400,
        "validation_failed",
    )
    error_of(
        httpx.patch(server.url + "/api/auth/me", json={"verified": True}, headers=bearer(token)),
        400,
        "validation_failed",
    )
    new_email_address = new_email()
    error_of(
        httpx.patch(
            server.url + "/api/auth/me", json={"email": new_email_address}, headers=bearer(token)
        ),
        400,
        "validation_failed",
    )
    changed = httpx.patch(
        server.url + "/api/auth/me",
        json={
            "email": new_email_address,
            "password": "a new password",
            "current_password": PASSWORD,
        },
        headers=bearer(token),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == new_email_address
    # The password change signed out the other session, not this one.
    error_of(httpx.get(server.url + "/api/auth/me", headers=bearer(other)), 401, "unauthorized")
    assert httpx.get(server.url + "/api/auth/me", headers=bearer(token)).status_code == 200
    login = httpx.post(
        server.url + "/api/auth/login",
        json={"email": new_email_address, "password": "a new password"},
    )
    assert login.status_code == 200
    assert other_device


def test_cookie_requests_need_an_allowed_origin(server: RunningServer, admin: httpx.Client) -> None:
    admin.post("/api/collections", json={"name": "cookie_notes"})
    _, token = signup(server)
    url = server.url + "/api/collections/cookie_notes/records"
    cookies = {"bp_session": token}
    foreign = httpx.post(
        url, json={"a": 1}, cookies=cookies, headers={"Origin": "https://evil.example"}
    )
    error_of(foreign, 403, "forbidden")
    missing = httpx.post(url, json={"a": 1}, cookies=cookies)
    error_of(missing, 403, "forbidden")
    allowed = httpx.post(
        url, json={"a": 1}, cookies=cookies, headers={"Origin": "http://localhost:5173"}
    )
    assert allowed.status_code == 201, allowed.text
    # Reads need no Origin; bearer tokens need none either.
    assert httpx.get(url, cookies=cookies).status_code == 200
    assert httpx.post(url, json={"a": 2}, headers=bearer(token)).status_code == 201
    assert admin.get("/api/collections/cookie_notes/records").json()["items"][0]["a"] == 1


def test_cors(server: RunningServer, admin: httpx.Client) -> None:
    preflight = httpx.options(
        server.url + "/api/collections/x/records",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type, authorization"
    refused = httpx.options(
        server.url + "/api/health",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    error_of(refused, 403, "forbidden")
    assert "access-control-allow-origin" not in refused.headers
    simple = httpx.get(server.url + "/api/health", headers={"Origin": "http://127.0.0.1:8080"})
    assert simple.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
    admin.patch("/api/settings", json={"allowed_origins": ["https://app.example.com"]})
    try:
        now_allowed = httpx.get(
            server.url + "/api/health", headers={"Origin": "https://app.example.com"}
        )
        assert now_allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        dropped = httpx.get(server.url + "/api/health", headers={"Origin": "http://localhost:3000"})
        assert "access-control-allow-origin" not in dropped.headers
    finally:
        admin.patch(
            "/api/settings", json={"allowed_origins": ["http://localhost:*", "http://127.0.0.1:*"]}
        )


def test_settings(admin: httpx.Client, anon: httpx.Client, smtp: MailServer) -> None:
    error_of(anon.get("/api/settings"), 403, "forbidden")
    settings = admin.get("/api/settings").json()
    assert settings["session_ttl_days"] == 30
    assert settings["rate_limits"]["auth_per_minute"] == 0
    secret = {**smtp.settings(), "username": "mailer", "password": "hunter22"}
    changed = admin.patch("/api/settings", json={"smtp": secret}).json()
    assert changed["smtp"]["password"] == "********"
    assert "hunter22" not in admin.get("/api/settings").text
    # Sending the mask back keeps the stored secret.
    kept = admin.patch("/api/settings", json={"smtp": {**secret, "password": "********"}}).json()
    assert kept["smtp"]["password"] == "********"
    for bad in [
        {"session_ttl_days": 0},
        {"allowed_origins": ["not an origin"]},
        {"smtp": {"port": "x"}},
        {"unknown": 1},
        {"oauth": {"github": {"client_id": "x"}}},
        {"channels": [{"pattern": "room:*", "join": {"$bogus": 1}}]},
        {"limits": {"body_bytes": 1}},
    ]:
        error_of(admin.patch("/api/settings", json=bad), 400, "validation_failed")
    assert admin.get("/api/settings").json()["session_ttl_days"] == 30
    admin.patch("/api/settings", json={"smtp": None})


def test_verification_mail(server: RunningServer, admin: httpx.Client, smtp: MailServer) -> None:
    user, token = signup(server)
    error = error_of(
        httpx.post(server.url + "/api/auth/verify/request", headers=bearer(token)),
        400,
        "bad_request",
    )
    assert "SMTP" in error["message"]
    admin.patch(
        "/api/settings", json={"smtp": smtp.settings(), "app_url": "https://app.example.com"}
    )
    try:
        sent = httpx.post(server.url + "/api/auth/verify/request", headers=bearer(token))
        assert sent.status_code == 204, sent.text
        mail = smtp.wait_for(user["email"])
        text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        html = mail.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
        link = re.search(r"https://app\.example\.com/auth/verify\?token=(bpv_[\w-]+)", text)
        assert link and link.group(1) in html
        confirm = httpx.post(server.url + "/api/auth/verify/confirm", json={"token": link.group(1)})
        assert confirm.status_code == 200 and confirm.json()["verified"] is True
        again = httpx.post(server.url + "/api/auth/verify/confirm", json={"token": link.group(1)})
        error_of(again, 400, "bad_request")
        for bad in ["bpv_forged", link.group(1)[:-1] + "A", token, None, 5]:
            error_of(
                httpx.post(server.url + "/api/auth/verify/confirm", json={"token": bad}),
                400,
                "bad_request",
            )
        me = httpx.get(server.url + "/api/auth/me", headers=bearer(token)).json()
        assert me["verified"] is True
    finally:
        admin.patch("/api/settings", json={"smtp": None, "app_url": None})


def test_password_reset(server: RunningServer, admin: httpx.Client, smtp: MailServer) -> None:
    user, token = signup(server)
    admin.patch("/api/settings", json={"smtp": smtp.settings()})
    try:
        unknown = httpx.post(server.url + "/api/auth/password/request", json={"email": new_email()})
        assert unknown.status_code == 204
        sent = httpx.post(server.url + "/api/auth/password/request", json={"email": user["email"]})
        assert sent.status_code == 204
        mail = smtp.wait_for(user["email"])
        text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        found = re.search(r"/auth/reset\?token=(bpr_[\w-]+)", text)
        assert found
        reset_token = found.group(1)
        # The reset token is not a session, and a session is not a reset token.
        error_of(
            httpx.get(server.url + "/api/auth/me", headers=bearer(reset_token)), 401, "unauthorized"
        )
        error_of(
            httpx.post(
                server.url + "/api/auth/password/confirm",
                json={"token": token, "password": "x" * 9},
            ),
            400,
            "bad_request",
        )
        short = httpx.post(
            server.url + "/api/auth/password/confirm",
            json={"token": reset_token, "password": "short"},
        )
        error_of(short, 400, "validation_failed")
        done = httpx.post(
            server.url + "/api/auth/password/confirm",
            json={"token": reset_token, "password": "brand new password"},
        )
        assert done.status_code == 204, done.text
        error_of(httpx.get(server.url + "/api/auth/me", headers=bearer(token)), 401, "unauthorized")
        reused = httpx.post(
            server.url + "/api/auth/password/confirm",
            json={"token": reset_token, "password": "another password"},
        )
        error_of(reused, 400, "bad_request")
        login = httpx.post(
            server.url + "/api/auth/login",
            json={"email": user["email"], "password": "brand new password"},
        )
        assert login.status_code == 200
    finally:
        admin.patch("/api/settings", json={"smtp": None})


def test_users_administration(
    server: RunningServer, admin: httpx.Client, anon: httpx.Client
) -> None:
    email = new_email()
    created = admin.post(
        "/api/users", json={"email": email, "password": PASSWORD, "role": "editor"}
    )
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["role"] == "editor"
    listed = admin.get(
        "/api/users", params={"filter": f'{{"email": "{email}"}}', "count": "true"}
    ).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == user["id"]
    assert "hash" not in admin.get("/api/users").text
    token = httpx.post(
        server.url + "/api/auth/login", json={"email": email, "password": PASSWORD}
    ).json()["token"]
    patched = admin.patch(f"/api/users/{user['id']}", json={"verified": True, "role": "user"})
    assert patched.json()["verified"] is True and patched.json()["role"] == "user"
    error_of(
        admin.patch(f"/api/users/{user['id']}", json={"role": "bad role!"}),
        400,
        "validation_failed",
    )
    error_of(admin.patch(f"/api/users/{user['id']}", json={"id": "x"}), 400, "validation_failed")
    error_of(admin.post("/api/users", json={"email": email}), 409, "conflict")
    error_of(anon.get("/api/users"), 403, "forbidden")
    error_of(anon.get(f"/api/users/{user['id']}"), 403, "forbidden")
    assert admin.delete(f"/api/users/{user['id']}").status_code == 204
    error_of(admin.get(f"/api/users/{user['id']}"), 404, "not_found")
    error_of(httpx.get(server.url + "/api/auth/me", headers=bearer(token)), 401, "unauthorized")
    # System collections stay invisible to the records API.
    error_of(admin.get("/api/collections/_users/records"), 404, "not_found")
    error_of(admin.post("/api/collections/_sessions/records", json={}), 404, "not_found")
    assert all(not c["name"].startswith("_") for c in admin.get("/api/collections").json()["items"])


def test_rate_limits(tmp_path: Path) -> None:
    key = "bpk_" + "l" * 40
    limited = start_server(tmp_path / "limited", key=key)
    try:
        inside_one_rate_window()  # the 100 attempts never straddle two shared windows
        statuses = []
        for i in range(100):
            response = httpx.post(
                limited.url + "/api/auth/login",
                json={"email": f"x{i}@example.com", "password": "wrong password"},
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                error_of(response, 429, "rate_limited")
        assert statuses[:10] == [401] * 10
        assert set(statuses[10:]) == {429}
    finally:
        limited.stop()


def test_api_rate_limit(tmp_path: Path) -> None:
    key = "bpk_" + "m" * 40
    limited = start_server(tmp_path / "api-limited", key=key)
    try:
        admin = {"Authorization": f"Bearer {key}"}
        assert (
            httpx.patch(
                limited.url + "/api/settings",
                json={"rate_limits": {"api_per_minute": 5}},
                headers=admin,
            ).status_code
            == 200
        )
        inside_one_rate_window()
        statuses = [httpx.get(limited.url + "/api/health").status_code for _ in range(8)]
        assert statuses.count(429) >= 2 and statuses[0] == 200
    finally:
        limited.stop()


def test_a_local_proxys_forwarded_headers_name_the_client_and_scheme(tmp_path: Path) -> None:
    """X-Forwarded-For and -Proto from a trusted address (127.0.0.1) become the client (its
    own rate-limit bucket) and the scheme (a Secure cookie); without them nothing changes."""
    key = "bpk_" + "f" * 40
    proxied = start_server(tmp_path / "proxied", key=key)
    try:
        admin = {"Authorization": f"Bearer {key}"}
        limits = {"rate_limits": {"api_per_minute": 3}}
        assert httpx.patch(proxied.url + "/api/settings", json=limits, headers=admin).is_success

        def health(client_ip: str | None) -> int:
            headers = {} if client_ip is None else {"X-Forwarded-For": client_ip}
            return httpx.get(proxied.url + "/api/health", headers=headers).status_code

        inside_one_rate_window()
        first = [health("203.0.113.7") for _ in range(5)]
        assert first[:3] == [200] * 3 and set(first[3:]) == {429}
        assert health("203.0.113.8") == 200  # another client behind the proxy
        assert health(None) == 200  # the proxy's own address: a bucket of its own
        # A forged chain: only the address the trusted proxy saw counts.
        assert health("198.51.100.1, 203.0.113.7") == 429
        # Not an address at all: a client of its own, never a failure.
        assert health("not an address") == 200
        assert health("") == 200

        body = {"email": "proxied@example.com", "password": PASSWORD}
        https = httpx.post(
            proxied.url + "/api/auth/signup",
            json=body,
            headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
        )
        assert https.status_code == 201, https.text
        assert "; Secure" in https.headers["set-cookie"]
        plain = httpx.post(
            proxied.url + "/api/auth/login",
            json=body,
            headers={"X-Forwarded-For": "203.0.113.10"},
        )
        assert plain.status_code == 200, plain.text
        assert "Secure" not in plain.headers["set-cookie"]
        # Not a scheme uvicorn accepts: ignored.
        odd = httpx.post(
            proxied.url + "/api/auth/login",
            json=body,
            headers={"X-Forwarded-For": "203.0.113.11", "X-Forwarded-Proto": "gopher"},
        )
        assert odd.status_code == 200 and "Secure" not in odd.headers["set-cookie"]
    finally:
        proxied.stop()


def test_admin_signs_a_user_out_everywhere_and_makes_reset_links(
    server: RunningServer, admin: httpx.Client
) -> None:
    user, token = signup(server)
    login = httpx.post(
        server.url + "/api/auth/login", json={"email": user["email"], "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    second = login.json()["token"]
    other, other_token = signup(server)
    me = server.url + "/api/auth/me"
    assert httpx.get(me, headers=bearer(second)).status_code == 200

    revoked = admin.delete(f"/api/users/{user['id']}/sessions")
    assert revoked.status_code == 200 and revoked.json() == {"revoked": 2}
    for gone in (token, second):
        error_of(httpx.get(me, headers=bearer(gone)), 401, "unauthorized")
    assert httpx.get(me, headers=bearer(other_token)).status_code == 200  # others untouched

    made = admin.post(f"/api/users/{user['id']}/reset-link")
    assert made.status_code == 201, made.text
    link = made.json()["link"]
    assert link.startswith(server.url + "/auth/reset?token=bpr_")
    done = httpx.post(
        server.url + "/api/auth/password/confirm",
        json={"token": made.json()["token"], "password": "set by the admin's link"},
    )
    assert done.status_code == 204, done.text

    # Admins only; unknown users are 404; nothing changes for a refused caller.
    for method, path in (("DELETE", "sessions"), ("POST", "reset-link")):
        url = f"{server.url}/api/users/{other['id']}/{path}"
        error_of(httpx.request(method, url, headers=bearer(other_token)), 403, "forbidden")
        error_of(httpx.request(method, url), 403, "forbidden")
        error_of(admin.request(method, f"/api/users/nobody/{path}"), 404, "not_found")
    assert httpx.get(me, headers=bearer(other_token)).status_code == 200


def test_test_mail(server: RunningServer, admin: httpx.Client, smtp: MailServer) -> None:
    to = new_email()
    error_of(admin.post("/api/settings/test-mail", json={"to": to}), 400, "bad_request")  # no SMTP
    admin.patch("/api/settings", json={"smtp": smtp.settings()})
    try:
        for bad in ({"to": "nope"}, [], {"to": 3}):
            refused = admin.post("/api/settings/test-mail", json=bad)
            error_of(refused, 400, "validation_failed")
        anonymous = httpx.post(server.url + "/api/settings/test-mail", json={"to": to})
        error_of(anonymous, 403, "forbidden")
        sent = admin.post("/api/settings/test-mail", json={"to": to})
        assert sent.status_code == 204, sent.text
        mail = smtp.wait_for(to)
        assert "test mail" in str(mail["Subject"])
    finally:
        admin.patch("/api/settings", json={"smtp": None})


def test_a_forwarded_prefix_scopes_cookies_and_links(tmp_path: Path) -> None:
    """Behind the control plane's `/i/NAME` (docker and swarm runtimes), the container is
    told its prefix; requests that carry it get cookies and links scoped to it, and no
    other X-Forwarded-Prefix moves them anywhere."""
    key = "bpk_" + secrets.token_urlsafe(32)
    running = start_server(
        tmp_path / "data", key=key, env={"BACKPACK_FORWARDED_PREFIX": "/i/todo/"}
    )
    try:
        admin = {"Authorization": f"Bearer {key}"}
        httpx.patch(
            running.url + "/api/settings",
            json={"rate_limits": {"auth_per_minute": 0}},
            headers=admin,
        ).raise_for_status()
        user = httpx.post(
            running.url + "/api/users",
            json={"email": new_email(), "password": PASSWORD},
            headers=admin,
        ).json()

        def sign_in(prefix: str | None) -> str:
            headers = {} if prefix is None else {"X-Forwarded-Prefix": prefix}
            response = httpx.post(
                running.url + "/api/auth/login",
                json={"email": user["email"], "password": PASSWORD},
                headers=headers,
            )
            assert response.status_code == 200, response.text
            return re.search(r"Path=([^;]*)", response.headers["set-cookie"]).group(1)  # type: ignore[union-attr]

        assert sign_in(None) == "/"
        assert sign_in("/i/todo") == "/i/todo"
        assert sign_in("/i/todo/") == "/i/todo"
        assert sign_in("/base/i/todo") == "/base/i/todo"  # a control plane under a prefix
        for hostile in [
            "/elsewhere",
            "/i/todos",
            "/i/todo/../x",
            "/i/to do",
            "//evil/i/todo" + "x",
        ]:
            assert sign_in(hostile) == "/", hostile
        link = httpx.post(
            running.url + f"/api/users/{user['id']}/reset-link",
            headers={**admin, "X-Forwarded-Prefix": "/i/todo"},
        ).json()["link"]
        assert link.startswith(running.url + "/i/todo/auth/reset?token=bpr_")
    finally:
        running.stop()
    assert "Traceback" not in running.log()


def test_a_bad_forwarded_prefix_is_refused_at_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "backpack",
            "serve-instance",
            "--data",
            str(tmp_path / "d"),
            "--forwarded-prefix",
            "i/todo?x=1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--forwarded-prefix" in done.stderr and "Traceback" not in done.stderr
