"""The filter AST: frozen dataclasses every engine walks with `match`.

Paths are relative to the value under test: the record at the top level, an
array element inside `ElemMatch`, the caller's auth object inside `AuthMatch`.
The empty path `()` is that value itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from backpack.types import JSON, Path

CompareOp: TypeAlias = Literal["gt", "gte", "lt", "lte"]
Kind: TypeAlias = Literal["null", "boolean", "number", "string", "array", "object"]
VarSource: TypeAlias = Literal["auth", "now", "body"]


@dataclass(frozen=True, slots=True)
class Var:
    """`@auth.id`, `@now`, `@body.a.b`: replaced by a literal in `bind_variables`."""

    source: VarSource
    path: Path = ()


Operand: TypeAlias = JSON | Var


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class Eq:
    """Deep-equals `value`, or is an array with an element that does; null also matches missing."""

    path: Path
    value: Operand


@dataclass(frozen=True, slots=True)
class In:
    """`Eq` against any of `values`; no values matches nothing."""

    path: Path
    values: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    """Same-kind ordering of a number, string or boolean; no array traversal."""

    path: Path
    op: CompareOp
    value: Operand


@dataclass(frozen=True, slots=True)
class Exists:
    path: Path


@dataclass(frozen=True, slots=True)
class Regex:
    """RE2 search on string values; `options` is "" or "i"."""

    path: Path
    pattern: str
    options: str


@dataclass(frozen=True, slots=True)
class Size:
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class All:
    """An array holding an element deep-equal to each value; no values matches nothing."""

    path: Path
    values: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class ElemMatch:
    """An array with an element matching `node` (skipping non-objects when `objects_only`)."""

    path: Path
    node: Node
    objects_only: bool


@dataclass(frozen=True, slots=True)
class AuthMatch:
    """`node` tested against the caller's auth object (`@auth` keys); folded by binding."""

    node: Node


Node: TypeAlias = (
    And | Or | Not | Eq | In | Compare | Exists | Regex | Size | All | ElemMatch | AuthMatch
)

MATCH_ALL: Node = And(())
MATCH_NONE: Node = Or(())


def kind_of(value: JSON) -> Kind:
    # bool before int: True is an int to Python but never a number to a filter.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def and_nodes(*nodes: Node) -> Node:
    """Conjunction, flattened, with MATCH_ALL dropped and MATCH_NONE absorbing."""
    children: list[Node] = []
    for node in nodes:
        parts = node.children if isinstance(node, And) else (node,)
        for part in parts:
            if part == MATCH_NONE:
                return MATCH_NONE
            children.append(part)
    return children[0] if len(children) == 1 else And(tuple(children))


def or_nodes(*nodes: Node) -> Node:
    """Disjunction, flattened, with MATCH_NONE dropped and MATCH_ALL absorbing."""
    children: list[Node] = []
    for node in nodes:
        parts = node.children if isinstance(node, Or) else (node,)
        for part in parts:
            if part == MATCH_ALL:
                return MATCH_ALL
            children.append(part)
    return children[0] if len(children) == 1 else Or(tuple(children))


def not_node(node: Node) -> Node:
    if node == MATCH_ALL:
        return MATCH_NONE
    if node == MATCH_NONE:
        return MATCH_ALL
    return node.child if isinstance(node, Not) else Not(node)


def filter_paths(node: Node) -> set[Path]:
    """Every record path the filter reads; inside `$elemMatch` that is the array's path."""
    paths: set[Path] = set()
    stack = [node]
    while stack:
        match stack.pop():
            case And(children) | Or(children):
                stack.extend(children)
            case Not(child):
                stack.append(child)
            case AuthMatch():
                pass
            case (
                Eq(path)
                | In(path)
                | Compare(path)
                | Exists(path)
                | Regex(path)
                | Size(path)
                | All(path)
                | ElemMatch(path)
            ):
                paths.add(path)
    return paths
