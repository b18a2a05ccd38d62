"""Typed request parameters: the name grammars of docs/architecture.md, declared once.

Declaring the patterns makes the OpenAPI document honest (a schema-valid
request is a well-formed one) and rejects malformed input before any route
code runs, as a 422 problem.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query

__all__ = [
    "MANIFEST_JSON_SCHEMA",
    "Cursor",
    "DigestParam",
    "DigestQuery",
    "Name",
    "NameQuery",
    "NamespaceQuery",
    "Ns",
    "SchemaId",
    "UploadId",
    "Ver",
]

_SEGMENT = r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$"
_DIGEST = r"^(?:blake3|sha256):[0-9a-f]{64}$"
_VERSION = r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}$"

Ns = Annotated[str, Path(pattern=_SEGMENT, max_length=64, description="Namespace")]
Name = Annotated[str, Path(pattern=_SEGMENT, max_length=128, description="Package name")]
Ver = Annotated[str, Path(pattern=_VERSION, description="Version")]
DigestParam = Annotated[str, Path(pattern=_DIGEST, description="blake3:<hex> or sha256:<hex>")]
DigestQuery = Annotated[str | None, Query(pattern=_DIGEST, description="Expected digest")]
SchemaId = Annotated[str, Path(pattern=_SEGMENT, max_length=128, description="Variant id")]
UploadId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="Upload session")]
NamespaceQuery = Annotated[str | None, Query(pattern=_SEGMENT, max_length=64)]
NameQuery = Annotated[str | None, Query(pattern=_SEGMENT, max_length=128)]
Cursor = Annotated[
    str | None, Query(pattern=r"^[0-9A-Za-z_-]{1,80}$", description="next_cursor of a page")
]


def _string(pattern: str | None = None, **more: Any) -> dict[str, Any]:
    return {"type": "string", **({"pattern": pattern} if pattern else {}), **more}


def _strict(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


#: The JSON rendering of a manifest (docs/architecture.md), as the OpenAPI request body of a
#: commit. What a schema cannot say (files sorted by path and unique after case folding,
#: the full path grammar, the URL naming the same version) is checked by the server.
MANIFEST_JSON_SCHEMA: dict[str, Any] = _strict(
    {
        "schema": {"const": "artifactstore.manifest.v1"},
        "package": _strict(
            {
                "namespace": _string(_SEGMENT, maxLength=64),
                "name": _string(_SEGMENT, maxLength=128),
                "version": _string(_VERSION),
            }
        ),
        "files": {
            "type": "array",
            "items": _strict(
                {
                    "path": _string(minLength=1, maxLength=1024),
                    "size": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                    "media_type": _string(
                        r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
                        r"/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
                    ),
                    "digests": _strict(
                        {
                            "blake3": _string(r"^blake3:[0-9a-f]{64}$"),
                            "sha256": _string(r"^sha256:[0-9a-f]{64}$"),
                        }
                    ),
                }
            ),
        },
        "variant": {"anyOf": [_string(_SEGMENT, maxLength=128), {"type": "null"}]},
        "metadata": {"type": "object"},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "created": _string(
            r"^([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
            r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
            r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?Z$"
        ),
        "producer": _string(maxLength=256),
    }
)


def json_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads a strict JSON object itself."""
    return {
        "requestBody": {
            "required": bool(required),
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": properties,
                        "required": required,
                        "additionalProperties": False,
                    }
                }
            },
        }
    }
