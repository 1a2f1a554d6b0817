"""Errors of the Backpack client, and the argument checks and request plumbing
shared by the sync and async clients (standard library and httpx only)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import urlencode

import httpx

__all__ = [
    "BackpackConnectionError",
    "BackpackError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InvalidQuery",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
]

JSONDict = dict[str, Any]
JSONList = list[JSONDict]
StrList = list[str]
AnyList = list[Any]
MappingList = list[Mapping[str, Any]]

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
COLLECTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
THUMB_RE = re.compile(r"^\d{1,4}x\d{1,4}f?$")
CHANNEL_RE = re.compile(r"^[A-Za-z0-9:_.\-]{1,128}$")

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "rate_limited",
    500: "internal",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


class BackpackError(Exception):
    """A request the server refused, with the contract's error body and the request id."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        rid = f", request {self.request_id}" if self.request_id else ""
        return f"{self.status} {self.code}: {self.message}{rid}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )


class BackpackConnectionError(BackpackError):
    """The server could not be reached (refused, timed out, DNS, TLS...)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "network_error", message)


class BadRequest(BackpackError):
    """400 bad_request (and the base of the other 400 codes)."""


class ValidationFailed(BadRequest):
    """400 validation_failed: details["fields"] maps a field path to a sentence."""


class InvalidQuery(BadRequest):
    """400 invalid_query: a filter, sort or cursor the server cannot use."""


class Unauthorized(BackpackError):
    """401: missing, wrong, expired or revoked credentials."""


class Forbidden(BackpackError):
    """403."""


class NotFound(BackpackError):
    """404 (also a record the caller may not see)."""


class Conflict(BackpackError):
    """409: unique violation or version (If-Match) mismatch."""


class PayloadTooLarge(BackpackError):
    """413."""


class UnsupportedMediaType(BackpackError):
    """415."""


class RateLimited(BackpackError):
    """429: retry_after says how many seconds to wait."""


class ServerError(BackpackError):
    """5xx."""


_BY_CODE: dict[str, type[BackpackError]] = {
    "bad_request": BadRequest,
    "validation_failed": ValidationFailed,
    "invalid_query": InvalidQuery,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "payload_too_large": PayloadTooLarge,
    "unsupported_media_type": UnsupportedMediaType,
    "rate_limited": RateLimited,
}


def make_error(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> BackpackError:
    cls = _BY_CODE.get(code)
    if cls is None:
        if status >= 500:
            cls = ServerError
        elif status == 400:
            cls = BadRequest
        else:
            cls = BackpackError
    return cls(status, code, message, details, request_id, retry_after)


def error_from_body(
    status: int, text: str, request_id: str | None, retry_after: str | None = None
) -> BackpackError:
    """The typed error for an error response; a proxy's HTML page becomes one too."""
    body: Any = None
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {}
    details = err.get("details") if isinstance(err.get("details"), dict) else {}
    e_status = err.get("status")
    code = err.get("code")
    message = err.get("message")
    retry: float | None = None
    if retry_after:
        try:
            retry = float(retry_after)
        except ValueError:
            retry = None
    return make_error(
        e_status if isinstance(e_status, int) and not isinstance(e_status, bool) else status,
        code
        if isinstance(code, str)
        else STATUS_CODES.get(status, "internal" if status >= 500 else "bad_request"),
        message if isinstance(message, str) else f"The server answered {status}.",
        details,
        request_id or (details.get("request_id") if isinstance(details, dict) else None),
        retry,
    )


# ---------------------------------------------------------------- argument checks


