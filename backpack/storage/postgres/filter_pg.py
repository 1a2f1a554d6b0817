"""Filter AST → a PostgreSQL boolean expression over `(id, data)` tables.

`data` is the record as JSONB, prepared by `pg_data` so that JSONB compares
like the evaluator: integral floats are stored as their exact integer value
(numeric comparisons are then exact between ints and floats), and strings and
keys holding U+0000, which JSONB cannot store, are escaped in an
order-preserving way (U+0001 → U+0001 U+0002, U+0000 → U+0001 U+0001).

Every JSON value `v` orders by three keys (`pg_sort_exprs`), the same in ORDER
BY, keyset conditions, indexes and comparisons: a rank (null or missing, then
numbers and booleans, then strings and containers, as SQLite orders
`json_extract`), a numeric, and a text in code-point order (COLLATE "C").

A predicate is TRUE where it matches, FALSE or NULL where it does not; negation
uses `IS NOT TRUE`. `$regex` patterns that are not plain literals cannot be
expressed exactly in SQL: the compiled expression is then a superset and
`PgFilter.exact` is False, so the caller re-tests the rows with the evaluator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import orjson

from backpack.core.filter import (
    All,
    And,
    AuthMatch,
    Compare,
    ElemMatch,
    Eq,
    Exists,
    In,
    Node,
    Not,
    Operand,
    Or,
    Regex,
    Size,
    Var,
    kind_of,
)
from backpack.types import JSON, Path

_SQL_OP = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_DECLARABLE = ("string", "number", "boolean")
# A canonical document needs rewriting for JSONB only if it may hold an integral
# float ("2.0", "1e300"), U+0000 or U+0001; anything else is stored verbatim.
_NEEDS_REWRITE = re.compile(r"\d[eE]|\.0(?![0-9])|\\u000[01]")
_LITERAL_REGEX = re.compile(r"(\^?)([^\\.+*?()|\[\]{}^$\x00-\x02]*)(\$?)")
_MAX_ARRAY = 2**28  # JSONB arrays hold fewer elements
_PLACEHOLDER = re.compile(r"\$#(\d+)#")
_TRUE = "TRUE"
_FALSE = "FALSE"


def pg_escape(text: str) -> str:
    """Escape U+0000 (and U+0001, the escape) keeping code-point order and equality."""
    if "\x00" in text or "\x01" in text:
        return text.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")
    return text


def _prepare(value: JSON) -> JSON:
    if isinstance(value, str):
        return pg_escape(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_prepare(item) for item in value]
    if isinstance(value, dict):
        return {pg_escape(key): _prepare(item) for key, item in value.items()}
    return value


def pg_json_value(value: JSON) -> str:
    """JSONB input text for a value, prepared like stored documents."""
    return json.dumps(_prepare(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def pg_data(doc: str) -> str:
    """The JSONB input text stored beside a record's canonical JSON text."""
    if _NEEDS_REWRITE.search(doc) is None:
        return doc
    return pg_json_value(orjson.loads(doc))


def pg_numeric(value: int | float | bool) -> Decimal:
    """A number operand as an exact numeric (booleans as 0 and 1, like the sort keys)."""
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, float):
        return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
    return Decimal(value)


def pg_value_expr(path: Path, base: str = "data") -> str:
    """The JSONB value at `path` (SQL NULL when missing); indexes use this exact text.

    `->` with an index also reads a scalar as a one-element array, so a path with
    an index goes through a strict JSON path, which yields nothing for that.
    """
    for segment in path:
        if isinstance(segment, bool) or not isinstance(segment, int | str):
            raise ValueError(f"{segment!r} is not a valid field path segment")
        if isinstance(segment, int) and segment < 0:
            raise ValueError(f"{segment!r} is not a valid field path segment")
    if not path:
        return base
    if all(isinstance(segment, str) for segment in path):
        keys = " -> ".join("'" + str(segment).replace("'", "''") + "'" for segment in path)
        return f"({base} -> {keys})"
    steps = "".join(
        f"[{segment}]" if isinstance(segment, int) else '."' + _json_path_key(segment) + '"'
        for segment in path
    )
    return f"jsonb_path_query_first({base}, 'strict ${steps}', '{{}}', true)"


