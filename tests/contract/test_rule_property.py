"""Rule filters, bound for a caller, select the same records in SQLite as in the matcher.

Access rules are filters with variables (`@auth.id`, `@now`, `@body.x`, the
`@auth` pseudo-field). The server binds them per request with `bind_variables`
and then either compiles them to SQL (list, read, update, delete) or runs them
in memory (create rules, the read check after an update, realtime). Both paths
must give the same answer for every caller, signed in or not. Both SQL engines
(SQLite, PostgreSQL) are checked; PostgreSQL runs on 127.0.0.1:5432 (user postgres,
trust auth), in a database the module makes and drops. Without a server these tests fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backpack.core.filter import (
    MATCH_ALL,
    MATCH_NONE,
    All,
    And,
    AuthMatch,
    Compare,
    ElemMatch,
    Eq,
    In,
    Node,
    Not,
    Or,
    Var,
    VariableContext,
    bind_variables,
    compile_matcher,
    parse_filter,
)
from backpack.core.jsonutil import normalize
from backpack.types import JSON
from tests.contract.engines import Select

T = TypeVar("T")


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Pick a strategy in proportion to its weight (shrinking towards the first)."""
    strategies = [strategy for _, strategy in choices]
    table = [i for i, (weight, _) in enumerate(choices) for _ in range(weight)]
    # Indices, not strategies, in the table: it keeps the strategy's repr small.
    return st.sampled_from(table).flatmap(lambda i: strategies[i])


# One small vocabulary shared by callers, bodies and documents, so rules hit often.
USER_IDS = ["u1", "u2", "u3"]
EMAILS = ["a@example.com", "b@example.com", "A@example.com"]
ROLES = ["user", "editor", "admin", ""]
TIMES = [
    "2000-01-01T00:00:00.000Z",
    "2026-11-27T19:15:19.123Z",
    "2026-11-27T19:15:19.124Z",
    "2999-12-31T23:59:59.999Z",
]
NOW = st.sampled_from(TIMES[1:3])
VOCABULARY: st.SearchStrategy[JSON] = st.sampled_from(
    [None, True, False, 0, 1, 1.5, "", "x", *USER_IDS, *EMAILS, *ROLES[:3], *TIMES]
)
SCALARS: st.SearchStrategy[JSON] = weighted(
    (10, VOCABULARY),
    (1, st.integers(-(2**63), 2**63 - 1)),
    (1, st.text(max_size=3).filter(lambda s: not s.startswith("@"))),
)
VALUES: st.SearchStrategy[JSON] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["who", "k"]), inner, max_size=2),
    ),
    max_leaves=5,
)

# Callers: signed out (None), or a user whose attributes come from the vocabulary
# (and, rarely, are missing or null, which rules must treat as signed-out values).
USERS: st.SearchStrategy[dict[str, JSON]] = st.fixed_dictionaries(
    {
        "id": st.sampled_from(USER_IDS),
        "email": st.sampled_from(EMAILS),
        "role": st.sampled_from(ROLES),
        "verified": st.booleans(),
    }
)
ODD_USERS: st.SearchStrategy[dict[str, JSON]] = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from([*USER_IDS, None]),
        "email": st.sampled_from([*EMAILS, None]),
        "role": st.sampled_from([*ROLES, None]),
        "verified": st.sampled_from([True, False, None]),
    },
)
CALLERS: st.SearchStrategy[dict[str, JSON] | None] = weighted(
    (6, USERS), (2, st.none()), (1, ODD_USERS)
)
BODY_KEYS = ["x", "owner_note", "title", "owner", "nested"]
BODIES: st.SearchStrategy[dict[str, JSON] | None] = weighted(
    (1, st.none()),
    (4, st.dictionaries(st.sampled_from(BODY_KEYS), VALUES, max_size=4)),
)

# Documents: owner/author/team usually hold an id/email/role of some caller.
DOC_FIELDS: dict[str, st.SearchStrategy[JSON]] = {
    "owner": weighted((6, st.sampled_from(USER_IDS)), (1, st.none()), (1, st.just(""))),
    "author": weighted((6, st.sampled_from(EMAILS)), (1, VALUES)),
    "team": weighted((5, st.sampled_from(ROLES)), (1, st.lists(st.sampled_from(ROLES)))),
    "verified": weighted((4, st.booleans()), (1, VALUES)),
    "public": weighted((4, st.booleans()), (1, VALUES)),
    "publish_at": weighted((4, st.sampled_from(TIMES)), (1, VALUES)),
    "owner_note": weighted((3, st.sampled_from(EMAILS)), (1, VALUES)),
    "x": VALUES,
    "tags": weighted(
        (3, st.lists(st.sampled_from([*USER_IDS, *ROLES, *EMAILS]), max_size=3)),
        (2, st.lists(st.fixed_dictionaries({"who": st.sampled_from(USER_IDS)}), max_size=2)),
        (1, VALUES),
    ),
}