def check_id(value: object, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise ValueError(
            f"{what} must be a string of 1..64 letters, digits, '_' or '-' (got {value!r})"
        )
    return value


def check_collection(value: object, what: str = "collection name") -> str:
    if not isinstance(value, str) or not COLLECTION_RE.match(value):
        raise ValueError(f"invalid {what} {value!r}")
    return value


def check_dict(value: object, what: str) -> JSONDict:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict (got {type(value).__name__})")
    return dict(value)


def check_email(email: object) -> str:
    if not isinstance(email, str) or "@" not in email:
        raise ValueError("email must be an email address")
    return email


def check_password(password: object) -> str:
    if not isinstance(password, str):
        raise TypeError("password must be a string")
    if not 8 <= len(password) <= 256:
        raise ValueError("password must be 8..256 characters")
    return password


def check_token(token: object, what: str) -> str:
    if not isinstance(token, str) or not token:
        raise ValueError(f"{what} must be a non-empty string")
    return token


def join_list(value: object, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        items = list(value)
        if all(isinstance(v, str) for v in items):
            return ",".join(items)
    raise TypeError(f"{what} must be a string or a list of strings")


def list_query(
    *,
    filter: object = None,
    sort: object = None,
    limit: object = None,
    after: object = None,
    offset: object = None,
    fields: object = None,
    expand: object = None,
    count: object = False,
) -> dict[str, str]:
    query: dict[str, str] = {}
    if filter is not None:
        if isinstance(filter, str):
            query["filter"] = filter
        else:
            query["filter"] = json.dumps(check_dict(filter, "filter"), separators=(",", ":"))
    s = join_list(sort, "sort")
    if s:
        query["sort"] = s
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise TypeError("limit must be an int")
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be in 1..1000")
        query["limit"] = str(limit)
    if offset is not None:
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError("offset must be a non-negative int")
        query["offset"] = str(offset)
    if after is not None:
        if not isinstance(after, str):
            raise TypeError("after must be the `next` cursor of a previous page")
        query["after"] = after
    f = join_list(fields, "fields")
    if f:
        query["fields"] = f
    e = join_list(expand, "expand")
    if e:
        query["expand"] = e
    if count:
        query["count"] = "true"
    return query


def if_match_header(if_match: object) -> dict[str, str]:
    """If-Match from a version number, a record (dict with "version") or an ETag string."""
    if if_match is None:
        return {}
    if isinstance(if_match, bool):
        raise TypeError("if_match must be a version number, a record or an ETag string")
    if isinstance(if_match, int):
        return {"If-Match": f'"{if_match}"'}
    if isinstance(if_match, Mapping) and isinstance(if_match.get("version"), int):
        return {"If-Match": f'"{if_match["version"]}"'}
    if isinstance(if_match, str) and if_match:
        if if_match == "*" or if_match.startswith('"') or if_match.startswith("W/"):
            return {"If-Match": if_match}
        return {"If-Match": f'"{if_match}"'}
    raise TypeError("if_match must be a version number, a record or an ETag string")


def if_match_version(if_match: object) -> int | None:
    header = if_match_header(if_match).get("If-Match")
    if header is None:
        return None
    digits = header.removeprefix("W/").strip('"')
    if not digits.isdigit():
        raise ValueError("a batch if_match must be a version number or a record")
    return int(digits)


def check_thumb(thumb: object) -> str | None:
    if thumb is None:
        return None
    if not isinstance(thumb, str) or not THUMB_RE.match(thumb):
        raise ValueError("thumb must look like '200x200', '200x0' or '200x200f'")
    return thumb


def build_url(base: str, path: str, query: Mapping[str, str | None] | None = None) -> str:
    url = base + path
    if query:
        clean = {k: v for k, v in query.items() if v is not None}
        if clean:
            url += "?" + urlencode(clean)
    return url


def normalize_base_url(base_url: object) -> str:
    if not isinstance(base_url, str) or not re.match(r"^https?://", base_url, re.I):
        raise ValueError("base_url must be the backpack's URL, e.g. http://localhost:8000")
    return base_url.rstrip("/")


def check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    return float(timeout)


@dataclass
class UploadParts:
    """The multipart body of an upload: form fields first, then the file."""

    data: dict[str, str]
    name: str
    stream: BinaryIO | bytes
    close: BinaryIO | None = None


def upload_parts(data: object, *, bucket: object, name: object, public: object) -> UploadParts:
    fields: dict[str, str] = {}
    if bucket is not None:
        fields["bucket"] = check_collection(bucket, "bucket name")
    if public is not None:
        if not isinstance(public, bool):
            raise TypeError("public must be a bool")
        fields["public"] = "true" if public else "false"
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError("name must be a non-empty string")
    to_close: BinaryIO | None = None
    stream: BinaryIO | bytes
    if isinstance(data, (bytes, bytearray, memoryview)):
        stream = bytes(data)
        file_name = name or "file"
    elif isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {path!r}")
        to_close = stream = open(path, "rb")  # noqa: SIM115 - closed after the upload
        file_name = name or os.path.basename(path)
    elif hasattr(data, "read"):
        stream = data  # type: ignore[assignment]
        raw_name = getattr(data, "name", None)
        file_name = name or (
            os.path.basename(raw_name) if isinstance(raw_name, str) and raw_name else "file"
        )
    else:
        raise TypeError("upload takes bytes, a binary file object or a path")
    assert isinstance(file_name, str)
    fields["name"] = file_name
    return UploadParts(fields, file_name, stream, to_close)


@dataclass
class Page:
    """One page of a list: items, the cursor of the next page (or None), total if asked."""

    items: list[JSONDict]
    next: str | None = None
    total: int | None = None
    raw: JSONDict = field(default_factory=dict, repr=False)

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def from_body(cls, body: Any) -> Page:
        if not isinstance(body, dict):
            raise BackpackError(
                0, "bad_response", "The server answered a list that is not an object."
            )
        total = body.get("total")
        return cls(
            list(body.get("items") or []),
            body.get("next"),
            total if isinstance(total, int) else None,
            body,
        )


def handle_response(response: httpx.Response) -> Any:
    """The parsed JSON of a successful response (None for 204); raises the typed error otherwise."""
    request_id = response.headers.get("x-request-id")
    if response.status_code >= 400:
        raise error_from_body(
            response.status_code, response.text, request_id, response.headers.get("retry-after")
        )
    if response.status_code in (204, 304) or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise BackpackError(
            response.status_code,
            "bad_response",
            "The server answered with something that is not JSON.",
            request_id=request_id,
        ) from None


def raise_for_error_stream(response: httpx.Response, text: str) -> None:
    if response.status_code >= 400:
        raise error_from_body(
            response.status_code,
            text,
            response.headers.get("x-request-id"),
            response.headers.get("retry-after"),
        )


def connection_error(base_url: str, exc: Exception) -> BackpackConnectionError:
    kind = type(exc).__name__
    return BackpackConnectionError(f"Could not reach {base_url}: {kind}: {exc}")
