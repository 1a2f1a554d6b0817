"""Access rules against a running server: every caller x every operation x every rule set.

The expected outcome of each cell comes from a small oracle written here, in
plain Python, from the contract (shared/API.md section 3, docs/api.md "Rules",
docs/filters.md "Variables"); backpack's own evaluator is never consulted.

- allowed: the success status and exactly the data the oracle predicts;
- a record the caller may not see: 404 for read/update/delete, absent from lists
  (and `count=true` agrees with the list);
- a locked (null) rule: 403; a create the rule refuses: 403; an update whose
  result the caller could no longer read: 403;
- after every refused write the stored record (read with the secret key) is unchanged.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import product
from typing import Any, Final

import httpx
import pytest

from backpack.core.collections import DEFAULT_RULES, RULE_PRESETS
from tests.conftest import RunningServer
from tests.e2e.helpers import error_of

PASSWORD: Final = "correct horse battery"
PAST: Final = "2000-01-01T00:00:00.000Z"
FUTURE: Final = "2999-01-01T00:00:00.000Z"
SYSTEM: Final = ("id", "created", "updated", "owner", "version")
OPERATIONS: Final = ("list", "read", "create", "update", "delete")

Doc = dict[str, Any]


# ---------------------------------------------------------------------------
# Callers


@dataclass(frozen=True)
class Who:
    """A caller as rules see it: signed-out values are "" / False (docs/api.md "Rules")."""

    name: str
    id: str = ""
    email: str = ""
    role: str = ""
    verified: bool = False
    signed_in: bool = False
    key: bool = False
    headers: Mapping[str, str] = field(default_factory=dict, compare=False)


CALLERS: Final = ("anon", "a", "b", "unverified", "editor", "key")


def _signup(server: RunningServer) -> tuple[Doc, str]:
    email = f"r{secrets.token_hex(5)}@example.com"
    response = httpx.post(
        server.url + "/api/auth/signup", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["user"], body["token"]


def _as_who(name: str, user: Doc, token: str) -> Who:
    return Who(
        name=name,
        id=user["id"],
        email=user["email"],
        role=user["role"],
        verified=user["verified"],
        signed_in=True,
        headers={"Authorization": f"Bearer {token}"},
    )


@dataclass
class World:
    server: RunningServer
    people: dict[str, Who]
    clients: dict[str, httpx.Client]
    admin: httpx.Client

    def other(self, who: Who) -> Who:
        """Somebody else: whose id a caller tries to pass off as the owner."""
        return self.people["b" if who.name == "a" else "a"]


@pytest.fixture(scope="module")
def world(server: RunningServer) -> Iterator[World]:
    admin = server.client()
    # Several sign-ups and thousands of requests from one IP: no rate limits.
    limits = admin.patch(
        "/api/settings", json={"rate_limits": {"auth_per_minute": 0, "api_per_minute": 0}}
    )
    assert limits.status_code == 200, limits.text
    people: dict[str, Who] = {"anon": Who("anon"), "key": Who("key", key=True)}
    changes: dict[str, Doc] = {
        "a": {"verified": True},
        "b": {"verified": True},
        "unverified": {},
        # The role is set after the session exists: rules must see it at once.
        "editor": {"verified": True, "role": "editor"},
    }
    for name, change in changes.items():
        user, token = _signup(server)
        if change:
            patched = admin.patch(f"/api/users/{user['id']}", json=change)
            assert patched.status_code == 200, patched.text
            user = patched.json()
        people[name] = _as_who(name, user, token)
    assert people["unverified"].verified is False and people["unverified"].role == "user"
    clients = {name: server.client(key=False) for name in people if name != "key"}
    for name, client in clients.items():
        client.headers.update(people[name].headers)
    clients["key"] = admin
    yield World(server, people, clients, admin)
    for name, client in clients.items():
        if name != "key":
            client.close()
    admin.close()


# ---------------------------------------------------------------------------
# The oracle: each rule as a Python predicate over (caller, record, body)

Check = Callable[[Who, Doc, Doc | None], bool]
MISSING: Final = object()


def signed_in(who: Who, record: Doc, body: Doc | None) -> bool:
    return who.signed_in


def owner(who: Who, record: Doc, body: Doc | None) -> bool:
    # Signed out, @auth.id is "": never the owner (owners are user ids or null).
    return record.get("owner") == who.id


def equals_or_null(value: object, wanted: object) -> bool:
    """The filter's equality: null matches null or a missing field; else type-strict."""
    if wanted is None:
        return value is None or value is MISSING
    return type(value) is type(wanted) and value == wanted


