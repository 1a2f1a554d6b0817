"""The storage seam: what the domain needs from a database, and nothing more.

An adapter (SQLite, PostgreSQL) stores each collection's records as whole JSON
documents, system fields included, keyed by id. The domain hands it filter
ASTs to compile, sort keys, and write operations to apply atomically; it never
sees SQL. Every adapter passes tests/contract/test_storage_contract.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from backpack.core.filter import Node
from backpack.errors import Conflict
from backpack.types import JSON, Path


class StaleWrite(Conflict):
    """The record changed or vanished between the read and the write (optimistic concurrency)."""


class UniqueViolation(Conflict):
    """A write would give two records the same value in a unique index."""


class AlreadyExists(Conflict):
    """A record or collection with this id or name already exists."""


@dataclass(frozen=True, slots=True)
class IndexKey:
    path: Path
    descending: bool = False


@dataclass(frozen=True, slots=True)
class IndexDef:
    """An index the adapter maintains; `name` is stable for one definition."""

    name: str
    keys: tuple[IndexKey, ...]
    unique: bool = False


@dataclass(frozen=True, slots=True)
class StoredCollection:
    name: str
    meta: str  # the collection's definition, serialized by the domain


@dataclass(frozen=True, slots=True)
class Query:
    collection: str
    where: Node
    sort: tuple[IndexKey, ...]
    limit: int
    after: tuple[JSON, ...] | None = None  # sort key values of the last row seen, id last
    offset: int = 0
    count: bool = False
    field_types: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredDoc:
    doc: str  # canonical JSON text of the record
    version: int


@dataclass(frozen=True, slots=True)
class Page:
    docs: list[str]  # canonical JSON text of each record
    last_key: tuple[JSON, ...] | None  # sort values of the last doc when more rows follow
    total: int | None = None


@dataclass(frozen=True, slots=True)
class Insert:
    collection: str
    id: str
    version: int
    doc: str


@dataclass(frozen=True, slots=True)
class Update:
    collection: str
    id: str
    expected_version: int
    version: int
    doc: str


@dataclass(frozen=True, slots=True)
class Delete:
    collection: str
    id: str
    expected_version: int | None = None


# Called inside the write transaction with every (id, doc) of the collection;
# raises to refuse a schema change that existing records violate.
ExistingCheck = Callable[[Iterator[tuple[str, str]]], None]


@dataclass(frozen=True, slots=True)
class PutCollection:
    name: str
    meta: str
    indexes: tuple[IndexDef, ...]
    create: bool
    check_existing: ExistingCheck | None = None


@dataclass(frozen=True, slots=True)
class DropCollection:
    name: str


WriteOp = Insert | Update | Delete | PutCollection | DropCollection


class Storage(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load_collections(self) -> list[StoredCollection]: ...

    async def get(
        self,
        collection: str,
        record_id: str,
        where: Node | None = None,
        field_types: Mapping[str, str] | None = None,
    ) -> StoredDoc | None:
        """The record, or None when absent or not matching `where`."""
        ...

    async def get_many(
        self,
        collection: str,
        record_ids: Sequence[str],
        where: Node | None = None,
        field_types: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The JSON text of those of `record_ids` that exist and match `where`."""
        ...

    async def query(self, query: Query) -> Page: ...

    def dump(self, chunk: int = 500) -> AsyncIterator[StoredCollection | list[Insert]]:
        """Every collection, system ones included, each followed by its records (as the
        `Insert`s that recreate them, `chunk` at a time, in id order), all as of one moment."""
        ...

    async def apply(self, ops: Sequence[WriteOp]) -> None:
        """Apply `ops` in one transaction, durable when this returns; all or nothing.

        When an op fails, the error raised carries `op_index`, its position in `ops`.
        """
        ...
