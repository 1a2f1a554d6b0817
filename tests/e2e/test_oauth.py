"""OAuth 2 / OpenID Connect sign-in end to end: a real provider and a real Backpack.

The provider (tests/oidc_provider.py) is Authlib's authorization server on a
loopback port; a test plays the browser with httpx, following each redirect by
hand and keeping cookies as a browser would.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import RunningServer, free_port, start_server
from tests.e2e.helpers import error_of
from tests.oidc_provider import Account, OIDCProvider

APP = "http://localhost:5173/signed-in"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def idp() -> Iterator[OIDCProvider]:
    provider = OIDCProvider()
    provider.start()
    yield provider
    provider.stop()


def _providers(idp: OIDCProvider) -> dict[str, dict[str, Any]]:
    def client(name: str) -> dict[str, Any]:
        return {"client_id": f"{name}-client", "client_secret": f"{name}-secret"}

    return {
        "testidp": {**client("testidp"), "issuer": idp.issuer},
        "otheridp": {**client("otheridp"), "issuer": idp.issuer},
        "google": {**client("google"), "issuer": idp.issuer},
        "github": {
            **client("github"),
            "authorize_url": f"{idp.issuer}/authorize",
            "token_url": f"{idp.issuer}/token",
            "userinfo_url": f"{idp.issuer}/user",
            "emails_url": f"{idp.issuer}/user/emails",
        },
    }


@pytest.fixture(scope="module")
def bp(tmp_path_factory: pytest.TempPathFactory, idp: OIDCProvider) -> Iterator[RunningServer]:
    key = "bpk_" + secrets.token_urlsafe(32)
    server = start_server(tmp_path_factory.mktemp("oauth") / "data", key=key)
    providers = _providers(idp)
    for name, config in providers.items():
        callback = f"{server.url}/api/auth/oauth/{name}/callback"
        idp.add_client(config["client_id"], config["client_secret"], [callback])
    with server.client() as admin:
        settings = {"oauth": providers, "rate_limits": {"auth_per_minute": 0}}
        assert admin.patch("/api/settings", json=settings).status_code == 200
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture
def admin(bp: RunningServer) -> Iterator[httpx.Client]:
    with bp.client() as client:
        yield client


@pytest.fixture
def browser(bp: RunningServer) -> Iterator[httpx.Client]:
    """A browser: keeps cookies (per host, as browsers do), follows nothing by itself."""
    with httpx.Client(base_url=bp.url, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def well_behaved(idp: OIDCProvider) -> None:
    idp.reset()


def to_provider_and_back(browser: httpx.Client, name: str, redirect: str | None = APP) -> str:
    """Start a sign-in and let the provider approve it: the callback URL it sends us to."""
    start = browser.get(
        f"/api/auth/oauth/{name}", params={"redirect": redirect} if redirect else {}
    )
    assert start.status_code == 302, start.text
    approved = browser.get(start.headers["location"])
    assert approved.status_code == 302, approved.text
    callback: str = approved.headers["location"]
    return callback


def sign_in(browser: httpx.Client, name: str = "testidp", redirect: str | None = APP) -> str:
    """A whole sign-in; the session token handed to the app in the redirect's fragment."""
    done = browser.get(to_provider_and_back(browser, name, redirect))
    assert done.status_code == 302, done.text
    location = done.headers["location"]
    assert location.startswith(f"{redirect}#token=bps_"), location
    return location.split("#token=", 1)[1]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def me(bp: RunningServer, token: str) -> httpx.Response:
    return httpx.get(bp.url + "/api/auth/me", headers={"Authorization": f"Bearer {token}"})


def users_with(admin: httpx.Client, email: str) -> list[dict[str, Any]]:
    found = admin.get("/api/users", params={"filter": json.dumps({"email": email})})
    assert found.status_code == 200, found.text
    items: list[dict[str, Any]] = found.json()["items"]
    return items


def test_providers_are_listed_without_secrets(bp: RunningServer) -> None:
    listed = httpx.get(bp.url + "/api/auth/providers")
    assert listed.status_code == 200
    assert listed.json() == {
        "items": [
            {"name": "github", "type": "github"},
            {"name": "google", "type": "google"},
            {"name": "otheridp", "type": "oidc"},
            {"name": "testidp", "type": "oidc"},
        ]
    }
    assert "secret" not in listed.text


