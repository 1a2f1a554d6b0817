"""Type aliases shared across the package."""

from __future__ import annotations

from typing import TypeAlias

JSONScalar: TypeAlias = str | int | float | bool | None
JSON: TypeAlias = JSONScalar | list["JSON"] | dict[str, "JSON"]
JSONObject: TypeAlias = dict[str, JSON]
Document: TypeAlias = dict[str, JSON]
Path: TypeAlias = tuple[str | int, ...]