def _json_path_key(key: str) -> str:
    return key.replace("\\", "\\\\").replace('"', '\\"').replace("'", "''")


def _rank(v: str) -> str:
    return (
        f"(CASE jsonb_typeof({v}) WHEN 'number' THEN 1 WHEN 'boolean' THEN 1 "
        "WHEN 'string' THEN 2 WHEN 'array' THEN 2 WHEN 'object' THEN 2 ELSE 0 END)"
    )


def _num(v: str) -> str:
    return (
        f"(CASE jsonb_typeof({v}) WHEN 'number' THEN ({v})::numeric "
        f"WHEN 'boolean' THEN (CASE WHEN ({v})::boolean THEN 1 ELSE 0 END) ELSE 0 END)"
    )


def _txt(v: str) -> str:
    return (
        f"((CASE jsonb_typeof({v}) WHEN 'string' THEN {v} #>> '{{}}' "
        f"WHEN 'array' THEN ({v})::text WHEN 'object' THEN ({v})::text ELSE '' END) "
        'COLLATE "C")'
    )


def pg_sort_exprs(path: Path, base: str = "data") -> tuple[str, ...]:
    """The ordering keys of the value at `path`: never NULL, SQLite's order (NULL first)."""
    if path == ("id",) and base == "data":
        return ("id",)
    v = pg_value_expr(path, base)
    return (_rank(v), _num(v), _txt(v))


def pg_unique_exprs(path: Path) -> tuple[str, ...]:
    """Index columns that make two values equal when they deep-equal; null and missing never do."""
    if path == ("id",):
        return ("id",)
    v = pg_value_expr(path)
    return (*pg_sort_exprs(path), f"NULLIF(jsonb_typeof({v}), 'null')")


@dataclass(frozen=True, slots=True)
class PgFilter:
    sql: str
    params: list[object]
    exact: bool  # False: `sql` selects a superset; re-test the rows with the evaluator


def compile_filter_pg(
    node: Node,
    *,
    field_types: Mapping[str, str] | None = None,
    first_param: int = 1,
) -> PgFilter:
    """SQL boolean expression over `id` and `data`; the node must be bound.

    `field_types` names top-level fields that are, when present and non-null,
    scalars of one kind: their terms use only the sort keys, which an index on
    the field serves (strings pin the numeric key to 0 so the text key is a range).
    Placeholders are numbered from `first_param`.
    """
    field_types = field_types or {}
    for name, kind in field_types.items():
        if kind not in _DECLARABLE:
            raise ValueError(f"field {name!r} has type {kind!r}, not one of {sorted(_DECLARABLE)}")
    compiler = _Compiler(field_types)
    sql = compiler.node(node, None, True)
    # Number the placeholders that survived simplification, in order of appearance.
    params: list[object] = []

    def number(match: re.Match[str]) -> str:
        params.append(compiler.params[int(match.group(1))])
        return f"${first_param + len(params) - 1}"

    return PgFilter(_PLACEHOLDER.sub(number, sql), params, compiler.exact)


def _join(op: str, parts: Iterable[str]) -> str:
    identity, absorbing = (_TRUE, _FALSE) if op == "AND" else (_FALSE, _TRUE)
    kept: list[str] = []
    for part in parts:
        if part == absorbing:
            return absorbing
        if part != identity:
            kept.append(part)
    if not kept:
        return identity
    return kept[0] if len(kept) == 1 else "(" + f" {op} ".join(kept) + ")"


def _and(*parts: str) -> str:
    return _join("AND", parts)


def _or(*parts: str) -> str:
    return _join("OR", parts)


def _literals(items: Iterable[Operand]) -> list[JSON]:
    literals: list[JSON] = []
    for item in items:
        if isinstance(item, Var):
            raise ValueError("bind_variables must run before a filter with variables is compiled")
        literals.append(item)
    return literals


def _below_nul(text: str) -> str:
    """`text` cut before its first U+0000: for strings without U+0000, `s < text` iff `s <= cut`."""
    return text.split("\x00", 1)[0]


