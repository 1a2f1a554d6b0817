"""The OpenAPI 3.1 document and docs page, generated from the live route table."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from backpack import __version__
from backpack.api import schemas
from backpack.api.http import Route

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
    206: "Partial content",
    304: "Not modified",
}


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": route.handler.__name__,
    }
    if route.params:
        operation["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "schema": dict(p.schema),
                "description": p.description,
            }
            for p in route.params
        ]
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {route.body_media: {"schema": dict(route.body)}},
        }
    responses: dict[str, Any] = {}
    for status, schema in route.responses.items():
        entry: dict[str, Any] = {"description": _STATUS_TEXT.get(status, str(status))}
        if schema == "binary":
            entry["content"] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
        elif isinstance(schema, dict):
            entry["content"] = {"application/json": {"schema": dict(schema)}}
        responses[str(status)] = entry
    responses["default"] = {
        "description": "Error",
        "content": {"application/json": {"schema": schemas.ERROR}},
    }
    operation["responses"] = responses
    if route.auth:
        operation["security"] = [{}, {"bearer": []}]
    return operation


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Backpack API",
            "version": __version__,
            "description": "The API of one backpack: collections, records and queries.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A secret key (bpk_…) or a user session (bps_…).",
                }
            }
        },
    }


def docs_page(routes: Sequence[Route]) -> str:
    rows = []
    for route in routes:
        params = ", ".join(f"{p.name} ({p.where})" for p in route.params) or "—"
        method, path = html.escape(route.method), html.escape(route.path)
        rows.append(
            f"<tr><td><code>{method}</code></td><td><code>{path}</code></td>"
            f"<td>{html.escape(route.summary)}</td><td>{html.escape(params)}</td></tr>"
        )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<title>Backpack API</title><style>"
        "body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem}"
        "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;"
        "padding:.4rem;text-align:left;vertical-align:top}code{font-size:14px}"
        "</style></head><body><h1>Backpack API</h1>"
        f"<p>Version {html.escape(__version__)}. Machine-readable: "
        "<a href='openapi.json'>openapi.json</a> (OpenAPI 3.1).</p>"
        "<table><thead><tr><th>Method</th><th>Path</th><th>What</th><th>Parameters</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table></body></html>"
    )
