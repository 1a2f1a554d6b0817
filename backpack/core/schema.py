"""Collection schemas: parsing a schema definition and validating documents against it.

A schema is `{"fields": {NAME: Field}, "strict": bool}`; `null` means "any JSON
object". Parsing checks the definition once and collects every problem; each
parsed field then lazily builds a validator closure, so validating a document on
every write is a few dict lookups and type checks per declared field.
"""

from __future__ import annotations

import copy
import enum
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from functools import cached_property, lru_cache
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import urlsplit

import re2

from backpack.core.jsonutil import normalize
from backpack.errors import ValidationFailed
from backpack.types import JSON

FIELD_TYPES: Final = (
    "string",
    "number",
    "integer",
    "boolean",
    "object",
    "array",
    "date",
    "email",
    "url",
    "json",
    "relation",
    "file",
)
SYSTEM_FIELDS: Final = frozenset({"id", "created", "updated", "owner", "version", "expand"})

MAX_FIELDS: Final = 200
MAX_ENUM_VALUES: Final = 1000
MAX_PATTERN_LENGTH: Final = 512
MAX_EMAIL_LENGTH: Final = 254
MAX_URL_LENGTH: Final = 2048

SCHEMA_INVALID: Final = "The schema is invalid."
DOCUMENT_INVALID: Final = "The record does not match the collection's schema."


class _NoDefault(enum.Enum):
    """A sentinel type: `None` cannot mean "no default" because null is a JSON value."""

    NO_DEFAULT = enum.auto()


NO_DEFAULT: Final = _NoDefault.NO_DEFAULT

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_COLLECTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Pragmatic, not RFC 5322: one @, a non-empty local part, a dotted domain with no
# empty labels, and no whitespace or control characters anywhere.
_EMAIL = re.compile(r"[^\s@\x00-\x1f\x7f]+@[^\s@.\x00-\x1f\x7f]+(?:\.[^\s@.\x00-\x1f\x7f]+)+")
# urlsplit silently drops tabs and newlines, so raw whitespace is rejected up front.
_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
# RFC 3339 full-date or date-time; `T`/`Z` may be lower case (RFC 3339 5.6 note).
# [0-9] rather than \d, which would also match non-ASCII digits.
_DATE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2})))?"
)

_SCHEMA_KEYS: Final = frozenset({"fields", "strict"})
_OPTION_KEYS: Final = (
    "type",
    "required",
    "default",
    "unique",
    "enum",
    "min",
    "max",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "collection",
)
_TEXT_OPTIONS: Final = frozenset({"unique", "enum", "minLength", "maxLength", "pattern"})
_NUMBER_OPTIONS: Final = frozenset({"unique", "enum", "min", "max"})
# Options beyond type/required/default that each type accepts.
_APPLICABLE: Final[Mapping[str, frozenset[str]]] = {
    "string": _TEXT_OPTIONS,
    "email": _TEXT_OPTIONS,
    "url": _TEXT_OPTIONS,
    "number": _NUMBER_OPTIONS,
    "integer": _NUMBER_OPTIONS,
    "boolean": frozenset({"unique"}),
    "date": frozenset({"unique", "min", "max"}),
    "object": frozenset(),
    "json": frozenset(),
    "array": frozenset({"items", "minLength", "maxLength"}),
    "relation": frozenset({"unique", "collection"}),
    "file": frozenset({"unique"}),
}
# Array items describe elements, which are never absent and have no identity of their own.
_NOT_FOR_ITEMS: Final = frozenset({"required", "default", "unique"})
_SCALAR_KINDS: Final[Mapping[str, str]] = {
    "string": "string",
    "email": "string",
    "url": "string",
    "date": "string",
    "relation": "string",
    "file": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
}

