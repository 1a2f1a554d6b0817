"""A backpack's runtime settings: stored in it, changed through the API, applied at once."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from backpack.core import jsonutil
from backpack.core.access import Caller, require_admin
from backpack.core.collections import system_collection
from backpack.core.events import ConfigEvent
from backpack.core.filter import parse_filter
from backpack.core.records import DataService
from backpack.core.storage import Insert, Update, WriteOp
from backpack.errors import BackpackError, ValidationFailed
from backpack.types import JSON, JSONObject

MASK: Final = "********"
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(:(\d{1,5}|\*))?|\*")
_PATTERN = re.compile(r"[A-Za-z0-9:_\-.*]{1,128}")
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")  # RFC 6749 scope-token

DEFAULTS: Final[Mapping[str, JSON]] = {
    "allowed_origins": ["http://localhost:*", "http://127.0.0.1:*"],
    "app_url": None,
    "session_ttl_days": 30,
    "smtp": None,
    "oauth": {},
    "rate_limits": {"auth_per_minute": 10, "api_per_minute": 0},
    "channels": [],
    "limits": {"body_bytes": 1024 * 1024, "upload_bytes": 100 * 1024 * 1024},
}

_SMTP_KEYS: Final = {"host", "port", "username", "password", "sender", "tls"}
# GitHub has no discovery document: these point it at GitHub Enterprise or a test server.
_GITHUB_URL_KEYS: Final = {"authorize_url", "token_url", "userinfo_url", "emails_url"}
_OAUTH_KEYS: Final = {"client_id", "client_secret", "issuer", "scopes", *_GITHUB_URL_KEYS}


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]

    @property
    def allowed_origins(self) -> list[str]:
        return list(self.values["allowed_origins"])

    @property
    def session_ttl_days(self) -> int:
        return int(self.values["session_ttl_days"])

    @property
    def smtp(self) -> Mapping[str, Any] | None:
        smtp: Mapping[str, Any] | None = self.values["smtp"]
        return smtp

    @property
    def oauth(self) -> Mapping[str, Mapping[str, Any]]:
        oauth: Mapping[str, Mapping[str, Any]] = self.values["oauth"]
        return oauth

    @property
    def app_url(self) -> str | None:
        url: str | None = self.values["app_url"]
        return url

    @property
    def auth_per_minute(self) -> int:
        return int(self.values["rate_limits"]["auth_per_minute"])

    @property
    def api_per_minute(self) -> int:
        return int(self.values["rate_limits"]["api_per_minute"])

    @property
    def body_bytes(self) -> int:
        return int(self.values["limits"]["body_bytes"])

    @property
    def upload_bytes(self) -> int:
        return int(self.values["limits"]["upload_bytes"])

    def public_json(self) -> JSONObject:
        """The settings with every secret masked."""
        shown: JSONObject = copy.deepcopy(dict(self.values))
        smtp = shown.get("smtp")
        if isinstance(smtp, dict) and smtp.get("password"):
            smtp["password"] = MASK
        oauth = shown.get("oauth")
        if isinstance(oauth, dict):
            for provider in oauth.values():
                if isinstance(provider, dict) and provider.get("client_secret"):
                    provider["client_secret"] = MASK
        return shown


def default_settings() -> Settings:
    return Settings(copy.deepcopy(dict(DEFAULTS)))


def _int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def apply_settings_patch(current: Settings, patch: JSON) -> Settings:
    """Merge a PATCH body into the settings, validating every part.

    A secret sent back as the mask (what GET shows) keeps its stored value.
    """
    if not isinstance(patch, dict):
        raise ValidationFailed("Settings must be a JSON object.", {"": "must be an object"})
    values: dict[str, Any] = copy.deepcopy(dict(current.values))
    problems: dict[str, str] = {}
    for key, value in patch.items():
        if key not in DEFAULTS:
            problems[key] = "is not a setting"
            continue
        checker = _CHECKS[key]
        result = checker(value, values.get(key), problems)
        if key not in problems and not any(p.startswith(f"{key}.") for p in problems):
            values[key] = result
    if problems:
        raise ValidationFailed("The settings are invalid.", problems)
    return Settings(values)


def _check_origins(value: object, _: object, problems: dict[str, str]) -> object:
    if not isinstance(value, list) or len(value) > 100:
        problems["allowed_origins"] = "must be a list of at most 100 origins"
        return None
    for i, origin in enumerate(value):
        if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
            problems[f"allowed_origins.{i}"] = "must be an origin like https://app.example.com"
    return value


def _check_app_url(value: object, _: object, problems: dict[str, str]) -> object:
    if value is not None and (
        not isinstance(value, str) or not re.fullmatch(r"https?://\S{1,2000}", value)
    ):
        problems["app_url"] = "must be an http(s) URL or null"
    return value


def _check_ttl(value: object, _: object, problems: dict[str, str]) -> object:
    if not _int(value, 1, 365):
        problems["session_ttl_days"] = "must be a whole number of days from 1 to 365"
    return value


def _check_smtp(value: object, current: object, problems: dict[str, str]) -> object:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - _SMTP_KEYS:
        problems["smtp"] = f"must be null or an object with {', '.join(sorted(_SMTP_KEYS))}"
        return None
    merged: dict[str, Any] = {"port": 587, "username": None, "password": None, "tls": "starttls"}
    if isinstance(current, dict):
        merged.update(current)
    for key, item in value.items():
        if key == "password" and item == MASK:
            continue
        merged[key] = item
    if not isinstance(merged.get("host"), str) or not merged["host"]:
        problems["smtp.host"] = "is required"
    if not _int(merged.get("port"), 1, 65535):
        problems["smtp.port"] = "must be a port number"
    if not isinstance(merged.get("sender"), str) or "@" not in merged["sender"]:
        problems["smtp.sender"] = "must be an email address, optionally with a name"
    for key in ("username", "password"):
        if merged.get(key) is not None and not isinstance(merged[key], str):
            problems[f"smtp.{key}"] = "must be a string or null"
    if merged.get("tls") not in ("none", "starttls", "tls"):
        problems["smtp.tls"] = "must be none, starttls or tls"
    return merged


def _check_oauth(value: object, current: object, problems: dict[str, str]) -> object:
    if not isinstance(value, dict) or len(value) > 20:
        problems["oauth"] = "must be an object of providers"
        return None
    result: dict[str, Any] = {}
    previous = current if isinstance(current, dict) else {}
    for name, config in value.items():
        where = f"oauth.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):
            problems[where] = "a provider name is lowercase letters, digits, '_' and '-'"
            continue
        if config is None:
            continue  # removes the provider
        if not isinstance(config, dict) or set(config) - _OAUTH_KEYS:
            problems[where] = f"must be an object with {', '.join(sorted(_OAUTH_KEYS))}"
            continue
        merged = dict(previous.get(name) or {})
        for key, item in config.items():
            if key == "client_secret" and item == MASK:
                continue
            if item is None:
                merged.pop(key, None)  # null unsets an optional key, as in a merge patch
            else:
                merged[key] = item
        _check_provider(name, merged, where, problems)
        result[name] = merged
    for name, config in previous.items():
        if name not in value:
            result[name] = config
    return result


def _check_provider(
    name: str, config: dict[str, Any], where: str, problems: dict[str, str]
) -> None:
    for key in ("client_id", "client_secret"):
        if not isinstance(config.get(key), str) or not config[key]:
            problems[f"{where}.{key}"] = "is required"
    issuer = config.get("issuer")
    if name == "github":
        if issuer is not None:
            problems[f"{where}.issuer"] = (
                "GitHub is not an OpenID Connect provider; point it elsewhere with "
                "authorize_url, token_url, userinfo_url and emails_url"
            )
    elif issuer is None:
        if name != "google":
            problems[f"{where}.issuer"] = "is required for a generic OpenID Connect provider"
    elif not _is_http_url(issuer) or "?" in issuer or "#" in issuer:
        problems[f"{where}.issuer"] = "must be an http(s) URL without query or fragment"
    for key in sorted(_GITHUB_URL_KEYS & set(config)):
        if name != "github":
            problems[f"{where}.{key}"] = (
                "is only for github; an OpenID Connect provider publishes its endpoints"
            )
        elif not _is_http_url(config[key]):
            problems[f"{where}.{key}"] = "must be an http(s) URL"
    scopes = config.get("scopes")
    if scopes is not None and (
        not isinstance(scopes, list)
        or len(scopes) > 20
        or not all(isinstance(s, str) and _SCOPE.fullmatch(s) for s in scopes)
    ):
        problems[f"{where}.scopes"] = "must be a list of at most 20 scope names"


def _is_http_url(value: object) -> bool:
    # ASCII only: these URLs end up in Location headers and outgoing requests.
    return isinstance(value, str) and bool(re.fullmatch(r"https?://[\x21-\x7e]{1,2000}", value))


def _check_rate_limits(value: object, current: object, problems: dict[str, str]) -> object:
    if not isinstance(value, dict) or set(value) - {"auth_per_minute", "api_per_minute"}:
        problems["rate_limits"] = "must be {auth_per_minute, api_per_minute}"
        return None
    merged = {**(current if isinstance(current, dict) else {}), **value}
    for key in ("auth_per_minute", "api_per_minute"):
        if not _int(merged.get(key), 0, 1_000_000):
            problems[f"rate_limits.{key}"] = "must be a whole number (0 turns the limit off)"
    return merged


def _check_channels(value: object, _: object, problems: dict[str, str]) -> object:
    if not isinstance(value, list) or len(value) > 100:
        problems["channels"] = "must be a list of at most 100 channel rules"
        return None
    for i, rule in enumerate(value):
        where = f"channels.{i}"
        if not isinstance(rule, dict) or set(rule) - {"pattern", "join", "broadcast"}:
            problems[where] = "must be {pattern, join, broadcast}"
            continue
        if not isinstance(rule.get("pattern"), str) or not _PATTERN.fullmatch(rule["pattern"]):
            problems[f"{where}.pattern"] = "must be a channel pattern such as room:*"
        for op in ("join", "broadcast"):
            item = rule.get(op)
            if item is None or item is True:
                continue
            if not isinstance(item, dict):
                problems[f"{where}.{op}"] = "must be null, true or a filter"
                continue
            try:
                parse_filter(item, allow_variables=True)
            except BackpackError as exc:
                problems[f"{where}.{op}"] = exc.message
    return value


def _check_limits(value: object, current: object, problems: dict[str, str]) -> object:
    if not isinstance(value, dict) or set(value) - {"body_bytes", "upload_bytes"}:
        problems["limits"] = "must be {body_bytes, upload_bytes}"
        return None
    merged = {**(current if isinstance(current, dict) else {}), **value}
    if not _int(merged.get("body_bytes"), 1024, 64 * 1024 * 1024):
        problems["limits.body_bytes"] = "must be between 1 KiB and 64 MiB"
    if not _int(merged.get("upload_bytes"), 1024, 64 * 1024**3):
        problems["limits.upload_bytes"] = "must be between 1 KiB and 64 GiB"
    return merged


_CHECKS: Final = {
    "allowed_origins": _check_origins,
    "app_url": _check_app_url,
    "session_ttl_days": _check_ttl,
    "smtp": _check_smtp,
    "oauth": _check_oauth,
    "rate_limits": _check_rate_limits,
    "channels": _check_channels,
    "limits": _check_limits,
}


SETTINGS_COLLECTION: Final = "_settings"
_SETTINGS_ID: Final = "settings"


class SettingsService:
    """Loads a backpack's settings once and keeps them current; every change is stored first."""

    def __init__(self, data: DataService) -> None:
        self.data = data
        self.current = default_settings()
        self._version = 0
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await self.data.ensure_system_collection(system_collection(SETTINGS_COLLECTION))
        await self.reload()

    async def reload(self) -> None:
        """Read the stored settings again (at open, and when another process changed them)."""
        found = await self.data.storage.get(SETTINGS_COLLECTION, _SETTINGS_ID)
        if found is not None:
            stored = jsonutil.loads(found.doc)
            values = copy.deepcopy(dict(DEFAULTS))
            values.update({k: v for k, v in stored["values"].items() if k in DEFAULTS})
            self.current = Settings(values)
            self._version = found.version

    def get(self, caller: Caller) -> JSONObject:
        require_admin(caller, "read the settings")
        return self.current.public_json()

    async def update(self, caller: Caller, patch: JSON) -> JSONObject:
        require_admin(caller, "change the settings")
        async with self._lock:
            updated = apply_settings_patch(self.current, patch)
            version = self._version + 1
            doc = jsonutil.dumps_str(
                {"id": _SETTINGS_ID, "version": version, "values": dict(updated.values)}
            )
            op: WriteOp
            if self._version == 0:
                op = Insert(SETTINGS_COLLECTION, _SETTINGS_ID, version, doc)
            else:
                op = Update(SETTINGS_COLLECTION, _SETTINGS_ID, self._version, version, doc)
            await self.data.storage.apply([op])
            self.current, self._version = updated, version
        self.data.events.publish([ConfigEvent("settings")])
        return self.current.public_json()
