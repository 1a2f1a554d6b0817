"""Files: metadata as records checked by bucket rules, bytes in a content-addressed blob store.

A file's metadata is a record of the `_files` system collection, so the same
filter language, rule engine, cursors and events serve files and records. A
bucket carries rules like a collection, plus a size limit and allowed types.
The bytes live in the blob store under their sha256: identical uploads share
one blob, which is deleted when the last file that uses it goes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from backpack.core import jsonutil
from backpack.core.access import Caller, check_rule, require_admin, rule_filter
from backpack.core.blobs import BlobInfo, BlobStore
from backpack.core.clock import now_rfc3339
from backpack.core.collections import (
    DEFAULT_RULES,
    Rule,
    check_collection_name,
    parse_rules,
    system_collection,
)
from backpack.core.events import ConfigEvent, RecordEvent
from backpack.core.filter import MATCH_ALL, Node, and_nodes, or_nodes, parse_filter
from backpack.core.ids import check_id, new_id
from backpack.core.query import ListParams
from backpack.core.records import DataService, RecordPage
from backpack.core.settings import SettingsService
from backpack.core.storage import Delete, IndexKey, Insert, Query, StaleWrite, Update, WriteOp
from backpack.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from backpack.files.sniff import SNIFF_BYTES, safe_filename, sniff_type
from backpack.types import JSON, Document, JSONObject

FILES: Final = "_files"
BUCKETS: Final = "_buckets"
DEFAULT_BUCKET: Final = "default"
MAX_SIGNED_SECONDS: Final = 7 * 24 * 3600
_TYPE_PATTERN: Final = re.compile(r"[a-z0-9.+-]+/([a-z0-9.+-]+|\*)|\*")


@dataclass(frozen=True)
class Bucket:
    name: str
    rules: Mapping[str, JSON]
    max_size: int | None
    allowed_types: tuple[str, ...] | None
    created: str
    updated: str

    @property
    def compiled(self) -> Mapping[str, Rule]:
        return {
            op: (rule if rule is None or rule is True else parse_filter(rule, allow_variables=True))
            for op, rule in self.rules.items()
        }

    def to_json(self) -> JSONObject:
        return {
            "name": self.name,
            "rules": dict(self.rules),
            "max_size": self.max_size,
            "allowed_types": list(self.allowed_types) if self.allowed_types is not None else None,
            "created": self.created,
            "updated": self.updated,
        }

    def allows_type(self, mime: str) -> bool:
        if self.allowed_types is None:
            return True
        base = mime.split(";", 1)[0].strip()
        return any(fnmatch.fnmatchcase(base, pattern) for pattern in self.allowed_types)


def _bucket_from_doc(doc: Mapping[str, Any]) -> Bucket:
    allowed = doc.get("allowed_types")
    return Bucket(
        name=str(doc["id"]),
        rules=doc["rules"],
        max_size=doc.get("max_size"),
        allowed_types=tuple(allowed) if allowed is not None else None,
        created=str(doc["created"]),
        updated=str(doc["updated"]),
    )


def _default_bucket(name: str) -> Bucket:
    now = now_rfc3339()
    return Bucket(name, dict(DEFAULT_RULES), None, None, now, now)


@dataclass(frozen=True, slots=True)
class Download:
    file: Document
    key: str


class FilesService:
    def __init__(
        self,
        data: DataService,
        blobs: BlobStore,
        settings: SettingsService,
        signing_key: bytes,
    ) -> None:
        self.data = data
        self.storage = data.storage
        self.blobs = blobs
        self._settings = settings
        self.set_signing_key(signing_key)
        self._buckets: dict[str, Bucket] = {}
        self._compiled: dict[str, Mapping[str, Rule]] = {}
        self._blob_locks: dict[str, asyncio.Lock] = {}

    def set_signing_key(self, key: bytes) -> None:
        """Sign URLs with a key derived from `key`; URLs signed before stop working."""
        self._signing_key = hmac.new(key, b"signed-urls", hashlib.sha256).digest()

    async def open(self) -> None:
        await self.blobs.open()
        await self.data.ensure_system_collection(
            system_collection(FILES, ("bucket", False), ("sha256", False), ("owner", False))
        )
        await self.data.ensure_system_collection(system_collection(BUCKETS))
        await self.reload_buckets()

    async def reload_buckets(self, name: str | None = None) -> None:
        """Read bucket settings (`name`'s, or all) again: at open, or another process
        changed them."""
        if name is not None:
            found = await self.storage.get(BUCKETS, name)
            if found is not None:
                self._remember(_bucket_from_doc(jsonutil.loads(found.doc)))
            return
        page = await self.storage.query(Query(BUCKETS, MATCH_ALL, (IndexKey(("id",)),), 1000))
        for doc in page.docs:
            self._remember(_bucket_from_doc(jsonutil.loads(doc)))

    async def close(self) -> None:
        await self.blobs.close()

    def _remember(self, bucket: Bucket) -> None:
        self._buckets[bucket.name] = bucket
        self._compiled[bucket.name] = bucket.compiled

    # buckets

    def _bucket(self, name: str) -> Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            if name == DEFAULT_BUCKET:
                return _default_bucket(name)
            raise NotFound(f"Bucket '{name}' does not exist.", {"bucket": name})
        return bucket

    def _rules(self, bucket: Bucket) -> Mapping[str, Rule]:
        return self._compiled.get(bucket.name) or bucket.compiled

    def list_buckets(self, caller: Caller) -> list[JSONObject]:
        require_admin(caller, "list buckets")
        names = sorted({DEFAULT_BUCKET, *self._buckets})
        return [self._bucket(name).to_json() for name in names]

    def get_bucket(self, caller: Caller, name: str) -> JSONObject:
        require_admin(caller, "read bucket settings")
        check_collection_name(name)
        return self._bucket(name).to_json()

    async def put_bucket(self, caller: Caller, name: str, body: JSON) -> JSONObject:
        require_admin(caller, "configure buckets")
        check_collection_name(name)
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object.")
        unknown = set(body) - {"name", "rules", "max_size", "allowed_types"}
        if unknown:
            raise ValidationFailed(
                "Unknown bucket settings.", {k: "is not a bucket setting" for k in sorted(unknown)}
            )
        if body.get("name", name) != name:
            raise BadRequest("Buckets cannot be renamed.", {"field": "name"})
        problems: dict[str, str] = {}
        max_size = body.get("max_size")
        if max_size is not None and (
            not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1
        ):
            problems["max_size"] = "must be a positive number of bytes or null"
        allowed = body.get("allowed_types")
        if allowed is not None and (
            not isinstance(allowed, list)
            or not 1 <= len(allowed) <= 100
            or not all(isinstance(t, str) and _TYPE_PATTERN.fullmatch(t) for t in allowed)
        ):
            problems["allowed_types"] = "must be null or a list of types like image/* or image/png"
        if problems:
            raise ValidationFailed("The bucket settings are invalid.", problems)
        current = self._buckets.get(name)
        rules = parse_rules(body.get("rules"), current.rules if current else None)
        now = now_rfc3339()
        bucket = Bucket(
            name,
            rules,
            max_size if isinstance(max_size, int) else None,
            tuple(str(t) for t in allowed) if isinstance(allowed, list) else None,
            current.created if current else now,
            now,
        )
        found = await self.storage.get(BUCKETS, name)
        doc = {**bucket.to_json(), "id": name}
        if found is None:
            op: WriteOp = Insert(BUCKETS, name, 1, jsonutil.dumps_str({**doc, "version": 1}))
        else:
            doc["version"] = found.version + 1
            op = Update(BUCKETS, name, found.version, found.version + 1, jsonutil.dumps_str(doc))
        await self.storage.apply([op])
        self._remember(bucket)
        self.data.events.publish([ConfigEvent("bucket", name)])
        return bucket.to_json()

    # reading metadata

    async def _load(self, file_id: str) -> Document:
        check_id(file_id)
        found = await self.storage.get(FILES, file_id)
        if found is None:
            raise NotFound(f"File '{file_id}' was not found.")
        doc: Document = jsonutil.loads(found.doc)
        return doc

    async def _visible(self, caller: Caller, file_id: str, operation: str) -> Document:
        """The file if `caller` may `operation` it; 404 otherwise (403 for a locked rule)."""
        doc = await self._load(file_id)
        if operation == "read" and doc.get("public") is True:
            return doc
        bucket = self._bucket(str(doc["bucket"]))
        rules = self._rules(bucket)
        try:
            allowed = check_rule(caller, rules[operation], operation, f"bucket {bucket.name}", doc)
        except Forbidden:
            if operation == "read":
                raise NotFound(f"File '{file_id}' was not found.") from None
            raise
        if not allowed:
            raise NotFound(f"File '{file_id}' was not found.")
        return doc

    async def get(self, caller: Caller, file_id: str) -> Document:
        return await self._visible(caller, file_id, "read")

    async def list(self, caller: Caller, params: ListParams, bucket_name: str | None) -> RecordPage:
        if bucket_name is not None:
            bucket = self._bucket(bucket_name)
            rule = rule_filter(caller, self._rules(bucket)["list"], "list", f"bucket {bucket_name}")
            where: Node = and_nodes(parse_filter({"bucket": bucket_name}), rule)
        elif caller.is_admin:
            where = MATCH_ALL
        else:
            # Every bucket's list rule, each limited to its own files.
            parts: list[Node] = []
            for name in sorted({DEFAULT_BUCKET, *self._buckets}):
                listed = self._rules(self._bucket(name))["list"]
                if listed is not None:
                    bound = rule_filter(caller, listed, "list", f"bucket {name}")
                    parts.append(and_nodes(parse_filter({"bucket": name}), bound))
            where = or_nodes(*parts)
        return await self.data.list_records(caller, FILES, params, system=True, rule=where)

    async def download(self, caller: Caller | None, file_id: str) -> Download:
        """What to serve for `…/content`; `caller` None means a valid signed URL already decided."""
        if caller is None:
            doc = await self._load(file_id)
        else:
            doc = await self._visible(caller, file_id, "read")
        return Download(doc, str(doc["sha256"]))

    # writing

    def _limit(self, bucket: Bucket) -> int:
        upload = self._settings.current.upload_bytes
        return min(upload, bucket.max_size) if bucket.max_size is not None else upload

    async def _store(
        self, bucket: Bucket, chunks: AsyncIterator[bytes], name: str
    ) -> tuple[BlobInfo, str]:
        head = bytearray()

        async def sniffing() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                if len(head) < SNIFF_BYTES:
                    head.extend(chunk[: SNIFF_BYTES - len(head)])
                yield chunk

        limit = self._limit(bucket)
        try:
            info = await self.blobs.put(sniffing(), max_bytes=limit)
        except PayloadTooLarge:
            raise PayloadTooLarge(
                f"The file is larger than this bucket's limit of {limit} bytes.", {"limit": limit}
            ) from None
        mime = sniff_type(bytes(head), name)
        if not bucket.allows_type(mime):
            await self._release(info.key)
            raise UnsupportedMediaType(
                f"Bucket '{bucket.name}' does not take {mime.split(';')[0]} files.",
                {"type": mime, "allowed_types": list(bucket.allowed_types or ())},
            )
        return info, mime

    def _lock(self, key: str) -> asyncio.Lock:
        return self._blob_locks.setdefault(key, asyncio.Lock())

    async def _release(self, key: str) -> None:
        """Delete a blob unless some file still uses it."""
        async with self._lock(key):
            page = await self.storage.query(
                Query(FILES, parse_filter({"sha256": key}), (IndexKey(("id",)),), 1)
            )
            if not page.docs:
                await self.blobs.delete(key)
        self._blob_locks.pop(key, None)

    async def upload(
        self,
        caller: Caller,
        bucket_name: str,
        name: str,
        public: bool,
        chunks: AsyncIterator[bytes],
    ) -> Document:
        check_collection_name(bucket_name)
        if caller.is_admin and bucket_name not in self._buckets and bucket_name != DEFAULT_BUCKET:
            await self.put_bucket(caller, bucket_name, {})  # like collections: made on first write
        bucket = self._bucket(bucket_name)
        rules = self._rules(bucket)
        rule_filter(
            caller, rules["create"], "create", f"bucket {bucket_name}"
        )  # locked → 403 early
        name = safe_filename(name)
        info, mime = await self._store(bucket, chunks, name)
        now = now_rfc3339()
        owner = caller.user.get("id") if caller.user is not None else None
        doc: Document = {
            "id": new_id(),
            "name": name,
            "size": info.size,
            "type": mime,
            "bucket": bucket_name,
            "owner": owner,
            "public": public,
            "sha256": info.sha256,
            "created": now,
            "updated": now,
            "version": 1,
        }
        body: JSONObject = {"name": name, "bucket": bucket_name, "public": public}
        if not check_rule(caller, rules["create"], "create", f"bucket {bucket_name}", doc, body):
            await self._release(info.key)
            raise Forbidden(f"The create rule of bucket '{bucket_name}' does not allow this file.")
        async with self._lock(info.key):
            await self.storage.apply([Insert(FILES, str(doc["id"]), 1, jsonutil.dumps_str(doc))])
        self.data.events.publish([RecordEvent(FILES, "create", doc)])
        return doc

    async def _write(
        self, caller: Caller, file_id: str, change: Mapping[str, JSON], if_match: int | None
    ) -> Document:
        for _ in range(8):
            current = await self._visible(caller, file_id, "update")
            version = int(str(current["version"]))
            if if_match is not None and if_match != version:
                raise Conflict(f"The file is at version {version}.", {"version": version})
            updated = {**current, **change, "updated": now_rfc3339(), "version": version + 1}
            target = self._bucket(str(updated["bucket"]))
            # Moving needs the create rule of the target bucket.
            create = self._rules(target)["create"]
            if updated["bucket"] != current["bucket"] and not check_rule(
                caller, create, "create", f"bucket {target.name}", updated
            ):
                raise Forbidden(f"The create rule of bucket '{target.name}' refuses this file.")
            if not updated.get("public") and not check_rule(
                caller, self._rules(target)["read"], "read", f"bucket {target.name}", updated
            ):
                raise Forbidden("After this change you could no longer read the file.")
            try:
                await self.storage.apply(
                    [Update(FILES, file_id, version, version + 1, jsonutil.dumps_str(updated))]
                )
            except StaleWrite:
                if if_match is not None:
                    raise Conflict("The file changed; its version no longer matches.") from None
                continue
            self.data.events.publish([RecordEvent(FILES, "update", updated, current)])
            if current["sha256"] != updated["sha256"]:
                await self._release(str(current["sha256"]))
            return updated
        raise Conflict("The file kept changing; try again.")

    async def update(
        self, caller: Caller, file_id: str, body: JSON, if_match: int | None = None
    ) -> Document:
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object.")
        unknown = set(body) - {"name", "bucket", "public"}
        if unknown:
            raise ValidationFailed(
                "Only name, bucket and public can change.",
                {k: "cannot be changed" for k in sorted(unknown)},
            )
        change: dict[str, JSON] = {}
        if "name" in body:
            if not isinstance(body["name"], str):
                raise ValidationFailed("The name must be a string.", {"name": "must be a string"})
            change["name"] = safe_filename(body["name"])
        if "bucket" in body:
            bucket = body["bucket"]
            if not isinstance(bucket, str):
                raise ValidationFailed("The bucket must be a name.", {"bucket": "must be a name"})
            self._bucket(check_collection_name(bucket))
            change["bucket"] = bucket
        if "public" in body:
            if not isinstance(body["public"], bool):
                raise ValidationFailed("public is true or false.", {"public": "must be a boolean"})
            change["public"] = body["public"]
        return await self._write(caller, file_id, change, if_match)

    async def replace_content(
        self, caller: Caller, file_id: str, chunks: AsyncIterator[bytes], if_match: int | None
    ) -> Document:
        current = await self._visible(caller, file_id, "update")
        bucket = self._bucket(str(current["bucket"]))
        info, mime = await self._store(bucket, chunks, str(current["name"]))
        change: JSONObject = {"size": info.size, "type": mime, "sha256": info.sha256}
        try:
            return await self._write(caller, file_id, change, if_match)
        except BaseException:
            await self._release(info.key)
            raise

    async def delete(self, caller: Caller, file_id: str, if_match: int | None = None) -> None:
        for _ in range(8):
            current = await self._visible(caller, file_id, "delete")
            version = int(str(current["version"]))
            if if_match is not None and if_match != version:
                raise Conflict(f"The file is at version {version}.", {"version": version})
            try:
                await self.storage.apply([Delete(FILES, file_id, version)])
            except StaleWrite:
                continue
            self.data.events.publish([RecordEvent(FILES, "delete", current)])
            await self._release(str(current["sha256"]))
            return
        raise Conflict("The file kept changing; try again.")

    # signed URLs

    def _signature(self, file_id: str, expires: int) -> str:
        mac = hmac.new(self._signing_key, f"{file_id}:{expires}".encode(), hashlib.sha256)
        return mac.hexdigest()[:40]

    async def signed_query(self, caller: Caller, file_id: str, body: JSON) -> str:
        await self._visible(caller, file_id, "read")
        expires_in = body.get("expires_in", 3600) if isinstance(body, dict) else None
        if (
            not isinstance(expires_in, int)
            or isinstance(expires_in, bool)
            or not 1 <= expires_in <= MAX_SIGNED_SECONDS
        ):
            raise ValidationFailed(
                "expires_in is a number of seconds from 1 to 604800 (7 days).",
                {"expires_in": "must be 1 to 604800 seconds"},
            )
        expires = int(time.time()) + expires_in
        return f"expires={expires}&sig={self._signature(file_id, expires)}"

    def check_signature(self, file_id: str, expires: str, signature: str) -> bool:
        if not expires.isdigit() or len(expires) > 12 or int(expires) < time.time():
            return False
        return hmac.compare_digest(self._signature(file_id, int(expires)), signature)