_TYPE_MESSAGES: Final[Mapping[str, str]] = {
    "string": "must be a string",
    "number": "must be a number",
    "integer": "must be an integer",
    "boolean": "must be true or false",
    "object": "must be an object",
    "array": "must be an array",
    "date": "must be an RFC 3339 date or date-time, e.g. 2026-11-27 or 2026-11-27T19:15:19.123Z",
    "email": "must be an email address",
    "url": "must be an absolute http or https URL",
    "relation": "must be a record id (1 to 64 letters, digits, _ or -)",
    "file": "must be a file id (1 to 64 letters, digits, _ or -)",
}

# A problem finder returns the first thing wrong with a value, or None.
_Problem = Callable[[Any], str | None]
# A checker records problems under dotted paths (arrays report per item).
_Check = Callable[[Any, str, dict[str, str]], None]
_Instant = tuple[int, str]


@dataclass(frozen=True)
class FieldSpec:
    """One declared field. Option names are the JSON ones in snake_case."""

    type: str
    required: bool = False
    default: JSON | Literal[_NoDefault.NO_DEFAULT] = NO_DEFAULT
    unique: bool = False
    enum: tuple[JSON, ...] | None = None
    # Numbers for number/integer, RFC 3339 strings for date.
    min: int | float | str | None = None
    max: int | float | str | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    items: FieldSpec | None = None
    collection: str | None = None

    @cached_property
    def _check(self) -> _Check:
        return _build_check(self)


class _Compiled(NamedTuple):
    fields: tuple[tuple[str, bool, _Check], ...]
    names: frozenset[str]
    defaults: tuple[tuple[str, JSON], ...]
    strict: bool


@dataclass(frozen=True)
class Schema:
    """A parsed schema; parse_schema stores `fields` read-only, in declaration order."""

    fields: Mapping[str, FieldSpec]
    strict: bool = False

    @cached_property
    def _compiled(self) -> _Compiled:
        # Built once per Schema, on first use, so each write pays only for the checks.
        return _Compiled(
            fields=tuple((name, f.required, f._check) for name, f in self.fields.items()),
            names=frozenset(self.fields),
            defaults=tuple(
                (name, f.default) for name, f in self.fields.items() if f.default is not NO_DEFAULT
            ),
            strict=self.strict,
        )


# --------------------------------------------------------------------------- values


def _show(value: JSON) -> str:
    # Python's json, not orjson: it never fails on big ints and keeps messages readable.
    return json.dumps(value, ensure_ascii=False)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_email(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= MAX_EMAIL_LENGTH
        and _EMAIL.fullmatch(value) is not None
    )


