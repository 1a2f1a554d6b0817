"""/api/collections/{c}/records and /api/batch."""

from __future__ import annotations

from backpack.api import schemas
from backpack.api.context import InstanceContext
from backpack.api.http import (
    Param,
    Request,
    Response,
    Route,
    empty_response,
    json_response,
    raw_json_response,
)
from backpack.core import jsonutil
from backpack.core.query import parse_list_params
from backpack.core.records import RecordPage, parse_if_match

COLLECTION = Param(
    "collection",
    "path",
    {"type": "string", "examples": ["items"]},
    "Collection name",
    required=True,
)
RECORD_ID = Param(
    "id", "path", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, "Record id", required=True
)
IF_MATCH = Param("If-Match", "header", {"type": "string"}, 'Expected version, e.g. "3"')
LIST_PARAMS = (
    Param("filter", "query", {"type": "string"}, "Filter, JSON in MongoDB query syntax"),
    Param("sort", "query", {"type": "string"}, "Comma-separated paths, '-' for descending"),
    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"),
    Param("after", "query", {"type": "string"}, "Cursor from a previous page's `next`"),
    Param("offset", "query", {"type": "integer", "minimum": 0}, "Rows to skip"),
    Param("fields", "query", {"type": "string"}, "Comma-separated paths to return"),
    Param("count", "query", {"type": "boolean"}, "Add the total count"),
    Param("expand", "query", {"type": "string"}, "Relation fields to expand"),
)


def page_body(page: RecordPage) -> bytes:
    """A list response assembled from stored JSON text, without re-encoding the records."""
    body = b'{"items":[' + ",".join(page.docs).encode() + b'],"next":' + jsonutil.dumps(page.next)
    if page.total is not None:
        body += b',"total":' + str(page.total).encode()
    return body + b"}"


def _etag(version: object) -> list[tuple[bytes, bytes]]:
    return [(b"etag", f'"{version}"'.encode())]


def routes(ctx: InstanceContext) -> list[Route]:
    data = ctx.data

    async def list_records(request: Request) -> Response:
        caller = await ctx.caller(request)
        page = await data.list_records(
            caller, request.path_params["collection"], parse_list_params(request.query)
        )
        return raw_json_response(page_body(page))

    async def create_record(request: Request) -> Response:
        caller = await ctx.caller(request)
        record = await data.create_record(
            caller, request.path_params["collection"], await ctx.body(request)
        )
        return json_response(record, 201, _etag(record["version"]))

    async def get_record(request: Request) -> Response:
        found = await data.get_record(
            await ctx.caller(request), request.path_params["collection"], request.path_params["id"]
        )
        etag = f'"{found.version}"'
        if request.headers.get("if-none-match") == etag:
            return Response(304, content_type=None, headers=[(b"etag", etag.encode())])
        return raw_json_response(found.doc.encode(), headers=[(b"etag", etag.encode())])

    async def write_record(request: Request, *, merge: bool) -> Response:
        caller = await ctx.caller(request)
        if_match = parse_if_match(request.headers.get("if-match"))
        record = await data.update_record(
            caller,
            request.path_params["collection"],
            request.path_params["id"],
            await ctx.body(request),
            merge=merge,
            if_match=if_match,
        )
        return json_response(record, headers=_etag(record["version"]))

    async def replace_record(request: Request) -> Response:
        return await write_record(request, merge=False)

    async def patch_record(request: Request) -> Response:
        return await write_record(request, merge=True)

    async def delete_record(request: Request) -> Response:
        caller = await ctx.caller(request)
        await data.delete_record(
            caller,
            request.path_params["collection"],
            request.path_params["id"],
            parse_if_match(request.headers.get("if-match")),
        )
        return empty_response()

    async def batch(request: Request) -> Response:
        caller = await ctx.caller(request)
        results = await data.batch(caller, await ctx.body(request))
        return json_response({"results": results})

    tag = "records"
    one = (COLLECTION, RECORD_ID)
    return [
        Route(
            "GET",
            "/api/collections/{collection}/records",
            list_records,
            "List records",
            tag,
            params=(COLLECTION, *LIST_PARAMS),
            responses={200: schemas.RECORD_PAGE},
        ),
        Route(
            "POST",
            "/api/collections/{collection}/records",
            create_record,
            "Create a record",
            tag,
            params=(COLLECTION,),
            body=schemas.DOCUMENT,
            responses={201: schemas.RECORD},
        ),
        Route(
            "GET",
            "/api/collections/{collection}/records/{id}",
            get_record,
            "Get a record",
            tag,
            params=one,
            responses={200: schemas.RECORD, 304: None},
        ),
        Route(
            "PUT",
            "/api/collections/{collection}/records/{id}",
            replace_record,
            "Replace a record's document",
            tag,
            params=(*one, IF_MATCH),
            body=schemas.DOCUMENT,
            responses={200: schemas.RECORD},
        ),
        Route(
            "PATCH",
            "/api/collections/{collection}/records/{id}",
            patch_record,
            "Change a record with a JSON merge patch (RFC 7386)",
            tag,
            params=(*one, IF_MATCH),
            body=schemas.DOCUMENT,
            responses={200: schemas.RECORD},
        ),
        Route(
            "DELETE",
            "/api/collections/{collection}/records/{id}",
            delete_record,
            "Delete a record",
            tag,
            params=(*one, IF_MATCH),
            responses={204: None},
        ),
        Route(
            "POST",
            "/api/batch",
            batch,
            "Apply up to 1000 writes atomically",
            tag,
            body=schemas.BATCH_INPUT,
            responses={200: schemas.BATCH_RESULT},
        ),
    ]
