"""AdminService on a real SQLite control store: setup, sign-in, sessions, last-admin rule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backpack.errors import (
    BadRequest,
    Conflict,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from backpack.platform.admins import AdminService, format_time
from backpack.platform.store import Admin, SqliteControlStore

PASSWORD = "correct horse battery"
FAR = "2999-01-01T00:00:00.000Z"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 19, 15, 19, 123000, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteControlStore]:
    opened = SqliteControlStore(tmp_path / "control.db")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def admins(store: SqliteControlStore, clock: Clock) -> AdminService:
    return AdminService(store, clock=clock)


async def sessions(store: SqliteControlStore) -> int:
    """How many sessions exist (purging all of them is how the store counts them)."""
    return await store.delete_expired_sessions(FAR)


# setup


async def test_setup_makes_the_first_admin_once(admins: AdminService) -> None:
    assert await admins.setup_needed() is True
    admin = await admins.setup(" Ada@Example.com ", PASSWORD)
    assert admin.email == "ada@example.com"
    assert await admins.setup_needed() is False
    with pytest.raises(Conflict):
        await admins.setup("mallory@example.com", PASSWORD)
    assert await admins.list_admins() == [admin]


async def test_of_two_racing_setups_one_wins(admins: AdminService) -> None:
    results = await asyncio.gather(
        admins.setup("ada@example.com", PASSWORD),
        admins.setup("mallory@example.com", PASSWORD),
        return_exceptions=True,
    )
    assert sum(isinstance(result, Admin) for result in results) == 1
    assert sum(isinstance(result, Conflict) for result in results) == 1
    assert len(await admins.list_admins()) == 1


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [
        ("not-an-email", PASSWORD, "email"),
        ("", PASSWORD, "email"),
        (None, PASSWORD, "email"),
        ("a" * 250 + "@example.com", PASSWORD, "email"),
        ("ada@example.com", "short", "password"),
        ("ada@example.com", "x" * 257, "password"),
        ("ada@example.com", 12345678, "password"),
    ],
)
async def test_setup_validates_email_and_password(
    admins: AdminService, email: object, password: object, field: str
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        await admins.setup(email, password)
    assert field in raised.value.fields
    assert await admins.setup_needed() is True


# sign-in and sessions


async def test_login_returns_a_session_token_for_the_admin(admins: AdminService) -> None:
    ada = await admins.setup("ada@example.com", PASSWORD)
    admin, token = await admins.login("ADA@example.com ", PASSWORD, "10.0.0.1")
    assert admin == ada
    assert token.startswith("bpa_") and len(token) > 40
    assert await admins.authenticate(token) == ada
    _, other = await admins.login("ada@example.com", PASSWORD, "10.0.0.1")
    assert other != token
    assert await admins.authenticate(other) == ada


async def test_wrong_email_and_wrong_password_read_the_same(
    admins: AdminService, store: SqliteControlStore
) -> None:
    await admins.setup("ada@example.com", PASSWORD)
    with pytest.raises(Unauthorized) as wrong_password:
        await admins.login("ada@example.com", PASSWORD + "!", "10.0.0.1")
    with pytest.raises(Unauthorized) as wrong_email:
        await admins.login("bob@example.com", PASSWORD, "10.0.0.1")
    with pytest.raises(Unauthorized) as longer_email:
        await admins.login("ada@example.com" + "m" * 300, PASSWORD, "10.0.0.1")
    assert wrong_password.value.message == wrong_email.value.message
    assert longer_email.value.message == wrong_email.value.message
    assert await sessions(store) == 0


@pytest.mark.parametrize(
    ("email", "password"), [(None, PASSWORD), ("ada@example.com", None), (1, ["x"])]
)
async def test_login_needs_text(admins: AdminService, email: object, password: object) -> None:
    with pytest.raises(ValidationFailed):
        await admins.login(email, password, "10.0.0.1")


async def test_sign_ins_are_rate_limited_per_address_and_per_email(
    store: SqliteControlStore, clock: Clock
) -> None:
    admins = AdminService(store, clock=clock, login_per_minute=3)
    await admins.setup("ada@example.com", PASSWORD)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await admins.login("ada@example.com", "wrong password", "10.0.0.1")
    with pytest.raises(RateLimited) as limited:
        await admins.login("ada@example.com", PASSWORD, "10.0.0.1")
    assert 1 <= limited.value.retry_after <= 60
    with pytest.raises(RateLimited):  # the email is limited from any address
        await admins.login("ADA@example.com", PASSWORD, "10.0.0.2")
    for n in range(2):  # 10.0.0.3 has three tries whatever the email
        with pytest.raises(Unauthorized):
            await admins.login(f"user{n}@example.com", PASSWORD, "10.0.0.3")
    await admins.invite("grace@example.com", PASSWORD)
    admin, _ = await admins.login("grace@example.com", PASSWORD, "10.0.0.3")
    assert admin.email == "grace@example.com"
    with pytest.raises(RateLimited):
        await admins.login("grace@example.com", PASSWORD, "10.0.0.3")
    assert await sessions(store) == 1


async def test_logout_ends_that_session_only(admins: AdminService) -> None:
    await admins.setup("ada@example.com", PASSWORD)
    _, first = await admins.login("ada@example.com", PASSWORD, "10.0.0.1")
    _, second = await admins.login("ada@example.com", PASSWORD, "10.0.0.1")
    await admins.logout(first)
    with pytest.raises(Unauthorized):
        await admins.authenticate(first)
    assert (await admins.authenticate(second)).email == "ada@example.com"
    await admins.logout(first)  # twice is fine
    await admins.logout("garbage")


async def test_sessions_expire_after_their_ttl(store: SqliteControlStore, clock: Clock) -> None:
    admins = AdminService(store, clock=clock, session_ttl=timedelta(days=7))
    await admins.setup("ada@example.com", PASSWORD)
    _, token = await admins.login("ada@example.com", PASSWORD, "10.0.0.1")
    clock.now += timedelta(days=7) - timedelta(milliseconds=1)
    assert (await admins.authenticate(token)).email == "ada@example.com"
    clock.now += timedelta(milliseconds=1)
    with pytest.raises(Unauthorized):
        await admins.authenticate(token)
    # The next sign-in purges the expired session.
    await admins.login("ada@example.com", PASSWORD, "10.0.0.1")
    assert await sessions(store) == 1


@pytest.mark.parametrize(
    "token", ["", "bpa_", "bpa_unknown", "bps_" + "a" * 43, "bpk_" + "a" * 43, "bpa_" + "a" * 200]
)
async def test_unknown_tokens_are_refused(admins: AdminService, token: str) -> None:
    await admins.setup("ada@example.com", PASSWORD)
    _, real = await admins.login("ada@example.com", PASSWORD, "10.0.0.1")
    with pytest.raises(Unauthorized):
        await admins.authenticate(token)
    with pytest.raises(Unauthorized):
        await admins.authenticate(real[:-1])


# more admins


async def test_invite_adds_admins_with_unique_emails(admins: AdminService) -> None:
    ada = await admins.setup("ada@example.com", PASSWORD)
    grace = await admins.invite("Grace@Example.com", "another password")
    assert await admins.list_admins() == [ada, grace]
    with pytest.raises(Conflict):
        await admins.invite("GRACE@example.com", PASSWORD)
    with pytest.raises(ValidationFailed):
        await admins.invite("nobody", PASSWORD)
    assert await admins.list_admins() == [ada, grace]
    admin, _ = await admins.login("grace@example.com", "another password", "10.0.0.1")
    assert admin == grace
    assert grace.to_json() == {"id": grace.id, "email": grace.email, "created": grace.created}


async def test_the_last_admin_cannot_be_deleted(admins: AdminService) -> None:
    ada = await admins.setup("ada@example.com", PASSWORD)
    with pytest.raises(Conflict):
        await admins.delete(ada.id)
    grace = await admins.invite("grace@example.com", PASSWORD)
    _, ada_token = await admins.login("ada@example.com", PASSWORD, "10.0.0.1")
    await admins.delete(ada.id)  # deleting yourself is fine while another admin remains
    with pytest.raises(Unauthorized):
        await admins.authenticate(ada_token)
    assert await admins.list_admins() == [grace]
    with pytest.raises(Conflict):
        await admins.delete(grace.id)
    assert await admins.list_admins() == [grace]


async def test_deleting_an_unknown_admin_is_not_found(admins: AdminService) -> None:
    ada = await admins.setup("ada@example.com", PASSWORD)
    await admins.invite("grace@example.com", PASSWORD)
    with pytest.raises(NotFound):
        await admins.delete("0000000000000000")
    with pytest.raises(BadRequest):
        await admins.delete("not/an id")
    assert len(await admins.list_admins()) == 2
    assert ada in await admins.list_admins()


def test_times_are_rfc3339_utc_with_milliseconds() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert format_time(moment) == "2026-01-02T03:04:05.678Z"
    assert format_time(moment.astimezone()) == "2026-01-02T03:04:05.678Z"
