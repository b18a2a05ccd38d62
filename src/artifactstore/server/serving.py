"""Sending stored bytes: whole (zero-copy where the backend is local) or one range."""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from artifactstore.errors import RestoreRequired
from artifactstore.model.records import AVAILABLE, BlobRecord
from artifactstore.server.bodies import parse_range
from artifactstore.server.problems import Problem
from artifactstore.store import Store

__all__ = ["BYTES_RESPONSES", "FILE_RESPONSES", "blob_headers", "cache_headers", "send_blob"]

_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
_BINARY = {"schema": {"type": "string", "format": "binary"}}


def _bytes_responses(media_type: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"content": {media_type: _BINARY}},
        206: {"description": "Partial content (one range)", "content": {media_type: _BINARY}},
        304: {"description": "Not modified"},
        404: _PROBLEM,
        409: _PROBLEM,
        416: _PROBLEM,
        422: _PROBLEM,
    }


#: The OpenAPI responses of the blob routes (GET and HEAD): always octet-stream.
BYTES_RESPONSES = _bytes_responses("application/octet-stream")
#: The OpenAPI responses of a package file (GET and HEAD): the manifest's media type.
FILE_RESPONSES = _bytes_responses("*/*")


class _LargeChunkFile(FileResponse):
    """FileResponse reading 1 MiB per thread hop instead of 64 KiB.

    Under granian and under our uvicorn protocol (``server/wire.py``) the whole
    file goes out through ``http.response.pathsend`` (zero-copy); the chunks
    are read only where the server lacks it (uvicorn's h11 fallback), and there
    each costs a worker-thread round trip: 16x fewer of them cut its CPU.
    """

    chunk_size = 1024 * 1024


def cache_headers(request: Request) -> dict[str, str]:
    """Caching of bytes that never change under their name (a digest, a version's file).

    Immutable for a year, but ``private`` unless the caller is anonymous (an
    anonymous-read namespace): a shared cache must never hand bytes one
    token fetched to a caller without it. ``Vary: Authorization`` keeps a cache
    from answering a request with other credentials from a stored response.
    """
    scope = "public" if request.state.principal.anonymous else "private"
    return {"Cache-Control": f"{scope}, max-age=31536000, immutable", "Vary": "Authorization"}


def blob_headers(request: Request, record: BlobRecord) -> dict[str, str]:
    sha = base64.b64encode(bytes.fromhex(record.digests.sha256.hex)).decode()
    return {
        "ETag": f'"{record.digests.blake3}"',
        "Repr-Digest": f"sha-256=:{sha}:",
        **cache_headers(request),
        "Accept-Ranges": "bytes",
        "Docker-Content-Digest": str(record.digests.sha256),
    }


def _not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def send_blob(request: Request, store: Store, record: BlobRecord, media_type: str) -> Response:
    """HEAD or GET of a blob, honouring If-None-Match and one Range.

    ``media_type`` goes out exactly as recorded: passed as a header, so that
    Starlette does not append ``charset=utf-8`` to a ``text/*`` type whose
    bytes it never looked at.
    """
    headers = blob_headers(request, record)
    size = record.digests.size
    if _not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    if request.method != "HEAD" and record.restore_status != AVAILABLE:
        raise RestoreRequired(
            f"blob {record.digests.blake3} is in the {record.retrieval_tier} tier "
            f"({record.restore_status}): POST /v1/blobs/{record.digests.blake3}/restore, "
            "then read it when the restore completes",
            [str(record.digests.blake3)],
            record.restore_status,
        )
    headers["Content-Type"] = media_type
    byte_range = parse_range(request.headers.get("range"), size)
    if request.method == "HEAD":
        length = size if byte_range is None else byte_range.length
        headers["Content-Length"] = str(length)
        if byte_range is not None:
            headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
        return Response(status_code=200 if byte_range is None else 206, headers=headers)
    path = store.local_path(record)  # None for a packed blob (a span: streamed)
    if path is not None and byte_range is None and "range" not in request.headers:
        return _LargeChunkFile(path, headers=headers, stat_result=None)
    offset, length = (0, size) if byte_range is None else (byte_range.start, byte_range.length)
    headers["Content-Length"] = str(length)
    status = 200
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
        status = 206
    return StreamingResponse(
        store.read_blob(record, offset, length),
        status_code=status,
        headers=headers,
    )
