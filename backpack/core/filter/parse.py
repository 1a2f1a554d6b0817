"""Filter JSON → AST, refusing every malformed filter with `InvalidQuery`."""

from __future__ import annotations

import functools
import math
import re
from typing import Protocol

import re2

from backpack.core.filter.ast import (
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
)
from backpack.core.jsonutil import depth_exceeds, normalize
from backpack.errors import InvalidQuery
from backpack.types import JSON, Path

MAX_FILTER_DEPTH = 16
MAX_FILTER_NODES = 2000
MAX_LIST_OPERAND = 1000
MAX_PATH_SEGMENTS = 16
MAX_REGEX_LENGTH = 512

_KEY_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INDEX_SEGMENT = re.compile(r"[0-9]{1,4}")
_LOGICAL = frozenset({"$and", "$or", "$nor"})
_COMPARE: dict[str, CompareOp] = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}
_AUTH_VARIABLES = frozenset({"id", "email", "role", "verified"})
# Bound as SQLite parameters, which are signed 64-bit.
_INT_RANGE = range(-(2**63), 2**63)


class Pattern(Protocol):
    def search(self, text: str) -> object | None: ...


@functools.lru_cache(maxsize=256)
def compile_regex(pattern: str, options: str) -> Pattern:
    """One cached RE2 compile shared by the parser, the evaluator and SQLite's bp_regexp."""
    if len(pattern) > MAX_REGEX_LENGTH:
        raise InvalidQuery(f"$regex patterns are limited to {MAX_REGEX_LENGTH} characters.")
    opts = re2.Options()
    opts.case_sensitive = "i" not in options
    opts.log_errors = False
    try:
        compiled: Pattern = re2.compile(pattern, opts)
    except re2.error as exc:
        raise InvalidQuery(f"$regex {pattern!r} is not a valid RE2 pattern: {exc}.") from None
    return compiled


def parse_path(text: str) -> Path:
    """`a.b.0.c` → ("a", "b", 0, "c"); numeric segments only ever index arrays."""
    segments = text.split(".")
    if len(segments) > MAX_PATH_SEGMENTS:
        raise InvalidQuery(f"Field path {text!r} has more than {MAX_PATH_SEGMENTS} segments.")
    path: list[str | int] = []
    for segment in segments:
        if _INDEX_SEGMENT.fullmatch(segment):
            path.append(int(segment))
        elif _KEY_SEGMENT.fullmatch(segment):
            path.append(segment)
        else:
            raise InvalidQuery(
                f"Field path {text!r} is invalid: each dot-separated segment must be a name "
                "(letters, digits, _ and -, not starting with a digit or -) "
                "or an array index of at most 4 digits."
            )
    return tuple(path)


def show_path(path: Path) -> str:
    """For messages: 'a.b.0', or "the value" inside $elemMatch and for @auth itself."""
    return repr(".".join(str(segment) for segment in path)) if path else "the value"


def parse_filter(value: object, *, allow_variables: bool = False) -> Node:
    """Parse a filter object; `allow_variables` enables `@auth`, `@now` and `@body` (rules)."""
    if not isinstance(value, dict):
        raise InvalidQuery("A filter must be a JSON object.")
    # Checked up front, iteratively, so recursion below is bounded by the limit.
    if depth_exceeds(value, MAX_FILTER_DEPTH):
        raise InvalidQuery(f"The filter nests deeper than {MAX_FILTER_DEPTH} levels.")
    return _Parser(allow_variables).filter(normalize(value))


def _only_operators(obj: dict[object, object]) -> bool:
    return all(isinstance(key, str) and key.startswith("$") for key in obj)


