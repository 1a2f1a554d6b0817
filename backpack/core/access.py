"""Who is calling, and what the collection rules let them do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backpack.core.clock import now_rfc3339
from backpack.core.filter import (
    MATCH_ALL,
    Node,
    VariableContext,
    bind_variables,
    compile_matcher,
)
from backpack.errors import Forbidden
from backpack.types import JSON


@dataclass(frozen=True, slots=True)
class Caller:
    """The secret key (or a control-plane admin), a signed-in user, or nobody."""

    is_admin: bool = False
    user: Mapping[str, JSON] | None = None
    session: str | None = None  # the hash of the session token, for a signed-in user

    def variables(self, body: Mapping[str, JSON] | None = None) -> VariableContext:
        return VariableContext(
            auth=dict(self.user) if self.user is not None else None,
            now=now_rfc3339(),
            body=dict(body) if body is not None else None,
        )


ANONYMOUS = Caller()
SECRET_KEY = Caller(is_admin=True)


def require_admin(caller: Caller, what: str) -> None:
    if not caller.is_admin:
        raise Forbidden(f"Only the secret key may {what}.")


def rule_filter(
    caller: Caller,
    rule: Node | bool | None,
    operation: str,
    collection: str,
    body: Mapping[str, JSON] | None = None,
) -> Node:
    """The filter a caller's records must pass for `operation`; raises when the rule is locked."""
    if caller.is_admin or rule is True:
        return MATCH_ALL
    if rule is None or rule is False:
        raise Forbidden(
            f"Only the secret key may {operation} in '{collection}'.",
            {"operation": operation, "collection": collection},
        )
    return bind_variables(rule, caller.variables(body))


def check_rule(
    caller: Caller,
    rule: Node | bool | None,
    operation: str,
    collection: str,
    record: Mapping[str, JSON],
    body: Mapping[str, JSON] | None = None,
) -> bool:
    """Whether `record` passes the rule (in memory); raises when the rule is locked."""
    bound = rule_filter(caller, rule, operation, collection, body)
    return bound is MATCH_ALL or compile_matcher(bound)(record)
