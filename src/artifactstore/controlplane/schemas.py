"""Metadata schemas: JSON Schema (draft 2020-12) per variant id, immutable once registered."""

from __future__ import annotations

import json
import re
from typing import Any

import blake3
from sqlalchemy import Connection, select

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.eventlog import append
from artifactstore.errors import (
    InvalidMetadata,
    InvalidName,
    InvalidSchema,
    SchemaExists,
    SchemaNotFound,
)
from artifactstore.model.events import SchemaRegistered

__all__ = ["get", "list_ids", "register", "validate_metadata", "validate_variant_id"]

_VARIANT = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
MAX_SCHEMA_BYTES = 256 * 1024


def validate_variant_id(variant: str) -> str:
    if len(variant) > 128 or not _VARIANT.fullmatch(variant):
        raise InvalidName(
            f"invalid schema id {variant[:80]!r}: lowercase letters and digits separated by "
            "'.', '_' or '-' (for example ci.build.v1)"
        )
    return variant


def _canonical(schema: object) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def register(conn: Connection, variant: str, schema: Any, actor: str) -> bool:
    """Register ``schema`` for ``variant``; False when the identical schema is already there."""
    validate_variant_id(variant)
    if not isinstance(schema, dict):
        raise InvalidSchema("a metadata schema must be a JSON object")
    text = _canonical(schema)
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise InvalidSchema(f"schema is larger than {MAX_SCHEMA_BYTES} bytes")
    declared = schema.get("$schema")
    if declared is not None and declared != "https://json-schema.org/draft/2020-12/schema":
        raise InvalidSchema(f"only JSON Schema draft 2020-12 is supported, not {declared!r}")
    from jsonschema import Draft202012Validator  # imported on use: slow to import
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidSchema(f"not a valid JSON Schema (draft 2020-12): {exc.message}") from None
    row = conn.execute(select(t.schemas.c.schema).where(t.schemas.c.id == variant)).first()
    if row is not None:
        if row.schema == text:
            return False
        raise SchemaExists(
            f"schema {variant} is already registered with different content; schemas are "
            "immutable: register the new one under a new id (e.g. bump the version suffix)"
        )
    digest = "blake3:" + blake3.blake3(text.encode()).hexdigest()
    append(conn, SchemaRegistered(variant, schema, digest), actor)
    return True


def get(conn: Connection, variant: str) -> dict[str, Any]:
    row = conn.execute(select(t.schemas.c.schema).where(t.schemas.c.id == variant)).first()
    if row is None:
        raise SchemaNotFound(
            f"no schema is registered as {variant!r}: register it with "
            f"'artifactstore schema register {variant} FILE'"
        )
    result: dict[str, Any] = json.loads(row.schema)
    return result


def list_ids(conn: Connection) -> list[dict[str, str]]:
    rows = conn.execute(
        select(t.schemas.c.id, t.schemas.c.digest, t.schemas.c.registered_at).order_by(
            t.schemas.c.id
        )
    )
    return [{"id": r.id, "digest": r.digest, "registered_at": r.registered_at} for r in rows]


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def validate_metadata(schema: dict[str, Any], metadata: object, variant: str) -> None:
    """Raise InvalidMetadata naming the JSON pointer of the most relevant violation."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema).iter_errors(metadata))
    if error is not None:
        pointer = _pointer(error.absolute_path)
        raise InvalidMetadata(
            f"metadata does not match schema {variant} at {pointer or '/'}: {error.message}",
            pointer,
        )