class _Parser:
    def __init__(self, allow_variables: bool) -> None:
        self.allow_variables = allow_variables
        self.nodes = 0

    def count(self, n: int = 1) -> None:
        self.nodes += n
        if self.nodes > MAX_FILTER_NODES:
            raise InvalidQuery(
                f"The filter has more than {MAX_FILTER_NODES} conditions and values."
            )

    def filter(self, obj: object) -> Node:
        if not isinstance(obj, dict):
            raise InvalidQuery("A filter must be a JSON object.")
        parts: list[Node] = []
        for key, value in obj.items():
            if not isinstance(key, str):
                raise InvalidQuery("Filter keys must be strings.")
            if key in _LOGICAL:
                parts.append(self.logical(key, value))
            elif key.startswith("$"):
                raise InvalidQuery(
                    f"Unknown operator {key!r} at the top of a filter; "
                    "only $and, $or and $nor combine filters."
                )
            elif self.allow_variables and (key == "@auth" or key.startswith("@auth.")):
                self.count()
                if key != "@auth" and key[6:] not in _AUTH_VARIABLES:
                    raise InvalidQuery(
                        f"Unknown variable {key[:60]!r}: rules know @auth, @auth.id, "
                        "@auth.email, @auth.role and @auth.verified."
                    )
                path = parse_path(key.removeprefix("@auth.")) if key != "@auth" else ()
                parts.append(AuthMatch(self.field(path, value)))
            else:
                parts.append(self.field(parse_path(key), value))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def logical(self, key: str, value: object) -> Node:
        if not isinstance(value, list) or not value:
            raise InvalidQuery(f"{key} needs a non-empty array of filters.")
        self.count()
        children = tuple(self.filter(item) for item in value)
        if key == "$and":
            return And(children)
        if key == "$or":
            return Or(children)
        return Not(Or(children))

    def field(self, path: Path, value: object) -> Node:
        self.count()
        if isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value):
            if not _only_operators(value):
                raise InvalidQuery(
                    f"The condition on {show_path(path)} mixes operators ($…) with plain "
                    "keys; use only operators, or only keys to match a whole object."
                )
            return self.operators(path, value)
        return Eq(path, self.operand(value, path))

    def operators(self, path: Path, ops: dict[str, object]) -> Node:
        where = show_path(path)
        if "$options" in ops and "$regex" not in ops:
            raise InvalidQuery(f"$options on {where} needs a $regex beside it.")
        parts: list[Node] = []
        for op, arg in ops.items():
            if op != "$options":
                parts.append(self.operator(path, op, arg, ops.get("$options", "")))
                self.count()
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def operator(self, path: Path, op: str, arg: object, options: object) -> Node:
        where = show_path(path)
        match op:
            case "$eq" | "$ne":
                eq = Eq(path, self.operand(arg, path))
                return eq if op == "$eq" else Not(eq)
            case "$gt" | "$gte" | "$lt" | "$lte":
                operand = self.operand(arg, path)
                if not isinstance(operand, Var) and (
                    operand is None or isinstance(operand, list | dict)
                ):
                    raise InvalidQuery(f"{op} on {where} needs a number, string or boolean.")
                return Compare(path, _COMPARE[op], operand)
            case "$in" | "$nin":
                found = In(path, self.operand_list(arg, path, op))
                return found if op == "$in" else Not(found)
            case "$all":
                return All(path, self.operand_list(arg, path, op))
            case "$exists":
                if not isinstance(arg, bool):
                    raise InvalidQuery(f"$exists on {where} needs true or false.")
                return Exists(path) if arg else Not(Exists(path))
            case "$regex":
                return self.regex(path, arg, options)
            case "$size":
                if isinstance(arg, bool) or not isinstance(arg, int) or arg < 0:
                    raise InvalidQuery(f"$size on {where} needs a non-negative integer.")
                return Size(path, arg)
            case "$elemMatch":
                return self.elem_match(path, arg)
            case "$not":
                if not isinstance(arg, dict) or not arg or not _only_operators(arg):
                    raise InvalidQuery(
                        f'$not on {where} needs an operator expression, like {{"$gt": 5}}.'
                    )
                return Not(self.operators(path, arg))
        raise InvalidQuery(f"Unknown operator {op!r} on {where}.")

    def regex(self, path: Path, pattern: object, options: object) -> Node:
        where = show_path(path)
        if not isinstance(pattern, str):
            raise InvalidQuery(f"$regex on {where} needs a string pattern.")
        if not isinstance(options, str) or set(options) - {"i"}:
            raise InvalidQuery(f'$options on {where} may only be "i" (case-insensitive).')
        normalized = "i" if options else ""
        compile_regex(pattern, normalized)
        return Regex(path, pattern, normalized)

    def elem_match(self, path: Path, arg: object) -> Node:
        if not isinstance(arg, dict) or not arg:
            raise InvalidQuery(f"$elemMatch on {show_path(path)} needs a non-empty object.")
        # Operators alone test each element itself; anything else is a filter on object elements.
        if _only_operators(arg) and not _LOGICAL.intersection(arg):
            return ElemMatch(path, self.operators((), arg), objects_only=False)
        return ElemMatch(path, self.filter(arg), objects_only=True)

    def operand_list(self, arg: object, path: Path, op: str) -> tuple[Operand, ...]:
        if not isinstance(arg, list):
            raise InvalidQuery(f"{op} on {show_path(path)} needs an array of values.")
        if len(arg) > MAX_LIST_OPERAND:
            raise InvalidQuery(f"{op} takes at most {MAX_LIST_OPERAND} values.")
        self.count(len(arg))
        return tuple(self.operand(item, path) for item in arg)

    def operand(self, value: object, path: Path) -> Operand:
        if self.allow_variables and isinstance(value, str) and value.startswith("@"):
            return self.variable(value)
        return self.literal(value, show_path(path))

    def variable(self, text: str) -> Var:
        if text == "@now":
            return Var("now")
        if text.startswith("@auth.") and text[6:] in _AUTH_VARIABLES:
            return Var("auth", (text[6:],))
        if text.startswith("@body."):
            return Var("body", parse_path(text[6:]))
        raise InvalidQuery(
            f"Unknown variable {text!r}; use @auth.id, @auth.email, @auth.role, "
            "@auth.verified, @now or @body.<field>."
        )

    def literal(self, value: object, where: str) -> JSON:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            if self.allow_variables and value.startswith("@"):
                raise InvalidQuery(
                    f"Variables like {value!r} can only stand as a whole operand, "
                    "not inside an object or array."
                )
            return value
        if isinstance(value, int):
            if value not in _INT_RANGE:
                raise InvalidQuery(f"A number compared with {where} is out of range.")
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidQuery(f"A number compared with {where} is not finite.")
            return value
        if isinstance(value, list):
            return [self.literal(item, where) for item in value]
        if isinstance(value, dict):
            result: dict[str, JSON] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidQuery(f"An object compared with {where} has a non-string key.")
                if key.startswith("$"):
                    raise InvalidQuery(
                        f"An object compared with {where} has the key {key!r}; keys in a "
                        "value cannot start with $ (to test a nested field use a path like a.b)."
                    )
                result[key] = self.literal(item, where)
            return result
        raise InvalidQuery(f"A value compared with {where} is not JSON.")
