"""Streaming multipart/form-data: parts arrive as events while the body is still coming in.

The push parser of python-multipart is turned into a pull-based async stream,
so a file part can be handed to the blob store as an async iterator of chunks
and never sits in memory whole.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from backpack.api.http import Request
from backpack.errors import BadRequest, UnsupportedMediaType

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 16
MAX_HEADER_BYTES = 16 * 1024  # long file names are shortened later, not refused here


class ClientDisconnected(BadRequest):
    """The client went away before the body was complete (no one reads the answer)."""

    def __init__(self) -> None:
        super().__init__("The client disconnected before the upload was complete.")


@dataclass
class PartHeaders:
    name: str
    filename: str | None
    content_type: str


@dataclass
class _Events:
    queue: deque[tuple[str, object]] = field(default_factory=deque)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[str, str] = field(default_factory=dict)


def boundary_of(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "")
    media, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType(
            "Send the upload as multipart/form-data with a boundary.",
            {"content_type": content_type[:100]},
        )
    if len(boundary) > 200:
        raise BadRequest("The multipart boundary is too long.")
    return bytes(boundary)


async def multipart_events(request: Request) -> AsyncIterator[tuple[str, object]]:
    """("part", PartHeaders), ("data", bytes), ("end_part", None), ... then ("end", None)."""
    events = _Events()

    def on_part_begin() -> None:
        events.headers = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        events.header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        events.header_value.extend(data[start:end])

    def on_header_end() -> None:
        name = events.header_field.decode("latin-1").lower()
        events.headers[name] = events.header_value.decode("utf-8", "replace")
        events.header_field.clear()
        events.header_value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(events.headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        content_type = events.headers.get("content-type", "application/octet-stream")
        events.queue.append(("part", PartHeaders(name, filename, content_type)))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        # Most of a file arrives as whole received chunks: pass those on without a copy.
        whole = start == 0 and end == len(data)
        events.queue.append(("data", data if whole else data[start:end]))

    def on_part_end() -> None:
        events.queue.append(("end_part", None))

    def on_end() -> None:
        events.queue.append(("end", None))

    parser = MultipartParser(
        boundary_of(request),
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
        max_header_size=MAX_HEADER_BYTES,
    )
    parts = 0
    ended = False
    while not ended:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk: bytes = message.get("body", b"")
        if chunk:
            try:
                parser.write(chunk)
            except Exception as exc:  # python-multipart raises several error types
                raise BadRequest(f"The multipart body is malformed: {exc}.") from None
        while events.queue:
            kind, value = events.queue.popleft()
            if kind == "part":
                parts += 1
                if parts > MAX_PARTS:
                    raise BadRequest(f"An upload has at most {MAX_PARTS} parts.")
            yield kind, value
            if kind == "end":
                ended = True
        if not message.get("more_body", False) and not ended:
            raise BadRequest("The multipart body ended early (truncated upload).")


async def raw_body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives (for PUT …/content)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