@dataclass(frozen=True)
class RuleSet:
    name: str
    rules: Mapping[str, Any]  # as sent to the server
    oracle: Mapping[str, Check | bool | None]  # None: locked, True: everyone


def _preset(name: str, oracle: Mapping[str, Check | bool | None]) -> RuleSet:
    return RuleSet(name, RULE_PRESETS[name], oracle)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


RULE_SETS: Final[list[RuleSet]] = [
    _preset("private", dict.fromkeys(OPERATIONS)),
    _preset(
        "owner_only",
        {"list": owner, "read": owner, "create": signed_in, "update": owner, "delete": owner},
    ),
    _preset(
        "signed_in_read_owner_write",
        {
            "list": signed_in,
            "read": signed_in,
            "create": signed_in,
            "update": owner,
            "delete": owner,
        },
    ),
    _preset(
        "public_read",
        {"list": True, "read": True, "create": signed_in, "update": owner, "delete": owner},
    ),
    _preset("public", dict.fromkeys(OPERATIONS, True)),
    RuleSet(
        "public_or_own",
        {
            "list": {"$or": [{"public": True}, {"owner": "@auth.id"}]},
            "read": {"$or": [{"public": True}, {"owner": "@auth.id"}]},
            "create": {"@auth": {"$ne": None}},
            # Anyone may edit a public record, but must not hide it from themselves.
            "update": {"public": True},
            "delete": {"owner": "@auth.id"},
        },
        {
            "list": lambda w, r, b: r.get("public") is True or owner(w, r, b),
            "read": lambda w, r, b: r.get("public") is True or owner(w, r, b),
            "create": signed_in,
            "update": lambda w, r, b: r.get("public") is True,
            "delete": owner,
        },
    ),
    RuleSet(
        "editor_role",
        {op: {"@auth.role": "editor"} for op in OPERATIONS},
        dict.fromkeys(OPERATIONS, lambda w, r, b: w.role == "editor"),
    ),
    RuleSet(
        "verified_only",
        {
            "list": {"@auth.verified": True},
            "read": {"@auth.verified": True},
            "create": {"@auth.verified": True},
            "update": {"owner": "@auth.id", "@auth.verified": True},
            "delete": {"owner": "@auth.id", "@auth.verified": True},
        },
        {
            "list": lambda w, r, b: w.verified,
            "read": lambda w, r, b: w.verified,
            "create": lambda w, r, b: w.verified,
            "update": lambda w, r, b: w.verified and owner(w, r, b),
            "delete": lambda w, r, b: w.verified and owner(w, r, b),
        },
    ),
    RuleSet(
        "body_create",
        {
            "list": True,
            "read": True,
            # A new record needs a title and must be signed with the caller's own email.
            "create": {"title": {"$exists": True}, "@auth.email": "@body.signed_by"},
            "update": {"owner": "@auth.id"},
            "delete": {"owner": "@auth.id"},
        },
        {
            "list": True,
            "read": True,
            "create": lambda w, r, b: (
                "title" in r and b is not None and equals_or_null(w.email, b.get("signed_by"))
            ),
            "update": owner,
            "delete": owner,
        },
    ),
    RuleSet(
        "body_update",
        {
            "list": True,
            "read": True,
            "create": True,
            # The owner, or whoever sends the record's code along with the change.
            "update": {"$or": [{"owner": "@auth.id"}, {"code": "@body.code"}]},
            "delete": None,
        },
        {
            "list": True,
            "read": True,
            "create": True,
            "update": lambda w, r, b: (
                owner(w, r, b) or equals_or_null(r.get("code", MISSING), (b or {}).get("code"))
            ),
            "delete": None,
        },
    ),
    RuleSet(
        "published",
        {
            "list": {"publish_at": {"$lte": "@now"}},
            "read": {"publish_at": {"$lte": "@now"}},
            "create": {"@auth": {"$ne": None}},
            "update": {"owner": "@auth.id"},
            "delete": {"owner": "@auth.id"},
        },
        {
            "list": lambda w, r, b: (
                isinstance(r.get("publish_at"), str) and r["publish_at"] <= _now()
            ),
            "read": lambda w, r, b: (
                isinstance(r.get("publish_at"), str) and r["publish_at"] <= _now()
            ),
            "create": signed_in,
            "update": owner,
            "delete": owner,
        },
    ),
]
BY_NAME: Final = {rule_set.name: rule_set for rule_set in RULE_SETS}


