"""The one table from the error tree to HTTP (RFC 9457 problem details).

Every failure leaves the server as ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail`` and the error's stable ``code``. A test
pins the body shape; ``docs/errors.md`` lists every code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.responses import JSONResponse

from artifactstore import errors as e

__all__ = ["PROBLEM_TYPE_BASE", "Problem", "problem_response", "status_for"]

PROBLEM_TYPE_BASE = "https://artifactstore.dev/problems/"

#: Most specific class first: the first match wins.
_STATUS: tuple[tuple[type[e.ArtifactStoreError], int], ...] = (
    (e.ChecksumMismatch, 460),  # tus checksum extension
    (e.DigestMismatch, 422),
    (e.SignatureInvalid, 422),  # a refused signature, not stored damage
    (e.ProofInvalid, 422),  # a proof the caller holds, not stored damage
    (e.IntegrityError, 500),  # stored data damaged: the server's fault, reported honestly
    (e.Unauthenticated, 401),
    (e.TooManyRequests, 429),
    (e.Forbidden, 403),
    (e.Locked, 423),  # legal hold or retention lock: no credential lifts it
    (e.LimitExceeded, 413),
    (e.InvalidInput, 422),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.UnmigratedDatabase, 503),
    (e.DatabaseUnavailable, 503),  # retry once GET /ready answers 200
    (e.StorageFull, 503),  # the operator must free space: a retry alone will not help
    (e.StorageError, 503),
    (e.ArtifactStoreError, 500),
)


class Problem(BaseModel):
    """RFC 9457 problem details plus a stable machine ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    missing: list[str] | None = None
    pointer: str | None = None
    offset: int | None = None
    holds: list[dict[str, Any]] | None = None
    locked_until: str | None = None
    quota_bytes: int | None = None
    used_bytes: int | None = None
    restore_status: str | None = None


def status_for(exc: e.ArtifactStoreError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def problem_body(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def problem_response(
    exc: e.ArtifactStoreError, headers: dict[str, str] | None = None
) -> JSONResponse:
    status = status_for(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, e.MissingBlobs):
        extra["missing"] = exc.digests
    if isinstance(exc, e.InvalidMetadata):
        extra["pointer"] = exc.pointer
    if isinstance(exc, e.LegalHold):
        extra["holds"] = exc.holds
    if isinstance(exc, e.RetentionLocked):
        extra["locked_until"] = exc.locked_until
    if isinstance(exc, e.QuotaExceeded):
        extra.update(quota_bytes=exc.quota_bytes, used_bytes=exc.used_bytes)
    if isinstance(exc, e.RestoreRequired):
        extra.update(missing=exc.digests, restore_status=exc.restore_status)
    if isinstance(exc, e.Unauthenticated):
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="artifactstore"'}
    if isinstance(exc, e.TooManyRequests):
        headers = {**(headers or {}), "Retry-After": str(exc.retry_after)}
    if isinstance(exc, e.UploadOffsetMismatch):
        extra["offset"] = exc.offset
        headers = {**(headers or {}), "Upload-Offset": str(exc.offset)}
    return JSONResponse(
        problem_body(status, exc.code, exc.title, exc.detail, **extra),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def plain_problem(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, code, title, detail),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )
