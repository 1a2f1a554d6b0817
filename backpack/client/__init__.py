"""The Python SDK of Backpack: `Client` (sync) and `AsyncClient` (async, with realtime).

    from backpack.client import Client

    with Client("http://localhost:8000") as bp:
        bp.auth.login(email="ada@example.com", password="correct horse")
        bp.collection("todos").create({"title": "Write docs"})

This package depends only on httpx, websockets and the standard library; it never
imports the server.
"""

from backpack.client._async import AsyncClient
from backpack.client._errors import (
    BackpackConnectionError,
    BackpackError,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidQuery,
    NotFound,
    Page,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from backpack.client._realtime import (
    BroadcastEvent,
    ChangeEvent,
    Channel,
    PresenceEvent,
    Realtime,
    Subscription,
)
from backpack.client._sync import Client

__all__ = [
    "AsyncClient",
    "BackpackConnectionError",
    "BackpackError",
    "BadRequest",
    "BroadcastEvent",
    "ChangeEvent",
    "Channel",
    "Client",
    "Conflict",
    "Forbidden",
    "InvalidQuery",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "PresenceEvent",
    "RateLimited",
    "Realtime",
    "ServerError",
    "Subscription",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
]