def _is_url(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH or _URL_FORBIDDEN.search(value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _date_instant(value: str) -> _Instant | None:
    """The instant `value` names as (UTC seconds from 0001-01-01, fraction digits).

    Fraction digits are kept as a string with trailing zeros stripped, so that any
    precision compares exactly: for such strings, lexicographic order is numeric order.
    """
    m = _DATE.fullmatch(value)
    if m is None:
        return None
    try:
        # date() rejects year 0, month 13, Feb 30, Feb 29 outside leap years, …
        seconds = date(int(m[1]), int(m[2]), int(m[3])).toordinal() * 86400
    except ValueError:
        return None
    if m[4] is None:
        return seconds, ""  # a full-date is its midnight UTC
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    # Leap seconds (:60) are refused: neither Python nor most clients can represent them.
    if hour > 23 or minute > 59 or second > 59:
        return None
    seconds += hour * 3600 + minute * 60 + second
    if m[8] is not None:
        offset_hours, offset_minutes = int(m[9]), int(m[10])
        if offset_hours > 23 or offset_minutes > 59:
            return None
        offset = offset_hours * 3600 + offset_minutes * 60
        seconds += -offset if m[8] == "+" else offset
    return seconds, (m[7] or "").rstrip("0")


def _instant_of(value: str) -> _Instant:
    """The instant of a string already known to be a valid date."""
    instant = _date_instant(value)
    assert instant is not None
    return instant


def _is_date(value: Any) -> bool:
    return isinstance(value, str) and _date_instant(value) is not None


_TYPE_TESTS: Final[Mapping[str, Callable[[Any], bool]]] = {
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "integer": _is_integer,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "date": _is_date,
    "email": is_email,
    "url": _is_url,
    "json": lambda v: True,
    "relation": _is_id,
    "file": _is_id,
}


_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad user pattern is a 400, not a line on stderr


@lru_cache(maxsize=512)
def _compile_pattern(pattern: str) -> Any:
    return re2.compile(pattern, options=_RE2_OPTIONS)


# --------------------------------------------------------------------------- validators


def _type_problem(type_: str) -> _Problem:
    test = _TYPE_TESTS[type_]
    message = _TYPE_MESSAGES.get(type_)

    def problem(value: Any) -> str | None:
        return None if test(value) else message

    return problem


def _constraints(spec: FieldSpec) -> list[_Problem]:
    """The checks beyond the type, for a value already known to be of the type."""
    found: list[_Problem] = []
    min_length, max_length = spec.min_length, spec.max_length
    if spec.type == "array":
        if min_length is not None:
            too_few = f"must have at least {_plural(min_length, 'item')}"
            found.append(lambda v: too_few if len(v) < min_length else None)
        if max_length is not None:
            too_many = f"must have at most {_plural(max_length, 'item')}"
            found.append(lambda v: too_many if len(v) > max_length else None)
        return found
    if min_length is not None:
        too_short = f"must be at least {_plural(min_length, 'character')} long"
        found.append(lambda v: too_short if len(v) < min_length else None)
    if max_length is not None:
        too_long = f"must be at most {_plural(max_length, 'character')} long"
        found.append(lambda v: too_long if len(v) > max_length else None)
    if spec.pattern is not None:
        regex = _compile_pattern(spec.pattern)
        mismatch = f"must match the pattern {spec.pattern}"
        found.append(lambda v: None if regex.search(v) else mismatch)
    if spec.type == "date":
        if isinstance(spec.min, str):
            earliest = _instant_of(spec.min)
            too_early = f"must be on or after {spec.min}"
            found.append(lambda v: too_early if _instant_of(v) < earliest else None)
        if isinstance(spec.max, str):
            latest = _instant_of(spec.max)
            too_late = f"must be on or before {spec.max}"
            found.append(lambda v: too_late if _instant_of(v) > latest else None)
    else:
        low, high = spec.min, spec.max
        if low is not None:
            too_small = f"must be at least {_show(low)}"
            found.append(lambda v: too_small if v < low else None)
        if high is not None:
            too_big = f"must be at most {_show(high)}"
            found.append(lambda v: too_big if v > high else None)
    if spec.enum is not None:
        allowed = frozenset(spec.enum)
        shown = ", ".join(_show(v) for v in spec.enum[:10])
        not_listed = f"must be one of {shown}" + (", …" if len(spec.enum) > 10 else "")
        # Type checks ran first, so bools never reach here (True == 1 in a set).
        found.append(lambda v: None if v in allowed else not_listed)
    return found


def _scalar_problem(spec: FieldSpec) -> _Problem:
    type_problem = _type_problem(spec.type)
    constraints = _constraints(spec)
    if not constraints:
        return type_problem

    def problem(value: Any) -> str | None:
        message = type_problem(value)
        if message is not None:
            return message
        for constraint in constraints:
            message = constraint(value)
            if message is not None:
                return message
        return None

    return problem


def _build_check(spec: FieldSpec) -> _Check:
    problem = _scalar_problem(spec)
    if spec.type != "array" or spec.items is None:

        def check(value: Any, path: str, errors: dict[str, str]) -> None:
            message = problem(value)
            if message is not None:
                errors[path] = message

        return check

    check_item = spec.items._check

    def check_array(value: Any, path: str, errors: dict[str, str]) -> None:
        message = problem(value)
        if message is not None:
            errors[path] = message
        if isinstance(value, list):
            # Report bad items even when the count is also wrong: collect everything.
            for index, item in enumerate(value):
                check_item(item, f"{path}.{index}", errors)

    return check_array


# --------------------------------------------------------------------------- parsing


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _parse_bool(raw: dict[str, Any], key: str, path: str, errors: dict[str, str]) -> bool:
    value = raw.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        errors[f"{path}.{key}"] = "must be true or false"
        return False
    return value


def _parse_length(raw: dict[str, Any], key: str, path: str, errors: dict[str, str]) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if not _is_integer(value) or value < 0:
        errors[f"{path}.{key}"] = "must be a non-negative integer"
        return None
    return int(value)


def _parse_bound(
    raw: dict[str, Any], key: str, type_: str, path: str, errors: dict[str, str]
) -> int | float | str | None:
    value = raw.get(key)
    if value is None:
        return None
    if type_ == "date":
        if not _is_date(value):
            errors[f"{path}.{key}"] = _TYPE_MESSAGES["date"]
            return None
        return str(value)
    if not _is_number(value):
        errors[f"{path}.{key}"] = "must be a number"
        return None
    return value  # type: ignore[no-any-return]


def _parse_pattern(raw: dict[str, Any], path: str, errors: dict[str, str]) -> str | None:
    value = raw.get("pattern")
    if value is None:
        return None
    if not isinstance(value, str):
        errors[f"{path}.pattern"] = "must be a string"
        return None
    if len(value) > MAX_PATTERN_LENGTH:
        errors[f"{path}.pattern"] = f"must be at most {MAX_PATTERN_LENGTH} characters long"
        return None
    try:
        _compile_pattern(value)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "unknown error"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        errors[f"{path}.pattern"] = f"is not a valid RE2 regular expression: {reason}"
        return None
    return value


def _parse_enum(raw: dict[str, Any], path: str, errors: dict[str, str]) -> tuple[JSON, ...] | None:
    value = raw.get("enum")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        errors[f"{path}.enum"] = "must be a non-empty array"
        return None
    if len(value) > MAX_ENUM_VALUES:
        errors[f"{path}.enum"] = f"must list at most {MAX_ENUM_VALUES} values"
        return None
    return tuple(value)


def _parse_collection(raw: dict[str, Any], path: str, errors: dict[str, str]) -> str | None:
    value = raw.get("collection")
    if value is None:
        errors[f"{path}.collection"] = "is required for a relation field"
        return None
    if not isinstance(value, str) or _COLLECTION_NAME.fullmatch(value) is None:
        errors[f"{path}.collection"] = (
            "must be a collection name (a letter, then letters, digits or _; at most 64)"
        )
        return None
    return value


def _check_enum_values(
    spec: FieldSpec, values: tuple[JSON, ...], path: str, errors: dict[str, str]
) -> None:
    """Every listed value must be one the field could accept, and listed once."""
    problem = _scalar_problem(replace(spec, enum=None))
    seen: set[JSON] = set()
    for index, value in enumerate(values):
        message = problem(value)
        # Only values that passed the type check reach the set: they are hashable scalars.
        if message is None and value in seen:
            message = "repeats an earlier value"
        if message is not None:
            errors[f"{path}.enum.{index}"] = message
        else:
            seen.add(value)


def _bounds_inverted(spec: FieldSpec) -> bool:
    low, high = spec.min, spec.max
    if isinstance(low, str) and isinstance(high, str):
        return _instant_of(low) > _instant_of(high)
    if isinstance(low, int | float) and isinstance(high, int | float):
        return low > high
    return False


def _parse_field(
    raw: Any, path: str, errors: dict[str, str], *, in_items: bool
) -> FieldSpec | None:
    if not isinstance(raw, dict):
        errors[path] = "must be an object"
        return None
    before = len(errors)
    for key in raw:
        if key not in _OPTION_KEYS:
            errors[f"{path}.{key}"] = "is not a known field option"
    # An option set to null counts as not given, so forms may send every key.
    given = {key: value for key, value in raw.items() if key in _OPTION_KEYS and value is not None}
    type_ = given.get("type")
    if type_ is None:
        errors[f"{path}.type"] = "is required"
        return None
    if not isinstance(type_, str) or type_ not in _APPLICABLE:
        errors[f"{path}.type"] = "must be one of " + ", ".join(FIELD_TYPES)
        return None
    allowed = _APPLICABLE[type_] | {"type", "required", "default"}
    if in_items:
        allowed -= _NOT_FOR_ITEMS
    for key in given:
        if key not in allowed:
            errors[f"{path}.{key}"] = (
                "does not apply to array items"
                if in_items and key in _NOT_FOR_ITEMS
                else f"does not apply to {_article(type_)} {type_} field"
            )
    given = {key: value for key, value in given.items() if key in allowed}

    items = None
    if "items" in given:
        items = _parse_field(given["items"], f"{path}.items", errors, in_items=True)
    enum_values = _parse_enum(given, path, errors)
    spec = FieldSpec(
        type=type_,
        required=_parse_bool(given, "required", path, errors),
        default=given.get("default", NO_DEFAULT),
        unique=_parse_bool(given, "unique", path, errors),
        min=_parse_bound(given, "min", type_, path, errors),
        max=_parse_bound(given, "max", type_, path, errors),
        min_length=_parse_length(given, "minLength", path, errors),
        max_length=_parse_length(given, "maxLength", path, errors),
        pattern=_parse_pattern(given, path, errors),
        items=items,
        collection=_parse_collection(given, path, errors) if type_ == "relation" else None,
    )
    if _bounds_inverted(spec):
        errors[f"{path}.min"] = "must not be greater than max"
    if (
        spec.min_length is not None
        and spec.max_length is not None
        and spec.min_length > spec.max_length
    ):
        errors[f"{path}.minLength"] = "must not be greater than maxLength"
    if len(errors) > before:
        return None
    # Enum values and the default are checked with the field's own validator, which
    # needs every other option to be valid first.
    if enum_values is not None:
        _check_enum_values(spec, enum_values, path, errors)
        spec = replace(spec, enum=enum_values)
    if spec.default is not NO_DEFAULT:
        spec._check(spec.default, f"{path}.default", errors)
    return spec if len(errors) == before else None


def _parse_schema(value: Any, errors: dict[str, str]) -> Schema | None:
    if not isinstance(value, dict):
        errors["schema"] = "must be an object or null"
        return None
    for key in value:
        if key not in _SCHEMA_KEYS:
            errors[f"schema.{key}"] = "is not a known schema option"
    strict = _parse_bool(value, "strict", "schema", errors)
    raw_fields = value.get("fields")
    if raw_fields is None:
        raw_fields = {}
    if not isinstance(raw_fields, dict):
        errors["schema.fields"] = "must be an object mapping field names to fields"
        return None
    if len(raw_fields) > MAX_FIELDS:
        errors["schema.fields"] = f"must declare at most {MAX_FIELDS} fields"
    fields: dict[str, FieldSpec] = {}
    for name, raw in raw_fields.items():
        path = f"schema.fields.{name}"
        if not isinstance(name, str) or _FIELD_NAME.fullmatch(name) is None:
            errors[path] = (
                "is not a valid field name (a letter or _, then letters, digits or _; at most 64)"
            )
        elif name in SYSTEM_FIELDS:
            errors[path] = "is a system field and cannot be declared"
        else:
            spec = _parse_field(raw, path, errors, in_items=False)
            if spec is not None:
                fields[name] = spec
    if errors:
        return None
    return Schema(fields=MappingProxyType(fields), strict=strict)


# --------------------------------------------------------------------------- public API


def parse_schema(value: object) -> Schema | None:
    """Parse a schema definition; None for null. Raises ValidationFailed listing every problem."""
    if value is None:
        return None
    errors: dict[str, str] = {}
    schema = _parse_schema(normalize(value), errors)
    if schema is None:
        raise ValidationFailed(SCHEMA_INVALID, fields=errors)
    return schema


def _field_to_json(spec: FieldSpec) -> dict[str, JSON]:
    out: dict[str, JSON] = {"type": spec.type}
    if spec.required:
        out["required"] = True
    if spec.default is not NO_DEFAULT:
        out["default"] = copy.deepcopy(spec.default)
    if spec.unique:
        out["unique"] = True
    if spec.enum is not None:
        out["enum"] = list(spec.enum)
    if spec.min is not None:
        out["min"] = spec.min
    if spec.max is not None:
        out["max"] = spec.max
    if spec.min_length is not None:
        out["minLength"] = spec.min_length
    if spec.max_length is not None:
        out["maxLength"] = spec.max_length
    if spec.pattern is not None:
        out["pattern"] = spec.pattern
    if spec.items is not None:
        out["items"] = _field_to_json(spec.items)
    if spec.collection is not None:
        out["collection"] = spec.collection
    return out


def schema_to_json(schema: Schema | None) -> JSON:
    """The canonical JSON form: options left at their defaults are omitted."""
    if schema is None:
        return None
    return {
        "fields": {name: _field_to_json(spec) for name, spec in schema.fields.items()},
        "strict": schema.strict,
    }


def apply_defaults(schema: Schema | None, doc: Mapping[str, JSON]) -> dict[str, JSON]:
    """A new dict with each absent or null field that has a default set to it."""
    out = dict(doc)
    if schema is None:
        return out
    for name, default in schema._compiled.defaults:
        if out.get(name) is None:
            # Copied so that a stored document never shares a list or object with the schema.
            out[name] = copy.deepcopy(default) if isinstance(default, (list, dict)) else default
    return out


def document_errors(schema: Schema | None, doc: Mapping[str, JSON]) -> dict[str, str]:
    """Every problem of `doc` (user fields only) as {dotted path: sentence}; {} when valid."""
    if schema is None:
        return {}
    compiled = schema._compiled
    errors: dict[str, str] = {}
    for name, required, check in compiled.fields:
        value = doc.get(name)
        if value is None:
            if required:
                errors[name] = "is required"
        else:
            check(value, name, errors)
    if compiled.strict:
        for name in doc:
            if name not in compiled.names and name not in SYSTEM_FIELDS:
                errors[name] = "is not a field of this collection's strict schema"
    return errors


def validate_document(schema: Schema | None, doc: Mapping[str, JSON]) -> None:
    errors = document_errors(schema, doc)
    if errors:
        raise ValidationFailed(DOCUMENT_INVALID, fields=errors)


def scalar_field_types(schema: Schema | None) -> dict[str, str]:
    """Field → "string" | "number" | "boolean" where every non-null value has that JSON kind."""
    if schema is None:
        return {}
    return {
        name: _SCALAR_KINDS[spec.type]
        for name, spec in schema.fields.items()
        if spec.type in _SCALAR_KINDS
    }


def unique_fields(schema: Schema | None) -> list[str]:
    if schema is None:
        return []
    return [name for name, spec in schema.fields.items() if spec.unique]


def relation_fields(schema: Schema | None) -> dict[str, tuple[str, bool]]:
    """Field → (target collection, is_array) for relations and arrays of relations."""
    if schema is None:
        return {}
    found: dict[str, tuple[str, bool]] = {}
    for name, spec in schema.fields.items():
        if spec.type == "relation" and spec.collection is not None:
            found[name] = (spec.collection, False)
        elif (
            spec.type == "array"
            and spec.items is not None
            and spec.items.type == "relation"
            and spec.items.collection is not None
        ):
            found[name] = (spec.items.collection, True)
    return found


__all__ = [
    "DOCUMENT_INVALID",
    "FIELD_TYPES",
    "MAX_ENUM_VALUES",
    "MAX_FIELDS",
    "MAX_PATTERN_LENGTH",
    "NO_DEFAULT",
    "SCHEMA_INVALID",
    "SYSTEM_FIELDS",
    "FieldSpec",
    "Schema",
    "apply_defaults",
    "document_errors",
    "is_email",
    "parse_schema",
    "relation_fields",
    "scalar_field_types",
    "schema_to_json",
    "unique_fields",
    "validate_document",
]
