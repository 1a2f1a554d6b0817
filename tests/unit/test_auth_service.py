"""The auth service on real SQLite storage: token expiry and single use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backpack.auth.service import TOKENS, AuthService
from backpack.auth.tokens import token_hash
from backpack.core import jsonutil
from backpack.core.access import SECRET_KEY
from backpack.core.records import DataService
from backpack.core.settings import SettingsService
from backpack.core.storage import Update
from backpack.errors import BadRequest
from backpack.storage.sqlite.adapter import SqliteStorage


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthService]:
    data = DataService(SqliteStorage(str(tmp_path / "db.sqlite")), cursor_key=b"k")
    await data.open()
    settings = SettingsService(data)
    await settings.open()
    service = AuthService(data, settings)
    await service.open()
    yield service
    await data.close()


async def expire(auth: AuthService, token: str) -> None:
    key = token_hash(token)
    found = await auth.storage.get(TOKENS, key)
    assert found is not None
    doc = jsonutil.loads(found.doc)
    doc.update(expires="2000-01-01T00:00:00.000Z", version=found.version + 1)
    await auth.storage.apply(
        [Update(TOKENS, key, found.version, found.version + 1, jsonutil.dumps_str(doc))]
    )


@pytest.mark.parametrize("kind", ["verify", "reset"])
async def test_expired_tokens_are_refused(auth: AuthService, kind: str) -> None:
    user = await auth.create_user(SECRET_KEY, {"email": "a@example.com", "password": "p" * 10})
    token = await auth.issue_token(user, kind)
    await expire(auth, token)
    with pytest.raises(BadRequest):
        if kind == "verify":
            await auth.confirm_verification({"token": token})
        else:
            await auth.confirm_reset({"token": token, "password": "q" * 10})
    # An expired token is spent too: it cannot be retried.
    assert await auth.storage.get(TOKENS, token_hash(token)) is None


async def test_token_for_an_old_email_is_refused(auth: AuthService) -> None:
    user = await auth.create_user(SECRET_KEY, {"email": "old@example.com", "password": "p" * 10})
    token = await auth.issue_token(user, "verify")
    await auth.update_user(SECRET_KEY, str(user["id"]), {"email": "new@example.com"})
    with pytest.raises(BadRequest):
        await auth.confirm_verification({"token": token})
    assert (await auth.get_user(SECRET_KEY, str(user["id"])))["verified"] is False
