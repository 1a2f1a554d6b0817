"""List queries: parameters, signed keyset cursors and field projection."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from backpack.core import jsonutil
from backpack.core.collections import parse_path, path_text
from backpack.core.filter import MATCH_ALL, Node, parse_filter
from backpack.core.storage import IndexKey
from backpack.errors import BadRequest, InvalidQuery
from backpack.types import JSON, Document, Path

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000
MAX_FILTER_BYTES = 16 * 1024
MAX_SORT_KEYS = 8
MAX_FIELDS = 64


@dataclass(frozen=True, slots=True)
class ListParams:
    where: Node
    sort: tuple[IndexKey, ...]
    limit: int
    after: str | None
    offset: int
    fields: tuple[Path, ...] | None
    count: bool
    expand: tuple[str, ...]

    @property
    def sort_text(self) -> str:
        return ",".join(("-" if k.descending else "") + path_text(k.path) for k in self.sort)


def _int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidQuery(f"'{name}' must be a whole number.", {"parameter": name}) from None
    if not low <= value <= high:
        raise InvalidQuery(f"'{name}' must be between {low} and {high}.", {"parameter": name})
    return value


def _paths(text: str, name: str, limit: int) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if len(items) > limit:
        raise InvalidQuery(f"'{name}' takes at most {limit} entries.", {"parameter": name})
    return items


def parse_list_params(params: Mapping[str, str], *, limit_cap: int = MAX_LIMIT) -> ListParams:
    where = MATCH_ALL
    raw_filter = params.get("filter")
    if raw_filter:
        if len(raw_filter.encode()) > MAX_FILTER_BYTES:
            raise InvalidQuery(
                f"The filter is longer than {MAX_FILTER_BYTES} bytes.", {"parameter": "filter"}
            )
        try:
            value = orjson.loads(raw_filter)
        except orjson.JSONDecodeError as exc:
            raise InvalidQuery(
                f"The filter is not valid JSON: {exc.msg}.", {"parameter": "filter"}
            ) from None
        if jsonutil.depth_exceeds(value, 16):
            raise InvalidQuery("The filter nests deeper than 16 levels.", {"parameter": "filter"})
        where = parse_filter(jsonutil.normalize(value))

    sort: list[IndexKey] = []
    for item in _paths(params.get("sort") or "", "sort", MAX_SORT_KEYS) or ["id"]:
        descending = item.startswith("-")
        try:
            path = parse_path(item.lstrip("-+"), "sort")
        except BadRequest as exc:
            raise InvalidQuery(exc.message, {"parameter": "sort"}) from None
        if any(k.path == path for k in sort):
            raise InvalidQuery(f"'{item}' appears twice in sort.", {"parameter": "sort"})
        sort.append(IndexKey(path, descending))

    fields: tuple[Path, ...] | None = None
    if params.get("fields"):
        paths: list[Path] = []
        for item in _paths(params["fields"], "fields", MAX_FIELDS):
            try:
                path = parse_path(item, "fields")
            except BadRequest as exc:
                raise InvalidQuery(exc.message, {"parameter": "fields"}) from None
            if any(isinstance(p, int) for p in path):
                raise InvalidQuery(
                    "Projected fields name object keys, not array positions.",
                    {"parameter": "fields"},
                )
            paths.append(path)
        fields = tuple(paths)

    count_text = params.get("count", "false").lower()
    if count_text not in ("true", "false", "1", "0", ""):
        raise InvalidQuery("'count' must be true or false.", {"parameter": "count"})

    after = params.get("after") or None
    return ListParams(
        where=where,
        sort=tuple(sort),
        limit=_int_param(params, "limit", min(DEFAULT_LIMIT, limit_cap), 1, limit_cap),
        after=after,
        offset=_int_param(params, "offset", 0, 0, MAX_OFFSET),
        fields=fields,
        count=count_text in ("true", "1"),
        expand=tuple(_paths(params.get("expand") or "", "expand", 16)),
    )


class CursorCodec:
    """Opaque `next` cursors: the last row's sort values, signed so they cannot be forged."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, sort_text: str, values: Sequence[JSON]) -> str:
        payload = orjson.dumps([sort_text, list(values)])
        return base64.urlsafe_b64encode(self._mac(payload) + payload).rstrip(b"=").decode()

    def decode(self, cursor: str, sort_text: str, width: int) -> tuple[JSON, ...]:
        bad = InvalidQuery(
            "The cursor is invalid or belongs to another query.", {"parameter": "after"}
        )
        if len(cursor) > 4096:
            raise bad
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError):
            raise bad from None
        mac, payload = raw[:16], raw[16:]
        if len(mac) != 16 or not hmac.compare_digest(mac, self._mac(payload)):
            raise bad
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise bad from None
        if (
            not isinstance(data, list)
            or len(data) != 2
            or data[0] != sort_text
            or not isinstance(data[1], list)
            or len(data[1]) != width
        ):
            raise bad
        return tuple(data[1])


def project(record: Mapping[str, JSON], fields: Sequence[Path]) -> Document:
    """Keep only `fields` (dotted object paths) of `record`; `id` always stays."""
    out: Document = {"id": record.get("id")}
    for path in fields:
        value: JSON = dict(record)
        for key in path:
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            target = out
            for key in path[:-1]:
                nested = target.get(str(key))
                if not isinstance(nested, dict):
                    nested = {}
                    target[str(key)] = nested
                target = nested
            target[str(path[-1])] = value
    return out
