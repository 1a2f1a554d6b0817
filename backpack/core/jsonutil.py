"""Canonical JSON: one encoding for storage, comparison and responses."""

from __future__ import annotations

from typing import Any

import orjson

from backpack.errors import BadRequest
from backpack.types import JSON

# Integral floats become ints so that 1 and 1.0 are one value everywhere
# (JavaScript, the main client, cannot tell them apart either).
_SAFE_INT = 2**53


def normalize(value: Any) -> JSON:
    if isinstance(value, float):
        if value.is_integer() and -_SAFE_INT <= value <= _SAFE_INT:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value  # type: ignore[no-any-return]


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def dumps_str(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def depth_exceeds(value: Any, limit: int) -> bool:
    """True when `value` nests objects/arrays deeper than `limit` levels."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item)
    return False


def parse_body(raw: bytes, *, max_depth: int) -> JSON:
    """Parse a request body strictly: UTF-8, one JSON value, bounded depth."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc.msg}.") from None
    if depth_exceeds(value, max_depth):
        raise BadRequest(f"The body nests deeper than {max_depth} levels.")
    return normalize(value)
