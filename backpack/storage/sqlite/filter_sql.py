"""Filter AST → a SQLite boolean expression over `(id, doc)` tables.

`doc` holds the record's canonical JSON (sorted keys, normalized numbers), so
`json_type` gives exact JSON kinds, and objects and arrays compare as text
against the canonical dump of the operand. Every predicate yields 1, or 0/NULL
where it does not match; negation uses `IS NOT 1` so NULL never leaks through
three-valued logic. Terms on declared fields reuse `sqlite_value_expr` verbatim
so SQLite can serve them from the expression index on that same text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import apsw

from backpack.core.filter import (
    All,
    And,
    AuthMatch,
    Compare,
    ElemMatch,
    Eq,
    Exists,
    In,
    Kind,
    Node,
    Not,
    Operand,
    Or,
    Regex,
    Size,
    Var,
    compile_regex,
    kind_of,
)
from backpack.core.jsonutil import dumps_str
from backpack.types import JSON, Path

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTED_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SQL_OP = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
# The `json_type` names of each scalar kind that orders, and that a field may declare.
_SCALAR_TYPES: dict[Kind, str] = {
    "boolean": "('true', 'false')",
    "number": "('integer', 'real')",
    "string": "('text')",
}


def sqlite_json_path(path: Path) -> str:
    """The one JSON path rendering, shared by queries and index DDL: `$.a."my-key"[2]`."""
    rendered = ["$"]
    for segment in path:
        if isinstance(segment, int) and not isinstance(segment, bool) and segment >= 0:
            rendered.append(f"[{segment}]")
        elif isinstance(segment, str) and _PLAIN_KEY.fullmatch(segment):
            rendered.append(f".{segment}")
        elif isinstance(segment, str) and _QUOTED_KEY.fullmatch(segment):
            rendered.append(f'."{segment}"')
        else:
            raise ValueError(f"{segment!r} is not a valid field path segment")
    return "".join(rendered)


def sqlite_value_expr(path: Path, doc_column: str = "doc") -> str:
    """The SQL value at `path`; `CREATE INDEX` must use this exact text to serve filters."""
    if path == ("id",):
        return "id"
    return f"json_extract({doc_column}, '{sqlite_json_path(path)}')"


def compile_filter_sqlite(
    node: Node,
    *,
    field_types: Mapping[str, str] | None = None,
    doc_column: str = "doc",
) -> tuple[str, list[object]]:
    """SQL boolean expression and its positional parameters; the node must be bound.

    `field_types` names top-level fields that are, when present and non-null,
    scalars of one kind ("string", "number", "boolean"): their terms drop the
    type guards and array branches, which is what lets an index serve them.
    The expression may be NULL where it does not match: negate with `IS NOT 1`.
    """
    field_types = field_types or {}
    for name, kind in field_types.items():
        if kind not in _SCALAR_TYPES:
            raise ValueError(
                f"field {name!r} has type {kind!r}, not one of {sorted(_SCALAR_TYPES)}"
            )
    sql = _Compiler(field_types, doc_column).node(node, None)
    return sql.text, list(sql.params)


def register_sqlite_functions(conn: apsw.Connection) -> None:
    conn.create_scalar_function("bp_regexp", _bp_regexp, 3, deterministic=True)


def _bp_regexp(*args: object) -> int:
    pattern, options, value = args
    if not (isinstance(pattern, str) and isinstance(options, str) and isinstance(value, str)):
        return 0
    return int(compile_regex(pattern, options).search(value) is not None)


@dataclass(frozen=True, slots=True)
class _Sql:
    text: str
    params: tuple[object, ...] = ()


_TRUE = _Sql("1")
_FALSE = _Sql("0")


def _join(op: str, parts: Iterable[_Sql]) -> _Sql:
    identity, absorbing = (_TRUE, _FALSE) if op == "AND" else (_FALSE, _TRUE)
    kept: list[_Sql] = []
    for part in parts:
        if part == absorbing:
            return absorbing
        if part != identity:
            kept.append(part)
    return _balanced(op, kept) if kept else identity


def _balanced(op: str, parts: Sequence[_Sql]) -> _Sql:
    # A balanced tree keeps SQLite's expression depth (max 1000) logarithmic in the terms.
    if len(parts) == 1:
        return parts[0]
    left, right = _balanced(op, parts[: len(parts) // 2]), _balanced(op, parts[len(parts) // 2 :])
    return _Sql(f"({left.text} {op} {right.text})", left.params + right.params)


def _and(*parts: _Sql) -> _Sql:
    return _join("AND", parts)


def _or(*parts: _Sql) -> _Sql:
    return _join("OR", parts)


def _in(expr: str, values: Sequence[object]) -> _Sql:
    if len(values) == 1:
        return _Sql(f"{expr} = ?", tuple(values))
    return _Sql(f"{expr} IN ({', '.join('?' * len(values))})", tuple(values))


def _literals(items: Iterable[Operand]) -> list[JSON]:
    literals: list[JSON] = []
    for item in items:
        if isinstance(item, Var):
            raise ValueError("bind_variables must run before a filter with variables is compiled")
        literals.append(item)
    return literals


def _member(type_expr: str, value_expr: str, values: Sequence[JSON]) -> _Sql:
    """The JSON value with this `json_type` and SQL value deep-equals one of `values`."""
    by_kind: dict[Kind, list[JSON]] = {}
    for value in values:
        by_kind.setdefault(kind_of(value), []).append(value)
    parts: list[_Sql] = []
    for kind, group in by_kind.items():
        match kind:
            case "null":
                parts.append(_Sql(f"{type_expr} = 'null'"))
            case "boolean":
                names = sorted({"true" if value else "false" for value in group})
                parts.append(_Sql(f"{type_expr} IN ({', '.join(repr(n) for n in names)})"))
            case "number" | "string":
                guard = _Sql(f"{type_expr} IN {_SCALAR_TYPES[kind]}")
                parts.append(_and(guard, _in(value_expr, list(dict.fromkeys(group)))))
            case "array" | "object":
                guard = _Sql(f"{type_expr} = '{kind}'")
                texts = list(dict.fromkeys(dumps_str(value) for value in group))
                parts.append(_and(guard, _in(value_expr, texts)))
    return _or(*parts)


class _Compiler:
    def __init__(self, field_kinds: Mapping[str, str], doc_column: str) -> None:
        self.field_kinds = field_kinds
        self.doc = doc_column
        self.aliases = 0

    def alias(self) -> str:
        self.aliases += 1
        return f"bp_e{self.aliases}"

    # `scope` is None at the record, else the json_each alias of the current array element.
    def path(self, scope: str | None, path: Path) -> str:
        if scope is None:
            return f"'{sqlite_json_path(path)}'"
        if not path:
            return f"{scope}.fullkey"
        return f"{scope}.fullkey || '{sqlite_json_path(path)[1:]}'"

    def type_expr(self, scope: str | None, path: Path) -> str:
        if scope is not None and not path:
            return f"{scope}.type"
        return f"json_type({self.doc}, {self.path(scope, path)})"

    def value_expr(self, scope: str | None, path: Path) -> str:
        if scope is None:
            return sqlite_value_expr(path, self.doc)
        if not path:
            return f"{scope}.value"
        return f"json_extract({self.doc}, {self.path(scope, path)})"

    def declared(self, scope: str | None, path: Path) -> str | None:
        """The declared scalar kind of a top-level field (`id` is always a string)."""
        if scope is not None or len(path) != 1 or not isinstance(path[0], str):
            return None
        return "string" if path == ("id",) else self.field_kinds.get(path[0])

    def node(self, node: Node, scope: str | None) -> _Sql:
        match node:
            case And(children):
                return _and(*(self.node(child, scope) for child in children))
            case Or(children):
                return _or(*(self.node(child, scope) for child in children))
            case Not(child):
                inner = self.node(child, scope)
                if inner in (_TRUE, _FALSE):
                    return _FALSE if inner == _TRUE else _TRUE
                return _Sql(f"({inner.text}) IS NOT 1", inner.params)
            case Eq(path, item):
                return self.equals_any(scope, path, _literals([item]))
            case In(path, items):
                return self.equals_any(scope, path, _literals(items))
            case Compare(path, op, item):
                return self.compare(scope, path, _SQL_OP[op], _literals([item])[0])
            case Exists(path):
                if scope is None and path == ("id",):
                    return _TRUE
                return _Sql(f"{self.type_expr(scope, path)} IS NOT NULL")
            case Regex(path, pattern, options):
                return self.regex(scope, path, pattern, options)
            case Size(path, size):
                if self.declared(scope, path):
                    return _FALSE
                length = f"json_array_length({self.doc}, {self.path(scope, path)})"
                return _and(self.is_array(scope, path), _Sql(f"{length} = ?", (size,)))
            case All(path, items):
                values = _literals(items)
                if not values or self.declared(scope, path):
                    return _FALSE
                contains = (self.any_element(scope, path, [value]) for value in values)
                return _and(self.is_array(scope, path), *contains)
            case ElemMatch(path, inner, objects_only):
                if self.declared(scope, path):
                    return _FALSE
                return self.elem_match(scope, path, inner, objects_only)
            case AuthMatch():
                raise ValueError("bind_variables must run before an @auth filter is compiled")

    def is_array(self, scope: str | None, path: Path) -> _Sql:
        return _Sql(f"{self.type_expr(scope, path)} = 'array'")

    def any_element(self, scope: str | None, path: Path, values: Sequence[JSON]) -> _Sql:
        alias = self.alias()
        cond = _member(f"{alias}.type", f"{alias}.value", values)
        return self.exists_element(scope, path, alias, cond)

    def exists_element(self, scope: str | None, path: Path, alias: str, cond: _Sql) -> _Sql:
        if cond == _FALSE:
            return _FALSE
        source = f"json_each({self.doc}, {self.path(scope, path)}) AS {alias}"
        return _Sql(f"EXISTS (SELECT 1 FROM {source} WHERE {cond.text})", cond.params)

    def equals_any(self, scope: str | None, path: Path, values: Sequence[JSON]) -> _Sql:
        value = self.value_expr(scope, path)
        has_null = any(v is None for v in values)
        declared = self.declared(scope, path)
        if declared:
            same = [v for v in values if kind_of(v) == declared]
            # `id` is never null or missing.
            is_null = _Sql(f"{value} IS NULL") if has_null and path != ("id",) else _FALSE
            return _or(_in(value, same) if same else _FALSE, is_null)
        type_expr = self.type_expr(scope, path)
        return _or(
            _Sql(f"{type_expr} IS NULL") if has_null else _FALSE,
            _member(type_expr, value, values),
            _and(self.is_array(scope, path), self.any_element(scope, path, values)),
        )

    def compare(self, scope: str | None, path: Path, sql_op: str, bound: JSON) -> _Sql:
        kind = kind_of(bound)
        if kind not in _SCALAR_TYPES:
            return _FALSE  # only a bound variable gets here: it matches nothing
        term = _Sql(f"{self.value_expr(scope, path)} {sql_op} ?", (bound,))
        declared = self.declared(scope, path)
        if declared:
            return term if declared == kind else _FALSE
        return _and(_Sql(f"{self.type_expr(scope, path)} IN {_SCALAR_TYPES[kind]}"), term)

    def regex(self, scope: str | None, path: Path, pattern: str, options: str) -> _Sql:
        term = _Sql(f"bp_regexp(?, ?, {self.value_expr(scope, path)})", (pattern, options))
        declared = self.declared(scope, path)
        if declared:
            return term if declared == "string" else _FALSE
        return _and(_Sql(f"{self.type_expr(scope, path)} = 'text'"), term)

    def elem_match(self, scope: str | None, path: Path, inner: Node, objects_only: bool) -> _Sql:
        alias = self.alias()
        cond = self.node(inner, alias)
        if objects_only:
            cond = _and(_Sql(f"{alias}.type = 'object'"), cond)
        return _and(self.is_array(scope, path), self.exists_element(scope, path, alias, cond))
