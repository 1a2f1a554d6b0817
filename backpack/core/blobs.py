"""The blob store seam: what the files service needs from a place to keep bytes.

Blobs are content-addressed: a blob's key is the sha256 of its bytes, in
lowercase hex, so identical uploads are stored once and a key never changes
meaning. A blob is streamed in and out in chunks and is never held whole in
memory. Beside each blob the store keeps small derived data (thumbnails,
previews) under short names; deleting the blob deletes them too.

Adapters (local directory, S3 bucket) live in `backpack.blobs`; every adapter
passes tests/contract/test_blob_contract.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

DEFAULT_CHUNK_SIZE = 256 * 1024

_KEY = re.compile(r"[0-9a-f]{64}")
_DERIVED_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str  # the sha256 of the content, lowercase hex
    size: int
    sha256: str


def check_key(key: str) -> str:
    """`key` when it is 64 lowercase hex digits; ValueError otherwise, so no key names a path."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError("A blob key is 64 lowercase hexadecimal digits (a sha256).")
    return key


def check_derived_name(name: str) -> str:
    """`name` when it is 1 to 64 letters, digits, '.', '_' or '-' and not '.' or '..'."""
    if not isinstance(name, str) or not _DERIVED_NAME.fullmatch(name) or name in {".", ".."}:
        raise ValueError("A derived name is 1 to 64 letters, digits, '.', '_' or '-'.")
    return name


def check_range(start: int, end: int | None, chunk_size: int) -> None:
    """Refuse a range that cannot mean anything: a negative start, an end before it."""
    if start < 0:
        raise ValueError("A read cannot start before the first byte.")
    if end is not None and end < start:
        raise ValueError("A read cannot end before it starts.")
    if chunk_size < 1:
        raise ValueError("A read needs a chunk size of at least one byte.")


def over_limit_message(max_bytes: int) -> str:
    return f"The upload is larger than the limit of {max_bytes} bytes."


async def single_chunk(data: bytes) -> AsyncIterator[bytes]:
    """`data` as a stream of one chunk, for `put_bytes`."""
    yield data


class BlobStore(Protocol):
    async def open(self) -> None:
        """Make the store ready (create directories, check the bucket) and clear stale uploads."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used after this."""
        ...

    async def put(self, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None) -> BlobInfo:
        """Store the bytes of `chunks`, hashing them on the way, and name them by their sha256.

        Memory stays flat whatever the size. Content already stored is kept
        once. Durable when this returns. When the stream passes `max_bytes`
        this raises PayloadTooLarge; when `chunks` raises, that error goes
        on; either way nothing of the upload is left behind.
        """
        ...

    async def put_bytes(self, data: bytes) -> BlobInfo:
        """`put` for bytes already in memory."""
        ...

    async def read(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncIterator[bytes]:
        """A stream of the blob's bytes [start, end), in chunks of at most `chunk_size`.

        Awaiting this checks the blob: NotFound when it is missing, before any
        byte is sent. `end` past the blob's size is clipped; a start at or
        past the end gives an empty stream.
        """
        ...

    async def size(self, key: str) -> int | None:
        """The blob's size in bytes, or None when it is missing."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob and its derived data; deleting a missing blob is not an error."""
        ...

    async def put_derived(self, key: str, name: str, data: bytes) -> None:
        """Keep small derived `data` beside the blob under `name`, replacing any before.

        NotFound when the blob itself is missing.
        """
        ...

    async def get_derived(self, key: str, name: str) -> bytes | None:
        """The derived data kept under `name`, or None."""
        ...

    async def usage(self) -> int:
        """Total bytes stored, blobs and derived data, each blob counted once.

        Walks the whole store: for monitoring, not for a request's path.
        """
        ...
