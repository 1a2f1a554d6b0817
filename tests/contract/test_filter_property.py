"""The SQL compilers (SQLite, PostgreSQL) and the in-memory evaluator accept the same records.

PostgreSQL runs on 127.0.0.1:5432 (user postgres, trust auth); the module makes a
database of its own and drops it afterwards. Without a server these tests fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backpack.core.filter import compile_matcher, parse_filter
from backpack.core.jsonutil import normalize
from backpack.types import JSON
from tests.contract.engines import Select

T = TypeVar("T")


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Pick a strategy in proportion to its weight (shrinking towards the first)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(table).flatmap(lambda strategy: strategy)


KEYS = ["a", "b", "my-key", "score", "title", "done"]
NESTED_KEYS = ["a", "b", "my-key"]
FIELD_TYPES = {"score": "number", "title": "string", "done": "boolean"}
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=4)
# A small shared vocabulary, so filters hit documents often; sometimes anything.
VOCABULARY = st.sampled_from([None, True, False, 0, 1, 1.5, "", "a", "A", "é", "1"])
SCALARS: st.SearchStrategy[JSON] = weighted(
    (12, VOCABULARY),
    (1, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    (1, st.floats(allow_nan=False, allow_infinity=False)),
    (1, TEXT),
)
VALUES: st.SearchStrategy[JSON] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(NESTED_KEYS), inner, max_size=2),
    ),
    max_leaves=6,
)
IDS = st.sampled_from(["d0", "d1", "d2", "d9"])
# Operands: mostly plain vocabulary, sometimes a container or a record id.
OPERANDS = weighted((6, VOCABULARY), (2, VALUES), (1, IDS))
ORDERED: st.SearchStrategy[JSON] = weighted(
    (4, st.sampled_from([0, 1, 1.5, -1, "", "a", "A", "é", True, False])),
    (1, SCALARS.filter(lambda v: v is not None)),
    (1, IDS),
)
NESTED_PATHS = st.lists(st.sampled_from([*NESTED_KEYS, "0", "1"]), min_size=1, max_size=2).map(
    lambda tail: ".".join(["a", *tail])
)
TOP_LEVEL = st.sampled_from(KEYS)
FIELDS = weighted((6, TOP_LEVEL), (2, NESTED_PATHS), (1, st.just("id")))
PATTERNS = st.sampled_from(["a", "^a", "b$", "^$", "é", "A", ".", "^[ab]+$", "1", "(a+)+$"])


def _one(
    op: st.SearchStrategy[str], arg: st.SearchStrategy[JSON]
) -> st.SearchStrategy[dict[str, JSON]]:
    return st.builds(lambda o, a: {o: a}, op, arg)


@st.composite
def op_expressions(draw: st.DrawFn, depth: int) -> dict[str, JSON]:
    choices: list[tuple[int, st.SearchStrategy[dict[str, JSON]]]] = [
        (3, _one(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), ORDERED)),
        (2, _one(st.sampled_from(["$eq", "$ne"]), OPERANDS)),
        (2, _one(st.sampled_from(["$in", "$nin"]), st.lists(OPERANDS, max_size=4))),
        (1, _one(st.just("$all"), st.lists(OPERANDS, max_size=3))),
        (1, _one(st.just("$exists"), st.booleans())),
        (1, _one(st.just("$size"), st.integers(0, 3))),
        (1, _one(st.just("$regex"), PATTERNS)),
        (1, st.builds(lambda p, i: {"$regex": p, "$options": i}, PATTERNS, st.sampled_from("i"))),
    ]
    if depth > 0:
        choices += [
            (1, _one(st.just("$not"), op_expressions(depth - 1))),
            (1, _one(st.just("$elemMatch"), op_expressions(depth - 1))),
            (1, _one(st.just("$elemMatch"), filters(depth - 1, min_size=1))),
        ]
    expression: dict[str, JSON] = {}
    for part in draw(st.lists(weighted(*choices), min_size=1, max_size=2)):
        expression.update(part)
    return expression


def _logic(op: str, parts: list[dict[str, JSON]]) -> tuple[str, JSON]:
    return op, [*parts]


@st.composite
def filters(draw: st.DrawFn, depth: int, min_size: int = 0) -> dict[str, JSON]:
    condition = weighted((1, OPERANDS), (2, op_expressions(depth)))
    entry: st.SearchStrategy[tuple[str, JSON]] = st.tuples(FIELDS, condition)
    if depth > 0:
        logic = st.builds(
            _logic,
            st.sampled_from(["$and", "$or", "$nor"]),
            st.lists(filters(depth - 1, min_size=1), min_size=1, max_size=2),
        )
        entry = weighted((3, entry), (1, logic))
    return dict(draw(st.lists(entry, min_size=min_size, max_size=2, unique_by=lambda kv: kv[0])))


FILTERS = filters(2, min_size=1)
DOCUMENTS = st.lists(
    st.dictionaries(
        st.sampled_from(KEYS), weighted((3, SCALARS), (2, VALUES)), min_size=2, max_size=5
    ),
    min_size=3,
    max_size=8,
)


def typed_documents() -> st.SearchStrategy[dict[str, JSON]]:
    declared = st.fixed_dictionaries(
        {},
        optional={
            "score": st.none() | st.integers(-3, 3) | st.floats(-5, 5) | st.sampled_from([1e300]),
            "title": st.none() | st.sampled_from(["", "a", "b", "Ab", "é"]) | TEXT,
            "done": st.none() | st.booleans(),
        },
    )
    free = st.dictionaries(st.sampled_from(NESTED_KEYS), st.one_of(SCALARS, VALUES), max_size=3)
    return st.builds(lambda d, f: {**f, **d}, declared, free)


def _agree(
    engine: Select,
    docs: list[dict[str, JSON]],
    filter_json: dict[str, JSON],
    field_types: Mapping[str, str] | None = None,
) -> None:
    records: list[dict[str, JSON]] = []
    for i, doc in enumerate(docs):
        record = normalize({**doc, "id": f"d{i}"})
        assert isinstance(record, dict)
        records.append(record)
    node = parse_filter(filter_json)
    from_sql = engine(records, node, field_types)
    matcher = compile_matcher(node)
    from_evaluator = {str(r["id"]) for r in records if matcher(r)}
    assert from_sql == from_evaluator, node


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(DOCUMENTS, FILTERS)
def test_sqlite_agrees_with_evaluator(
    engine: Select, docs: list[dict[str, JSON]], f: dict[str, JSON]
) -> None:
    _agree(engine, docs, f)


@SETTINGS
@given(st.lists(typed_documents(), min_size=3, max_size=8), FILTERS)
def test_sqlite_agrees_with_evaluator_on_declared_fields(
    engine: Select, docs: list[dict[str, JSON]], f: dict[str, JSON]
) -> None:
    _agree(engine, docs, f, FIELD_TYPES)
