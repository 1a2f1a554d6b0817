"""parse_filter: the AST it builds and every filter it refuses."""

from __future__ import annotations

import time

import pytest

from backpack.core.filter import (
    MATCH_ALL,
    MAX_FILTER_DEPTH,
    MAX_REGEX_LENGTH,
    All,
    And,
    AuthMatch,
    Compare,
    ElemMatch,
    Eq,
    Exists,
    In,
    Not,
    Or,
    Regex,
    Size,
    Var,
    parse_filter,
)
from backpack.errors import InvalidQuery


def _nested(depth: int) -> dict[str, object]:
    """A filter whose JSON nesting is exactly `depth` levels."""
    node: object = 1
    for _ in range(depth):
        node = {"a": node}
    assert isinstance(node, dict)
    return node


@pytest.mark.parametrize(
    ("filter_json", "expected"),
    [
        ({}, MATCH_ALL),
        ({"status": "done"}, Eq(("status",), "done")),
        ({"a.0.b_c": {"$gt": 1}}, Compare(("a", 0, "b_c"), "gt", 1)),
        ({"my-key": {"$eq": None}}, Eq(("my-key",), None)),
        ({"a": {"$ne": 1}}, Not(Eq(("a",), 1))),
        ({"a": {"x": [1, 2]}}, Eq(("a",), {"x": [1, 2]})),
        ({"a": {}}, Eq(("a",), {})),
        ({"a": {"$in": [1, "x"]}}, In(("a",), (1, "x"))),
        ({"a": {"$nin": []}}, Not(In(("a",), ()))),
        ({"a": {"$exists": False}}, Not(Exists(("a",)))),
        ({"a": {"$size": 0}}, Size(("a",), 0)),
        ({"a": {"$all": [1, [2]]}}, All(("a",), (1, [2]))),
        ({"a": {"$regex": "^x"}}, Regex(("a",), "^x", "")),
        ({"a": {"$regex": "^x", "$options": "i"}}, Regex(("a",), "^x", "i")),
        ({"a": {"$gte": 1, "$lt": 5}}, And((Compare(("a",), "gte", 1), Compare(("a",), "lt", 5)))),
        ({"a": {"$not": {"$gt": 5}}}, Not(Compare(("a",), "gt", 5))),
        ({"a": {"$elemMatch": {"$gt": 1}}}, ElemMatch(("a",), Compare((), "gt", 1), False)),
        ({"a": {"$elemMatch": {"b": 1}}}, ElemMatch(("a",), Eq(("b",), 1), True)),
        (
            {"a": {"$elemMatch": {"$or": [{"b": 1}]}}},
            ElemMatch(("a",), Or((Eq(("b",), 1),)), True),
        ),
        ({"$or": [{"a": 1}, {"b": 2}]}, Or((Eq(("a",), 1), Eq(("b",), 2)))),
        ({"$nor": [{"a": 1}]}, Not(Or((Eq(("a",), 1),)))),
        ({"a": 1, "b": 2}, And((Eq(("a",), 1), Eq(("b",), 2)))),
        # Integral floats are normalized like stored documents.
        ({"a": 2.0, "b": {"$size": 3.0}}, And((Eq(("a",), 2), Size(("b",), 3)))),
        # Without variables enabled, @ strings are plain text.
        ({"owner": "@auth.id"}, Eq(("owner",), "@auth.id")),
    ],
)
def test_parses(filter_json: dict[str, object], expected: object) -> None:
    assert parse_filter(filter_json) == expected


def test_integral_float_operand_is_an_int() -> None:
    node = parse_filter({"a": 2.0})
    assert isinstance(node, Eq) and type(node.value) is int


