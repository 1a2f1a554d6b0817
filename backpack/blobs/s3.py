"""The scale-out blob store: a prefix in an S3 bucket (AWS, MinIO, Ceph, R2 …).

Layout under the prefix:

    blobs/<sha256>             the blob
    derived/<sha256>/<name>    its derived data
    tmp/<random>               uploads in progress

The sha256 is known only once the last byte is in, so an upload larger than
one part streams into a multipart upload under `tmp/`, parts of `part_size`
bytes held one at a time, then is copied server-side to its content key and
the temp object deleted. A smaller upload is buffered (at most one part) and
stored with one PutObject straight under its key. A failed, cancelled or
over-limit upload aborts its multipart upload or deletes its temp object;
whatever a crash leaves in `tmp/` is removed by the next `open` once an hour
old (a bucket lifecycle rule on `tmp/` and incomplete multipart uploads is a
good second net).

Uses aiobotocore: botocore's request signing, retries and credential chain,
over aiohttp, so uploads and ranged reads stream without a thread per request.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from hashlib import sha256
from typing import TYPE_CHECKING

from backpack.core.blobs import (
    DEFAULT_CHUNK_SIZE,
    BlobInfo,
    check_derived_name,
    check_key,
    check_range,
    over_limit_message,
    single_chunk,
)
from backpack.errors import NotFound, PayloadTooLarge, Unavailable

try:
    import aiohttp
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession, get_session
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "The S3 blob store needs the S3 client: pip install 'backpack-baas[s3]'"
    ) from exc

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, CopySourceTypeDef

log = logging.getLogger("backpack.blobs")

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last
MAX_COPY_SIZE = 5 * 1024**3  # S3's ceiling for one CopyObject or UploadPartCopy
_MAX_PARTS = 10_000
_STALE_UPLOAD_AGE = timedelta(hours=1)
_MISSING = {"404", "NoSuchKey", "NotFound"}
_BACKEND_ERRORS = (BotoCoreError, ClientError, aiohttp.ClientError, OSError)


@cache
def _shared_session() -> AioSession:
    """One botocore session for every store: it loads the S3 model once for all their clients."""
    return get_session()


def _is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in _MISSING


@dataclass
class _TempUpload:
    """A multipart upload under `tmp/`, and whether it became a whole temp object yet."""

    key: str
    upload_id: str
    parts: list[CompletedPartTypeDef] = field(default_factory=list)
    completed: bool = False


class S3BlobStore:
    """Blobs as objects under `prefix` in `bucket`; see the module docstring for the layout.

    Credentials left None come from botocore's usual chain (environment,
    shared config, instance role). `endpoint_url` points at an S3-compatible
    server and switches to path-style addressing.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        part_size: int = 8 * 1024 * 1024,
        max_copy_size: int = MAX_COPY_SIZE,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"An S3 part is at least {MIN_PART_SIZE} bytes.")
        if not MIN_PART_SIZE <= max_copy_size <= MAX_COPY_SIZE:
            raise ValueError(f"An S3 copy part is {MIN_PART_SIZE} to {MAX_COPY_SIZE} bytes.")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._session_token = session_token
        self.part_size = part_size
        self._max_copy_size = max_copy_size
        self._stack: AsyncExitStack | None = None
        self._s3: S3Client | None = None
        self._cleanups: set[asyncio.Task[None]] = set()

    # -- keys -------------------------------------------------------------------------------

    def blob_key(self, key: str) -> str:
        return f"{self.prefix}blobs/{check_key(key)}"

    def _derived_prefix(self, key: str) -> str:
        return f"{self.prefix}derived/{check_key(key)}/"

    @property
    def temp_prefix(self) -> str:
        return f"{self.prefix}tmp/"

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        config = AioConfig(
            connect_timeout=10,
            read_timeout=60,
            retries={"mode": "standard", "max_attempts": 3},
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
        )
        stack = AsyncExitStack()
        self._s3 = await stack.enter_async_context(
            _shared_session().create_client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self._region,
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                aws_session_token=self._session_token,
                config=config,
            )
        )
        self._stack = stack
        try:
            with self._errors("reach the bucket"):
                await self._s3.head_bucket(Bucket=self.bucket)
        except BaseException:
            await self.close()
            raise
        try:
            await self._remove_stale_uploads()
        except Unavailable as exc:  # e.g. no permission to list uploads: not worth failing over
            log.warning("Stale uploads under %s were not cleared: %s", self.temp_prefix, exc)

    async def close(self) -> None:
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        stack, self._stack, self._s3 = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def _client(self) -> S3Client:
        if self._s3 is None:
            raise RuntimeError("The S3 blob store is not open.")
        return self._s3

    async def _remove_stale_uploads(self) -> None:
        cutoff = datetime.now(UTC) - _STALE_UPLOAD_AGE
        s3 = self._client
        with self._errors("clear stale uploads"):
            uploads = s3.get_paginator("list_multipart_uploads")
            async for listing in uploads.paginate(Bucket=self.bucket, Prefix=self.temp_prefix):
                for upload in listing.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        await s3.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
            objects = s3.get_paginator("list_objects_v2")
            async for page in objects.paginate(Bucket=self.bucket, Prefix=self.temp_prefix):
                for item in page.get("Contents", []):
                    if item["LastModified"] < cutoff:
                        await s3.delete_object(Bucket=self.bucket, Key=item["Key"])

    # -- errors -----------------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn what the S3 client raises into Unavailable, told as a sentence."""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "error")
            detail = error.get("Message") or code
            raise Unavailable(
                f"The file store could not {action}: S3 bucket '{self.bucket}' "
                f"answered {code} ({detail.rstrip('.')})."
            ) from exc
        except EndpointConnectionError as exc:
            where = self.endpoint_url or "AWS"
            raise Unavailable(
                f"The file store could not {action}: S3 at {where} could not be reached."
            ) from exc
        except _BACKEND_ERRORS as exc:
            reason = str(exc).rstrip(".") or type(exc).__name__
            raise Unavailable(f"The file store could not {action}: {reason}.") from exc

    # -- blobs ------------------------------------------------------------------------------

    async def put(self, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None) -> BlobInfo:
        digest = sha256()
        size = 0
        buffer = bytearray()
        upload: _TempUpload | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise PayloadTooLarge(over_limit_message(max_bytes))
                digest.update(chunk)
                buffer += chunk
                if len(buffer) >= self._part_target(upload):
                    if upload is None:
                        upload = await self._start_upload()
                    part, buffer = bytes(buffer), bytearray()
                    await self._upload_part(upload, part)
            key = digest.hexdigest()
            if upload is None:
                await self._put_whole(key, bytes(buffer))
            else:
                if buffer:
                    await self._upload_part(upload, bytes(buffer))
                await self._complete(upload)
                await self._promote(upload.key, key, size)
            return BlobInfo(key=key, size=size, sha256=key)
        except BaseException:
            if upload is not None:
                await self._discard(upload)
            raise

    def _part_target(self, upload: _TempUpload | None) -> int:
        # Parts grow every 1000, so S3's 10,000 parts hold 55,000 part sizes (430 GiB at 8 MiB).
        parts = 0 if upload is None else len(upload.parts)
        return self.part_size * (1 + parts // 1000)

    async def _start_upload(self) -> _TempUpload:
        key = f"{self.temp_prefix}{secrets.token_hex(16)}"
        with self._errors("start an upload"):
            created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
        return _TempUpload(key, created["UploadId"])

    async def _upload_part(self, upload: _TempUpload, data: bytes) -> None:
        if len(upload.parts) >= _MAX_PARTS:
            raise Unavailable("The file store could not store the upload: it has too many parts.")
        number = len(upload.parts) + 1
        with self._errors("store the upload"):
            uploaded = await self._client.upload_part(
                Bucket=self.bucket,
                Key=upload.key,
                UploadId=upload.upload_id,
                PartNumber=number,
                Body=data,
            )
        upload.parts.append({"PartNumber": number, "ETag": uploaded["ETag"]})

    async def _complete(self, upload: _TempUpload) -> None:
        with self._errors("store the upload"):
            await self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=upload.key,
                UploadId=upload.upload_id,
                MultipartUpload={"Parts": upload.parts},
            )
        upload.completed = True

    async def _discard(self, upload: _TempUpload) -> None:
        # Shielded: cleanup finishes even when the upload was cancelled (a client went away).
        task = asyncio.ensure_future(self._remove_upload(upload))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    async def _remove_upload(self, upload: _TempUpload) -> None:
        s3 = self._client
        try:
            if upload.completed:
                await s3.delete_object(Bucket=self.bucket, Key=upload.key)
            else:
                await s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload.key, UploadId=upload.upload_id
                )
        except _BACKEND_ERRORS:
            log.warning("Could not remove the unfinished upload %s; open() retries.", upload.key)

    async def _stored_size(self, object_key: str) -> int | None:
        with self._errors("read a file"):
            try:
                head = await self._client.head_object(Bucket=self.bucket, Key=object_key)
            except ClientError as exc:
                if _is_missing(exc):
                    return None
                raise
        return head["ContentLength"]

    async def _put_whole(self, key: str, data: bytes) -> None:
        target = self.blob_key(key)
        if await self._stored_size(target) == len(data):
            return  # the same content is stored already
        with self._errors("store the upload"):
            await self._client.put_object(Bucket=self.bucket, Key=target, Body=data)

    async def _promote(self, temp_key: str, key: str, size: int) -> None:
        """Give the completed temp object its content key, then delete it."""
        target = self.blob_key(key)
        if await self._stored_size(target) != size:
            source: CopySourceTypeDef = {"Bucket": self.bucket, "Key": temp_key}
            with self._errors("store the upload"):
                if size <= self._max_copy_size:
                    await self._client.copy_object(
                        Bucket=self.bucket, Key=target, CopySource=source
                    )
                else:
                    await self._copy_in_parts(temp_key, target, size)
        with self._errors("store the upload"):
            await self._client.delete_object(Bucket=self.bucket, Key=temp_key)

    async def _copy_in_parts(self, temp_key: str, target: str, size: int) -> None:
        s3 = self._client
        created = await s3.create_multipart_upload(Bucket=self.bucket, Key=target)
        upload_id = created["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            for number, offset in enumerate(range(0, size, self._max_copy_size), start=1):
                last = min(offset + self._max_copy_size, size) - 1
                copied = await s3.upload_part_copy(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": temp_key},
                    CopySourceRange=f"bytes={offset}-{last}",
                )
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            await s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=target,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with suppress(*_BACKEND_ERRORS):  # the error that brought us here matters more
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=target, UploadId=upload_id)
            raise

    async def put_bytes(self, data: bytes) -> BlobInfo:
        return await self.put(single_chunk(data))

    async def read(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncIterator[bytes]:
        object_key = self.blob_key(key)
        check_range(start, end, chunk_size)
        size = await self._stored_size(object_key)
        if size is None:
            raise NotFound("The file does not exist.")
        stop = size if end is None else min(end, size)
        return self._stream(object_key, start, stop, chunk_size)

    async def _stream(
        self, object_key: str, start: int, stop: int, chunk_size: int
    ) -> AsyncIterator[bytes]:
        if start >= stop:
            return
        with self._errors("read a file"):
            try:
                response = await self._client.get_object(
                    Bucket=self.bucket, Key=object_key, Range=f"bytes={start}-{stop - 1}"
                )
            except ClientError as exc:
                if _is_missing(exc):  # deleted since `read` looked
                    raise NotFound("The file does not exist.") from None
                raise
        body = response["Body"]
        try:
            while True:
                with self._errors("read a file"):
                    data = await body.read(chunk_size)
                if not data:
                    break
                yield data
        finally:
            body.close()

    async def size(self, key: str) -> int | None:
        return await self._stored_size(self.blob_key(key))

    async def delete(self, key: str) -> None:
        object_key = self.blob_key(key)
        derived = self._derived_prefix(key)
        s3 = self._client
        with self._errors("delete a file"):
            await s3.delete_object(Bucket=self.bucket, Key=object_key)
            pages = s3.get_paginator("list_objects_v2")
            async for page in pages.paginate(Bucket=self.bucket, Prefix=derived):
                for item in page.get("Contents", []):
                    await s3.delete_object(Bucket=self.bucket, Key=item["Key"])

    async def put_derived(self, key: str, name: str, data: bytes) -> None:
        target = self._derived_prefix(key) + check_derived_name(name)
        if await self._stored_size(self.blob_key(key)) is None:
            raise NotFound("The file does not exist.")
        with self._errors("store derived data"):
            await self._client.put_object(Bucket=self.bucket, Key=target, Body=data)

    async def get_derived(self, key: str, name: str) -> bytes | None:
        target = self._derived_prefix(key) + check_derived_name(name)
        with self._errors("read derived data"):
            try:
                response = await self._client.get_object(Bucket=self.bucket, Key=target)
            except ClientError as exc:
                if _is_missing(exc):
                    return None
                raise
            async with response["Body"] as body:
                return await body.read()

    async def usage(self) -> int:
        total = 0
        pages = self._client.get_paginator("list_objects_v2")
        with self._errors("measure its usage"):
            for area in ("blobs/", "derived/"):
                async for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + area):
                    total += sum(item["Size"] for item in page.get("Contents", []))
        return total
