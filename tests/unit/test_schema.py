"""Schema definitions and document validation (backpack.core.schema)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backpack.core.schema import (
    DOCUMENT_INVALID,
    NO_DEFAULT,
    SCHEMA_INVALID,
    FieldSpec,
    Schema,
    apply_defaults,
    document_errors,
    parse_schema,
    relation_fields,
    scalar_field_types,
    schema_to_json,
    unique_fields,
    validate_document,
)
from backpack.errors import ValidationFailed
from backpack.types import JSON


def schema_errors(value: object) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as info:
        parse_schema(value)
    assert info.value.message == SCHEMA_INVALID
    assert info.value.details["fields"] == info.value.fields
    return info.value.fields


def field_errors(field: dict[str, Any]) -> dict[str, str]:
    """Schema errors for a single field named `f`, with the common prefix removed."""
    errors = schema_errors({"fields": {"f": field}})
    return {key.removeprefix("schema.fields.f"): value for key, value in errors.items()}


def one(field: dict[str, Any]) -> Schema:
    schema = parse_schema({"fields": {"f": field}})
    assert schema is not None
    return schema


def check(field: dict[str, Any], value: JSON) -> str | None:
    """The error for `value` in a field `f` of the given definition, or None."""
    return document_errors(one(field), {"f": value}).get("f")


# --------------------------------------------------------------------------- schema shape


def test_null_schema_accepts_any_object() -> None:
    assert parse_schema(None) is None
    assert schema_to_json(None) is None
    assert document_errors(None, {"anything": [1, {"x": None}]}) == {}
    validate_document(None, {"a": 1})
    assert apply_defaults(None, {"a": 1}) == {"a": 1}
    assert scalar_field_types(None) == {}
    assert unique_fields(None) == []
    assert relation_fields(None) == {}


def test_minimal_schemas() -> None:
    assert parse_schema({}) == Schema(fields={}, strict=False)
    assert parse_schema({"fields": {}, "strict": True}) == Schema(fields={}, strict=True)
    assert parse_schema({"fields": None, "strict": None}) == Schema(fields={}, strict=False)


@pytest.mark.parametrize("value", [[], "x", 1, True])
def test_schema_must_be_an_object(value: object) -> None:
    assert schema_errors(value) == {"schema": "must be an object or null"}


def test_schema_top_level_errors() -> None:
    assert schema_errors({"fields": [], "strict": "yes", "extra": 1}) == {
        "schema.extra": "is not a known schema option",
        "schema.strict": "must be true or false",
        "schema.fields": "must be an object mapping field names to fields",
    }


def test_field_must_be_an_object() -> None:
    assert field_errors("string") == {"": "must be an object"}  # type: ignore[arg-type]


def test_type_is_required_and_known() -> None:
    assert field_errors({}) == {".type": "is required"}
    assert field_errors({"type": None}) == {".type": "is required"}
    for bad in ["text", "String", 3, ["string"]]:
        message = field_errors({"type": bad})[".type"]
        assert message.startswith("must be one of string, number, integer")


def test_unknown_field_options() -> None:
    assert field_errors({"type": "string", "maxlength": 3, "nullable": None}) == {
        ".maxlength": "is not a known field option",
        ".nullable": "is not a known field option",
    }


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a.b", "a b", "é", "a" * 65, "$x", "a\n"])
def test_bad_field_names(name: str) -> None:
    errors = schema_errors({"fields": {name: {"type": "string"}}})
    assert errors == {
        f"schema.fields.{name}": (
            "is not a valid field name (a letter or _, then letters, digits or _; at most 64)"
        )
    }


@pytest.mark.parametrize("name", ["a", "_", "_private", "A9_z", "a" * 64, "ID", "Owner"])
def test_good_field_names(name: str) -> None:
    schema = parse_schema({"fields": {name: {"type": "string"}}})
    assert schema is not None
    assert list(schema.fields) == [name]


@pytest.mark.parametrize("name", ["id", "created", "updated", "owner", "version", "expand"])
def test_system_field_names_rejected(name: str) -> None:
    assert schema_errors({"fields": {name: {"type": "string"}}}) == {
        f"schema.fields.{name}": "is a system field and cannot be declared"
    }


def test_at_most_200_fields() -> None:
    fields = {f"f{i}": {"type": "string"} for i in range(200)}
    assert parse_schema({"fields": fields}) is not None
    fields["one_more"] = {"type": "string"}
    assert schema_errors({"fields": fields}) == {"schema.fields": "must declare at most 200 fields"}


# --------------------------------------------------------------------------- options per type

ALL_TYPES = [
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
]

# One valid value of each option, for the types it applies to.
OPTION_SAMPLES: dict[str, dict[str, Any]] = {
    "unique": {t: True for t in ALL_TYPES},
    "enum": {
        "string": ["a"],
        "email": ["a@b.co"],
        "url": ["https://x.io"],
        "number": [1.5],
        "integer": [1],
    },
    "min": {"number": 0, "integer": 0, "date": "2020-01-01"},
    "max": {"number": 9, "integer": 9, "date": "2030-01-01"},
    "minLength": {t: 1 for t in ALL_TYPES},
    "maxLength": {t: 9 for t in ALL_TYPES},
    "pattern": {t: "." for t in ALL_TYPES},
    "items": {t: {"type": "string"} for t in ALL_TYPES},
    "collection": {t: "posts" for t in ALL_TYPES},
}
APPLICABLE = {
    "unique": {
        "string",
        "number",
        "integer",
        "boolean",
        "date",
        "email",
        "url",
        "relation",
        "file",
    },
    "enum": {"string", "email", "url", "number", "integer"},
    "min": {"number", "integer", "date"},
    "max": {"number", "integer", "date"},
    "minLength": {"string", "email", "url", "array"},
    "maxLength": {"string", "email", "url", "array"},
    "pattern": {"string", "email", "url"},
    "items": {"array"},
    "collection": {"relation"},
}


def base(type_: str) -> dict[str, Any]:
    return {"type": type_, "collection": "posts"} if type_ == "relation" else {"type": type_}


@pytest.mark.parametrize("type_", ALL_TYPES)
@pytest.mark.parametrize("option", sorted(APPLICABLE))
def test_option_applicability(type_: str, option: str) -> None:
    field = base(type_)
    if type_ in APPLICABLE[option]:
        field[option] = OPTION_SAMPLES[option][type_]
        assert one(field).fields["f"].type == type_
    else:
        field[option] = OPTION_SAMPLES[option].get(type_, 1)
        article = "an" if type_[0] in "aeiou" else "a"
        assert field_errors(field) == {f".{option}": f"does not apply to {article} {type_} field"}


def test_null_option_counts_as_absent() -> None:
    spec = one({"type": "boolean", "pattern": None, "enum": None, "required": None}).fields["f"]
    assert spec == FieldSpec(type="boolean")


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_required_and_default_apply_to_every_type(type_: str) -> None:
    assert one({**base(type_), "required": True}).fields["f"].required


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("required", "yes", "must be true or false"),
        ("required", 1, "must be true or false"),
        ("unique", 0, "must be true or false"),
        ("minLength", -1, "must be a non-negative integer"),
        ("minLength", 1.5, "must be a non-negative integer"),
        ("maxLength", True, "must be a non-negative integer"),
        ("maxLength", "3", "must be a non-negative integer"),
        ("pattern", 3, "must be a string"),
        ("pattern", "x" * 513, "must be at most 512 characters long"),
        ("enum", [], "must be a non-empty array"),
        ("enum", "a", "must be a non-empty array"),
        ("enum", ["a"] * 1001, "must list at most 1000 values"),
    ],
)
def test_bad_option_values_on_string(option: str, value: Any, message: str) -> None:
    assert field_errors({"type": "string", option: value}) == {f".{option}": message}


def test_pattern_must_compile_with_re2() -> None:
    errors = field_errors({"type": "string", "pattern": "(a"})
    assert errors[".pattern"].startswith("is not a valid RE2 regular expression: missing )")
    # Look-behind is valid for Python's re but not RE2 (which guarantees linear time).
    assert ".pattern" in field_errors({"type": "string", "pattern": "(?<=a)b"})


def test_pattern_of_max_length_is_accepted() -> None:
    assert one({"type": "string", "pattern": "a" * 512}).fields["f"].pattern == "a" * 512


@pytest.mark.parametrize(
    ("field", "errors"),
    [
        ({"type": "number", "min": "1"}, {".min": "must be a number"}),
        ({"type": "integer", "max": True}, {".max": "must be a number"}),
        ({"type": "number", "min": 5, "max": 1}, {".min": "must not be greater than max"}),
        (
            {"type": "string", "minLength": 5, "maxLength": 1},
            {".minLength": "must not be greater than maxLength"},
        ),
        (
            {"type": "array", "minLength": 3, "maxLength": 2},
            {".minLength": "must not be greater than maxLength"},
        ),
        (
            {"type": "date", "min": "2026-02-30"},
            {
                ".min": "must be an RFC 3339 date or date-time, e.g. 2026-11-27 or "
                "2026-11-27T19:15:19.123Z"
            },
        ),
        (
            {"type": "date", "min": 5},
            {
                ".min": "must be an RFC 3339 date or date-time, e.g. 2026-11-27 or "
                "2026-11-27T19:15:19.123Z"
            },
        ),
        (
            {"type": "date", "min": "2026-01-02", "max": "2026-01-01T23:00:00Z"},
            {".min": "must not be greater than max"},
        ),
        ({"type": "relation"}, {".collection": "is required for a relation field"}),
    ],
)
def test_bad_option_combinations(field: dict[str, Any], errors: dict[str, str]) -> None:
    assert field_errors(field) == errors


def test_equal_bounds_are_fine() -> None:
    assert one({"type": "integer", "min": 3, "max": 3}).fields["f"].min == 3
    assert one({"type": "string", "minLength": 0, "maxLength": 0}).fields["f"].max_length == 0
    # Same instant written two ways.
    spec = one({"type": "date", "min": "2026-01-02T01:00:00+01:00", "max": "2026-01-02"})
    assert spec.fields["f"].max == "2026-01-02"


@pytest.mark.parametrize("name", ["posts", "P", "a_1", "x" * 64])
def test_relation_collection_names(name: str) -> None:
    assert one({"type": "relation", "collection": name}).fields["f"].collection == name


@pytest.mark.parametrize("name", ["_users", "1x", "a-b", "", "x" * 65, 3])
def test_bad_relation_collection_names(name: Any) -> None:
    errors = field_errors({"type": "relation", "collection": name})
    assert errors == {
        ".collection": "must be a collection name (a letter, then letters, digits or _; at most 64)"
    }


# --------------------------------------------------------------------------- enum and default


def test_enum_values_must_fit_the_type_and_constraints() -> None:
    assert field_errors({"type": "integer", "enum": [1, 1.5, "2", True, 3], "max": 2}) == {
        ".enum.1": "must be an integer",
        ".enum.2": "must be an integer",
        ".enum.3": "must be an integer",
        ".enum.4": "must be at most 2",
    }
    assert field_errors({"type": "email", "enum": ["a@b.co", "nope"]}) == {
        ".enum.1": "must be an email address"
    }
    assert field_errors({"type": "string", "enum": ["ab", "a"], "minLength": 2}) == {
        ".enum.1": "must be at least 2 characters long"
    }


def test_enum_values_must_not_repeat() -> None:
    assert field_errors({"type": "string", "enum": ["a", "b", "a"]}) == {
        ".enum.2": "repeats an earlier value"
    }
    # 1.0 is normalized to 1 before parsing, so it repeats 1.
    assert field_errors({"type": "number", "enum": [1, 1.0]}) == {
        ".enum.1": "repeats an earlier value"
    }


def test_enum_of_1000_values_is_accepted() -> None:
    assert len(one({"type": "integer", "enum": list(range(1000))}).fields["f"].enum or ()) == 1000


def test_enum_validation() -> None:
    assert check({"type": "string", "enum": ["a", "b"]}, "a") is None
    assert check({"type": "string", "enum": ["a", "b"]}, "c") == 'must be one of "a", "b"'
    assert check({"type": "number", "enum": [1, 2.5]}, 2.5) is None
    assert check({"type": "number", "enum": [1, 2.5]}, True) == "must be a number"
    long = check({"type": "integer", "enum": list(range(20))}, 99)
    assert long == "must be one of 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, …"


@pytest.mark.parametrize(
    ("field", "errors"),
    [
        ({"type": "string", "default": 3}, {".default": "must be a string"}),
        (
            {"type": "string", "default": "x", "minLength": 2},
            {".default": "must be at least 2 characters long"},
        ),
        ({"type": "integer", "default": 7, "enum": [1, 2]}, {".default": "must be one of 1, 2"}),
        (
            {"type": "array", "items": {"type": "integer"}, "default": [1, "x", 3.5]},
            {
                ".default.1": "must be an integer",
                ".default.2": "must be an integer",
            },
        ),
        (
            {"type": "date", "default": "2026-13-01"},
            {
                ".default": "must be an RFC 3339 date or date-time, e.g. 2026-11-27 or "
                "2026-11-27T19:15:19.123Z"
            },
        ),
        (
            {"type": "relation", "collection": "p", "default": "bad id"},
            {".default": "must be a record id (1 to 64 letters, digits, _ or -)"},
        ),
    ],
)
def test_default_must_validate(field: dict[str, Any], errors: dict[str, str]) -> None:
    assert field_errors(field) == errors


def test_default_null_means_no_default() -> None:
    assert one({"type": "string", "default": None}).fields["f"].default is NO_DEFAULT


def test_apply_defaults() -> None:
    schema = parse_schema(
        {
            "fields": {
                "title": {"type": "string", "default": "untitled", "required": True},
                "tags": {"type": "array", "default": ["x"]},
                "meta": {"type": "json", "default": {"a": [1]}},
                "n": {"type": "integer"},
                "flag": {"type": "boolean", "default": False},
            }
        }
    )
    doc: dict[str, JSON] = {"title": None, "flag": True, "extra": 1}
    out = apply_defaults(schema, doc)
    assert out == {
        "title": "untitled",
        "flag": True,
        "extra": 1,
        "tags": ["x"],
        "meta": {"a": [1]},
    }
    assert doc == {"title": None, "flag": True, "extra": 1}  # the input is not modified
    assert document_errors(schema, out) == {}
    # Each document gets its own copy of a mutable default.
    tags = out["tags"]
    assert isinstance(tags, list)
    tags.append("y")
    assert apply_defaults(schema, {})["tags"] == ["x"]
    assert schema is not None
    assert schema.fields["tags"].default == ["x"]


# --------------------------------------------------------------------------- document values


@pytest.mark.parametrize(
    ("type_", "good", "bad"),
    [
        ("string", ["", "x", "é✓"], [1, True, [], {}]),
        ("number", [0, -1, 1.5, 1e300, 2**70], [True, False, "1", [], float("nan"), float("inf")]),
        ("integer", [0, -7, 2**70], [1.5, True, "1", float("inf")]),
        ("boolean", [True, False], [0, 1, "true", []]),
        ("object", [{}, {"a": [1]}], [[], "x", 1, True]),
        ("array", [[], [1, "x", None, {}]], [{}, "x", 1]),
        ("json", [{}, [], "x", 1, 1.5, True, False], []),
        ("relation", ["abc", "A-b_9", "x" * 64], ["", "a b", "a/b", "x" * 65, 1, "é"]),
        ("file", ["abc", "0"], ["", "a.png", "x" * 65, 5]),
    ],
)
def test_type_values(type_: str, good: list[JSON], bad: list[JSON]) -> None:
    field = base(type_)
    for value in good:
        assert check(field, value) is None, value
    for value in bad:
        assert check(field, value) is not None, value


def test_type_messages() -> None:
    assert check({"type": "string"}, 1) == "must be a string"
    assert check({"type": "number"}, "1") == "must be a number"
    assert check({"type": "integer"}, 1.5) == "must be an integer"
    assert check({"type": "boolean"}, 1) == "must be true or false"
    assert check({"type": "object"}, []) == "must be an object"
    assert check({"type": "array"}, {}) == "must be an array"
    assert check({"type": "email"}, "x") == "must be an email address"
    assert check({"type": "url"}, "x") == "must be an absolute http or https URL"
    assert check({"type": "file"}, "") == "must be a file id (1 to 64 letters, digits, _ or -)"


@pytest.mark.parametrize(
    "value",
    ["a@b.co", "first.last+tag@sub.example.org", "x@a.b", "ü@exämple.de", "a" * 64 + "@b.co"],
)
def test_valid_emails(value: str) -> None:
    assert check({"type": "email"}, value) is None


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "@b.co",
        "a@",
        "a@b",
        "a@@b.co",
        "a@b@c.co",
        "a b@c.co",
        "a@b .co",
        "a@b.co ",
        "a@.b.co",
        "a@b.co.",
        "a@b..co",
        "a\t@b.co",
        "a@b.co\n",
        "a" * 250 + "@b.co",
        5,
    ],
)
def test_invalid_emails(value: JSON) -> None:
    assert check({"type": "email"}, value) == "must be an email address"


def test_email_length_limit() -> None:
    address = "a" * 249 + "@b.co"
    assert len(address) == 254
    assert check({"type": "email"}, address) is None
    assert check({"type": "email"}, "a" + address) == "must be an email address"


@pytest.mark.parametrize(
    "value",
    [
        "http://example.com",
        "https://example.com/path?q=1#frag",
        "HTTPS://EXAMPLE.COM",
        "http://localhost:8000/x",
        "http://127.0.0.1",
        "http://[::1]:80/",
        "https://user:pw@example.com",
        "https://例え.jp/パス",
    ],
)
def test_valid_urls(value: str) -> None:
    assert check({"type": "url"}, value) is None


@pytest.mark.parametrize(
    "value",
    [
        "example.com",
        "/relative/path",
        "//example.com",
        "ftp://example.com",
        "javascript:alert(1)",
        "mailto:a@b.co",
        "http://",
        "http:///path",
        "http://exa mple.com",
        "http://example.com/\n",
        "http://example.com:99999",
        "http://example.com:port",
        "http://[::1",
        "https://example.com/" + "x" * 2030,
        1,
    ],
)
def test_invalid_urls(value: JSON) -> None:
    assert check({"type": "url"}, value) == "must be an absolute http or https URL"


def test_url_length_limit() -> None:
    url = "https://example.com/" + "x" * (2048 - 20)
    assert len(url) == 2048
    assert check({"type": "url"}, url) is None
    assert check({"type": "url"}, url + "x") is not None


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-27",
        "2026-11-27T19:15:19.123Z",
        "2026-11-27T19:15:19Z",
        "2026-11-27T19:15:19.123456789Z",
        "2026-11-27T19:15:19+05:30",
        "2026-11-27T19:15:19.5-08:00",
        "2026-11-27T19:15:19-00:00",
        "2026-11-27t19:15:19z",
        "2024-02-29",
        "2000-02-29T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-12-31T23:59:59.999Z",
    ],
)
def test_valid_dates(value: str) -> None:
    assert check({"type": "date"}, value) is None


@pytest.mark.parametrize(
    "value",
    [
        "2026-02-30",
        "2026-02-29",
        "1900-02-29",
        "2026-04-31",
        "2026-13-01",
        "2026-00-10",
        "2026-01-00",
        "0000-01-01",
        "2026-1-1",
        "26-11-27",
        "2026/11/27",
        "2026-11-27T19:15:19",
        "2026-11-27T19:15Z",
        "2026-11-27T24:00:00Z",
        "2026-11-27T23:60:00Z",
        "2026-12-31T23:59:60Z",
        "2026-11-27T19:15:19.Z",
        "2026-11-27T19:15:19+24:00",
        "2026-11-27T19:15:19+05:60",
        "2026-11-27T19:15:19+0530",
        "2026-11-27 19:15:19Z",
        "2026-11-27T19:15:19Z\n",
        " 2026-11-27",
        "\uff12\uff10\uff12\uff16-11-27",  # fullwidth digits
        "",
        1764270919,
    ],
)
def test_invalid_dates(value: JSON) -> None:
    assert check({"type": "date"}, value) == (
        "must be an RFC 3339 date or date-time, e.g. 2026-11-27 or 2026-11-27T19:15:19.123Z"
    )


def test_date_bounds_compare_instants() -> None:
    field = {"type": "date", "min": "2026-01-01", "max": "2026-12-31T23:59:59.999Z"}
    assert check(field, "2026-01-01") is None
    assert check(field, "2026-01-01T00:00:00Z") is None
    assert check(field, "2026-01-01T00:00:00.000Z") is None
    # 00:30 in +01:00 is 23:30 UTC the previous day.
    assert check(field, "2026-01-01T00:30:00+01:00") == "must be on or after 2026-01-01"
    assert check(field, "2025-12-31T23:30:00-01:00") is None
    assert check(field, "2025-12-31T23:59:59.9999Z") == "must be on or after 2026-01-01"
    assert check(field, "2026-12-31T23:59:59.999Z") is None
    assert check(field, "2026-12-31T23:59:59.99900Z") is None
    assert check(field, "2026-12-31T23:59:59.9991Z") == (
        "must be on or before 2026-12-31T23:59:59.999Z"
    )
    assert check(field, "2027-01-01T00:30:00+01:00") is None


@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-9, minutes=-30))])))
def test_dates_agree_with_python(moment: datetime) -> None:
    """Any isoformat datetime is valid and compares to a bound as Python compares instants."""
    bound = datetime(2000, 1, 1, tzinfo=UTC)
    field = {"type": "date", "min": "2000-01-01"}
    error = check(field, moment.isoformat())
    assert (error is None) == (moment >= bound)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ({"type": "string", "minLength": 2}, "a", "must be at least 2 characters long"),
        ({"type": "string", "minLength": 1}, "", "must be at least 1 character long"),
        ({"type": "string", "maxLength": 3}, "abcd", "must be at most 3 characters long"),
        ({"type": "string", "pattern": "^[a-z]+$"}, "abC", "must match the pattern ^[a-z]+$"),
        (
            {"type": "email", "pattern": "@example\\.com$"},
            "a@b.co",
            ("must match the pattern @example\\.com$"),
        ),
        ({"type": "url", "maxLength": 12}, "https://a.io/x", "must be at most 12 characters long"),
        ({"type": "number", "min": 0.5}, 0, "must be at least 0.5"),
        ({"type": "number", "max": 10}, 10.5, "must be at most 10"),
        ({"type": "integer", "min": -3}, -4, "must be at least -3"),
        ({"type": "array", "minLength": 1}, [], "must have at least 1 item"),
        ({"type": "array", "maxLength": 2}, [1, 2, 3], "must have at most 2 items"),
    ],
)
def test_constraint_violations(field: dict[str, Any], value: JSON, message: str) -> None:
    assert check(field, value) == message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ({"type": "string", "minLength": 2, "maxLength": 2}, "ab"),
        # Length counts characters (code points), not bytes.
        ({"type": "string", "maxLength": 2}, "éü"),
        ({"type": "string", "pattern": "b"}, "abc"),  # search, not full match
        ({"type": "string", "pattern": "^\\p{L}+$"}, "héllo"),
        ({"type": "number", "min": 0, "max": 1}, 1),
        ({"type": "integer", "min": 0.5}, 1),
        ({"type": "array", "minLength": 2, "maxLength": 2}, [None, None]),
    ],
)
def test_constraint_satisfied(field: dict[str, Any], value: JSON) -> None:
    assert check(field, value) is None


# --------------------------------------------------------------------------- documents


def test_required_versus_null() -> None:
    schema = parse_schema(
        {"fields": {"req": {"type": "string", "required": True}, "opt": {"type": "string"}}}
    )
    assert document_errors(schema, {"req": "x"}) == {}
    assert document_errors(schema, {"req": "x", "opt": None}) == {}
    assert document_errors(schema, {"req": None}) == {"req": "is required"}
    assert document_errors(schema, {}) == {"req": "is required"}
    assert document_errors(schema, {"req": ""}) == {}  # empty is a value; use minLength


def test_required_json_field_rejects_null() -> None:
    schema = one({"type": "json", "required": True})
    assert document_errors(schema, {"f": None}) == {"f": "is required"}
    assert document_errors(schema, {"f": False}) == {}


def test_strict_schema() -> None:
    schema = parse_schema({"fields": {"a": {"type": "string"}}, "strict": True})
    assert document_errors(schema, {"a": "x"}) == {}
    assert document_errors(schema, {"a": "x", "b": 1, "c": None}) == {
        "b": "is not a field of this collection's strict schema",
        "c": "is not a field of this collection's strict schema",
    }
    # System fields are the server's business, never an undeclared user field.
    assert document_errors(schema, {"id": "x", "owner": None, "version": 3}) == {}


def test_non_strict_schema_allows_extra_fields() -> None:
    schema = parse_schema({"fields": {"a": {"type": "string"}}})
    assert document_errors(schema, {"a": "x", "b": {"anything": [1]}}) == {}


def test_arrays_with_items() -> None:
    field = {"type": "array", "items": {"type": "string", "maxLength": 2}}
    schema = one(field)
    assert document_errors(schema, {"f": ["a", "bb"]}) == {}
    assert document_errors(schema, {"f": ["a", 3, "ccc", None]}) == {
        "f.1": "must be a string",
        "f.2": "must be at most 2 characters long",
        "f.3": "must be a string",
    }
    assert document_errors(schema, {"f": "a"}) == {"f": "must be an array"}


def test_nested_arrays() -> None:
    schema = one(
        {
            "type": "array",
            "maxLength": 2,
            "items": {
                "type": "array",
                "minLength": 1,
                "items": {"type": "integer", "enum": [1, 2, 3]},
            },
        }
    )
    assert document_errors(schema, {"f": [[1, 2], [3]]}) == {}
    assert document_errors(schema, {"f": [[1, 9], [], "x"]}) == {
        "f": "must have at most 2 items",
        "f.0.1": "must be one of 1, 2, 3",
        "f.1": "must have at least 1 item",
        "f.2": "must be an array",
    }


def test_array_items_of_json_may_be_null() -> None:
    assert check({"type": "array", "items": {"type": "json"}}, [None, 1]) is None
    schema = one({"type": "array", "items": {"type": "object"}})
    assert document_errors(schema, {"f": [None]}) == {"f.0": "must be an object"}


@pytest.mark.parametrize("option", ["required", "default", "unique"])
def test_items_reject_required_default_unique(option: str) -> None:
    value = "x" if option == "default" else True
    errors = field_errors({"type": "array", "items": {"type": "string", option: value}})
    assert errors == {f".items.{option}": "does not apply to array items"}


def test_item_definition_errors_have_nested_paths() -> None:
    errors = field_errors(
        {"type": "array", "items": {"type": "array", "items": {"type": "nope", "x": 1}}}
    )
    assert errors == {
        ".items.items.x": "is not a known field option",
        ".items.items.type": (
            "must be one of string, number, integer, boolean, object, array, date, email, url, "
            "json, relation, file"
        ),
    }
    assert field_errors({"type": "array", "items": 5}) == {".items": "must be an object"}


def test_collects_every_problem_at_once() -> None:
    errors = schema_errors(
        {
            "fields": {
                "id": {"type": "string"},
                "a": {"type": "strin"},
                "b": {"type": "number", "pattern": "x", "foo": 1, "min": 5, "max": 1},
                "c": {"type": "relation"},
                "d": {"type": "string", "enum": ["x", 1]},
                "e": {"type": "string", "default": 5},
                "ok": {"type": "string"},
            },
            "bogus": True,
        }
    )
    assert set(errors) == {
        "schema.bogus",
        "schema.fields.id",
        "schema.fields.a.type",
        "schema.fields.b.pattern",
        "schema.fields.b.foo",
        "schema.fields.b.min",
        "schema.fields.c.collection",
        "schema.fields.d.enum.1",
        "schema.fields.e.default",
    }


def test_document_collects_every_problem() -> None:
    schema = parse_schema(
        {
            "fields": {
                "title": {"type": "string", "required": True},
                "tags": {"type": "array", "items": {"type": "string"}},
                "count": {"type": "integer", "min": 0},
                "when": {"type": "date"},
                "fine": {"type": "boolean"},
            },
            "strict": True,
        }
    )
    doc: dict[str, JSON] = {
        "tags": ["a", "b", 3],
        "count": -1,
        "when": "2026-02-30",
        "fine": True,
        "stray": 1,
    }
    expected = {
        "title": "is required",
        "tags.2": "must be a string",
        "count": "must be at least 0",
        "when": (
            "must be an RFC 3339 date or date-time, e.g. 2026-11-27 or 2026-11-27T19:15:19.123Z"
        ),
        "stray": "is not a field of this collection's strict schema",
    }
    assert document_errors(schema, doc) == expected
    with pytest.raises(ValidationFailed) as info:
        validate_document(schema, doc)
    assert info.value.message == DOCUMENT_INVALID
    assert info.value.fields == expected
    assert info.value.details == {"fields": expected}


def test_validate_document_passes_silently() -> None:
    validate_document(one({"type": "string"}), {"f": "x"})


# --------------------------------------------------------------------------- round trip


FULL_SCHEMA: dict[str, Any] = {
    "fields": {
        "title": {
            "type": "string",
            "required": True,
            "default": "untitled",
            "unique": True,
            "enum": ["untitled", "other"],
            "minLength": 1,
            "maxLength": 100,
            "pattern": "^[a-z]",
        },
        "score": {"type": "number", "min": -1.5, "max": 10, "enum": [1, 2.5]},
        "rank": {"type": "integer", "unique": True, "default": 0},
        "done": {"type": "boolean", "required": True, "default": False, "unique": True},
        "meta": {"type": "object", "default": {"a": 1}},
        "tags": {
            "type": "array",
            "minLength": 0,
            "maxLength": 5,
            "default": [["a"]],
            "items": {"type": "array", "items": {"type": "string", "pattern": "."}},
        },
        "when": {"type": "date", "min": "2020-01-01", "max": "2030-01-01T00:00:00+02:00"},
        "mail": {"type": "email", "unique": True},
        "site": {"type": "url", "maxLength": 200},
        "blob": {"type": "json", "default": [1, None]},
        "author": {"type": "relation", "collection": "users", "required": True},
        "refs": {"type": "array", "items": {"type": "relation", "collection": "posts"}},
        "avatar": {"type": "file"},
    },
    "strict": True,
}


def test_round_trip_is_canonical() -> None:
    schema = parse_schema(FULL_SCHEMA)
    assert schema_to_json(schema) == FULL_SCHEMA
    assert parse_schema(schema_to_json(schema)) == schema


def test_canonical_form_omits_unset_options() -> None:
    schema = parse_schema(
        {
            "fields": {
                "a": {"type": "string", "required": False, "unique": False, "pattern": None},
                "b": {"type": "number", "min": 1.0},
            }
        }
    )
    assert schema_to_json(schema) == {
        "fields": {"a": {"type": "string"}, "b": {"type": "number", "min": 1}},
        "strict": False,
    }


def test_schema_to_json_does_not_share_defaults() -> None:
    schema = parse_schema({"fields": {"t": {"type": "array", "default": [1]}}})
    out = schema_to_json(schema)
    assert isinstance(out, dict)
    fields = out["fields"]
    assert isinstance(fields, dict)
    t = fields["t"]
    assert isinstance(t, dict)
    default = t["default"]
    assert isinstance(default, list)
    default.append(2)
    assert schema is not None
    assert schema.fields["t"].default == [1]


def test_parse_does_not_keep_references_to_the_input() -> None:
    raw: dict[str, Any] = {"fields": {"t": {"type": "json", "default": {"a": 1}}}}
    schema = parse_schema(raw)
    raw["fields"]["t"]["default"]["a"] = 2
    assert schema is not None
    assert schema.fields["t"].default == {"a": 1}


def test_parsed_fields_are_read_only() -> None:
    schema = parse_schema({"fields": {"a": {"type": "string"}}})
    assert schema is not None
    with pytest.raises(TypeError):
        schema.fields["b"] = FieldSpec(type="string")  # type: ignore[index]


# --------------------------------------------------------------------------- derived views


def test_scalar_field_types() -> None:
    assert scalar_field_types(parse_schema(FULL_SCHEMA)) == {
        "title": "string",
        "score": "number",
        "rank": "number",
        "done": "boolean",
        "when": "string",
        "mail": "string",
        "site": "string",
        "author": "string",
        "avatar": "string",
    }


def test_unique_fields_in_declaration_order() -> None:
    assert unique_fields(parse_schema(FULL_SCHEMA)) == ["title", "rank", "done", "mail"]


def test_relation_fields() -> None:
    assert relation_fields(parse_schema(FULL_SCHEMA)) == {
        "author": ("users", False),
        "refs": ("posts", True),
    }


def test_directly_built_schema_validates() -> None:
    schema = Schema(
        fields={"n": FieldSpec(type="integer", min=1, default=5)},
        strict=True,
    )
    assert document_errors(schema, {"n": 0}) == {"n": "must be at least 1"}
    assert apply_defaults(schema, {}) == {"n": 5}
