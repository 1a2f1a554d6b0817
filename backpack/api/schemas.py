"""JSON Schemas of the bodies the API exchanges, used by the OpenAPI document."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message", "details"],
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        }
    },
}

HEALTH: Schema = {
    "type": "object",
    "required": ["status", "version"],
    "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
}

TIMESTAMP: Schema = {"type": "string", "format": "date-time"}

RECORD: Schema = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "created": TIMESTAMP,
        "updated": TIMESTAMP,
        "owner": {"type": ["string", "null"]},
        "version": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": True,
}

DOCUMENT: Schema = {"type": "object", "additionalProperties": True}

RECORD_PAGE: Schema = {
    "type": "object",
    "required": ["items", "next"],
    "properties": {
        "items": {"type": "array", "items": RECORD},
        "next": {"type": ["string", "null"]},
        "total": {"type": "integer", "minimum": 0},
    },
}

RULE: Schema = {"oneOf": [{"type": "null"}, {"const": True}, {"type": "object"}]}

RULES: Schema = {
    "type": "object",
    "properties": {op: RULE for op in ("list", "read", "create", "update", "delete")},
    "additionalProperties": False,
}

INDEX: Schema = {
    "type": "object",
    "required": ["fields"],
    "properties": {
        "fields": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 8},
        "unique": {"type": "boolean"},
    },
    "additionalProperties": False,
}

COLLECTION: Schema = {
    "type": "object",
    "required": ["name", "schema", "rules", "indexes", "created", "updated"],
    "properties": {
        "name": {"type": "string"},
        "schema": {"type": ["object", "null"]},
        "rules": RULES,
        "indexes": {"type": "array", "items": INDEX},
        "created": TIMESTAMP,
        "updated": TIMESTAMP,
    },
}

COLLECTION_INPUT: Schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]{0,63}$"},
        "schema": {"type": ["object", "null"]},
        "rules": RULES,
        "indexes": {"type": "array", "items": INDEX},
    },
    "additionalProperties": False,
}

COLLECTION_LIST: Schema = {
    "type": "object",
    "required": ["items"],
    "properties": {"items": {"type": "array", "items": COLLECTION}},
}

BATCH_INPUT: Schema = {
    "type": "object",
    "required": ["ops"],
    "properties": {
        "ops": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {
                "type": "object",
                "required": ["op", "collection"],
                "properties": {
                    "op": {"enum": ["create", "update", "replace", "delete"]},
                    "collection": {"type": "string"},
                    "id": {"type": "string"},
                    "data": DOCUMENT,
                    "if_match": {"type": "integer"},
                },
                "additionalProperties": False,
            },
        }
    },
}

BATCH_RESULT: Schema = {
    "type": "object",
    "required": ["results"],
    "properties": {"results": {"type": "array", "items": {"type": "object"}}},
}
