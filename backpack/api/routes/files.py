"""/api/files and /api/buckets: upload, list, serve (ranges, thumbnails, signed URLs), change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime

from backpack.api import schemas
from backpack.api.context import InstanceContext
from backpack.api.http import (
    Param,
    Request,
    Response,
    Route,
    empty_response,
    json_response,
    not_modified,
    raw_json_response,
)
from backpack.api.multipart import (
    MAX_FIELD_BYTES,
    PartHeaders,
    multipart_events,
    raw_body_chunks,
)
from backpack.api.routes.records import IF_MATCH, LIST_PARAMS, page_body
from backpack.core.access import Caller
from backpack.core.query import parse_list_params
from backpack.core.records import parse_if_match
from backpack.errors import BadRequest, Forbidden, RangeNotSatisfiable, UnsupportedMediaType
from backpack.files.service import DEFAULT_BUCKET, Download
from backpack.files.sniff import SNIFF_BYTES, content_disposition, is_inline_safe, sniff_type
from backpack.files.thumbs import THUMB_TYPES, make_thumbnail, parse_thumb
from backpack.types import JSON, Document, JSONObject

FILE_ID = Param("id", "path", {"type": "string"}, "File id", required=True)
BUCKET = Param("name", "path", {"type": "string"}, "Bucket name", required=True)
_MAX_THUMB_SOURCE = 64 * 1024 * 1024
_READ_CHUNK = 1024 * 1024  # fewer thread hops per download; one chunk per request in memory


def _parse_bool(text: str | None, field: str) -> bool:
    if text is None or text == "":
        return False
    if text.lower() in ("true", "1", "on", "yes"):
        return True
    if text.lower() in ("false", "0", "off", "no"):
        return False
    raise BadRequest(f"'{field}' must be true or false.", {"field": field})


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single satisfiable range; None to send everything."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multiple ranges: serve the whole file (RFC 9110 allows it)
    first, dash, last = spec.strip().partition("-")
    unsatisfiable = RangeNotSatisfiable(
        f"The range {spec.strip()[:50]!r} cannot be served from {size} bytes.", size
    )
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()):
        return None
    if last and not last.isdigit():
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - suffix), size
    start = int(first)
    end = int(last) + 1 if last else size
    if start >= size or end <= start:
        raise unsatisfiable
    return start, min(end, size)


def routes(ctx: InstanceContext) -> list[Route]:
    files = ctx.files

    async def file_chunks(events: AsyncIterator[tuple[str, object]]) -> AsyncIterator[bytes]:
        async for kind, value in events:
            if kind == "data":
                assert isinstance(value, bytes)
                yield value
            elif kind == "end_part":
                return
        raise BadRequest("The multipart body ended inside the file (truncated upload).")

    async def field_value(events: AsyncIterator[tuple[str, object]], name: str) -> str:
        data = bytearray()
        async for kind, value in events:
            if kind == "data":
                assert isinstance(value, bytes)
                data.extend(value)
                if len(data) > MAX_FIELD_BYTES:
                    raise BadRequest(f"The form field '{name[:50]}' is too long.")
            elif kind == "end_part":
                return data.decode("utf-8", "replace")
        raise BadRequest("The multipart body ended inside a field.")

    async def upload(request: Request) -> Response:
        caller = await ctx.caller(request)
        events = multipart_events(request)
        fields: dict[str, str] = {}
        stored: Document | None = None
        async for kind, value in events:
            if kind != "part":
                continue
            assert isinstance(value, PartHeaders)
            if value.name == "file":
                if stored is not None:
                    raise BadRequest("Upload one file per request.")
                stored = await files.upload(
                    caller,
                    fields.get("bucket") or DEFAULT_BUCKET,
                    fields.get("name") or value.filename or "file",
                    _parse_bool(fields.get("public"), "public"),
                    file_chunks(events),
                )
            elif value.name in ("bucket", "name", "public"):
                fields[value.name] = await field_value(events, value.name)
            else:
                raise BadRequest(
                    f"Unknown form field '{value.name[:50]}': send file, bucket, name, public.",
                    {"field": value.name[:50]},
                )
        if stored is None:
            raise BadRequest("The upload has no part named 'file'.", {"field": "file"})
        change: JSONObject = {k: _typed(k, v) for k, v in fields.items()}
        late = {k: v for k, v in change.items() if stored.get(k) != v}
        if late:  # fields sent after the file apply as a change
            stored = await files.update(caller, str(stored["id"]), late)
        return json_response(stored, 201)

    async def list_files(request: Request) -> Response:
        caller = await ctx.caller(request)
        bucket = request.query.get("bucket") or None
        page = await files.list(caller, parse_list_params(request.query), bucket)
        return raw_json_response(page_body(page))

    async def get_file(request: Request) -> Response:
        caller = await ctx.caller(request)
        return json_response(await files.get(caller, request.path_params["id"]))

    async def content(request: Request) -> Response:
        file_id = request.path_params["id"]
        query = request.query
        caller: Caller | None
        if "sig" in query or "expires" in query:
            if not files.check_signature(file_id, query.get("expires", ""), query.get("sig", "")):
                raise Forbidden("The signed URL is invalid or has expired.")
            caller = None
        else:
            caller = await ctx.caller(request)
        download = await files.download(caller, file_id)
        if query.get("thumb"):
            return await thumbnail(request, download, query["thumb"])
        return await serve(request, download, _parse_bool(query.get("download"), "download"))

    async def serve(request: Request, download: Download, attachment: bool) -> Response:
        doc = download.file
        size = int(str(doc["size"]))
        mime = str(doc["type"])
        etag = f'"{doc["sha256"]}"'
        modified = datetime.strptime(str(doc["updated"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC
        )
        headers = [
            (b"etag", etag.encode()),
            (b"last-modified", format_datetime(modified, usegmt=True).encode()),
            (b"accept-ranges", b"bytes"),
            (b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; sandbox"),
            (b"cache-control", b"private, max-age=0, must-revalidate"),
        ]
        inline = not attachment and is_inline_safe(mime)
        headers.append(
            (b"content-disposition", content_disposition(str(doc["name"]), not inline).encode())
        )
        if not_modified(
            request.headers.get("if-none-match"),
            request.headers.get("if-modified-since"),
            etag,
            modified.timestamp(),
        ):
            return Response(304, content_type=None, headers=headers)
        byte_range = None
        if_range = request.headers.get("if-range")
        if if_range is None or if_range == etag:
            byte_range = _byte_range(request.headers.get("range"), size)
        start, end = byte_range or (0, size)
        status = 206 if byte_range is not None else 200
        if status == 206:
            headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
        if end == start:
            return Response(status, b"", mime.encode(), headers)
        if request.method == "HEAD":  # the headers of the GET, Content-Length included
            return Response(status, b"", mime.encode(), headers, _no_bytes(), end - start)
        stream = await files.blobs.read(download.key, start, end, chunk_size=_READ_CHUNK)
        return Response(status, b"", mime.encode(), headers, stream, end - start)

    async def thumbnail(request: Request, download: Download, spec_text: str) -> Response:
        spec = parse_thumb(spec_text)
        mime = str(download.file["type"]).split(";")[0]
        if mime not in THUMB_TYPES:
            raise UnsupportedMediaType(
                f"Thumbnails are made of JPEG, PNG, GIF and WebP images, not {mime}.",
                {"type": mime},
            )
        cached = await files.blobs.get_derived(download.key, spec.name)
        if cached is not None:
            data, thumb_type = cached, sniff_type(cached[:SNIFF_BYTES])
        else:
            size = int(str(download.file["size"]))
            source = await _read_all(await files.blobs.read(download.key), size)
            data, thumb_type = await asyncio.to_thread(make_thumbnail, source, mime, spec)
            await files.blobs.put_derived(download.key, spec.name, data)
        headers = [
            (b"etag", f'"{download.key}-{spec.name}"'.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"private, max-age=0, must-revalidate"),
        ]
        if request.headers.get("if-none-match") == headers[0][1].decode():
            return Response(304, content_type=None, headers=headers)
        return Response(200, data, thumb_type.encode(), headers)

    async def replace_content(request: Request) -> Response:
        caller = await ctx.caller(request)
        if_match = parse_if_match(request.headers.get("if-match"))
        doc = await files.replace_content(
            caller, request.path_params["id"], raw_body_chunks(request), if_match
        )
        return json_response(doc)

    async def update_file(request: Request) -> Response:
        caller = await ctx.caller(request)
        if_match = parse_if_match(request.headers.get("if-match"))
        body = await ctx.body(request)
        return json_response(await files.update(caller, request.path_params["id"], body, if_match))

    async def delete_file(request: Request) -> Response:
        caller = await ctx.caller(request)
        if_match = parse_if_match(request.headers.get("if-match"))
        await files.delete(caller, request.path_params["id"], if_match)
        return empty_response()

    async def signed_url(request: Request) -> Response:
        caller = await ctx.caller(request)
        body = await ctx.body(request)
        file_id = request.path_params["id"]
        query = await files.signed_query(caller, file_id, body)
        base = request.origin + (request.scope.get("root_path") or "")
        return json_response({"url": f"{base}/api/files/{file_id}/content?{query}"})

    async def list_buckets(request: Request) -> Response:
        return json_response({"items": files.list_buckets(await ctx.caller(request))})

    async def get_bucket(request: Request) -> Response:
        caller = await ctx.caller(request)
        return json_response(files.get_bucket(caller, request.path_params["name"]))

    async def put_bucket(request: Request) -> Response:
        caller = await ctx.caller(request)
        body = await ctx.body(request)
        return json_response(await files.put_bucket(caller, request.path_params["name"], body))

    tag = "files"
    one = (FILE_ID,)
    content_params = (
        FILE_ID,
        Param("download", "query", {"type": "boolean"}, "Force an attachment"),
        Param("thumb", "query", {"type": "string"}, "WxH, Wx0, 0xH or WxHf for images"),
        Param("expires", "query", {"type": "string"}, "Signed URL expiry"),
        Param("sig", "query", {"type": "string"}, "Signed URL signature"),
    )
    return [
        Route(
            "POST",
            "/api/files",
            upload,
            "Upload a file (multipart: file, bucket, name, public)",
            tag,
            body_media="multipart/form-data",
            body=schemas.UPLOAD,
            responses={201: schemas.FILE},
        ),
        Route(
            "GET",
            "/api/files",
            list_files,
            "List files",
            tag,
            params=(*LIST_PARAMS, Param("bucket", "query", {"type": "string"}, "Bucket")),
            responses={200: schemas.FILE_PAGE},
        ),
        Route(
            "GET",
            "/api/files/{id}",
            get_file,
            "File metadata",
            tag,
            params=one,
            responses={200: schemas.FILE},
        ),
        Route(
            "GET",
            "/api/files/{id}/content",
            content,
            "The file's bytes",
            tag,
            params=content_params,
            responses={200: "binary", 206: "binary", 304: None},
        ),
        Route(
            "PUT",
            "/api/files/{id}/content",
            replace_content,
            "Replace the file's bytes",
            tag,
            params=(*one, IF_MATCH),
            body_media="application/octet-stream",
            body={"type": "string", "format": "binary"},
            responses={200: schemas.FILE},
        ),
        Route(
            "PATCH",
            "/api/files/{id}",
            update_file,
            "Rename, move or publish a file",
            tag,
            params=(*one, IF_MATCH),
            body=schemas.FILE_PATCH,
            responses={200: schemas.FILE},
        ),
        Route(
            "DELETE",
            "/api/files/{id}",
            delete_file,
            "Delete a file",
            tag,
            params=(*one, IF_MATCH),
            responses={204: None},
        ),
        Route(
            "POST",
            "/api/files/{id}/url",
            signed_url,
            "A signed, expiring download URL",
            tag,
            params=one,
            body=schemas.SIGNED_URL_INPUT,
            responses={200: schemas.SIGNED_URL},
        ),
        Route(
            "GET",
            "/api/buckets",
            list_buckets,
            "List buckets",
            "buckets",
            responses={200: schemas.BUCKET_LIST},
        ),
        Route(
            "GET",
            "/api/buckets/{name}",
            get_bucket,
            "A bucket's rules and limits",
            "buckets",
            params=(BUCKET,),
            responses={200: schemas.BUCKET},
        ),
        Route(
            "PUT",
            "/api/buckets/{name}",
            put_bucket,
            "Create or configure a bucket",
            "buckets",
            params=(BUCKET,),
            body=schemas.BUCKET_INPUT,
            responses={200: schemas.BUCKET},
        ),
    ]


def _typed(key: str, value: str) -> JSON:
    return _parse_bool(value, key) if key == "public" else value


async def _no_bytes() -> AsyncIterator[bytes]:
    return
    yield b""


async def _read_all(chunks: AsyncIterator[bytes], size: int) -> bytes:
    if size > _MAX_THUMB_SOURCE:
        raise BadRequest("The image is too large to make a thumbnail of.")
    return b"".join([chunk async for chunk in chunks])