def test_sign_in_creates_a_verified_user(
    bp: RunningServer, idp: OIDCProvider, browser: httpx.Client, admin: httpx.Client
) -> None:
    start = browser.get("/api/auth/oauth/testidp", params={"redirect": APP})
    assert start.status_code == 302
    assert start.headers["location"].startswith(f"{idp.issuer}/authorize?")
    asked = query_of(start.headers["location"])
    assert asked["response_type"] == "code"
    assert asked["client_id"] == "testidp-client"
    assert asked["redirect_uri"] == f"{bp.url}/api/auth/oauth/testidp/callback"
    assert asked["scope"].split() == ["openid", "email", "profile"]
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert len(asked["state"]) >= 43 and len(asked["nonce"]) >= 22
    binding = start.headers["set-cookie"]
    assert binding.startswith("bp_oauth=") and "HttpOnly" in binding and "Max-Age=600" in binding

    approved = browser.get(start.headers["location"])
    assert approved.status_code == 302
    callback = approved.headers["location"]
    assert callback.startswith(f"{bp.url}/api/auth/oauth/testidp/callback?code=")
    done = browser.get(callback)
    assert done.status_code == 302, done.text
    token = done.headers["location"].removeprefix(f"{APP}#token=")
    assert token.startswith("bps_") and done.headers["cache-control"] == "no-store"
    cookie = done.headers["set-cookie"]
    assert cookie.startswith(f"bp_session={token};") and "HttpOnly" in cookie

    user = me(bp, token).json()
    assert user["email"] == idp.account.email
    assert user["verified"] is True and user["role"] == "user" and user["data"] == {}
    assert users_with(admin, idp.account.email) == [user]
    # The cookie alone is a session too.
    assert browser.get("/api/auth/me").json()["id"] == user["id"]


def test_a_second_sign_in_is_the_same_user(
    bp: RunningServer, idp: OIDCProvider, browser: httpx.Client
) -> None:
    first = me(bp, sign_in(browser)).json()
    # Even when the address at the provider changed since: the identity is linked.
    idp.account = Account(f"new-{idp.account.email}", sub=idp.account.sub)
    second_token = sign_in(browser)
    assert me(bp, second_token).json() == first


def test_a_deleted_user_signs_up_afresh(
    bp: RunningServer, browser: httpx.Client, admin: httpx.Client
) -> None:
    first = me(bp, sign_in(browser)).json()
    assert admin.delete(f"/api/users/{first['id']}").status_code == 204
    again = me(bp, sign_in(browser)).json()
    assert again["id"] != first["id"] and again["email"] == first["email"]


def test_without_redirect_the_answer_is_json(
    bp: RunningServer, idp: OIDCProvider, browser: httpx.Client
) -> None:
    done = browser.get(to_provider_and_back(browser, "testidp", redirect=None))
    assert done.status_code == 200, done.text
    body = done.json()
    assert set(body) == {"user", "token"} and body["user"]["email"] == idp.account.email
    assert me(bp, body["token"]).json() == body["user"]
    assert done.headers["set-cookie"].startswith(f"bp_session={body['token']};")


def test_a_relative_redirect_stays_on_this_host(browser: httpx.Client) -> None:
    assert sign_in(browser, redirect="/site/index.html?from=oauth").startswith("bps_")