def documents(fields: Mapping[str, st.SearchStrategy[JSON]]) -> st.SearchStrategy[dict[str, JSON]]:
    """Documents with most fields present (so rules hit) and a few missing."""
    return st.builds(
        lambda doc, missing: {k: v for k, v in doc.items() if k not in missing},
        st.fixed_dictionaries(dict(fields)),
        st.sets(st.sampled_from(sorted(fields)), max_size=3),
    )


DOCUMENT = documents(DOC_FIELDS)

AUTH_VARIABLES = ["@auth.id", "@auth.email", "@auth.role", "@auth.verified"]
BODY_VARIABLES = ["@body.x", "@body.owner_note", "@body.title", "@body.owner", "@body.nested.k"]
VARIABLES = st.sampled_from([*AUTH_VARIABLES, "@now", *BODY_VARIABLES])
OPERANDS: st.SearchStrategy[JSON] = weighted((3, VARIABLES), (2, VOCABULARY), (1, VALUES))
ORDERED: st.SearchStrategy[JSON] = weighted(
    (3, st.sampled_from(["@now", "@auth.id", "@auth.email", "@auth.verified", "@body.x"])),
    (2, st.sampled_from([0, 1, 1.5, "", "u2", "b@example.com", True, False, *TIMES])),
)
FIELDS = st.sampled_from([*DOC_FIELDS, "id", "tags.0", "x.k", "missing"])
AUTH_KEYS = st.sampled_from(["@auth", "@auth.id", "@auth.email", "@auth.role", "@auth.verified"])


def _one(op: str, arg: st.SearchStrategy[JSON]) -> st.SearchStrategy[dict[str, JSON]]:
    return arg.map(lambda value: {op: value})


OP_EXPRESSIONS: st.SearchStrategy[dict[str, JSON]] = st.one_of(
    _one("$eq", OPERANDS),
    _one("$ne", OPERANDS),
    st.sampled_from(["$gt", "$gte", "$lt", "$lte"]).flatmap(lambda op: _one(op, ORDERED)),
    st.sampled_from(["$in", "$nin", "$all"]).flatmap(
        lambda op: _one(op, st.lists(OPERANDS, max_size=3))
    ),
    _one("$exists", st.booleans()),
    _one("$elemMatch", _one("$eq", OPERANDS)),
    _one("$elemMatch", st.builds(lambda v: {"who": v}, OPERANDS)),
    _one("$not", _one("$eq", OPERANDS)),
)


def _leaf(keys: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, JSON]]:
    return st.builds(lambda k, v: {k: v}, keys, weighted((2, OPERANDS), (3, OP_EXPRESSIONS)))


# `@auth` alone is the user object (null when signed out); `@auth.x` its attributes.
AUTH_LEAVES: st.SearchStrategy[dict[str, JSON]] = st.one_of(
    st.sampled_from(
        [
            {"@auth": {"$ne": None}},
            {"@auth": None},
            {"@auth": {"$eq": None}},
            {"@auth.role": "editor"},
            {"@auth.role": {"$in": ["editor", "admin"]}},
            {"@auth.verified": True},
            {"@auth.verified": False},
            {"@auth.verified": {"$ne": True}},
            {"@auth.email": {"$regex": "^a@", "$options": "i"}},
            {"@auth.role": {"$exists": True}},
            {"@auth.id": "@body.owner"},
            {"@auth.email": "@body.owner_note"},
        ]
    ),
    _leaf(AUTH_KEYS),
)
# The field a rule compares with the variable that usually holds its value.
PAIRED: st.SearchStrategy[tuple[str, str]] = st.sampled_from(
    [
        ("owner", "@auth.id"),
        ("author", "@auth.email"),
        ("team", "@auth.role"),
        ("verified", "@auth.verified"),
        ("owner_note", "@auth.email"),
        ("owner_note", "@body.owner_note"),
        ("owner", "@body.owner"),
        ("tags", "@auth.id"),
        ("x", "@body.x"),
    ]
)
PAIRED_LEAVES: st.SearchStrategy[dict[str, JSON]] = st.builds(
    lambda pair, op: {pair[0]: pair[1] if op is None else {op: pair[1]}},
    PAIRED,
    st.sampled_from([None, "$eq", "$ne", "$gte", "$lt"]),
) | st.builds(
    lambda pair, op, extra: {pair[0]: {op: [pair[1], extra]}},
    PAIRED,
    st.sampled_from(["$in", "$nin", "$all"]),
    VOCABULARY,
)
LEAVES = weighted((4, PAIRED_LEAVES), (4, _leaf(FIELDS)), (2, AUTH_LEAVES))
RULES: st.SearchStrategy[dict[str, JSON]] = st.recursive(
    LEAVES,
    lambda inner: (
        st.builds(
            lambda op, parts: {op: parts},
            st.sampled_from(["$or", "$and", "$nor"]),
            st.lists(inner, min_size=1, max_size=3),
        )
        | st.builds(lambda a, b: {**a, **b}, inner, inner)
    ),
    max_leaves=4,
)

