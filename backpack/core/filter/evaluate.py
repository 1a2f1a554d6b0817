"""The in-memory engine: bind variables, then compile an AST into closures.

`compile_matcher` walks the tree once; the returned predicate only runs the
closures, so realtime can test every event against many subscriptions.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from backpack.core.filter.ast import (
    MATCH_ALL,
    MATCH_NONE,
    All,
    And,
    AuthMatch,
    Compare,
    CompareOp,
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
    and_nodes,
    filter_paths,
    kind_of,
    not_node,
    or_nodes,
)
from backpack.core.filter.parse import compile_regex
from backpack.core.jsonutil import normalize
from backpack.types import JSON, Path


class _Missing:
    """What a path yields when it leads nowhere; distinct from JSON null."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

Predicate = Callable[[object], bool]

_ORDER: dict[CompareOp, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_SIGNED_OUT: dict[str, JSON] = {"id": "", "email": "", "role": "", "verified": False}


@dataclass(frozen=True)
class VariableContext:
    auth: dict[str, JSON] | None
    now: str
    body: dict[str, JSON] | None = None


def bind_variables(node: Node, ctx: VariableContext) -> Node:
    """Replace every `Var` with its value and fold `@auth` conditions to MATCH_ALL/NONE."""
    auth = normalize(ctx.auth) if ctx.auth is not None else None
    body = normalize(ctx.body) if ctx.body is not None else None
    present = auth.items() if isinstance(auth, dict) else ()
    signed_in_view = {**_SIGNED_OUT, **{k: v for k, v in present if v is not None}}

    def value(var: Var) -> JSON:
        if var.source == "now":
            return ctx.now
        if var.source == "body":
            found = _walk(body, var.path)
            return None if found is MISSING else cast(JSON, found)
        name = str(var.path[0])
        # A signed-in caller without the attribute gets the signed-out value, so
        # `{"owner": "@auth.id"}` can never match the null owner of secret-key writes.
        current = auth.get(name) if isinstance(auth, dict) else None
        return _SIGNED_OUT[name] if current is None else current

    def operand(item: Operand) -> Operand:
        return value(item) if isinstance(item, Var) else item

    def bind(node: Node) -> Node:
        match node:
            case And(children):
                return and_nodes(*(bind(child) for child in children))
            case Or(children):
                return or_nodes(*(bind(child) for child in children))
            case Not(child):
                return not_node(bind(child))
            case Eq(path, item):
                return Eq(path, operand(item))
            case In(path, items):
                return In(path, tuple(operand(item) for item in items))
            case All(path, items):
                return All(path, tuple(operand(item) for item in items))
            case Compare(path, op, item):
                return Compare(path, op, operand(item))
            case ElemMatch(path, inner, objects_only):
                return ElemMatch(path, bind(inner), objects_only)
            case AuthMatch(inner):
                # `@auth` itself is null when signed out; its attributes are ""/false.
                whole = all(path == () for path in filter_paths(inner))
                subject = auth if whole else signed_in_view
                return MATCH_ALL if _compile(bind(inner))(subject) else MATCH_NONE
        return node

    return bind(node)


def compile_matcher(node: Node) -> Callable[[Mapping[str, JSON]], bool]:
    """A predicate over records; the node must already be bound (no variables left)."""
    return _compile(node)


def matches(node: Node, record: Mapping[str, JSON]) -> bool:
    return _compile(node)(record)


def _walk(value: object, path: Path) -> object:
    for segment in path:
        if isinstance(segment, str):
            if type(value) is dict or isinstance(value, Mapping):
                value = value.get(segment, MISSING)
            else:
                return MISSING
        elif type(value) is list and segment < len(value):
            value = value[segment]
        else:
            return MISSING
    return value


def deep_equal(a: object, b: object) -> bool:
    """Type-strict JSON equality: 1 == 1.0, but True is not 1 and "1" is neither."""
    if type(a) is bool or type(b) is bool:
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(deep_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(deep_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _compile(node: Node) -> Predicate:
    match node:
        case And(children):
            preds = [_compile(child) for child in children]
            return lambda value: all(pred(value) for pred in preds)
        case Or(children):
            preds = [_compile(child) for child in children]
            return lambda value: any(pred(value) for pred in preds)
        case Not(child):
            pred = _compile(child)
            return lambda value: not pred(value)
        case Eq(path, item):
            return _at(path, _equals_any([_literal(item)]))
        case In(path, items):
            return _at(path, _equals_any([_literal(item) for item in items]))
        case Compare(path, op, item):
            return _at(path, _compare(op, _literal(item)))
        case Exists(path):
            return _at(path, lambda value: value is not MISSING)
        case Regex(path, pattern, options):
            search = compile_regex(pattern, options).search
            return _at(path, lambda value: type(value) is str and search(value) is not None)
        case Size(path, size):
            return _at(path, lambda value: type(value) is list and len(value) == size)
        case All(path, items):
            return _at(path, _contains_all([_literal(item) for item in items]))
        case ElemMatch(path, inner, objects_only):
            return _at(path, _elem_match(_compile(inner), objects_only))
        case AuthMatch():
            raise ValueError("bind_variables must run before an @auth filter is evaluated")


def _literal(item: Operand) -> JSON:
    if isinstance(item, Var):
        raise ValueError("bind_variables must run before a filter with variables is evaluated")
    return item


def _at(path: Path, test: Predicate) -> Predicate:
    if not path:
        return test
    if len(path) == 1 and type(key := path[0]) is str:

        def top_level(value: object) -> bool:
            if type(value) is dict or isinstance(value, Mapping):
                return test(value.get(key, MISSING))
            return test(MISSING)

        return top_level
    return lambda value: test(_walk(value, path))


def _member(values: Sequence[JSON]) -> Predicate:
    """Deep-equals one of `values`, via hashed sets for scalars."""
    strings = {v for v in values if type(v) is str}
    numbers = {v for v in values if type(v) is int or type(v) is float}
    booleans = {v for v in values if type(v) is bool}
    has_null = any(v is None for v in values)
    containers = [v for v in values if isinstance(v, list | dict)]

    def member(value: object) -> bool:
        kind = type(value)
        if kind is str:
            return value in strings
        if kind is int or kind is float:
            return value in numbers
        if kind is bool:
            return value in booleans
        if value is None:
            return has_null
        return any(deep_equal(value, c) for c in containers)

    return member


def _equals_any(values: Sequence[JSON]) -> Predicate:
    member = _member(values)
    has_null = any(v is None for v in values)

    def equals(value: object) -> bool:
        if member(value):
            return True
        if type(value) is list:
            return any(member(element) for element in value)
        return has_null and value is MISSING

    return equals


def _compare(op: CompareOp, bound: JSON) -> Predicate:
    order = _ORDER[op]
    match kind_of(bound):
        case "number":
            return lambda value: (
                (type(value) is int or type(value) is float) and order(value, bound)
            )
        case "string":
            return lambda value: type(value) is str and order(value, bound)
        case "boolean":
            return lambda value: type(value) is bool and order(value, bound)
    # Only a bound variable can get here (the parser refuses such literals): match nothing.
    return lambda value: False


def _contains_all(values: Sequence[JSON]) -> Predicate:
    if not values:
        return lambda value: False
    members = [_member([v]) for v in values]
    return lambda value: (
        type(value) is list and all(any(member(element) for element in value) for member in members)
    )


def _elem_match(pred: Predicate, objects_only: bool) -> Predicate:
    if objects_only:
        return lambda value: (
            type(value) is list
            and any(type(element) is dict and pred(element) for element in value)
        )
    return lambda value: type(value) is list and any(pred(element) for element in value)