def decide(rule_set: RuleSet, op: str, who: Who, record: Doc, body: Doc | None = None) -> str:
    """'yes', 'no' (the record fails the rule) or 'locked' (null rule)."""
    if who.key:
        return "yes"
    rule = rule_set.oracle[op]
    if rule is None:
        return "locked"
    if rule is True or rule is False:
        return "yes" if rule else "no"
    return "yes" if rule(who, record, body) else "no"


# ---------------------------------------------------------------------------
# Collections and records


def _new_collection(admin: httpx.Client, rules: Mapping[str, Any]) -> str:
    name = "rm_" + secrets.token_hex(5)
    response = admin.post("/api/collections", json={"name": name, "rules": rules})
    assert response.status_code == 201, response.text
    assert response.json()["rules"] == rules
    return name


OWNERS: Final = ("a", "b", "unverified", "editor", None)


def _target_docs(world: World, tag: str) -> list[Doc]:
    """One record per owner x public, with varied publish_at: ids start with `tag`."""
    docs = []
    for i, (who, public) in enumerate(product(OWNERS, (True, False))):
        doc: Doc = {
            "id": f"{tag}-{i}",
            "title": f"title {i}",
            "public": public,
            "code": f"code-{tag}-{i}",
            "n": i,
        }
        if i % 3 != 2:
            doc["publish_at"] = (PAST, FUTURE)[i % 3]
        if who is not None:
            doc["owner"] = world.people[who].id  # the secret key may set the owner
            doc["signed_by"] = world.people[who].email
        docs.append(doc)
    return docs


def _seed(world: World, collection: str, docs: list[Doc]) -> list[Doc]:
    ops = [{"op": "create", "collection": collection, "data": doc} for doc in docs]
    response = world.admin.post("/api/batch", json={"ops": ops})
    assert response.status_code == 200, response.text
    records: list[Doc] = response.json()["results"]
    for doc, record in zip(docs, records, strict=True):
        assert record["owner"] == doc.get("owner")
        assert record["version"] == 1
    return records


def _stored(world: World, collection: str, ids: list[str]) -> dict[str, Doc]:
    """The stored records, read with the secret key."""
    response = world.admin.get(
        f"/api/collections/{collection}/records",
        params={"filter": json.dumps({"id": {"$in": ids}}), "limit": 1000},
    )
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["items"]}


@dataclass
class Setup:
    read_collection: dict[str, str]
    seeds: dict[str, list[Doc]]
    write_collection: dict[str, str]


@pytest.fixture(scope="module")
def setup(world: World) -> Setup:
    read_collection: dict[str, str] = {}
    seeds: dict[str, list[Doc]] = {}
    write_collection: dict[str, str] = {}
    for rule_set in RULE_SETS:
        name = _new_collection(world.admin, rule_set.rules)
        read_collection[rule_set.name] = name
        seeds[rule_set.name] = _seed(world, name, _target_docs(world, "s"))
        write_collection[rule_set.name] = _new_collection(world.admin, rule_set.rules)
    return Setup(read_collection, seeds, write_collection)


# ---------------------------------------------------------------------------
# Known server bugs (see the closing report); strict, so a fix turns them red.

MATRIX_OPS: Final = (
    "list",
    "get",
    "create",
    "patch",
    "put",
    "delete",
    "batch_create",
    "batch_update",
    "batch_replace",
    "batch_delete",
)


def _cells() -> list[Any]:
    cells = []
    for rule_set, caller, op in product(BY_NAME, CALLERS, MATRIX_OPS):
        cells.append(pytest.param(rule_set, caller, op, id=f"{rule_set}-{caller}-{op}"))
    return cells


# ---------------------------------------------------------------------------
# Reads