# The presets the console offers and the rules the API docs show.
EXAMPLE_RULES: list[dict[str, JSON]] = [
    {"owner": "@auth.id"},
    {"@auth": {"$ne": None}},
    {"$or": [{"public": True}, {"owner": "@auth.id"}]},
    {"@auth.role": "editor"},
    {"@auth.verified": True},
    {"publish_at": {"$lte": "@now"}},
    {"owner_note": "@auth.email", "title": {"$exists": True}},
    {"owner_note": "@body.owner_note"},
    {"tags": {"$elemMatch": {"who": "@auth.id"}}},
    {"team": {"$in": ["@auth.role", "admin"]}, "author": {"$ne": "@auth.email"}},
]


def _unbound(node: Node) -> bool:
    """Whether any variable or @auth condition survived binding."""
    match node:
        case And(children) | Or(children):
            return any(_unbound(child) for child in children)
        case Not(child):
            return _unbound(child)
        case ElemMatch(_, inner, _):
            return _unbound(inner)
        case AuthMatch():
            return True
        case Eq(_, value) | Compare(_, _, value):
            return isinstance(value, Var)
        case In(_, values) | All(_, values):
            return any(isinstance(value, Var) for value in values)
    return False


def _agree(
    engine: Select,
    docs: list[dict[str, JSON]],
    rule: dict[str, JSON],
    auth: dict[str, JSON] | None,
    body: dict[str, JSON] | None,
    now: str,
    field_types: Mapping[str, str] | None = None,
) -> set[str]:
    records: list[dict[str, JSON]] = []
    for i, doc in enumerate(docs):
        record = normalize({**doc, "id": f"d{i}"})
        assert isinstance(record, dict)
        records.append(record)
    node = parse_filter(rule, allow_variables=True)
    bound = bind_variables(node, VariableContext(auth=auth, now=now, body=body))
    assert not _unbound(bound), bound
    from_sql = engine(records, bound, field_types)
    matcher = compile_matcher(bound)
    from_matcher = {str(r["id"]) for r in records if matcher(r)}
    assert from_sql == from_matcher, bound
    # Negated, as the server does for `$nor`/`$not` around a bound rule.
    rest = engine(records, Not(bound), field_types)
    assert rest == {f"d{i}" for i in range(len(records))} - from_matcher, Not(bound)
    return from_matcher


