"""Every error Backpack reports to a caller, drawn once.

    BackpackError                 500 internal
    ├── BadRequest                400 bad_request
    │   ├── ValidationFailed      400 validation_failed   (details.fields: path → sentence)
    │   └── InvalidQuery          400 invalid_query
    ├── Unauthorized              401 unauthorized
    ├── Forbidden                 403 forbidden
    ├── NotFound                  404 not_found
    ├── MethodNotAllowed          405 method_not_allowed
    ├── Conflict                  409 conflict
    ├── PayloadTooLarge           413 payload_too_large
    ├── RangeNotSatisfiable       416 range_not_satisfiable (Content-Range: bytes */size)
    ├── UnsupportedMediaType      415 unsupported_media_type
    ├── RateLimited               429 rate_limited        (Retry-After)
    └── Unavailable               503 unavailable

The API layer turns any of these into the contract's error body
`{"error": {"status", "code", "message", "details"}}`; anything else that
escapes a handler becomes `internal` with no trace and the request id.
"""

from __future__ import annotations

from typing import ClassVar

from backpack.types import JSON


class BackpackError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, details: dict[str, JSON] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, JSON] = details if details is not None else {}
        self.op_index: int | None = None  # which op of a storage apply() failed

    def body(self) -> dict[str, JSON]:
        return {
            "error": {
                "status": self.status,
                "code": self.code,
                "message": self.message,
                "details": self.details,
            }
        }


class BadRequest(BackpackError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    code = "validation_failed"

    def __init__(
        self,
        message: str,
        fields: dict[str, str] | None = None,
        details: dict[str, JSON] | None = None,
    ) -> None:
        merged: dict[str, JSON] = dict(details or {})
        merged["fields"] = dict(fields or {})
        super().__init__(message, merged)
        self.fields = dict(fields or {})


class InvalidQuery(BadRequest):
    code = "invalid_query"


class Unauthorized(BackpackError):
    status = 401
    code = "unauthorized"


class Forbidden(BackpackError):
    status = 403
    code = "forbidden"


class NotFound(BackpackError):
    status = 404
    code = "not_found"


class MethodNotAllowed(BackpackError):
    status = 405
    code = "method_not_allowed"


class Conflict(BackpackError):
    status = 409
    code = "conflict"


class PayloadTooLarge(BackpackError):
    status = 413
    code = "payload_too_large"


class RangeNotSatisfiable(BackpackError):
    status = 416
    code = "range_not_satisfiable"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message, {"size": size})
        self.size = size


class UnsupportedMediaType(BackpackError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(BackpackError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"retry_after": retry_after})
        self.retry_after = retry_after


class Unavailable(BackpackError):
    status = 503
    code = "unavailable"


__all__ = [
    "BackpackError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InvalidQuery",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
]