def check_list(world: World, setup: Setup, rule_set: RuleSet, who: Who) -> None:
    client = world.clients[who.name]
    collection = setup.read_collection[rule_set.name]
    seeds = setup.seeds[rule_set.name]
    url = f"/api/collections/{collection}/records"
    response = client.get(url, params={"count": "true", "limit": 1000})
    if decide(rule_set, "list", who, {}) == "locked":
        error_of(response, 403, "forbidden")
        return
    assert response.status_code == 200, response.text
    page = response.json()
    visible = [s for s in seeds if decide(rule_set, "list", who, s) == "yes"]
    assert [item["id"] for item in page["items"]] == [s["id"] for s in visible]
    # Every item is exactly the stored record, and one the caller may list.
    assert page["items"] == visible
    assert page["total"] == len(page["items"])
    assert page["next"] is None

    # A filter narrows what the rule shows; it can never widen it.
    other = world.other(who)
    widening = {"$or": [{"owner": other.id}, {"owner": None}, {"public": False}, {"n": 3}]}

    def matches(record: Doc) -> bool:
        return (
            record.get("owner") in (other.id, None) or record["public"] is False or record["n"] == 3
        )

    filtered = client.get(
        url, params={"filter": json.dumps(widening), "count": "true", "limit": 1000}
    )
    assert filtered.status_code == 200, filtered.text
    expected = [s["id"] for s in visible if matches(s)]
    assert [item["id"] for item in filtered.json()["items"]] == expected
    assert filtered.json()["total"] == len(expected)

    # Paging through small pages gives the same records, and no others.
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3, "count": "true"}
    while True:
        paged = client.get(url, params=params)
        assert paged.status_code == 200, paged.text
        body = paged.json()
        assert body["total"] == len(visible)
        seen += [item["id"] for item in body["items"]]
        if body["next"] is None:
            break
        params = {"limit": 3, "after": body["next"], "count": "true"}
    assert seen == [s["id"] for s in visible]


def check_get(world: World, setup: Setup, rule_set: RuleSet, who: Who) -> None:
    client = world.clients[who.name]
    collection = setup.read_collection[rule_set.name]
    for seed in setup.seeds[rule_set.name]:
        response = client.get(f"/api/collections/{collection}/records/{seed['id']}")
        outcome = decide(rule_set, "read", who, seed)
        where = f"record {seed['id']} owned by {seed.get('owner')}"
        if outcome == "locked":
            error_of(response, 403, "forbidden")
        elif outcome == "no":
            error_of(response, 404, "not_found")
        else:
            assert response.status_code == 200, (where, response.text)
            assert response.json() == seed, where
            assert response.headers["etag"] == '"1"'
    missing = client.get(f"/api/collections/{collection}/records/no-such-record")
    if decide(rule_set, "read", who, {}) == "locked":
        error_of(missing, 403, "forbidden")
    else:
        error_of(missing, 404, "not_found")


# ---------------------------------------------------------------------------
# Writes


def _spoofed(world: World, who: Who) -> Doc:
    """System fields a caller tries to set: ignored, except `owner` for the secret key."""
    return {
        "owner": world.other(who).id,
        "version": 42,
        "created": PAST,
        "updated": PAST,
    }


def _user_fields(doc: Mapping[str, Any]) -> Doc:
    return {k: v for k, v in doc.items() if k not in SYSTEM and k != "expand"}


def _send(
    world: World, who: Who, op: str, collection: str, record_id: str, body: Doc | None
) -> httpx.Response:
    client = world.clients[who.name]
    url = f"/api/collections/{collection}/records"
    if op == "create":
        return client.post(url, json=body)
    if op == "patch":
        return client.patch(f"{url}/{record_id}", json=body)
    if op == "put":
        return client.put(f"{url}/{record_id}", json=body)
    if op == "delete":
        return client.delete(f"{url}/{record_id}")
    batch_op = {
        "batch_create": "create",
        "batch_update": "update",
        "batch_replace": "replace",
        "batch_delete": "delete",
    }[op]
    item: Doc = {"op": batch_op, "collection": collection}
    if batch_op != "create":
        item["id"] = record_id
    if body is not None:
        item["data"] = body
    return client.post("/api/batch", json={"ops": [item]})


