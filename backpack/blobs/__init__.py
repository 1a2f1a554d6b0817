"""Blob store adapters behind `backpack.core.blobs.BlobStore`: a local directory or S3.

`open_blob_store(url)` picks one from a files URL (`BACKPACK_FILES_URL`):

    /var/lib/backpack/files     a directory (relative paths too)
    file:///var/lib/…           the same, as a URL
    s3://bucket/prefix          a prefix in an S3 bucket; needs backpack-baas[s3]

For S3, the endpoint, region and credentials come from the arguments, else
from `BACKPACK_S3_ENDPOINT`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), else from botocore's usual
chain (shared config, instance role).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from backpack.blobs.local import LocalBlobStore
from backpack.core.blobs import BlobStore

S3_ENDPOINT_ENV = "BACKPACK_S3_ENDPOINT"


def open_blob_store(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> BlobStore:
    """The blob store `url` names, not yet opened: `await store.open()` before use."""
    scheme, separator, _ = url.partition("://")
    if not url.strip():
        raise ValueError("The files URL is empty: give a directory or an s3://bucket/prefix URL.")
    if not separator:
        return LocalBlobStore(url)
    parts = urlsplit(url)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(f"'{url}' is not a local file URL: write file:///absolute/path.")
        return LocalBlobStore(unquote(parts.path))
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"'{url}' names no bucket: write s3://bucket/prefix.")
        env = os.environ if environ is None else environ
        from backpack.blobs.s3 import S3BlobStore  # the s3 extra, only when asked for

        return S3BlobStore(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=endpoint_url or env.get(S3_ENDPOINT_ENV) or None,
            region=region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            access_key_id=access_key_id or env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=secret_access_key or env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )
    raise ValueError(
        f"Files URLs start with file:// or s3://, or are a directory path; '{url}' is neither."
    )


__all__ = ["LocalBlobStore", "open_blob_store"]
