"""The in-memory evaluator: every operator, arrays, missing vs null, type strictness."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType

import pytest

from backpack.core.filter import (
    MATCH_ALL,
    MATCH_NONE,
    Eq,
    Var,
    VariableContext,
    and_nodes,
    bind_variables,
    compile_matcher,
    filter_paths,
    matches,
    parse_filter,
)
from backpack.types import JSON

RECORDS: dict[str, dict[str, JSON]] = {
    "int": {"v": 1},
    "float": {"v": 1.5},
    "true": {"v": True},
    "false": {"v": False},
    "str": {"v": "1"},
    "null": {"v": None},
    "missing": {},
    "list": {"v": [1, "a", None, [2, 3], {"k": 1}]},
    "empty": {"v": []},
    "obj": {"v": {"k": 1, "j": [1, 2]}},
}


def _ids(filter_json: dict[str, JSON]) -> set[str]:
    matcher = compile_matcher(parse_filter(filter_json))
    return {name for name, record in RECORDS.items() if matcher(record)}


@pytest.mark.parametrize(
    ("filter_json", "expected"),
    [
        ({"v": 1}, {"int", "list"}),
        ({"v": 1.0}, {"int", "list"}),
        ({"v": True}, {"true"}),
        ({"v": "1"}, {"str"}),
        ({"v": None}, {"null", "missing", "list"}),
        ({"v": {"$ne": None}}, {"int", "float", "true", "false", "str", "empty", "obj"}),
        ({"v": {"$eq": "a"}}, {"list"}),
        ({"v": [2, 3]}, {"list"}),
        ({"v": [3, 2]}, set()),
        ({"v": []}, {"empty"}),
        ({"v": {"k": 1}}, {"list"}),
        ({"v": {"j": [1, 2], "k": 1}}, {"obj"}),
        ({"v": {"k": 1, "j": [1, 2], "x": None}}, set()),
        ({"v": {"$ne": 1}}, set(RECORDS) - {"int", "list"}),
        ({"v": {"$in": [True, "1"]}}, {"true", "str"}),
        ({"v": {"$in": [None]}}, {"null", "missing", "list"}),
        ({"v": {"$in": []}}, set()),
        ({"v": {"$nin": [1, 1.5, True, False, "1", None]}}, {"empty", "obj"}),
        ({"v": {"$nin": []}}, set(RECORDS)),
    ],
)
def test_equality_family(filter_json: dict[str, JSON], expected: set[str]) -> None:
    assert _ids(filter_json) == expected


@pytest.mark.parametrize(
    ("filter_json", "expected"),
    [
        ({"v": {"$gt": 0}}, {"int", "float"}),
        ({"v": {"$gte": 1}}, {"int", "float"}),
        ({"v": {"$lt": 1.5}}, {"int"}),
        ({"v": {"$lte": 1.5}}, {"int", "float"}),
        ({"v": {"$gt": False}}, {"true"}),
        ({"v": {"$lte": True}}, {"true", "false"}),
        ({"v": {"$gte": ""}}, {"str"}),
        # Ordering never looks inside arrays.
        ({"v": {"$gte": "a"}}, set()),
    ],
)
def test_ordering_is_type_strict(filter_json: dict[str, JSON], expected: set[str]) -> None:
    assert _ids(filter_json) == expected


def test_strings_order_by_code_point() -> None:
    node = parse_filter({"s": {"$gt": "Z"}})
    assert matches(node, {"s": "a"})
    assert matches(node, {"s": "é"})
    assert not matches(node, {"s": "Y"})
    assert matches(parse_filter({"s": {"$gt": "\uffff"}}), {"s": "\U0001f600"})


@pytest.mark.parametrize(
    ("filter_json", "expected"),
    [
        ({"v": {"$exists": True}}, set(RECORDS) - {"missing"}),
        ({"v": {"$exists": False}}, {"missing"}),
        ({"v": {"$size": 0}}, {"empty"}),
        ({"v": {"$size": 5}}, {"list"}),
        ({"v": {"$all": [1, None, [2, 3]]}}, {"list"}),
        ({"v": {"$all": [2]}}, set()),
        ({"v": {"$all": []}}, set()),
        ({"v": {"$elemMatch": {"$gte": 1}}}, {"list"}),
        ({"v": {"$elemMatch": {"$size": 2}}}, {"list"}),
        ({"v": {"$elemMatch": {"k": 1}}}, {"list"}),
        ({"v": {"$not": {"$gt": 1}}}, set(RECORDS) - {"float"}),
        ({"v": {"$not": {"$exists": True}}}, {"missing"}),
        ({"v.k": 1}, {"obj"}),
        ({"v.j.1": 2}, {"obj"}),
        ({"v.3.0": 2}, {"list"}),
        ({"v.4.k": 1}, {"list"}),
        ({"v.9": None}, set(RECORDS)),
        ({"v.9": {"$exists": True}}, set()),
        ({"v.k": {"$exists": True}}, {"obj"}),
    ],
)
def test_structural_operators(filter_json: dict[str, JSON], expected: set[str]) -> None:
    assert _ids(filter_json) == expected


def test_filter_form_elem_match_only_tests_objects() -> None:
    node = parse_filter({"v": {"$elemMatch": {"x": {"$exists": False}}}})
    assert not matches(node, {"v": [1, "a", None, [2]]})
    assert matches(node, {"v": [1, {"y": 1}]})


def test_numeric_segments_never_read_object_keys() -> None:
    assert not matches(parse_filter({"a.0": 1}), {"a": {"0": 1}})
    assert matches(parse_filter({"a.0": 1}), {"a": [1]})


def test_regex() -> None:
    node = parse_filter({"s": {"$regex": "^ab"}})
    assert matches(node, {"s": "abc"})
    assert not matches(node, {"s": "ABC"})
    assert not matches(node, {"s": ["abc"]})
    assert not matches(node, {"s": 1})
    assert not matches(node, {})
    assert matches(parse_filter({"s": {"$regex": "^AB", "$options": "i"}}), {"s": "abc"})
    assert matches(parse_filter({"s": {"$regex": "b"}}), {"s": "abc"})
    assert matches(parse_filter({"s": {"$regex": "É", "$options": "i"}}), {"s": "café"})


def test_catastrophic_regex_is_linear() -> None:
    matcher = compile_matcher(parse_filter({"s": {"$regex": "(a+)+$"}}))
    started = time.perf_counter()
    assert matcher({"s": "a" * 50000 + "b"}) is False
    assert time.perf_counter() - started < 3.0  # a backtracking engine would take hours


@pytest.mark.parametrize(
    ("filter_json", "expected"),
    [
        ({"$and": [{"v": {"$gte": 1}}, {"v": {"$lt": 1.5}}]}, {"int"}),
        ({"$or": [{"v": True}, {"v": "1"}]}, {"true", "str"}),
        ({"$nor": [{"v": {"$exists": True}}]}, {"missing"}),
        ({"v": {"$gte": 1}, "$or": [{"v": 1.5}, {"v": True}]}, {"float"}),
        ({}, set(RECORDS)),
    ],
)
def test_logic(filter_json: dict[str, JSON], expected: set[str]) -> None:
    assert _ids(filter_json) == expected


def test_records_may_be_any_mapping() -> None:
    record: Mapping[str, JSON] = MappingProxyType({"a": {"b": [1, 2]}})
    assert matches(parse_filter({"a.b": 2}), record)
    assert matches(parse_filter({"a.b.1": 2}), record)


def test_and_nodes() -> None:
    a, b = parse_filter({"a": 1}), parse_filter({"b": 1, "c": 1})
    assert and_nodes() == MATCH_ALL
    assert and_nodes(MATCH_ALL, a) == a
    assert and_nodes(a, MATCH_NONE) == MATCH_NONE
    combined = and_nodes(a, b)
    assert matches(combined, {"a": 1, "b": 1, "c": 1})
    assert not matches(combined, {"a": 1, "b": 1})


def test_filter_paths() -> None:
    node = parse_filter(
        {
            "a.b": 1,
            "$or": [{"c.0": {"$gt": 1}}, {"d": {"$elemMatch": {"e": 1}}}],
            "f": {"$not": {"$size": 1}},
        }
    )
    assert filter_paths(node) == {("a", "b"), ("c", 0), ("d",), ("f",)}


def _bound(filter_json: dict[str, JSON], ctx: VariableContext) -> object:
    return bind_variables(parse_filter(filter_json, allow_variables=True), ctx)


ALICE: dict[str, JSON] = {"id": "u1", "email": "a@x.io", "role": "admin", "verified": True}
SIGNED_IN = VariableContext(auth=ALICE, now="2026-01-01T00:00:00.000Z", body={"team": "t1"})
SIGNED_OUT = VariableContext(auth=None, now="2026-01-01T00:00:00.000Z")


def test_bind_auth_and_now() -> None:
    node = bind_variables(
        parse_filter({"owner": "@auth.id", "at": {"$lt": "@now"}}, allow_variables=True),
        SIGNED_IN,
    )
    assert matches(node, {"owner": "u1", "at": "2025-12-31T00:00:00.000Z"})
    assert not matches(node, {"owner": "u2", "at": "2025-12-31T00:00:00.000Z"})
    assert not matches(node, {"owner": "u1", "at": "2026-02-01T00:00:00.000Z"})


def test_signed_out_never_matches_null_owner() -> None:
    node = bind_variables(parse_filter({"owner": "@auth.id"}, allow_variables=True), SIGNED_OUT)
    assert node == Eq(("owner",), "")
    assert not matches(node, {"owner": None})
    assert not matches(node, {})


@pytest.mark.parametrize(
    ("filter_json", "signed_in", "signed_out"),
    [
        ({"@auth": None}, False, True),
        ({"@auth": {"$ne": None}}, True, False),
        ({"@auth.role": "admin"}, True, False),
        ({"@auth.verified": True}, True, False),
        ({"a": {"$eq": "@auth.verified"}}, False, True),
        ({"$or": [{"@auth.role": "admin"}, {"a": "@auth.email"}]}, True, False),
    ],
)
def test_auth_pseudo_field_folds(
    filter_json: dict[str, JSON], signed_in: bool, signed_out: bool
) -> None:
    record: dict[str, JSON] = {"a": False}
    assert (
        matches(bind_variables(parse_filter(filter_json, allow_variables=True), SIGNED_IN), record)
        is signed_in
    )
    assert (
        matches(bind_variables(parse_filter(filter_json, allow_variables=True), SIGNED_OUT), record)
        is signed_out
    )


def test_auth_pseudo_field_folds_to_constants() -> None:
    node = parse_filter({"@auth.role": "admin"}, allow_variables=True)
    assert bind_variables(node, SIGNED_IN) == MATCH_ALL
    assert bind_variables(node, SIGNED_OUT) == MATCH_NONE


def test_bind_body() -> None:
    node = parse_filter({"team": "@body.team", "x": "@body.nope.deeper"}, allow_variables=True)
    assert matches(bind_variables(node, SIGNED_IN), {"team": "t1"})
    assert not matches(bind_variables(node, SIGNED_IN), {"team": "t2"})
    assert matches(bind_variables(node, SIGNED_OUT), {})


def test_unusable_bound_operand_matches_nothing() -> None:
    ctx = VariableContext(auth=ALICE, now="n", body={"o": {"k": 1}})
    node = parse_filter({"a": {"$gt": "@body.o"}}, allow_variables=True)
    bound = bind_variables(node, ctx)
    assert not matches(bound, {"a": {"k": 2}})
    assert not matches(bound, {"a": 1})


def test_unbound_variables_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="bind_variables"):
        compile_matcher(Eq(("a",), Var("now")))
    with pytest.raises(ValueError, match="bind_variables"):
        compile_matcher(parse_filter({"@auth": None}, allow_variables=True))
