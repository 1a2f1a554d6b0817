"""Accounts, sessions and one-time tokens of one backpack.

Users, password hashes, sessions and tokens live in system collections of the
backpack's own storage, so every storage adapter carries them. Sessions are
looked up by the SHA-256 of their token; the token itself is never stored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from backpack.auth.passwords import check_password, hash_password, verify_password
from backpack.auth.tokens import RESET, SESSION, VERIFY, new_token, public_id, token_hash
from backpack.core import jsonutil
from backpack.core.access import Caller, require_admin
from backpack.core.clock import now_rfc3339
from backpack.core.collections import system_collection
from backpack.core.events import RecordEvent
from backpack.core.filter import parse_filter
from backpack.core.ids import check_id, new_id
from backpack.core.query import ListParams
from backpack.core.records import DataService, RecordPage
from backpack.core.schema import is_email
from backpack.core.settings import Settings, SettingsService
from backpack.core.storage import (
    Delete,
    IndexKey,
    Insert,
    Query,
    StaleWrite,
    UniqueViolation,
    Update,
    WriteOp,
)
from backpack.errors import (
    BadRequest,
    Conflict,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from backpack.types import JSON, Document

USERS: Final = "_users"
PASSWORDS: Final = "_passwords"
SESSIONS: Final = "_sessions"
TOKENS: Final = "_tokens"
IDENTITIES: Final = "_identities"  # OAuth/OIDC provider accounts linked to users
VERIFY_TTL: Final = timedelta(hours=24)
RESET_TTL: Final = timedelta(minutes=30)
_CACHE_SECONDS: Final = 1.0  # another process (CLI, worker) may revoke a session
_REFRESH_AFTER: Final = timedelta(hours=1)  # sliding expiry moves at most this often
_USER_FIELDS: Final = ("id", "email", "verified", "role", "data", "created", "updated", "version")
_ROLE_PATTERN: Final = r"[A-Za-z][A-Za-z0-9_-]{0,31}"


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def normalize_email(value: object, field: str = "email") -> str:
    if not isinstance(value, str) or len(value) > 254 or not is_email(value.strip()):
        raise ValidationFailed("That is not an email address.", {field: "must be an email address"})
    return value.strip().lower()


def _user_data(value: object) -> Document:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed("User data must be an object.", {"data": "must be an object"})
    if len(jsonutil.dumps(value)) > 64 * 1024:
        raise ValidationFailed("User data is limited to 64 KiB.", {"data": "is larger than 64 KiB"})
    return value


def public_user(doc: Mapping[str, JSON]) -> Document:
    return {key: doc[key] for key in _USER_FIELDS if key in doc}


def rule_user(doc: Mapping[str, JSON]) -> dict[str, JSON]:
    """What rules see as @auth."""
    return {key: doc.get(key) for key in ("id", "email", "role", "verified")}


@dataclass(frozen=True, slots=True)
class SessionGrant:
    user: Document
    token: str
    expires: datetime


@dataclass(slots=True)
class _CachedSession:
    caller: Caller
    expires: datetime
    refresh_at: datetime
    valid_until: float  # time.monotonic() after which the session is looked up again
    key: str


class AuthService:
    def __init__(self, data: DataService, settings: SettingsService) -> None:
        self.data = data
        self.storage = data.storage
        self._settings = settings  # read at each use, so changes apply at once
        self._cache: dict[str, _CachedSession] = {}
        # Called with (user id, session hash) whenever sessions end or a user's access
        # changes (sign-out, revocation, new password or role, deletion): realtime re-checks.
        self.session_listeners: list[Callable[[str | None, str | None], None]] = []

    @property
    def settings(self) -> Settings:
        current: Settings = self._settings.current
        return current

    async def open(self) -> None:
        await self.data.ensure_system_collection(system_collection(USERS, ("email", True)))
        await self.data.ensure_system_collection(system_collection(PASSWORDS))
        await self.data.ensure_system_collection(
            system_collection(SESSIONS, ("user", False), ("sid", True))
        )
        await self.data.ensure_system_collection(system_collection(TOKENS, ("user", False)))
        await self.data.ensure_system_collection(system_collection(IDENTITIES, ("user", False)))

    # lookups

    async def _find_one(self, collection: str, filter_: dict[str, JSON]) -> Document | None:
        page = await self.storage.query(
            Query(collection, parse_filter(filter_), (IndexKey(("id",)),), 1)
        )
        if not page.docs:
            return None
        found: Document = jsonutil.loads(page.docs[0])
        return found

    async def _find_all(self, collection: str, filter_: dict[str, JSON]) -> list[Document]:
        page = await self.storage.query(
            Query(collection, parse_filter(filter_), (IndexKey(("id",)),), 1000)
        )
        return [jsonutil.loads(doc) for doc in page.docs]

    async def _get(self, collection: str, record_id: str) -> Document | None:
        found = await self.storage.get(collection, record_id)
        if found is None:
            return None
        doc: Document = jsonutil.loads(found.doc)
        return doc

    async def user_by_email(self, email: str) -> Document | None:
        return await self._find_one(USERS, {"email": email})

    async def user_by_id(self, user_id: str) -> Document | None:
        return await self._get(USERS, user_id)

    async def _require_user(self, user_id: str) -> Document:
        check_id(user_id)
        user = await self.user_by_id(user_id)
        if user is None:
            raise NotFound(f"User '{user_id}' was not found.")
        return user

    # sessions

    def _session_ops(self, user: Mapping[str, JSON], agent: str, ip: str) -> tuple[WriteOp, str]:
        token = new_token(SESSION)
        now = datetime.now(UTC)
        expires = now + timedelta(days=self.settings.session_ttl_days)
        doc = {
            "id": token_hash(token),
            "sid": public_id(),
            "user": user["id"],
            "created": _format_time(now),
            "seen": _format_time(now),
            "expires": _format_time(expires),
            "agent": agent[:300],
            "ip": ip,
            "version": 1,
        }
        return Insert(SESSIONS, str(doc["id"]), 1, jsonutil.dumps_str(doc)), token

    async def start_session(self, user: Mapping[str, JSON], agent: str, ip: str) -> SessionGrant:
        op, token = self._session_ops(user, agent, ip)
        await self.storage.apply([op])
        expires = datetime.now(UTC) + timedelta(days=self.settings.session_ttl_days)
        return SessionGrant(public_user(user), token, expires)

    def cached(self, token: str) -> Caller | None:
        """The caller of a session checked within the last second, else None (then
        `authenticate`): the hot path of every signed-in request, without a coroutine."""
        cached = self._cache.get(token)
        if cached is not None and time.monotonic() < cached.valid_until:
            return cached.caller
        return None

    async def authenticate(self, token: str) -> Caller:
        """The caller a `bps_` session token stands for; 401 when unknown, expired or revoked."""
        # The hot path (every request) is one dict lookup and one clock read; the
        # session's own expiry and sliding refresh are at least a second away by design.
        cached = self.cached(token)
        if cached is not None:
            return cached
        if not token.startswith(SESSION) or len(token) > 100:
            raise Unauthorized("The session token is invalid or has expired.")
        key = token_hash(token)
        now = datetime.now(UTC)
        self._cache.pop(token, None)
        session = await self._get(SESSIONS, key)
        if session is None or _parse_time(str(session["expires"])) <= now:
            raise Unauthorized("The session token is invalid or has expired.")
        user = await self.user_by_id(str(session["user"]))
        if user is None:
            raise Unauthorized("The session token is invalid or has expired.")
        caller = Caller(user=rule_user(user), session=key)
        entry = _CachedSession(
            caller,
            _parse_time(str(session["expires"])),
            _parse_time(str(session["seen"])) + _REFRESH_AFTER,
            time.monotonic() + _CACHE_SECONDS,
            key,
        )
        if entry.refresh_at <= now:
            await self._slide(key, entry)
        # Never cached past the session's own end, so expiry needs no check on the hot path.
        remaining = (entry.expires - datetime.now(UTC)).total_seconds()
        entry.valid_until = min(entry.valid_until, time.monotonic() + max(0.0, remaining))
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[token] = entry
        return caller

    async def _slide(self, key: str, entry: _CachedSession) -> None:
        """Move a session's expiry forward (sliding expiry), at most once an hour."""
        now = datetime.now(UTC)
        entry.refresh_at = now + _REFRESH_AFTER
        for _ in range(3):
            session = await self._get(SESSIONS, key)
            if session is None:
                return
            expires = now + timedelta(days=self.settings.session_ttl_days)
            version = int(str(session["version"]))
            updated = {**session, "seen": _format_time(now), "expires": _format_time(expires)}
            updated["version"] = version + 1
            try:
                await self.storage.apply(
                    [Update(SESSIONS, key, version, version + 1, jsonutil.dumps_str(updated))]
                )
            except StaleWrite:
                continue
            entry.expires = expires
            return

    def _forget(self, *, user_id: str | None = None, key: str | None = None) -> None:
        """Drop cached sessions (by token hash, or all of a user's) so the next use rechecks."""
        for token, entry in list(self._cache.items()):
            user = entry.caller.user
            if entry.key == key or (
                user_id is not None and user is not None and user.get("id") == user_id
            ):
                self._cache.pop(token, None)
        for listener in list(self.session_listeners):
            listener(user_id, key)

    async def _revoke_sessions(self, user_id: str, keep: str | None = None) -> list[WriteOp]:
        sessions = await self._find_all(SESSIONS, {"user": user_id})
        return [Delete(SESSIONS, str(s["id"])) for s in sessions if s["id"] != keep]

    # signup and login

    async def signup(self, body: JSON, agent: str, ip: str) -> SessionGrant:
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object.")
        unknown = set(body) - {"email", "password", "data"}
        if unknown:
            raise ValidationFailed(
                "Unknown sign-up fields.", {k: "is not a sign-up field" for k in sorted(unknown)}
            )
        email = normalize_email(body.get("email"))
        password = check_password(body.get("password"))
        data = _user_data(body.get("data"))
        password_hash = await hash_password(password)
        now = now_rfc3339()
        user: Document = {
            "id": new_id(),
            "email": email,
            "verified": False,
            "role": "user",
            "data": data,
            "created": now,
            "updated": now,
            "version": 1,
        }
        session_op, token = self._session_ops(user, agent, ip)
        ops: list[WriteOp] = [
            Insert(USERS, str(user["id"]), 1, jsonutil.dumps_str(user)),
            Insert(
                PASSWORDS, str(user["id"]), 1, self._password_doc(str(user["id"]), password_hash, 1)
            ),
            session_op,
        ]
        try:
            await self.storage.apply(ops)
        except UniqueViolation:
            raise Conflict("An account with this email already exists.") from None
        self.data.events.publish([RecordEvent(USERS, "create", public_user(user))])
        expires = datetime.now(UTC) + timedelta(days=self.settings.session_ttl_days)
        return SessionGrant(public_user(user), token, expires)

    @staticmethod
    def _password_doc(user_id: str, password_hash: str, version: int) -> str:
        return jsonutil.dumps_str({"id": user_id, "hash": password_hash, "version": version})

    async def login(self, body: JSON, agent: str, ip: str) -> SessionGrant:
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object.")
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not isinstance(password, str):
            raise ValidationFailed(
                "Send an email and a password.",
                {
                    k: "is required"
                    for k in ("email", "password")
                    if not isinstance(body.get(k), str)
                },
            )
        user = await self.user_by_email(email.strip().lower()) if len(email) <= 254 else None
        stored = await self._get(PASSWORDS, str(user["id"])) if user is not None else None
        ok = await verify_password(str(stored["hash"]) if stored else None, password[:1024])
        if user is None or not ok:
            raise Unauthorized("Wrong email or password.")
        return await self.start_session(user, agent, ip)

    async def logout(self, caller: Caller) -> None:
        if caller.session is None:
            raise Unauthorized("Sign in first.")
        await self.storage.apply([Delete(SESSIONS, caller.session)])
        self._forget(key=caller.session)

    # the signed-in user

    def _require_user_caller(self, caller: Caller) -> str:
        if caller.user is None or caller.session is None:
            raise Unauthorized("Sign in first.")
        return str(caller.user["id"])

    async def me(self, caller: Caller) -> Document:
        user = await self.user_by_id(self._require_user_caller(caller))
        if user is None:
            raise Unauthorized("Sign in first.")
        return public_user(user)

    async def update_me(self, caller: Caller, body: JSON) -> Document:
        user_id = self._require_user_caller(caller)
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object.")
        unknown = set(body) - {"data", "email", "password", "current_password"}
        if unknown:
            raise ValidationFailed(
                "These fields cannot be changed here.",
                {k: "cannot be changed by the user" for k in sorted(unknown)},
            )
        changes: dict[str, JSON] = {}
        if "data" in body:
            changes["data"] = _user_data(body["data"])
        new_password = None
        if "email" in body or "password" in body:
            stored = await self._get(PASSWORDS, user_id)
            current = body.get("current_password")
            # An account made through OAuth has no password yet and may set one.
            if stored is not None and (
                not isinstance(current, str)
                or not await verify_password(str(stored["hash"]), current[:1024])
            ):
                raise ValidationFailed(
                    "The current password is wrong.",
                    {"current_password": "is required and must be right"},
                )
            if "email" in body:
                changes["email"] = normalize_email(body["email"])
            if "password" in body:
                new_password = check_password(body["password"])
        return await self._change_user(user_id, changes, new_password, keep_session=caller.session)

    async def _change_user(
        self,
        user_id: str,
        changes: Mapping[str, JSON],
        new_password: str | None,
        *,
        keep_session: str | None = None,
        if_match: int | None = None,
    ) -> Document:
        password_hash = await hash_password(new_password) if new_password is not None else None
        for _ in range(8):
            user = await self._require_user(user_id)
            version = int(str(user["version"]))
            if if_match is not None and if_match != version:
                raise Conflict(f"The user is at version {version}.", {"version": version})
            updated = {**user, **changes, "updated": now_rfc3339(), "version": version + 1}
            if updated["email"] != user["email"] and "verified" not in changes:
                updated["verified"] = False  # a new address is unproven
            ops: list[WriteOp] = [
                Update(USERS, user_id, version, version + 1, jsonutil.dumps_str(updated))
            ]
            revoke = password_hash is not None or updated.get("role") != user.get("role")
            if password_hash is not None:
                stored = await self._get(PASSWORDS, user_id)
                if stored is None:
                    ops.append(
                        Insert(PASSWORDS, user_id, 1, self._password_doc(user_id, password_hash, 1))
                    )
                else:
                    pv = int(str(stored["version"]))
                    ops.append(
                        Update(
                            PASSWORDS,
                            user_id,
                            pv,
                            pv + 1,
                            self._password_doc(user_id, password_hash, pv + 1),
                        )
                    )
                ops += await self._revoke_sessions(user_id, keep=keep_session)
            try:
                await self.storage.apply(ops)
            except StaleWrite:
                continue
            except UniqueViolation:
                raise Conflict("An account with this email already exists.") from None
            if revoke or "email" in changes or "verified" in changes:
                self._forget(user_id=user_id)
            self.data.events.publish([RecordEvent(USERS, "update", public_user(updated), user)])
            return public_user(updated)
        raise Conflict("The account kept changing; try again.")

    async def sessions(self, caller: Caller) -> list[Document]:
        user_id = self._require_user_caller(caller)
        sessions = await self._find_all(SESSIONS, {"user": user_id})
        now = datetime.now(UTC)
        return [
            {
                "id": s["sid"],
                "created": s["created"],
                "last_seen": s["seen"],
                "expires": s["expires"],
                "user_agent": s.get("agent", ""),
                "ip": s.get("ip", ""),
                "current": s["id"] == caller.session,
            }
            for s in sorted(sessions, key=lambda s: str(s["created"]))
            if _parse_time(str(s["expires"])) > now
        ]

    async def revoke_session(self, caller: Caller, sid: str) -> None:
        user_id = self._require_user_caller(caller)
        session = await self._find_one(SESSIONS, {"sid": sid, "user": user_id})
        if session is None:
            raise NotFound("No such session.")
        await self.storage.apply([Delete(SESSIONS, str(session["id"]))])
        self._forget(key=str(session["id"]))

    # one-time tokens (verification and reset)

    async def issue_token(self, user: Mapping[str, JSON], kind: str) -> str:
        prefix, ttl = (VERIFY, VERIFY_TTL) if kind == "verify" else (RESET, RESET_TTL)
        token = new_token(prefix)
        doc = {
            "id": token_hash(token),
            "kind": kind,
            "user": user["id"],
            "email": user["email"],
            "expires": _format_time(datetime.now(UTC) + ttl),
            "version": 1,
        }
        await self.storage.apply([Insert(TOKENS, str(doc["id"]), 1, jsonutil.dumps_str(doc))])
        return token

    async def _redeem(self, token: object, kind: str) -> Document:
        """The user a one-time token was issued for; the token is spent in the same step."""
        prefix = VERIFY if kind == "verify" else RESET
        invalid = BadRequest("The link is invalid, used or expired.", {"field": "token"})
        if not isinstance(token, str) or not token.startswith(prefix) or len(token) > 100:
            raise invalid
        key = token_hash(token)
        stored = await self._get(TOKENS, key)
        if stored is None or stored["kind"] != kind:
            raise invalid
        try:
            await self.storage.apply([Delete(TOKENS, key, int(str(stored["version"])))])
        except (StaleWrite, NotFound):
            raise invalid from None
        if _parse_time(str(stored["expires"])) <= datetime.now(UTC):
            raise invalid
        user = await self.user_by_id(str(stored["user"]))
        if user is None or user["email"] != stored["email"]:
            raise invalid
        return user

    async def confirm_verification(self, body: JSON) -> Document:
        token = body.get("token") if isinstance(body, dict) else None
        user = await self._redeem(token, "verify")
        return await self._change_user(str(user["id"]), {"verified": True}, None)

    async def confirm_reset(self, body: JSON) -> None:
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object.")
        password = check_password(body.get("password"))
        user = await self._redeem(body.get("token"), "reset")
        await self._change_user(str(user["id"]), {}, password)

    # administration (secret key)

    async def list_users(self, caller: Caller, params: ListParams) -> RecordPage:
        require_admin(caller, "list users")
        return await self.data.list_records(caller, USERS, params, system=True)

    async def get_user(self, caller: Caller, user_id: str) -> Document:
        require_admin(caller, "read users")
        return public_user(await self._require_user(user_id))

    async def create_user(self, caller: Caller, body: JSON) -> Document:
        require_admin(caller, "create users")
        body = _user_body(body)
        fields = _admin_fields(body)
        email = normalize_email(body.get("email"))
        now = now_rfc3339()
        user: Document = {
            "id": new_id(),
            "email": email,
            "verified": fields.get("verified", False),
            "role": fields.get("role", "user"),
            "data": fields.get("data", {}),
            "created": now,
            "updated": now,
            "version": 1,
        }
        ops: list[WriteOp] = [Insert(USERS, str(user["id"]), 1, jsonutil.dumps_str(user))]
        if body.get("password") is not None:
            password_hash = await hash_password(check_password(body["password"]))
            ops.append(
                Insert(
                    PASSWORDS,
                    str(user["id"]),
                    1,
                    self._password_doc(str(user["id"]), password_hash, 1),
                )
            )
        try:
            await self.storage.apply(ops)
        except UniqueViolation:
            raise Conflict("An account with this email already exists.") from None
        self.data.events.publish([RecordEvent(USERS, "create", public_user(user))])
        return public_user(user)

    async def update_user(
        self, caller: Caller, user_id: str, body: JSON, if_match: int | None = None
    ) -> Document:
        require_admin(caller, "change users")
        body = _user_body(body)
        changes: dict[str, JSON] = dict(_admin_fields(body))
        if "email" in body:
            changes["email"] = normalize_email(body["email"])
        password = check_password(body["password"]) if body.get("password") is not None else None
        return await self._change_user(user_id, changes, password, if_match=if_match)

    async def delete_user(self, caller: Caller, user_id: str) -> None:
        require_admin(caller, "delete users")
        user = await self._require_user(user_id)
        ops: list[WriteOp] = [Delete(USERS, user_id)]
        if await self._get(PASSWORDS, user_id) is not None:
            ops.append(Delete(PASSWORDS, user_id))
        ops += await self._revoke_sessions(user_id)
        for collection in (TOKENS, IDENTITIES):
            linked = await self._find_all(collection, {"user": user_id})
            ops += [Delete(collection, str(doc["id"])) for doc in linked]
        await self.storage.apply(ops)
        self._forget(user_id=user_id)
        self.data.events.publish([RecordEvent(USERS, "delete", public_user(user))])

    async def revoke_user_sessions(self, caller: Caller, user_id: str) -> int:
        """Sign a user out everywhere (admins); how many sessions ended."""
        require_admin(caller, "revoke users' sessions")
        await self._require_user(user_id)
        ops = await self._revoke_sessions(user_id)
        if ops:
            await self.storage.apply(ops)
        self._forget(user_id=user_id)
        return len(ops)

    async def reset_token_for(self, caller: Caller, user_id: str) -> str:
        """A one-time reset token for an admin to hand to the user (no mail sent)."""
        require_admin(caller, "make password reset links")
        return await self.issue_token(await self._require_user(user_id), "reset")

    async def reset_link_token(self, email: str) -> str:
        """A reset token for an admin to hand over (the CLI prints it as a link)."""
        user = await self.user_by_email(normalize_email(email))
        if user is None:
            raise NotFound("No user has that email.")
        return await self.issue_token(user, "reset")


def _user_body(body: JSON) -> Document:
    """An admin's user body: an object with nothing but user fields."""
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    unknown = set(body) - {"email", "password", "verified", "role", "data"}
    if unknown:
        raise ValidationFailed(
            "Unknown user fields.", {k: "is not a user field" for k in sorted(unknown)}
        )
    return body


def _admin_fields(body: Mapping[str, JSON]) -> dict[str, JSON]:
    fields: dict[str, JSON] = {}
    if "verified" in body:
        if not isinstance(body["verified"], bool):
            raise ValidationFailed(
                "verified must be true or false.", {"verified": "must be a boolean"}
            )
        fields["verified"] = body["verified"]
    if "role" in body:
        role = body["role"]
        if not isinstance(role, str) or not re.fullmatch(_ROLE_PATTERN, role):
            raise ValidationFailed(
                "A role is a short name of letters, digits, '_' and '-'.",
                {"role": "must be a role name such as editor"},
            )
        fields["role"] = role
    if "data" in body:
        fields["data"] = _user_data(body["data"])
    return fields