def _refused(response: httpx.Response, outcome: str, op: str, where: str) -> None:
    """Locked: 403; not visible: 404; refused create or hiding update: 403; taken id: 409."""
    status, code = {
        "locked": (403, "forbidden"),
        "no": (404, "not_found"),
        "unreadable": (403, "forbidden"),
        "conflict": (409, "conflict"),
    }[outcome]
    if op in ("create", "batch_create") and outcome == "no":
        status, code = 403, "forbidden"
    assert response.status_code == status, (where, response.text)
    error = error_of(response, status, code)
    # (A unique violation in a batch lacks details.op: see test_batch_conflicts_name_the_op.)
    if op.startswith("batch_") and outcome != "conflict":
        assert error["details"].get("op") == 0, (where, error)


def _written(response: httpx.Response, op: str, where: str) -> Doc:
    if op.startswith("batch_"):
        assert response.status_code == 200, (where, response.text)
        results = response.json()["results"]
        assert len(results) == 1
        record: Doc = results[0]
        return record
    expected = {"create": 201, "delete": 204}.get(op, 200)
    assert response.status_code == expected, (where, response.text)
    return response.json() if expected != 204 else {}


def check_create(world: World, setup: Setup, rule_set: RuleSet, who: Who, op: str) -> None:
    collection = setup.write_collection[rule_set.name]
    tag = secrets.token_hex(4)
    existing = _seed(world, collection, _target_docs(world, tag)[:2])
    signature = who.email or "nobody@example.com"
    variants: dict[str, Doc] = {
        "signed": {"title": "new", "signed_by": signature, "public": True, "publish_at": PAST},
        "unsigned": {"title": "new", "public": False},
        "untitled": {"signed_by": signature, "publish_at": FUTURE},
        "collide": {"title": "new", "signed_by": signature, "id": existing[1]["id"]},
    }
    for variant, fields in variants.items():
        where = f"{rule_set.name}/{who.name}/{op}/{variant}"
        record_id = fields.get("id", f"{tag}-new-{variant}")
        body = {**_spoofed(world, who), **fields, "id": record_id}
        new_owner = body["owner"] if who.key else (who.id or None)
        candidate = {**_user_fields(body), "id": record_id, "owner": new_owner, "version": 1}
        outcome = decide(rule_set, "create", who, candidate, body)
        if variant == "collide" and outcome == "yes":
            outcome = "conflict"
        response = _send(world, who, op, collection, "", body)
        if outcome != "yes":
            _refused(response, outcome, op, where)
            stored = _stored(world, collection, [record_id])
            if variant == "collide":
                assert stored == {record_id: existing[1]}, where
            else:
                assert stored == {}, where
            continue
        record = _written(response, op, where)
        # The owner is the creator (the body's owner only for the secret key).
        assert record["owner"] == new_owner, where
        assert record["id"] == record_id and record["version"] == 1, where
        assert record["created"] == record["updated"] and record["created"] != PAST, where
        assert _user_fields(record) == _user_fields(body), where
        assert _stored(world, collection, [record_id]) == {record_id: record}, where


def _merge(current: Doc, patch: Doc) -> Doc:
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _change_body(world: World, who: Who, op: str, variant: str, before: Doc) -> Doc:
    spoof = _spoofed(world, who)
    if op in ("patch", "batch_update"):
        if variant == "keep":
            return {**spoof, "note": f"by {who.name}", "code": before["code"]}
        return {**spoof, "public": False, "publish_at": FUTURE, "n": None}
    kept: Doc = {k: before[k] for k in ("public", "publish_at", "code") if k in before}
    if variant == "keep":
        return {**spoof, "title": f"put by {who.name}", **kept}
    return {**spoof, "title": f"hidden by {who.name}"}


