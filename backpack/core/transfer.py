"""Copy a backpack's records from one storage engine to another, and prove the copy whole.

`copy_records` replays a source's `dump()` (a snapshot of every collection and
record, system ones included) into an empty target: each collection with the
indexes its definition declares, then its records with their ids and versions.
`fingerprint` sums a storage up per collection (the count and a SHA-256 over
every id, version and record in id order, records compared as JSON values, not
as text, since engines render the same record differently), so a move or a
backup of a PostgreSQL backpack can check that the target holds exactly what
the source held.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from backpack.core.collections import collection_from_meta
from backpack.core.filter import MATCH_ALL
from backpack.core.storage import (
    IndexKey,
    Insert,
    PutCollection,
    Query,
    Storage,
    StoredCollection,
)
from backpack.errors import Conflict


@dataclass(frozen=True, slots=True)
class Summary:
    """One collection's share of a fingerprint."""

    records: int
    sha256: str


Progress = Callable[[int], None]  # called with the number of records just copied


class Fingerprint:
    """Accumulates a storage's fingerprint from its dump, item by item."""

    def __init__(self) -> None:
        self._digests: dict[str, hashlib._Hash] = {}
        self.counts: dict[str, int] = {}

    def add(self, item: StoredCollection | list[Insert]) -> None:
        if isinstance(item, StoredCollection):
            meta = orjson.dumps(orjson.loads(item.meta), option=orjson.OPT_SORT_KEYS)
            self._digests[item.name] = hashlib.sha256(meta)
            self.counts[item.name] = 0
            return
        digest = self._digests[item[0].collection]
        for insert in item:
            value = orjson.loads(insert.doc)
            line = orjson.dumps([insert.id, insert.version, value], option=orjson.OPT_SORT_KEYS)
            digest.update(line)
        self.counts[item[0].collection] += len(item)

    def result(self) -> dict[str, Summary]:
        return {
            name: Summary(self.counts[name], d.hexdigest()) for name, d in self._digests.items()
        }


async def copy_records(
    source: Storage, target: Storage, *, progress: Progress | None = None
) -> dict[str, Summary]:
    """Copy everything `source` holds into the empty, opened `target`.

    Returns the fingerprint of what was copied (one snapshot of the source, however
    it changes meanwhile), to compare with `fingerprint(target)`.
    """
    if await target.load_collections():
        raise Conflict("The target storage holds collections already; copy into an empty one.")
    copied = Fingerprint()
    async for item in source.dump():
        copied.add(item)
        if isinstance(item, StoredCollection):
            indexes = collection_from_meta(item.meta).all_indexes()
            await target.apply([PutCollection(item.name, item.meta, indexes, True)])
            continue
        await target.apply(item)
        if progress is not None:
            progress(len(item))
    return copied.result()


async def fingerprint(storage: Storage) -> dict[str, Summary]:
    """Per collection: how many records, and a digest of all of them."""
    summed = Fingerprint()
    async for item in storage.dump():
        summed.add(item)
    return summed.result()


async def count_all(storage: Storage) -> int:
    """How many records `storage` holds in all its collections (for progress bars)."""
    total = 0
    for stored in await storage.load_collections():
        query = Query(stored.name, MATCH_ALL, (IndexKey(("id",)),), 1, count=True)
        total += (await storage.query(query)).total or 0
    return total
