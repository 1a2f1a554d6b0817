"""Collections and records: the data service every transport calls.

Every write is prepared from a read (rules, schema, merge patch), then applied
with an optimistic version check, so concurrent writers never lose an update:
a write that finds the record changed is re-prepared, or answered with 409
when the caller pinned a version with If-Match.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from backpack.core import jsonutil
from backpack.core.access import Caller, check_rule, require_admin, rule_filter
from backpack.core.clock import now_rfc3339
from backpack.core.collections import (
    DEFAULT_RULES,
    SYSTEM_FIELDS,
    Collection,
    check_collection_name,
    collection_from_meta,
    parse_indexes,
    parse_rules,
)
from backpack.core.events import CollectionEvent, Event, EventHub, RecordEvent
from backpack.core.filter import MATCH_ALL, Node, and_nodes
from backpack.core.ids import check_id, new_id
from backpack.core.mergepatch import merge_patch
from backpack.core.query import CursorCodec, ListParams, project
from backpack.core.schema import apply_defaults, document_errors, parse_schema, validate_document
from backpack.core.storage import (
    AlreadyExists,
    Delete,
    DropCollection,
    IndexKey,
    Insert,
    PutCollection,
    Query,
    StaleWrite,
    Storage,
    StoredDoc,
    UniqueViolation,
    Update,
    WriteOp,
)
from backpack.errors import (
    BackpackError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from backpack.types import JSON, Document

MAX_BATCH_OPS: Final = 1000
MAX_WRITE_ATTEMPTS: Final = 16
_RESERVED_KEYS: Final = frozenset((*SYSTEM_FIELDS, "expand"))
_BATCH_OPS: Final = ("create", "update", "replace", "delete")


@dataclass(frozen=True, slots=True)
class RecordPage:
    docs: list[str]  # JSON text of each record, as served
    next: str | None
    total: int | None


@dataclass(frozen=True, slots=True)
class BatchOp:
    op: str
    collection: str
    id: str | None
    data: Document | None
    if_match: int | None


def parse_if_match(header: str | None) -> int | None:
    """`"3"`, `W/"3"` or `*` (None: any version)."""
    if header is None or header.strip() == "*":
        return None
    text = header.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 18:
        raise BadRequest('If-Match must be a record version such as "3".', {"header": "If-Match"})
    return int(text)


def _user_fields(body: Mapping[str, JSON]) -> Document:
    return {k: v for k, v in body.items() if k not in _RESERVED_KEYS}


def _require_object(body: JSON, what: str = "The body") -> Document:
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object.")
    return body


def _collection_body(body: JSON) -> Document:
    data = _require_object(body)
    unknown = set(data) - {"name", "schema", "rules", "indexes"}
    if unknown:
        raise ValidationFailed(
            "Unknown collection properties.",
            {key: "is not a collection property" for key in sorted(unknown)},
        )
    return data


class DataService:
    def __init__(self, storage: Storage, cursor_key: bytes, events: EventHub | None = None) -> None:
        self.storage = storage
        self.events = events or EventHub()
        self.set_cursor_key(cursor_key)
        self._collections: dict[str, Collection] = {}
        self._ddl_lock = asyncio.Lock()
        # Dropped once no update holds them.
        self._record_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def set_cursor_key(self, key: bytes) -> None:
        """Sign cursors with a key derived from `key`; cursors issued before are refused."""
        self._cursors = CursorCodec(hmac.new(key, b"cursor", hashlib.sha256).digest())

    async def open(self) -> None:
        await self.storage.open()
        for stored in await self.storage.load_collections():
            self._collections[stored.name] = collection_from_meta(stored.meta)

    async def close(self) -> None:
        await self.storage.close()

    def _publish(self, events: list[Event]) -> None:
        self.events.publish(events)

    # collections

    def _collection(self, name: str, *, system: bool = False) -> Collection:
        collection = self._collections.get(name)
        # System collections (users, sessions, ...) belong to their services, never to the API.
        if collection is None or (name.startswith("_") and not system):
            raise NotFound(f"Collection '{name}' does not exist.", {"collection": name})
        return collection

    async def ensure_system_collection(self, collection: Collection) -> None:
        """Create or bring up to date a collection a service keeps its data in."""
        async with self._ddl_lock:
            current = self._collections.get(collection.name)
            if current is not None and current.to_json() | {
                "created": "",
                "updated": "",
            } == collection.to_json() | {"created": "", "updated": ""}:
                return
            try:
                await self.storage.apply([self._put(collection, create=current is None)])
            except AlreadyExists:
                # Another process (a worker starting beside this one) made it meanwhile:
                # bring that one up to date instead.
                await self.storage.apply([self._put(collection, create=False)])
            self._collections[collection.name] = collection

    async def reload_collections(self, name: str | None = None) -> None:
        """Read collection definitions (`name`'s, or all) again: another process changed them."""
        async with self._ddl_lock:
            await self._adopt_stored(None if name is None else [name])

    async def _adopt_stored(self, names: Sequence[str] | None) -> None:
        """Take the stored definitions of `names` (None: all); hold the DDL lock."""
        stored = {c.name: c.meta for c in await self.storage.load_collections()}
        for known in names if names is not None else list(self._collections):
            if known not in stored:
                self._collections.pop(known, None)
        for found, meta in stored.items():
            if names is None or found in names:
                self._collections[found] = collection_from_meta(meta)

    async def count_records(self, *, system: bool = False) -> dict[str, int]:
        """How many records each collection holds (the users' own, or with `system` only those)."""
        counts: dict[str, int] = {}
        for name in list(self._collections):
            if name.startswith("_") != system:
                continue
            by_id = (IndexKey(("id",)),)
            page = await self.storage.query(Query(name, MATCH_ALL, by_id, 1, count=True))
            counts[name] = page.total or 0
        return counts

    def list_collections(self, caller: Caller) -> list[Collection]:
        require_admin(caller, "manage collections")
        visible = (c for c in self._collections.values() if not c.name.startswith("_"))
        return sorted(visible, key=lambda c: c.name)

    def get_collection(self, caller: Caller, name: str) -> Collection:
        require_admin(caller, "manage collections")
        return self._collection(name)

    def _new_collection(self, name: str, body: Mapping[str, JSON]) -> Collection:
        if name.startswith("_"):
            raise BadRequest("Collection names starting with '_' are reserved for the system.")
        check_collection_name(name)
        now = now_rfc3339()
        return Collection(
            name=name,
            schema=parse_schema(body.get("schema")),
            rules=parse_rules(body.get("rules")),
            indexes=parse_indexes(body.get("indexes")),
            created=now,
            updated=now,
        )

    async def create_collection(self, caller: Caller, body: JSON) -> Collection:
        require_admin(caller, "manage collections")
        data = _collection_body(body)
        name = data.get("name")
        if not isinstance(name, str):
            raise ValidationFailed("A collection needs a name.", {"name": "is required"})
        if name.startswith("_"):
            raise BadRequest("Collection names starting with '_' are reserved for the system.")
        collection = self._new_collection(check_collection_name(name), data)
        async with self._ddl_lock:
            if name in self._collections:
                raise Conflict(f"Collection '{name}' already exists.", {"collection": name})
            await self.storage.apply([self._put(collection, create=True)])
            self._collections[name] = collection
        self._publish([CollectionEvent(name, "create")])
        return collection

    def _put(
        self, collection: Collection, *, create: bool, check_schema: bool = False
    ) -> PutCollection:
        check = None
        if check_schema and collection.schema is not None:
            schema = collection.schema

            def check_existing(rows: Iterator[tuple[str, str]]) -> None:
                offending: list[JSON] = []
                for record_id, doc in rows:
                    errors = document_errors(schema, _user_fields(jsonutil.loads(doc)))
                    if errors:
                        offending.append({"id": record_id, "fields": dict(errors)})
                        if len(offending) >= 10:
                            break
                if offending:
                    first = offending[0]
                    assert isinstance(first, dict)
                    raise ValidationFailed(
                        f"Existing records do not match the new schema (first: '{first['id']}').",
                        {},
                        {"records": offending},
                    )

            check = check_existing
        return PutCollection(
            collection.name, collection.meta(), collection.all_indexes(), create, check
        )

    async def update_collection(self, caller: Caller, name: str, body: JSON) -> Collection:
        require_admin(caller, "manage collections")
        data = _collection_body(body)
        async with self._ddl_lock:
            current = self._collection(name)
            if "name" in data and data["name"] != name:
                raise BadRequest("Collections cannot be renamed.", {"field": "name"})
            changes: dict[str, Any] = {"updated": now_rfc3339()}
            if "schema" in data:
                changes["schema"] = parse_schema(data["schema"])
            if "rules" in data:
                changes["rules"] = parse_rules(data["rules"], current.rules)
            if "indexes" in data:
                changes["indexes"] = parse_indexes(data["indexes"])
            updated = replace(current, **changes)
            schema_changed = "schema" in data and updated.schema != current.schema
            try:
                await self.storage.apply(
                    [self._put(updated, create=False, check_schema=schema_changed)]
                )
            except UniqueViolation as exc:
                raise ValidationFailed(exc.message, {}, exc.details) from None
            self._collections[name] = updated
        self._publish([CollectionEvent(name, "update")])
        return updated

    async def delete_collection(self, caller: Caller, name: str) -> None:
        require_admin(caller, "manage collections")
        async with self._ddl_lock:
            self._collection(name)
            await self.storage.apply([DropCollection(name)])
            del self._collections[name]
        self._publish([CollectionEvent(name, "delete")])

    async def _collection_for_write(
        self, caller: Caller, name: str
    ) -> tuple[Collection, list[WriteOp]]:
        """The collection, created on the fly for a secret-key write (returned as ops to apply)."""
        existing = self._collections.get(name)
        if existing is not None and not name.startswith("_"):
            return existing, []
        if not caller.is_admin or name.startswith("_"):
            raise NotFound(f"Collection '{name}' does not exist.", {"collection": name})
        check_collection_name(name)
        collection = self._new_collection(name, {"rules": dict(DEFAULT_RULES)})
        return collection, [self._put(collection, create=True)]

    async def _apply_with_new_collections(
        self, ops: list[WriteOp], created: list[Collection]
    ) -> None:
        if not created:
            await self.storage.apply(ops)
            return
        async with self._ddl_lock:
            fresh = [c for c in created if c.name not in self._collections]
            stale = {c.name for c in created} - {c.name for c in fresh}
            if stale:
                # Another writer created it meanwhile: drop our PutCollection and retry.
                raise StaleWrite("The collection was created concurrently.")
            try:
                await self.storage.apply(ops)
            except AlreadyExists as exc:
                index = getattr(exc, "op_index", None)
                if index is None or not isinstance(ops[index], PutCollection):
                    raise
                # Another process created it: learn its definition, then retry the write.
                await self._adopt_stored([c.name for c in created])
                raise StaleWrite("The collection was created concurrently.") from None
            for collection in fresh:
                self._collections[collection.name] = collection
        self._publish([CollectionEvent(c.name, "create") for c in fresh])

    # reads

    async def get_record(self, caller: Caller, collection_name: str, record_id: str) -> StoredDoc:
        collection = self._collection(collection_name)
        check_id(record_id)
        where = rule_filter(caller, collection.compiled_rules["read"], "read", collection_name)
        found = await self.storage.get(
            collection_name,
            record_id,
            None if where is MATCH_ALL else where,
            collection.field_types,
        )
        if found is None:
            raise NotFound(f"Record '{record_id}' was not found in '{collection_name}'.")
        return found

    async def list_records(
        self,
        caller: Caller,
        collection_name: str,
        params: ListParams,
        *,
        system: bool = False,
        rule: Node | None = None,
    ) -> RecordPage:
        """A page of records; `rule` (already bound) replaces the collection's list rule."""
        collection = self._collection(collection_name, system=system)
        if rule is None:
            rule = rule_filter(caller, collection.compiled_rules["list"], "list", collection_name)
        where = params.where if rule is MATCH_ALL else and_nodes(rule, params.where)
        sort = params.sort
        if sort[-1].path != ("id",):
            sort = (*sort, IndexKey(("id",), sort[-1].descending))
        after = None
        if params.after is not None:
            after = self._cursors.decode(params.after, params.sort_text, len(sort))
        for name in params.expand:
            if name not in collection.relations:
                raise BadRequest(
                    f"'{name}' is not a relation field of '{collection_name}'.",
                    {"parameter": "expand"},
                )
        page = await self.storage.query(
            Query(
                collection=collection_name,
                where=where,
                sort=sort,
                limit=params.limit,
                after=after,
                offset=params.offset,
                count=params.count,
                field_types=collection.field_types,
            )
        )
        next_cursor = None
        if page.last_key is not None:
            next_cursor = self._cursors.encode(params.sort_text, page.last_key)
        docs = page.docs
        if params.fields is not None or params.expand:
            records = [jsonutil.loads(doc) for doc in docs]
            if params.expand:
                await self._expand(caller, collection, records, params.expand)
            if params.fields is not None:
                fields = params.fields
                records = [
                    project(r, fields) | ({"expand": r["expand"]} if "expand" in r else {})
                    for r in records
                ]
            docs = [jsonutil.dumps_str(r) for r in records]
        return RecordPage(docs, next_cursor, page.total)

    async def _expand(
        self,
        caller: Caller,
        collection: Collection,
        records: list[Document],
        names: Sequence[str],
    ) -> None:
        for name in names:
            target_name, is_array = collection.relations[name]
            target = self._collections.get(target_name)
            ids: set[str] = set()
            for record in records:
                value = record.get(name)
                values = value if isinstance(value, list) else [value]
                ids.update(v for v in values if isinstance(v, str))
            found: dict[str, JSON] = {}
            if target is not None and ids:
                try:
                    where = rule_filter(caller, target.compiled_rules["read"], "read", target_name)
                except Forbidden:
                    where = None
                if where is not None:
                    docs = await self.storage.get_many(
                        target_name,
                        sorted(ids),
                        None if where is MATCH_ALL else where,
                        target.field_types,
                    )
                    for doc in docs:
                        item = jsonutil.loads(doc)
                        found[item["id"]] = item
            for record in records:
                value = record.get(name)
                expanded: JSON
                if is_array and isinstance(value, list):
                    expanded = [found[v] for v in value if isinstance(v, str) and v in found]
                else:
                    expanded = found.get(value) if isinstance(value, str) else None
                extra = record.setdefault("expand", {})
                assert isinstance(extra, dict)
                extra[name] = expanded

    # writes

    def _build(
        self,
        collection: Collection,
        data: Document,
        *,
        record_id: str,
        created: str,
        owner: JSON,
        version: int,
    ) -> Document:
        """The full record: `data` checked against the schema, plus the system fields."""
        validate_document(collection.schema, data)
        record: Document = dict(data)
        record.update(
            id=record_id,
            created=created,
            updated=now_rfc3339() if version > 1 else created,
            owner=owner,
            version=version,
        )
        return record

    def _prepare_create(
        self, caller: Caller, collection: Collection, body: Document
    ) -> tuple[Insert, Document]:
        record_id = check_id(body["id"]) if "id" in body and body["id"] is not None else new_id()
        owner: JSON
        if caller.is_admin:
            owner = body.get("owner")
            if owner is not None:
                check_id(owner, "owner")
        else:
            owner = caller.user.get("id") if caller.user is not None else None
        now = now_rfc3339()
        record = self._build(
            collection,
            apply_defaults(collection.schema, _user_fields(body)),
            record_id=record_id,
            created=now,
            owner=owner,
            version=1,
        )
        if not check_rule(
            caller, collection.compiled_rules["create"], "create", collection.name, record, body
        ):
            raise Forbidden(f"The create rule of '{collection.name}' does not allow this record.")
        return Insert(collection.name, record_id, 1, jsonutil.dumps_str(record)), record

    async def create_record(self, caller: Caller, collection_name: str, body: JSON) -> Document:
        data = _require_object(body)
        for _ in range(MAX_WRITE_ATTEMPTS):
            collection, ops = await self._collection_for_write(caller, collection_name)
            insert, record = self._prepare_create(caller, collection, data)
            try:
                await self._apply_with_new_collections([*ops, insert], [collection] if ops else [])
            except StaleWrite:
                continue
            except UniqueViolation as exc:
                raise self._unique_conflict(collection, exc) from None
            self._publish([RecordEvent(collection_name, "create", record)])
            return record
        raise Conflict("The collection kept changing; try again.")

    @staticmethod
    def _unique_conflict(collection: Collection, exc: UniqueViolation) -> Conflict:
        fields = collection.index_fields(str(exc.details.get("index", "")))
        if fields:
            return Conflict(
                f"Another record already has this {', '.join(fields)}.", {"fields": list(fields)}
            )
        return Conflict(exc.message, exc.details)

    async def _load_for_change(
        self,
        caller: Caller,
        collection: Collection,
        record_id: str,
        operation: str,
        body: Document | None = None,
    ) -> Document:
        """The stored record, if the `operation` rule (`@body` = body) lets the caller at it."""
        check_id(record_id)
        where = rule_filter(
            caller, collection.compiled_rules[operation], operation, collection.name, body
        )
        found = await self.storage.get(
            collection.name,
            record_id,
            None if where is MATCH_ALL else where,
            collection.field_types,
        )
        if found is None:
            raise NotFound(f"Record '{record_id}' was not found in '{collection.name}'.")
        record: Document = jsonutil.loads(found.doc)
        return record

    def _prepare_update(
        self,
        caller: Caller,
        collection: Collection,
        current: Document,
        body: Document,
        *,
        merge: bool,
        if_match: int | None,
    ) -> tuple[Update, Document]:
        version = current["version"]
        assert isinstance(version, int)
        if if_match is not None and if_match != version:
            raise Conflict(
                f"The record is at version {version}, not {if_match}.",
                {"version": version},
            )
        if "id" in body and body["id"] != current["id"]:
            raise BadRequest("The body's id does not match the record's id.", {"field": "id"})
        patch = _user_fields(body)
        data = merge_patch(_user_fields(current), patch) if merge else patch
        assert isinstance(data, dict)
        owner = current.get("owner")
        if caller.is_admin and "owner" in body:
            owner = body["owner"]
            if owner is not None:
                check_id(owner, "owner")
        created = current["created"]
        assert isinstance(created, str)
        record = self._build(
            collection,
            data if merge else apply_defaults(collection.schema, data),
            record_id=str(current["id"]),
            created=created,
            owner=owner,
            version=version + 1,
        )
        if not check_rule(
            caller, collection.compiled_rules["read"], "read", collection.name, record
        ):
            raise Forbidden("After this change you could no longer read the record.")
        update = Update(
            collection.name, str(current["id"]), version, version + 1, jsonutil.dumps_str(record)
        )
        return update, record

    async def update_record(
        self,
        caller: Caller,
        collection_name: str,
        record_id: str,
        body: JSON,
        *,
        merge: bool,
        if_match: int | None = None,
    ) -> Document:
        data = _require_object(body)
        collection = self._collection(collection_name)
        # Updates of one record in this process take turns, so a burst of plain PATCHes
        # cannot starve one past MAX_WRITE_ATTEMPTS; retries then race other processes only.
        async with self._record_lock(collection_name, record_id):
            for _ in range(MAX_WRITE_ATTEMPTS):
                current = await self._load_for_change(caller, collection, record_id, "update", data)
                update, record = self._prepare_update(
                    caller, collection, current, data, merge=merge, if_match=if_match
                )
                try:
                    await self.storage.apply([update])
                except StaleWrite:
                    if if_match is not None:
                        raise Conflict(
                            "The record changed; its version no longer matches."
                        ) from None
                    continue
                except UniqueViolation as exc:
                    raise self._unique_conflict(collection, exc) from None
                self._publish([RecordEvent(collection_name, "update", record, current)])
                return record
        raise Conflict("The record kept changing; try again.")

    def _record_lock(self, collection_name: str, record_id: str) -> asyncio.Lock:
        key = (collection_name, record_id)
        lock = self._record_locks.get(key)
        if lock is None:
            lock = self._record_locks[key] = asyncio.Lock()
        return lock

    async def delete_record(
        self, caller: Caller, collection_name: str, record_id: str, if_match: int | None = None
    ) -> None:
        collection = self._collection(collection_name)
        for _ in range(MAX_WRITE_ATTEMPTS):
            current = await self._load_for_change(caller, collection, record_id, "delete")
            version = current["version"]
            if if_match is not None and if_match != version:
                raise Conflict(
                    f"The record is at version {version}, not {if_match}.", {"version": version}
                )
            assert isinstance(version, int)
            try:
                await self.storage.apply([Delete(collection_name, record_id, version)])
            except StaleWrite:
                if if_match is not None:
                    raise Conflict("The record changed; its version no longer matches.") from None
                continue
            self._publish([RecordEvent(collection_name, "delete", current)])
            return
        raise Conflict("The record kept changing; try again.")

    # batch

    @staticmethod
    def parse_batch(body: JSON) -> list[BatchOp]:
        data = _require_object(body)
        ops = data.get("ops")
        if not isinstance(ops, list) or not ops:
            raise ValidationFailed("A batch needs a non-empty list of ops.", {"ops": "is required"})
        if len(ops) > MAX_BATCH_OPS:
            raise ValidationFailed(
                f"A batch holds at most {MAX_BATCH_OPS} ops.", {"ops": f"at most {MAX_BATCH_OPS}"}
            )
        parsed: list[BatchOp] = []
        problems: dict[str, str] = {}
        for i, item in enumerate(ops):
            where = f"ops.{i}"
            if not isinstance(item, dict):
                problems[where] = "must be an object"
                continue
            unknown = set(item) - {"op", "collection", "id", "data", "if_match"}
            if unknown:
                problems[where] = f"has unknown keys: {', '.join(sorted(unknown))}"
                continue
            op, name, record_id = item.get("op"), item.get("collection"), item.get("id")
            data_value = item.get("data")
            if op not in _BATCH_OPS:
                problems[f"{where}.op"] = "must be create, update, replace or delete"
                continue
            if not isinstance(name, str):
                problems[f"{where}.collection"] = "is required"
                continue
            if record_id is not None and not isinstance(record_id, str):
                problems[f"{where}.id"] = "must be a string"
                continue
            if op != "create" and record_id is None:
                problems[f"{where}.id"] = "is required"
                continue
            if op != "delete" and not isinstance(data_value, dict):
                problems[f"{where}.data"] = "must be an object"
                continue
            if_match = item.get("if_match")
            if if_match is not None and (
                not isinstance(if_match, int) or isinstance(if_match, bool)
            ):
                problems[f"{where}.if_match"] = "must be a version number"
                continue
            parsed.append(
                BatchOp(
                    op,
                    name,
                    record_id,
                    data_value if isinstance(data_value, dict) else None,
                    if_match,
                )
            )
        if problems:
            raise ValidationFailed("The batch is invalid.", problems)
        return parsed

    async def batch(self, caller: Caller, body: JSON) -> list[JSON]:
        ops = self.parse_batch(body)
        for _ in range(MAX_WRITE_ATTEMPTS):
            try:
                return await self._batch_attempt(caller, ops)
            except StaleWrite:
                if any(op.if_match is not None for op in ops):
                    raise Conflict("A record in the batch changed; nothing was written.") from None
        raise Conflict("The records kept changing; try again.")

    async def _batch_attempt(self, caller: Caller, ops: list[BatchOp]) -> list[JSON]:
        writes: list[WriteOp] = []
        origin: list[int] = []  # the batch op each write comes from
        created: dict[str, Collection] = {}
        results: list[JSON] = []
        events: list[Event] = []
        # Later ops in the batch see earlier ones: (collection, id) → record, None once deleted.
        pending: dict[tuple[str, str], Document | None] = {}
        for index, op in enumerate(ops):
            try:
                collection = created.get(op.collection)
                if collection is None:
                    collection, ddl = await self._collection_for_write(caller, op.collection)
                    if ddl:
                        created[op.collection] = collection
                        writes.extend(ddl)
                        origin.extend([index] * len(ddl))
                if op.op == "create":
                    assert op.data is not None
                    insert, record = self._prepare_create(
                        caller, collection, op.data | ({"id": op.id} if op.id else {})
                    )
                    key = (op.collection, insert.id)
                    if pending.get(key) is not None:
                        raise Conflict(f"A record with id '{insert.id}' already exists.")
                    writes.append(insert)
                    origin.append(index)
                    pending[key] = record
                    results.append(record)
                    events.append(RecordEvent(op.collection, "create", record))
                    continue
                assert op.id is not None
                key = (op.collection, op.id)
                operation = "delete" if op.op == "delete" else "update"
                if key in pending:
                    current = pending[key]
                    if current is None:
                        raise NotFound(f"Record '{op.id}' was deleted earlier in this batch.")
                    # Written earlier in this batch: its rule is checked in memory, as SQL would.
                    rule = collection.compiled_rules[operation]
                    if not check_rule(caller, rule, operation, op.collection, current, op.data):
                        raise NotFound(f"Record '{op.id}' was not found in '{op.collection}'.")
                elif op.collection in created:
                    raise NotFound(f"Record '{op.id}' was not found in '{op.collection}'.")
                else:
                    current = await self._load_for_change(
                        caller, collection, op.id, operation, op.data
                    )
                if op.op == "delete":
                    version = current["version"]
                    assert isinstance(version, int)
                    if op.if_match is not None and op.if_match != version:
                        raise Conflict(f"Record '{op.id}' is at version {version}.")
                    writes.append(Delete(op.collection, op.id, version))
                    origin.append(index)
                    pending[key] = None
                    results.append({"id": op.id, "deleted": True})
                    events.append(RecordEvent(op.collection, "delete", current))
                    continue
                assert op.data is not None
                update, record = self._prepare_update(
                    caller,
                    collection,
                    current,
                    op.data,
                    merge=op.op == "update",
                    if_match=op.if_match,
                )
                writes.append(update)
                origin.append(index)
                pending[key] = record
                results.append(record)
                events.append(RecordEvent(op.collection, "update", record, current))
            except StaleWrite:
                raise
            except BackpackError as exc:
                exc.details = {**exc.details, "op": index}
                exc.message = f"Op {index}: {exc.message}"
                raise
        try:
            await self._apply_with_new_collections(writes, list(created.values()))
        except (UniqueViolation, AlreadyExists) as exc:
            where = exc.op_index
            op_index = origin[where] if where is not None and where < len(origin) else None
            details = dict(exc.details)
            if op_index is not None:
                details["op"] = op_index
            raise Conflict(
                f"Op {op_index}: {exc.message}" if op_index is not None else exc.message, details
            ) from None
        self._publish(events)
        return results