def check_change(world: World, setup: Setup, rule_set: RuleSet, who: Who, op: str) -> None:
    collection = setup.write_collection[rule_set.name]
    tag = secrets.token_hex(4)
    deleting = op in ("delete", "batch_delete")
    variants = ("-",) if deleting else ("keep", "hide")
    plan = []
    docs = []
    for variant in variants:
        for doc in _target_docs(world, f"{tag}{variant.strip('-')}"):
            docs.append(doc)
            plan.append(variant)
    targets = _seed(world, collection, docs)
    for variant, before in zip(plan, targets, strict=True):
        where = f"{rule_set.name}/{who.name}/{op}/{variant} on {before['id']}"
        operation = "delete" if deleting else "update"
        body = None if deleting else _change_body(world, who, op, variant, before)
        outcome = decide(rule_set, operation, who, before, body)
        after: Doc | None = None
        if outcome == "yes" and body is not None:
            if op in ("patch", "batch_update"):
                fields = _merge(_user_fields(before), _user_fields(body))
            else:
                fields = _user_fields(body)
            owner_after = body["owner"] if who.key else before.get("owner")
            after = {**fields, "id": before["id"], "owner": owner_after, "version": 2}
            after["created"] = before["created"]
            if decide(rule_set, "read", who, after) != "yes":
                outcome = "unreadable"  # the change would hide the record from its writer
        response = _send(world, who, op, collection, before["id"], body)
        stored = _stored(world, collection, [before["id"]])
        if outcome != "yes":
            _refused(response, outcome, op, where)
            assert stored == {before["id"]: before}, f"{where}: a refused write changed it"
            continue
        record = _written(response, op, where)
        if deleting:
            assert stored == {}, where
            if op == "batch_delete":
                assert record == {"id": before["id"], "deleted": True}, where
            continue
        assert after is not None
        assert record["updated"] >= before["updated"], where
        assert {k: v for k, v in record.items() if k != "updated"} == after, where
        assert stored == {before["id"]: record}, where


@pytest.mark.parametrize(("rule_set", "caller", "op"), _cells())
def test_rule_matrix(world: World, setup: Setup, rule_set: str, caller: str, op: str) -> None:
    rules, who = BY_NAME[rule_set], world.people[caller]
    if op == "list":
        check_list(world, setup, rules, who)
    elif op == "get":
        check_get(world, setup, rules, who)
    elif op in ("create", "batch_create"):
        check_create(world, setup, rules, who, op)
    else:
        check_change(world, setup, rules, who, op)


# ---------------------------------------------------------------------------
# Around the matrix


def test_presets_are_what_the_oracle_models() -> None:
    signed = {"@auth": {"$ne": None}}
    own = {"owner": "@auth.id"}
    assert dict(RULE_PRESETS) == {
        "private": dict.fromkeys(OPERATIONS),
        "owner_only": {"list": own, "read": own, "create": signed, "update": own, "delete": own},
        "signed_in_read_owner_write": {
            "list": signed,
            "read": signed,
            "create": signed,
            "update": own,
            "delete": own,
        },
        "public_read": {
            "list": True,
            "read": True,
            "create": signed,
            "update": own,
            "delete": own,
        },
        "public": dict.fromkeys(OPERATIONS, True),
    }
    assert dict(DEFAULT_RULES) == RULE_PRESETS["owner_only"]


def test_new_collections_get_the_default_rules(world: World) -> None:
    name = "rm_" + secrets.token_hex(5)
    created = world.admin.post("/api/collections", json={"name": name})
    assert created.status_code == 201, created.text
    assert created.json()["rules"] == dict(DEFAULT_RULES)
    # A secret-key write to a missing collection creates it the same way.
    implicit = "rm_" + secrets.token_hex(5)
    assert world.admin.post(f"/api/collections/{implicit}/records", json={}).status_code == 201
    assert world.admin.get(f"/api/collections/{implicit}").json()["rules"] == dict(DEFAULT_RULES)
    error_of(
        world.clients["a"].post(f"/api/collections/rm_{secrets.token_hex(5)}/records", json={}),
        404,
        "not_found",
    )


@pytest.mark.parametrize(
    "rules",
    [
        {"list": {"owner_note": "@body.owner_note"}},
        {"read": {"x": {"$in": ["a", "@body.x"]}}},
        {"delete": {"$or": [{"owner": "@auth.id"}, {"code": "@body.code"}]}},
        {"list": {"@auth.email": "@body.signed_by"}},
        {"list": {"tags": {"$elemMatch": {"$eq": "@body.tag"}}}},
    ],
    ids=["list", "read-in", "delete-or", "list-auth-key", "list-elemmatch"],
)
def test_body_variables_only_in_create_and_update_rules(
    world: World, rules: dict[str, Any]
) -> None:
    (op,) = rules
    name = "rm_" + secrets.token_hex(5)
    refused = world.admin.post("/api/collections", json={"name": name, "rules": rules})
    error = error_of(refused, 400, "validation_failed")
    assert f"rules.{op}" in error["details"]["fields"], error
    error_of(world.admin.get(f"/api/collections/{name}"), 404, "not_found")
    existing = _new_collection(world.admin, RULE_PRESETS["public"])
    error_of(
        world.admin.patch(f"/api/collections/{existing}", json={"rules": rules}),
        400,
        "validation_failed",
    )
    current = world.admin.get(f"/api/collections/{existing}").json()["rules"]
    assert current == RULE_PRESETS["public"]
    # The same condition is fine where there is a body.
    (condition,) = rules.values()
    for op_with_body in ("create", "update"):
        ok = world.admin.patch(
            f"/api/collections/{existing}", json={"rules": {op_with_body: condition}}
        )
        assert ok.status_code == 200, ok.text


