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

USER: Schema = {
    "type": "object",
    "required": ["id", "email", "verified", "role", "data", "created", "updated"],
    "properties": {
        "id": {"type": "string"},
        "email": {"type": "string"},
        "verified": {"type": "boolean"},
        "role": {"type": "string"},
        "data": {"type": "object"},
        "created": TIMESTAMP,
        "updated": TIMESTAMP,
        "version": {"type": "integer"},
    },
}

USER_PAGE: Schema = {
    "type": "object",
    "required": ["items", "next"],
    "properties": {
        "items": {"type": "array", "items": USER},
        "next": {"type": ["string", "null"]},
        "total": {"type": "integer", "minimum": 0},
    },
}

AUTH_GRANT: Schema = {
    "type": "object",
    "required": ["user", "token"],
    "properties": {"user": USER, "token": {"type": "string", "pattern": "^bps_"}},
}

SESSION_LIST: Schema = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "created", "last_seen", "expires", "current"],
                "properties": {
                    "id": {"type": "string"},
                    "created": TIMESTAMP,
                    "last_seen": TIMESTAMP,
                    "expires": TIMESTAMP,
                    "current": {"type": "boolean"},
                    "user_agent": {"type": "string"},
                    "ip": {"type": "string"},
                },
            },
        }
    },
}

SETTINGS: Schema = {
    "type": "object",
    "required": [
        "allowed_origins",
        "session_ttl_days",
        "smtp",
        "oauth",
        "rate_limits",
        "channels",
        "limits",
    ],
    "properties": {
        "allowed_origins": {"type": "array", "items": {"type": "string"}},
        "app_url": {"type": ["string", "null"]},
        "session_ttl_days": {"type": "integer"},
        "smtp": {"type": ["object", "null"]},
        "oauth": {"type": "object"},
        "rate_limits": {"type": "object"},
        "channels": {"type": "array"},
        "limits": {"type": "object"},
    },
}

FILE: Schema = {
    "type": "object",
    "required": ["id", "name", "size", "type", "bucket", "owner", "public", "sha256", "created"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "size": {"type": "integer", "minimum": 0},
        "type": {"type": "string"},
        "bucket": {"type": "string"},
        "owner": {"type": ["string", "null"]},
        "public": {"type": "boolean"},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "created": TIMESTAMP,
        "updated": TIMESTAMP,
        "version": {"type": "integer"},
    },
}

FILE_PAGE: Schema = {
    "type": "object",
    "required": ["items", "next"],
    "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "next": {"type": ["string", "null"]},
        "total": {"type": "integer", "minimum": 0},
    },
}

UPLOAD: Schema = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "bucket": {"type": "string"},
        "name": {"type": "string"},
        "public": {"type": "string", "enum": ["true", "false"]},
        "file": {"type": "string", "format": "binary"},
    },
}

FILE_PATCH: Schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "bucket": {"type": "string"},
        "public": {"type": "boolean"},
    },
    "additionalProperties": False,
}

SIGNED_URL_INPUT: Schema = {
    "type": "object",
    "properties": {"expires_in": {"type": "integer", "minimum": 1, "maximum": 604800}},
}

SIGNED_URL: Schema = {
    "type": "object",
    "required": ["url"],
    "properties": {"url": {"type": "string"}},
}

BUCKET: Schema = {
    "type": "object",
    "required": ["name", "rules", "max_size", "allowed_types"],
    "properties": {
        "name": {"type": "string"},
        "rules": RULES,
        "max_size": {"type": ["integer", "null"]},
        "allowed_types": {"type": ["array", "null"], "items": {"type": "string"}},
        "created": {"type": "string"},
        "updated": {"type": "string"},
    },
}

BUCKET_INPUT: Schema = {
    "type": "object",
    "properties": {
        "rules": RULES,
        "max_size": {"type": ["integer", "null"], "minimum": 1},
        "allowed_types": {"type": ["array", "null"], "items": {"type": "string"}},
    },
    "additionalProperties": False,
}

BUCKET_LIST: Schema = {
    "type": "object",
    "required": ["items"],
    "properties": {"items": {"type": "array", "items": BUCKET}},
}
