"""Collections: names, rules, indexes and schema, parsed once into a ready-to-use form."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from backpack.core import jsonutil
from backpack.core.filter import Node, parse_filter
from backpack.core.schema import (
    Schema,
    parse_schema,
    relation_fields,
    scalar_field_types,
    schema_to_json,
    unique_fields,
)
from backpack.core.storage import IndexDef, IndexKey
from backpack.errors import BackpackError, BadRequest, ValidationFailed
from backpack.types import JSON, JSONObject, Path

COLLECTION_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
SYSTEM_FIELDS: Final = ("id", "created", "updated", "owner", "version")
SYSTEM_FIELD_TYPES: Final[Mapping[str, str]] = {
    "created": "string",
    "updated": "string",
    "owner": "string",
    "version": "number",
}
RULE_OPERATIONS: Final = ("list", "read", "create", "update", "delete")
MAX_INDEXES: Final = 32
_PATH_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*|\d{1,4}")

_SIGNED_IN: JSON = {"@auth": {"$ne": None}}
_OWNER: JSON = {"owner": "@auth.id"}
DEFAULT_RULES: Final[Mapping[str, JSON]] = {
    "list": _OWNER,
    "read": _OWNER,
    "create": _SIGNED_IN,
    "update": _OWNER,
    "delete": _OWNER,
}

# A rule: None (secret key / admin only), True (everyone) or a parsed filter.
Rule = Node | bool | None


def check_collection_name(name: object) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
        raise BadRequest(
            "A collection name starts with a letter and has up to 64 letters, digits and '_'.",
            {"field": "name"},
        )
    return name


def parse_path(text: str, what: str = "path") -> Path:
    segments = text.split(".")
    if len(segments) > 16 or not all(_PATH_SEGMENT.fullmatch(s) for s in segments):
        raise BadRequest(f"'{text[:80]}' is not a valid {what}.", {"field": what})
    return tuple(int(s) if s.isdigit() else s for s in segments)


def path_text(path: Path) -> str:
    return ".".join(str(p) for p in path)


@dataclass(frozen=True, slots=True)
class IndexSpec:
    keys: tuple[IndexKey, ...]
    unique: bool

    @property
    def name(self) -> str:
        text = ",".join(("-" if k.descending else "") + path_text(k.path) for k in self.keys)
        return hashlib.sha1(f"{text}|{self.unique}".encode()).hexdigest()[:16]

    def to_json(self) -> JSONObject:
        return {
            "fields": [("-" if k.descending else "") + path_text(k.path) for k in self.keys],
            "unique": self.unique,
        }

    def to_index_def(self) -> IndexDef:
        return IndexDef(self.name, self.keys, self.unique)


def parse_indexes(value: object) -> tuple[IndexSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValidationFailed("Indexes must be a list.", {"indexes": "must be a list"})
    if len(value) > MAX_INDEXES:
        raise ValidationFailed(
            f"At most {MAX_INDEXES} indexes.", {"indexes": f"at most {MAX_INDEXES}"}
        )
    specs: list[IndexSpec] = []
    problems: dict[str, str] = {}
    for i, item in enumerate(value):
        where = f"indexes.{i}"
        if not isinstance(item, dict) or set(item) - {"fields", "unique"}:
            problems[where] = 'must be {"fields": [...], "unique": bool}'
            continue
        fields = item.get("fields")
        unique = item.get("unique", False)
        if not isinstance(unique, bool):
            problems[f"{where}.unique"] = "must be true or false"
            continue
        if not isinstance(fields, list) or not 1 <= len(fields) <= 8:
            problems[f"{where}.fields"] = "must list 1 to 8 field paths"
            continue
        keys: list[IndexKey] = []
        for j, text in enumerate(fields):
            if not isinstance(text, str):
                problems[f"{where}.fields.{j}"] = "must be a field path"
                continue
            descending = text.startswith("-")
            try:
                keys.append(IndexKey(parse_path(text.removeprefix("-")), descending))
            except BadRequest:
                problems[f"{where}.fields.{j}"] = "must be a dotted field path"
        if len(keys) == len(fields):
            spec = IndexSpec(tuple(keys), unique)
            if spec in specs:
                problems[where] = "duplicates another index"
            specs.append(spec)
    if problems:
        raise ValidationFailed("The indexes are invalid.", problems)
    return tuple(specs)


def parse_rules(value: object, base: Mapping[str, JSON] | None = None) -> dict[str, JSON]:
    """Validate rules; missing operations keep `base` (or the defaults)."""
    rules: dict[str, JSON] = dict(base if base is not None else DEFAULT_RULES)
    if value is None:
        return rules
    if not isinstance(value, dict):
        raise ValidationFailed("Rules must be an object.", {"rules": "must be an object"})
    problems: dict[str, str] = {}
    for op, rule in value.items():
        where = f"rules.{op}"
        if op not in RULE_OPERATIONS:
            problems[where] = "is not one of list, read, create, update, delete"
            continue
        if rule is None or rule is True:
            rules[op] = rule
            continue
        if not isinstance(rule, dict):
            problems[where] = "must be null, true or a filter object"
            continue
        try:
            parse_filter(rule, allow_variables=True)
        except BackpackError as exc:
            problems[where] = exc.message
            continue
        if op not in ("create", "update") and _mentions_body(rule):
            problems[where] = "may use @body only in create and update rules (there is no body)"
            continue
        rules[op] = rule
    if problems:
        raise ValidationFailed("The rules are invalid.", problems)
    return rules


def _mentions_body(value: JSON) -> bool:
    if isinstance(value, str):
        return value.startswith("@body.")
    if isinstance(value, dict):
        return any(_mentions_body(v) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_body(v) for v in value)
    return False


# Named rule sets, offered by the console and documented in docs/api.md.
RULE_PRESETS: Final[Mapping[str, Mapping[str, JSON]]] = {
    "private": dict.fromkeys(RULE_OPERATIONS),
    "owner_only": DEFAULT_RULES,
    "signed_in_read_owner_write": {
        "list": _SIGNED_IN,
        "read": _SIGNED_IN,
        "create": _SIGNED_IN,
        "update": _OWNER,
        "delete": _OWNER,
    },
    "public_read": {
        "list": True,
        "read": True,
        "create": _SIGNED_IN,
        "update": _OWNER,
        "delete": _OWNER,
    },
    "public": dict.fromkeys(RULE_OPERATIONS, True),
}


def _compile_rule(rule: JSON) -> Rule:
    if rule is None or rule is True:
        return rule
    return parse_filter(rule, allow_variables=True)


@dataclass(frozen=True)
class Collection:
    name: str
    schema: Schema | None
    rules: Mapping[str, JSON]
    indexes: tuple[IndexSpec, ...]
    created: str
    updated: str
    compiled_rules: Mapping[str, Rule] = field(init=False, compare=False)
    field_types: Mapping[str, str] = field(init=False, compare=False)
    relations: Mapping[str, tuple[str, bool]] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "compiled_rules", {op: _compile_rule(self.rules[op]) for op in RULE_OPERATIONS})
        # System fields have known kinds too, so rules on `owner` can use its index.
        set_(self, "field_types", {**scalar_field_types(self.schema), **SYSTEM_FIELD_TYPES})
        set_(self, "relations", relation_fields(self.schema))

    def all_indexes(self) -> tuple[IndexDef, ...]:
        """Declared indexes, one unique index per unique schema field, and `owner` (rules)."""
        specs = list(self.indexes)
        for name in unique_fields(self.schema):
            spec = IndexSpec((IndexKey((name,)),), True)
            if spec not in specs:
                specs.append(spec)
        owner = IndexSpec((IndexKey(("owner",)),), False)
        if owner not in specs:
            specs.append(owner)
        return tuple(spec.to_index_def() for spec in specs)

    def index_fields(self, index_name: str) -> list[str]:
        for index in self.all_indexes():
            if index.name == index_name:
                return [path_text(k.path) for k in index.keys]
        return []

    def to_json(self) -> JSONObject:
        return {
            "name": self.name,
            "schema": schema_to_json(self.schema),
            "rules": dict(self.rules),
            "indexes": [spec.to_json() for spec in self.indexes],
            "created": self.created,
            "updated": self.updated,
        }

    def meta(self) -> str:
        return jsonutil.dumps_str(self.to_json())


def collection_from_meta(meta: str) -> Collection:
    data = jsonutil.loads(meta)
    return Collection(
        name=data["name"],
        schema=parse_schema(data["schema"]),
        rules=data["rules"],
        indexes=parse_indexes(data["indexes"]),
        created=data["created"],
        updated=data["updated"],
    )


def system_collection(name: str, *index_fields: tuple[str, bool]) -> Collection:
    """A collection a service keeps its own data in: no schema, closed to every API caller."""
    return Collection(
        name=name,
        schema=None,
        rules=dict.fromkeys(RULE_OPERATIONS),
        indexes=tuple(IndexSpec((IndexKey((field,)),), unique) for field, unique in index_fields),
        created="",
        updated="",
    )
