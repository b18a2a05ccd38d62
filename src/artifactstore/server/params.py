"""Typed request parameters: the SPEC section 2 grammars, declared once.

Declaring the patterns makes the OpenAPI document honest (a schema-valid
request is a well-formed one) and rejects malformed input before any route
code runs, as a 422 problem.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

__all__ = [
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

Ns = Annotated[str, Path(pattern=_SEGMENT, max_length=64, description="Namespace")]
Name = Annotated[str, Path(pattern=_SEGMENT, max_length=128, description="Package name")]
Ver = Annotated[str, Path(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}$", description="Version")]
DigestParam = Annotated[str, Path(pattern=_DIGEST, description="blake3:<hex> or sha256:<hex>")]
DigestQuery = Annotated[str | None, Query(pattern=_DIGEST, description="Expected digest")]
SchemaId = Annotated[str, Path(pattern=_SEGMENT, max_length=128, description="Variant id")]
UploadId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="Upload session")]
NamespaceQuery = Annotated[str | None, Query(pattern=_SEGMENT, max_length=64)]
NameQuery = Annotated[str | None, Query(pattern=_SEGMENT, max_length=128)]
Cursor = Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$", description="next_cursor of a page")]