def test_a_verified_password_user_is_linked(
    bp: RunningServer, idp: OIDCProvider, browser: httpx.Client, admin: httpx.Client
) -> None:
    email = f"ann-{secrets.token_hex(4)}@example.com"
    created = admin.post(
        "/api/users", json={"email": email, "password": PASSWORD, "verified": True}
    )
    assert created.status_code == 201, created.text
    idp.account = Account(email.upper())  # providers may spell it differently
    assert me(bp, sign_in(browser)).json()["id"] == created.json()["id"]
    login = httpx.post(bp.url + "/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200  # the password still works


def test_an_unverified_account_is_taken_over_by_the_proven_owner(
    bp: RunningServer, idp: OIDCProvider, browser: httpx.Client
) -> None:
    # Someone registered the address first, without proving they own it.
    email = f"bob-{secrets.token_hex(4)}@example.com"
    signup = httpx.post(bp.url + "/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert signup.status_code == 201
    squatter = signup.json()["token"]

    idp.account = Account(email)
    token = sign_in(browser)
    owner = me(bp, token).json()
    assert owner["id"] == signup.json()["user"]["id"] and owner["verified"] is True
    error_of(me(bp, squatter), 401, "unauthorized")
    login = httpx.post(bp.url + "/api/auth/login", json={"email": email, "password": PASSWORD})
    error_of(login, 401, "unauthorized")
    # The owner may set a password without knowing the old one.
    changed = httpx.patch(
        bp.url + "/api/auth/me",
        json={"password": "a whole new one"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert changed.status_code == 200, changed.text


def test_an_unverified_email_is_refused(
    idp: OIDCProvider, browser: httpx.Client, admin: httpx.Client
) -> None:
    idp.account = Account(f"maybe-{secrets.token_hex(4)}@example.com", email_verified=False)
    done = browser.get(to_provider_and_back(browser, "testidp"))
    error = error_of(done, 403, "forbidden")
    assert error["message"] == "The provider has not verified this email."
    assert users_with(admin, idp.account.email) == []


def test_the_email_may_come_from_userinfo(
    bp: RunningServer, idp: OIDCProvider, browser: httpx.Client
) -> None:
    idp.email_in_id_token = False
    assert me(bp, sign_in(browser)).json()["email"] == idp.account.email


def test_the_state_is_checked(browser: httpx.Client) -> None:
    callback = to_provider_and_back(browser, "testidp")
    code, state = query_of(callback)["code"], query_of(callback)["state"]
    path = "/api/auth/oauth/testidp/callback"
    error_of(browser.get(path, params={"code": code}), 400, "bad_request")
    error_of(browser.get(path, params={"code": code, "state": "x" * 43}), 400, "bad_request")
    # Without the bp_oauth cookie (another browser) the state is refused, and not spent.
    error = error_of(httpx.get(callback), 400, "bad_request")
    assert "another browser" in error["message"] and error["details"] == {"field": "state"}
    assert browser.get(callback).status_code == 302
    error_of(browser.get(callback), 400, "bad_request")  # a state works once
    assert state in callback

    callback = to_provider_and_back(browser, "testidp")
    elsewhere = callback.replace("/testidp/callback", "/otheridp/callback")
    error = error_of(browser.get(elsewhere), 400, "bad_request")
    assert "another provider" in error["message"]
    error_of(browser.get(callback), 400, "bad_request")  # spent by the try at otheridp

    state = query_of(to_provider_and_back(browser, "testidp"))["state"]
    error = error_of(browser.get(path, params={"state": state}), 400, "bad_request")
    assert error["details"] == {"field": "code"}


def test_a_replayed_code_is_refused(browser: httpx.Client) -> None:
    callback = to_provider_and_back(browser, "testidp")
    assert browser.get(callback).status_code == 302
    used_code = query_of(callback)["code"]
    fresh_state = query_of(to_provider_and_back(browser, "testidp"))["state"]
    replay = browser.get(
        "/api/auth/oauth/testidp/callback", params={"code": used_code, "state": fresh_state}
    )
    error = error_of(replay, 400, "bad_request")
    assert (
        "invalid_grant" in error["message"]
        and error["details"]["provider_error"] == "invalid_grant"
    )


def test_a_code_for_another_client_is_refused(browser: httpx.Client) -> None:
    code = query_of(to_provider_and_back(browser, "testidp"))["code"]
    state = query_of(to_provider_and_back(browser, "otheridp"))["state"]
    swapped = browser.get(
        "/api/auth/oauth/otheridp/callback", params={"code": code, "state": state}
    )
    error = error_of(swapped, 400, "bad_request")
    assert error["details"]["provider_error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("signature", "bad_signature"),
        ("audience", "invalid_claim"),
        ("issuer", "invalid_claim"),
        ("nonce", "invalid_claim"),
        ("expired", "expired_token"),
    ],
)
def test_a_bad_id_token_is_refused(
    idp: OIDCProvider, browser: httpx.Client, admin: httpx.Client, tamper: str, reason: str
) -> None:
    now = int(time.time())
    if tamper == "signature":
        idp.break_signature = True
    else:
        idp.id_token_claims = {
            "audience": {"aud": ["someone-else"], "azp": "testidp-client"},
            "issuer": {"iss": "http://127.0.0.1:1"},
            "nonce": {"nonce": "not-the-nonce"},
            "expired": {"exp": now - 3600, "iat": now - 7200},
        }[tamper]
    error = error_of(browser.get(to_provider_and_back(browser, "testidp")), 400, "bad_request")
    assert error["message"].startswith("The ID token from 'testidp' is not valid")
    assert error["details"] == {"reason": reason}
    assert users_with(admin, idp.account.email) == []


def test_a_refusal_at_the_provider(browser: httpx.Client) -> None:
    state = query_of(to_provider_and_back(browser, "testidp"))["state"]
    refused = browser.get(
        "/api/auth/oauth/testidp/callback",
        params={"error": "access_denied", "error_description": "The user said no", "state": state},
    )
    error = error_of(refused, 400, "bad_request")
    assert "access_denied" in error["message"] and "The user said no" in error["message"]


@pytest.mark.parametrize(
    "redirect",
    [
        "https://evil.example/steal",
        "//evil.example/steal",
        "/\\evil.example",
        "javascript:alert(1)",
        "http://user@localhost:5173/",
        f"{APP}#already",
        "http://localhost:5173/é",
    ],
)
def test_a_redirect_off_the_allowed_origins_is_refused(
    browser: httpx.Client, redirect: str
) -> None:
    started = browser.get("/api/auth/oauth/testidp", params={"redirect": redirect})
    assert error_of(started, 400, "bad_request")["details"] == {"field": "redirect"}


def test_an_unknown_provider_is_404(browser: httpx.Client) -> None:
    error_of(browser.get("/api/auth/oauth/nope"), 404, "not_found")
    error_of(browser.get("/api/auth/oauth/nope/callback?code=x&state=y"), 404, "not_found")


def test_github(bp: RunningServer, idp: OIDCProvider, browser: httpx.Client) -> None:
    start = browser.get("/api/auth/oauth/github", params={"redirect": APP})
    asked = query_of(start.headers["location"])
    assert asked["scope"].split() == ["read:user", "user:email"]
    assert "nonce" not in asked and asked["code_challenge_method"] == "S256"
    user = me(bp, sign_in(browser, "github")).json()
    assert user["email"] == idp.account.email and user["verified"] is True
    assert me(bp, sign_in(browser, "github")).json()["id"] == user["id"]

    idp.account = Account(f"gh-{secrets.token_hex(4)}@example.com", email_verified=False)
    error_of(browser.get(to_provider_and_back(browser, "github")), 403, "forbidden")


def test_google_takes_its_issuer_from_the_settings(
    bp: RunningServer, idp: OIDCProvider, browser: httpx.Client
) -> None:
    assert me(bp, sign_in(browser, "google")).json()["email"] == idp.account.email


def test_an_unreachable_provider_is_503(admin: httpx.Client, browser: httpx.Client) -> None:
    gone = {"client_id": "a", "client_secret": "b", "issuer": f"http://127.0.0.1:{free_port()}"}
    assert admin.patch("/api/settings", json={"oauth": {"gone": gone}}).status_code == 200
    try:
        error_of(browser.get("/api/auth/oauth/gone"), 503, "unavailable")
    finally:
        admin.patch("/api/settings", json={"oauth": {"gone": None}})
    error_of(browser.get("/api/auth/oauth/gone"), 404, "not_found")


def test_starting_is_rate_limited(admin: httpx.Client, browser: httpx.Client) -> None:
    admin.patch("/api/settings", json={"rate_limits": {"auth_per_minute": 2}})
    try:
        for _ in range(2):
            assert browser.get("/api/auth/oauth/testidp").status_code == 302
        limited = browser.get("/api/auth/oauth/testidp")
        error_of(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
    finally:
        admin.patch("/api/settings", json={"rate_limits": {"auth_per_minute": 0}})


def test_provider_settings_are_checked(idp: OIDCProvider, admin: httpx.Client) -> None:
    shown = admin.get("/api/settings").json()["oauth"]
    assert shown["testidp"]["client_secret"] == "********"
    assert shown["github"]["token_url"] == f"{idp.issuer}/token"
    secret = {"client_id": "a", "client_secret": "b"}
    for bad, field in [
        ({"myidp": {**secret, "issuer": idp.issuer, "token_url": "http://x"}}, "token_url"),
        ({"github": {"issuer": idp.issuer}}, "issuer"),
        ({"github": {"emails_url": "ftp://example.com"}}, "emails_url"),
        ({"myidp": {**secret, "issuer": f"{idp.issuer}?x=1"}}, "issuer"),
        ({"myidp": {**secret, "issuer": idp.issuer, "scopes": ["a b"]}}, "scopes"),
        ({"myidp": {**secret}}, "issuer"),
    ]:
        error = error_of(
            admin.patch("/api/settings", json={"oauth": bad}), 400, "validation_failed"
        )
        name = next(iter(bad))
        assert f"oauth.{name}.{field}" in error["details"]["fields"], error
    assert admin.get("/api/settings").json()["oauth"] == shown


def test_extra_scopes_are_asked_for(admin: httpx.Client, browser: httpx.Client) -> None:
    admin.patch("/api/settings", json={"oauth": {"testidp": {"scopes": ["openid", "groups"]}}})
    try:
        asked = query_of(browser.get("/api/auth/oauth/testidp").headers["location"])
        assert asked["scope"].split() == ["openid", "email", "profile", "groups"]
    finally:
        admin.patch("/api/settings", json={"oauth": {"testidp": {"scopes": None}}})


def test_no_tokens_in_the_server_log(bp: RunningServer, browser: httpx.Client) -> None:
    token = sign_in(browser)
    assert token not in bp.log() and "Traceback" not in bp.log()