@pytest.mark.parametrize(
    ("filter_json", "message"),
    [
        ([], "must be a JSON object"),
        ("x", "must be a JSON object"),
        ({"$where": "1"}, "'$where'"),
        ({"a": {"$foo": 1}}, "Unknown operator '$foo'"),
        ({"a": {"$and": [{"b": 1}]}}, "Unknown operator '$and'"),
        ({"a": {"$gt": 1, "b": 2}}, "mixes operators"),
        ({"$and": {}}, "$and needs a non-empty array"),
        ({"$or": []}, "$or needs a non-empty array"),
        ({"$nor": [1]}, "must be a JSON object"),
        ({"": 1}, "is invalid"),
        ({"a..b": 1}, "is invalid"),
        ({".a": 1}, "is invalid"),
        ({"a.": 1}, "is invalid"),
        ({"1a": 1}, "is invalid"),
        ({"-a": 1}, "is invalid"),
        ({"a b": 1}, "is invalid"),
        ({"a.12345": 1}, "is invalid"),
        ({"é": 1}, "is invalid"),
        ({"a.٣": 1}, "is invalid"),
        ({"@auth": None}, "is invalid"),
        ({".".join(["a"] * 17): 1}, "more than 16 segments"),
        ({"a": {"$gt": {"b": 1}}}, "needs a number, string or boolean"),
        ({"a": {"$lte": [1]}}, "needs a number, string or boolean"),
        ({"a": {"$lt": None}}, "needs a number, string or boolean"),
        ({"a": {"$in": 1}}, "needs an array"),
        ({"a": {"$nin": {"b": 1}}}, "needs an array"),
        ({"a": {"$all": "x"}}, "needs an array"),
        ({"a": {"$in": list(range(1001))}}, "at most 1000"),
        ({"a": {"$exists": 1}}, "true or false"),
        ({"a": {"$exists": "true"}}, "true or false"),
        ({"a": {"$size": -1}}, "non-negative integer"),
        ({"a": {"$size": 1.5}}, "non-negative integer"),
        ({"a": {"$size": True}}, "non-negative integer"),
        ({"a": {"$size": "2"}}, "non-negative integer"),
        ({"a": {"$regex": 1}}, "string pattern"),
        ({"a": {"$regex": "x" * (MAX_REGEX_LENGTH + 1)}}, "512 characters"),
        ({"a": {"$regex": "("}}, "not a valid RE2 pattern"),
        ({"a": {"$regex": "(?=x)"}}, "not a valid RE2 pattern"),
        ({"a": {"$regex": "x", "$options": "m"}}, 'may only be "i"'),
        ({"a": {"$regex": "x", "$options": 1}}, 'may only be "i"'),
        ({"a": {"$options": "i"}}, "needs a $regex"),
        ({"a": {"$elemMatch": []}}, "non-empty object"),
        ({"a": {"$elemMatch": {}}}, "non-empty object"),
        ({"a": {"$elemMatch": {"$gt": 1, "b": 2}}}, "Unknown operator '$gt'"),
        ({"a": {"$not": 5}}, "operator expression"),
        ({"a": {"$not": {}}}, "operator expression"),
        ({"a": {"$not": {"b": 1}}}, "operator expression"),
        ({"a": {"$not": {"$bogus": 1}}}, "Unknown operator '$bogus'"),
        ({"a": {"b": {"$gt": 1}}}, "cannot start with $"),
        ({"a": {"$eq": float("nan")}}, "not finite"),
        ({"a": 2**64}, "out of range"),
        ({"a": (1, 2)}, "not JSON"),
        ({"a": {1: 2}}, "non-string key"),
        ({1: 2}, "keys must be strings"),
    ],
)
def test_refuses(filter_json: object, message: str) -> None:
    with pytest.raises(InvalidQuery) as caught:
        parse_filter(filter_json)
    assert message in caught.value.message
    assert caught.value.status == 400 and caught.value.code == "invalid_query"


def test_depth_limit_is_16_levels() -> None:
    parse_filter(_nested(MAX_FILTER_DEPTH))
    with pytest.raises(InvalidQuery, match="deeper than 16"):
        parse_filter(_nested(MAX_FILTER_DEPTH + 1))


def test_depth_counts_arrays_and_logic() -> None:
    node: dict[str, object] = {"a": 1}
    for _ in range(8):  # each $and adds an object and an array
        node = {"$and": [node]}
    with pytest.raises(InvalidQuery, match="deeper than 16"):
        parse_filter(node)


def test_very_deep_filter_is_refused_fast() -> None:
    deep: dict[str, object] = {"a": 1}
    for _ in range(1000):
        deep = {"$and": [deep]}
    started = time.perf_counter()
    with pytest.raises(InvalidQuery, match="deeper than 16"):
        parse_filter(deep)
    assert (
        time.perf_counter() - started < 2.0
    )  # generous: it is about not recursing 1000 levels, not speed


def test_too_many_conditions() -> None:
    wide = {"$or": [{"a": {"$in": list(range(900))}} for _ in range(3)]}
    with pytest.raises(InvalidQuery, match="conditions and values"):
        parse_filter(wide)


def test_variables() -> None:
    node = parse_filter(
        {
            "owner": "@auth.id",
            "at": {"$lt": "@now"},
            "team": {"$in": ["@body.team", "x"]},
            "@auth.role": "admin",
            "@auth": {"$ne": None},
        },
        allow_variables=True,
    )
    assert node == And(
        (
            Eq(("owner",), Var("auth", ("id",))),
            Compare(("at",), "lt", Var("now")),
            In(("team",), (Var("body", ("team",)), "x")),
            AuthMatch(Eq(("role",), "admin")),
            AuthMatch(Not(Eq((), None))),
        )
    )


@pytest.mark.parametrize(
    "filter_json",
    [
        {"a": "@auth.password"},
        {"a": "@auth"},
        {"a": "@today"},
        {"a": "@body."},
        {"a": {"$in": ["@me"]}},
        {"a": ["@auth.id"]},
        {"a": {"b": "@auth.id"}},
        {"@user": 1},
        {"@auth.": 1},
        {"a": {"$all": [{"b": "@now"}]}},
    ],
)
def test_refuses_bad_variables(filter_json: dict[str, object]) -> None:
    with pytest.raises(InvalidQuery):
        parse_filter(filter_json, allow_variables=True)