class _Compiler:
    def __init__(self, field_kinds: Mapping[str, str]) -> None:
        self.field_kinds = field_kinds
        self.params: list[object] = []
        self.aliases = 0
        self.exact = True

    def param(self, value: object, cast: str) -> str:
        self.params.append(value)
        return f"$#{len(self.params) - 1}#::{cast}"

    def alias(self) -> str:
        self.aliases += 1
        return f"bp_e{self.aliases}"

    def value(self, scope: str | None, path: Path) -> str:
        return pg_value_expr(path, "data" if scope is None else f"{scope}.value")

    def keys(self, scope: str | None, path: Path) -> tuple[str, str, str]:
        v = self.value(scope, path)
        return _rank(v), _num(v), _txt(v)

    def declared(self, scope: str | None, path: Path) -> str | None:
        """The declared scalar kind of a top-level field (`id` is always a string)."""
        if scope is not None or len(path) != 1 or not isinstance(path[0], str):
            return None
        return "string" if path == ("id",) else self.field_kinds.get(path[0])

    def is_id(self, scope: str | None, path: Path) -> bool:
        return scope is None and path == ("id",)

    # `sup`: when the exact condition cannot be written, write a superset (True) or a subset.
    def node(self, node: Node, scope: str | None, sup: bool) -> str:
        match node:
            case And(children):
                return _and(*(self.node(child, scope, sup) for child in children))
            case Or(children):
                return _or(*(self.node(child, scope, sup) for child in children))
            case Not(child):
                inner = self.node(child, scope, not sup)
                if inner in (_TRUE, _FALSE):
                    return _FALSE if inner == _TRUE else _TRUE
                return f"({inner}) IS NOT TRUE"
            case Eq(path, item):
                return self.equals_any(scope, path, _literals([item]))
            case In(path, items):
                return self.equals_any(scope, path, _literals(items))
            case Compare(path, op, item):
                return self.compare(scope, path, _SQL_OP[op], _literals([item])[0])
            case Exists(path):
                if self.is_id(scope, path):
                    return _TRUE
                return f"{self.value(scope, path)} IS NOT NULL"
            case Regex(path, pattern, options):
                return self.regex(scope, path, pattern, options, sup)
            case Size(path, size):
                if self.declared(scope, path) or size > _MAX_ARRAY:
                    return _FALSE
                v = self.value(scope, path)
                return (
                    f"(CASE WHEN jsonb_typeof({v}) = 'array' "
                    f"THEN jsonb_array_length({v}) = {self.param(size, 'int')} ELSE FALSE END)"
                )
            case All(path, items):
                values = _literals(items)
                if not values or self.declared(scope, path):
                    return _FALSE
                v = self.value(scope, path)
                contains = [self.element_in(v, [value]) for value in values]
                return _and(f"jsonb_typeof({v}) = 'array'", *contains)
            case ElemMatch(path, inner, objects_only):
                if self.declared(scope, path):
                    return _FALSE
                alias = self.alias()
                cond = self.node(inner, alias, sup)
                if objects_only:
                    cond = _and(f"jsonb_typeof({alias}.value) = 'object'", cond)
                return self.any_element(self.value(scope, path), alias, cond)
            case AuthMatch():
                raise ValueError("bind_variables must run before an @auth filter is compiled")

    def any_element(self, v: str, alias: str, cond: str) -> str:
        """`v` is an array with an element (as `alias`.value) meeting `cond`."""
        if cond == _FALSE:
            return _FALSE
        return (
            f"(CASE WHEN jsonb_typeof({v}) = 'array' THEN EXISTS (SELECT 1 FROM "
            f"jsonb_array_elements({v}) AS {alias} WHERE {cond}) ELSE FALSE END)"
        )

    def element_in(self, v: str, values: Sequence[JSON]) -> str:
        """`v` is an array with an element deep-equal to one of `values`."""
        scalars = [pg_json_value(x) for x in values if not isinstance(x, list | dict)]
        containers = [pg_json_value(x) for x in values if isinstance(x, list | dict)]
        parts: list[str] = []
        # Containment of a one-scalar array is exactly scalar membership (never for scalars `v`).
        wrapped = ["[" + text + "]" for text in dict.fromkeys(scalars)]
        if len(wrapped) == 1:
            parts.append(f"{v} @> {self.param(wrapped[0], 'jsonb')}")
        elif wrapped:
            parts.append(f"{v} @> ANY({self.param(wrapped, 'jsonb[]')})")
        if containers:
            alias = self.alias()
            same = self.param(list(dict.fromkeys(containers)), "jsonb[]")
            parts.append(self.any_element(v, alias, f"{alias}.value = ANY({same})"))
        return _or(*parts)

    def equals_any(self, scope: str | None, path: Path, values: Sequence[JSON]) -> str:
        has_null = any(value is None for value in values)
        declared = self.declared(scope, path)
        if self.is_id(scope, path):
            ids = list(dict.fromkeys(v for v in values if isinstance(v, str) and "\x00" not in v))
            if not ids:
                return _FALSE
            if len(ids) == 1:
                return f"id = {self.param(ids[0], 'text')}"
            return f"id = ANY({self.param(ids, 'text[]')})"
        if declared:
            rank, num, txt = self.keys(scope, path)
            same = [v for v in values if kind_of(v) == declared]
            parts = [f"{rank} = 0"] if has_null else []
            if same and declared == "string":
                texts = list(dict.fromkeys(pg_escape(str(v)) for v in same))
                parts.append(_and(f"{rank} = 2", f"{num} = 0", self.one_of(txt, texts, "text")))
            elif same:
                nums = list(
                    dict.fromkeys(pg_numeric(v) for v in same if isinstance(v, int | float))
                )
                parts.append(_and(f"{rank} = 1", self.one_of(num, nums, "numeric")))
            return _or(*parts)
        v = self.value(scope, path)
        present = [value for value in values if value is not None]
        whole = list(dict.fromkeys(pg_json_value(value) for value in present))
        return _or(
            f"({v} IS NULL OR {v} = 'null'::jsonb)" if has_null else _FALSE,
            self.one_of(v, whole, "jsonb") if whole else _FALSE,
            self.element_in(v, values),
        )

    def one_of(self, expr: str, values: Sequence[object], cast: str) -> str:
        if len(values) == 1:
            return f"{expr} = {self.param(values[0], cast)}"
        return f"{expr} = ANY({self.param(list(values), cast + '[]')})"

    def compare(self, scope: str | None, path: Path, sql_op: str, bound: JSON) -> str:
        kind = kind_of(bound)
        if kind not in _DECLARABLE:
            return _FALSE  # only a bound variable gets here: it matches nothing
        declared = self.declared(scope, path)
        if declared and declared != kind:
            return _FALSE
        if self.is_id(scope, path):
            assert isinstance(bound, str)
            if "\x00" in bound:  # ids hold no U+0000: compare with the part before it
                sql_op = {"<": "<=", ">=": ">"}.get(sql_op, sql_op)
                bound = _below_nul(bound)
            return f"id {sql_op} {self.param(bound, 'text')}"
        rank, num, txt = self.keys(scope, path)
        v = self.value(scope, path)
        guard = _TRUE if declared else f"jsonb_typeof({v}) = '{kind}'"
        if isinstance(bound, str):
            return _and(
                f"{rank} = 2",
                f"{num} = 0",
                guard,
                f"{txt} {sql_op} {self.param(pg_escape(bound), 'text')}",
            )
        assert isinstance(bound, int | float)
        return _and(
            f"{rank} = 1", guard, f"{num} {sql_op} {self.param(pg_numeric(bound), 'numeric')}"
        )

    def regex(self, scope: str | None, path: Path, pattern: str, options: str, sup: bool) -> str:
        declared = self.declared(scope, path)
        if declared and declared != "string":
            return _FALSE
        if self.is_id(scope, path):
            text, guard = "id", _TRUE
        else:
            v = self.value(scope, path)
            text, guard = f"({v} #>> '{{}}')", f"jsonb_typeof({v}) = 'string'"
        literal = _LITERAL_REGEX.fullmatch(pattern) if not options else None
        if literal is None:
            self.exact = False
            return guard if sup else _FALSE
        start, body, end = literal.groups()
        if start and end:
            return _and(guard, f"{text} = {self.param(body, 'text')}")
        if not body:
            return guard
        if start:
            return _and(guard, f"starts_with({text}, {self.param(body, 'text')})")
        if end:
            return _and(guard, f"right({text}, {len(body)}) = {self.param(body, 'text')}")
        return _and(guard, f"strpos({text}, {self.param(body, 'text')}) > 0")
