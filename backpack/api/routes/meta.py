"""GET /api/openapi.json and /api/docs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from backpack.api.context import InstanceContext
from backpack.api.http import Request, Response, Route, json_response
from backpack.api.openapi import docs_page, openapi_document


def routes(ctx: InstanceContext, all_routes: Callable[[], Sequence[Route]]) -> list[Route]:
    async def openapi(request: Request) -> Response:
        return json_response(openapi_document(all_routes()))

    async def docs(request: Request) -> Response:
        return Response(
            200, docs_page(all_routes()).encode(), content_type=b"text/html; charset=utf-8"
        )

    return [
        Route(
            "GET",
            "/api/openapi.json",
            openapi,
            "This document (OpenAPI 3.1)",
            "meta",
            responses={200: {"type": "object"}},
            auth=False,
        ),
        Route(
            "GET",
            "/api/docs",
            docs,
            "Human-readable API reference",
            "meta",
            responses={200: None},
            auth=False,
        ),
    ]