def test_unknown_variables_are_refused(world: World) -> None:
    for rule in ({"owner": "@auth.name"}, {"x": "@today"}, {"x": ["@auth.id"]}):
        response = world.admin.post(
            "/api/collections", json={"name": "rm_" + secrets.token_hex(5), "rules": {"read": rule}}
        )
        error_of(response, 400, "validation_failed")


@pytest.mark.parametrize("key", ["@auth.rol", "@auth.data.team", "@auth.0"])
def test_unknown_auth_keys_are_refused(world: World, key: str) -> None:
    response = world.admin.post(
        "/api/collections",
        json={"name": "rm_" + secrets.token_hex(5), "rules": {"read": {key: "editor"}}},
    )
    error_of(response, 400, "validation_failed")


def test_ids_and_system_fields_cannot_be_taken_over(world: World) -> None:
    a, b = world.clients["a"], world.clients["b"]
    name = _new_collection(world.admin, RULE_PRESETS["public"])
    url = f"/api/collections/{name}/records"
    mine = a.post(url, json={"id": "taken", "title": "A's"}).json()
    assert mine["owner"] == world.people["a"].id
    # Another user cannot create over it, nor make it theirs by any write.
    error_of(b.post(url, json={"id": "taken", "title": "B's"}), 409, "conflict")
    batch = b.post(
        "/api/batch",
        json={"ops": [{"op": "create", "collection": name, "id": "taken", "data": {}}]},
    )
    error_of(batch, 409, "conflict")
    error_of(b.patch(f"{url}/taken", json={"id": "other"}), 400, "bad_request")
    assert world.admin.get(f"{url}/taken").json() == mine
    patched = b.patch(
        f"{url}/taken",
        json={"owner": world.people["b"].id, "version": 1, "created": PAST, "title": "B was here"},
    )
    assert patched.status_code == 200, patched.text
    record = patched.json()
    assert record["owner"] == mine["owner"] and record["created"] == mine["created"]
    assert record["version"] == 2 and record["title"] == "B was here"
    replaced = b.put(f"{url}/taken", json={"owner": None, "version": 0, "id": "taken"})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["owner"] == mine["owner"] and replaced.json()["version"] == 3
    assert "title" not in replaced.json()
    # The secret key may give a record away, and sees it wherever it is.
    given = world.admin.patch(f"{url}/taken", json={"owner": world.people["b"].id})
    assert given.json()["owner"] == world.people["b"].id