SETTINGS = settings(max_examples=350, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Scenario = tuple[
    list[dict[str, JSON]], dict[str, JSON], dict[str, JSON] | None, dict[str, JSON] | None, str
]
TYPED_DOCUMENT = documents(
    {
        **DOC_FIELDS,
        # Declared scalar fields hold their kind or null, as a schema guarantees.
        "owner": st.sampled_from([*USER_IDS, None]),
        "public": st.sampled_from([True, False, None]),
        "author": st.sampled_from([*EMAILS, None, ""]),
    }
)
TYPED = {"owner": "string", "public": "boolean", "author": "string"}


@st.composite
def scenarios(draw: st.DrawFn, *, typed: bool = False) -> Scenario:
    """Documents, a rule, a caller (None: signed out), a request body and the time."""
    auth, body = draw(CALLERS), draw(BODIES)
    docs = draw(st.lists(TYPED_DOCUMENT if typed else DOCUMENT, min_size=3, max_size=8))
    # Make some documents the caller's (and the body's), so that rules about them hit.
    for doc in docs:
        if auth and draw(st.booleans()):
            for field, attribute in (("owner", "id"), ("author", "email"), ("team", "role")):
                if isinstance(auth.get(attribute), str) and draw(st.integers(0, 3)):
                    doc[field] = auth[attribute]
        if body and "owner_note" in body and draw(st.booleans()):
            doc["owner_note"] = body["owner_note"]
    rule = draw(weighted((4, RULES), (1, st.sampled_from(EXAMPLE_RULES))))
    return docs, rule, auth, body, draw(NOW)


@SETTINGS
@given(scenarios())
@example(
    ([{"owner": None}, {"owner": ""}, {"owner": "u1"}], {"owner": "@auth.id"}, None, None, TIMES[1])
)
@example(
    (
        [{"owner_note": None}, {}, {"owner_note": "a@example.com"}],
        {"owner_note": "@body.owner_note"},
        {"id": "u1", "email": "a@example.com", "role": "user", "verified": True},
        {},
        TIMES[1],
    )
)
def test_bound_rules_agree_in_sql_and_matcher(engine: Select, scenario: Scenario) -> None:
    _agree(engine, *scenario)


@SETTINGS
@given(scenarios(typed=True))
def test_bound_rules_agree_on_declared_fields(engine: Select, scenario: Scenario) -> None:
    _agree(engine, *scenario, field_types=TYPED)


# A few documented outcomes, checked through both engines.
SIGNED_IN: dict[str, JSON] = {
    "id": "u1",
    "email": "a@example.com",
    "role": "editor",
    "verified": True,
}
FOLDS: list[tuple[dict[str, JSON], dict[str, JSON] | None, Node]] = [
    ({"@auth": {"$ne": None}}, None, MATCH_NONE),
    ({"@auth": {"$ne": None}}, SIGNED_IN, MATCH_ALL),
    ({"@auth.role": "editor"}, SIGNED_IN, MATCH_ALL),
    ({"@auth.role": "editor"}, {**SIGNED_IN, "role": "user"}, MATCH_NONE),
    ({"@auth.role": "editor"}, None, MATCH_NONE),
    ({"@auth.verified": True}, SIGNED_IN, MATCH_ALL),
    ({"@auth.verified": True}, None, MATCH_NONE),
]


def test_auth_conditions_fold_to_constants() -> None:
    for rule, auth, expected in FOLDS:
        node = parse_filter(rule, allow_variables=True)
        bound = bind_variables(node, VariableContext(auth=auth, now=TIMES[1]))
        assert bound == expected, (rule, auth)


def test_signed_out_owner_rule_never_matches_unowned_records(engine: Select) -> None:
    docs: list[dict[str, JSON]] = [{"owner": None}, {}, {"owner": "u1"}, {"owner": ""}]
    # Signed out, @auth.id is "": only a record whose owner is literally "" matches.
    assert _agree(engine, docs, {"owner": "@auth.id"}, None, None, TIMES[1]) == {"d3"}
    assert _agree(engine, docs, {"owner": "@auth.id"}, SIGNED_IN, None, TIMES[1]) == {"d2"}
    # A signed-in caller without an id gets the signed-out value, not null.
    assert _agree(engine, docs, {"owner": "@auth.id"}, {"email": "x@y.z"}, None, TIMES[1]) == {"d3"}


def test_now_and_body_variables(engine: Select) -> None:
    docs: list[dict[str, JSON]] = [
        {"publish_at": TIMES[0]},
        {"publish_at": TIMES[3]},
        {"publish_at": 5},
        {},
    ]
    assert _agree(engine, docs, {"publish_at": {"$lte": "@now"}}, None, None, TIMES[1]) == {"d0"}
    notes: list[dict[str, JSON]] = [{"owner_note": "n"}, {"owner_note": None}, {}]
    rule: dict[str, JSON] = {"owner_note": "@body.owner_note"}
    assert _agree(engine, notes, rule, None, {"owner_note": "n"}, TIMES[1]) == {"d0"}
    # An absent body field is null, which matches a null or missing field.
    assert _agree(engine, notes, rule, None, {}, TIMES[1]) == {"d1", "d2"}
    # A comparison against an unusable (object) body value matches nothing.
    assert (
        _agree(engine, notes, {"owner_note": {"$gt": "@body.x"}}, None, {"x": {}}, TIMES[1])
        == set()
    )