def test_filter_variables_are_plain_strings_in_queries(world: World, setup: Setup) -> None:
    collection = setup.read_collection["public"]
    response = world.clients["a"].get(
        f"/api/collections/{collection}/records",
        params={"filter": json.dumps({"owner": "@auth.id"}), "count": "true"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next": None, "total": 0}


def test_batch_is_all_or_nothing_under_rules(world: World) -> None:
    name = _new_collection(world.admin, RULE_PRESETS["owner_only"])
    theirs = _seed(world, name, [{"id": "theirs", "owner": world.people["b"].id, "t": 0}])[0]
    ops = [
        {"op": "create", "collection": name, "id": "mine", "data": {"t": 1}},
        {"op": "update", "collection": name, "id": "theirs", "data": {"t": 2}},
    ]
    error = error_of(world.clients["a"].post("/api/batch", json={"ops": ops}), 404, "not_found")
    assert error["details"]["op"] == 1
    assert _stored(world, name, ["mine", "theirs"]) == {"theirs": theirs}


def test_role_changes_apply_to_open_sessions(world: World) -> None:
    name = _new_collection(world.admin, {op: {"@auth.role": "editor"} for op in OPERATIONS})
    user, token = _signup(world.server)
    headers = {"Authorization": f"Bearer {token}"}
    url = world.server.url + f"/api/collections/{name}/records"
    assert httpx.get(url, headers=headers).json()["items"] == []
    world.admin.patch(f"/api/users/{user['id']}", json={"role": "editor"})
    assert httpx.post(url, headers=headers, json={"t": 1}).status_code == 201
    assert len(httpx.get(url, headers=headers).json()["items"]) == 1
    world.admin.patch(f"/api/users/{user['id']}", json={"role": "user"})
    assert httpx.get(url, headers=headers).json()["items"] == []
    error_of(httpx.post(url, headers=headers, json={"t": 2}), 403, "forbidden")


# ---------------------------------------------------------------------------
# Server bugs found by this file, each as its smallest failing case.


@pytest.mark.parametrize("second", ["update", "replace", "delete"])
def test_batch_checks_locked_rules_on_records_created_in_the_batch(
    world: World, second: str
) -> None:
    rules = {"list": True, "read": True, "create": True, "update": None, "delete": None}
    name = _new_collection(world.admin, rules)
    ops: list[Doc] = [
        {"op": "create", "collection": name, "id": "x", "data": {"t": 1}},
        {"op": second, "collection": name, "id": "x"},
    ]
    if second != "delete":
        ops[1]["data"] = {"t": 2}
    response = world.clients["a"].post("/api/batch", json={"ops": ops})
    error = error_of(response, 403, "forbidden")
    assert error["details"]["op"] == 1
    assert _stored(world, name, ["x"]) == {}


def test_batch_rechecks_the_update_rule_for_each_op(world: World) -> None:
    rules = {"list": True, "read": True, "create": True, "update": {"status": "draft"}}
    name = _new_collection(world.admin, {**rules, "delete": None})
    (draft,) = _seed(world, name, [{"id": "d", "status": "draft", "t": 0}])
    ops = [
        {"op": "update", "collection": name, "id": "d", "data": {"status": "published"}},
        {"op": "update", "collection": name, "id": "d", "data": {"t": 99}},
    ]
    response = world.clients["a"].post("/api/batch", json={"ops": ops})
    # The same two writes one at a time: the second is refused (the record is no longer a draft).
    error = error_of(response, 404, "not_found")
    assert error["details"]["op"] == 1
    assert _stored(world, name, ["d"]) == {"d": draft}


def test_update_rules_see_the_request_body(world: World) -> None:
    rules = {"list": True, "read": True, "create": True, "delete": None}
    name = _new_collection(world.admin, {**rules, "update": {"code": "@body.code"}})
    _seed(world, name, [{"id": "coded", "code": "s3cret"}, {"id": "open"}])
    url = f"/api/collections/{name}/records"
    anon = world.clients["anon"]
    # With the right code the update is allowed ...
    assert anon.patch(f"{url}/coded", json={"code": "s3cret", "t": 1}).status_code == 200
    # ... and a body with another code does not match a record without one.
    error_of(anon.patch(f"{url}/open", json={"code": "guess", "t": 1}), 404, "not_found")


def test_signed_out_auth_keys_use_the_documented_values(world: World) -> None:
    # docs/api.md: signed out, @auth.email and @auth.role are "", @auth.verified is false.
    for rule, expected in (
        ({"@auth.verified": False}, 1),
        ({"@auth.role": ""}, 1),
        ({"@auth.role": None}, 0),
        ({"@auth.email": {"$exists": True}}, 1),
    ):
        name = _new_collection(world.admin, {**RULE_PRESETS["public"], "list": rule})
        _seed(world, name, [{"t": 1}])
        listed = world.clients["anon"].get(f"/api/collections/{name}/records")
        assert len(listed.json()["items"]) == expected, rule


def test_batch_conflicts_name_the_op(world: World) -> None:
    name = _new_collection(world.admin, RULE_PRESETS["public"])
    _seed(world, name, [{"id": "taken"}])
    ops = [
        {"op": "create", "collection": name, "data": {}},
        {"op": "create", "collection": name, "id": "taken", "data": {}},
    ]
    error = error_of(world.clients["a"].post("/api/batch", json={"ops": ops}), 409, "conflict")
    assert error["details"].get("op") == 1, error
