"""HEAD/GET/POST/PUT /v1/blobs: blobs by digest and one-shot uploads."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from artifactstore.errors import BlobNotFound
from artifactstore.model.identity import Digest
from artifactstore.server.auth import readable_scope, upload_namespace
from artifactstore.server.bodies import declared_length, receive
from artifactstore.server.params import DigestParam, DigestQuery, NamespaceQuery
from artifactstore.server.problems import Problem
from artifactstore.server.serving import BYTES_RESPONSES, send_blob

router = APIRouter(tags=["blobs"])

PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


class BlobDigestsOut(BaseModel):
    digest: str
    sha256: str
    size: int


@router.get(
    "/v1/blobs/{digest}",
    operation_id="get_blob",
    summary="A blob's bytes (HEAD: its size), with one Range",
    responses=BYTES_RESPONSES,
    response_class=Response,
)
@router.head(
    "/v1/blobs/{digest}",
    operation_id="get_blob_head",
    summary="A blob's bytes (HEAD: its size), with one Range",
    responses=BYTES_RESPONSES,
    response_class=Response,
)
async def get_blob(
    request: Request, digest: DigestParam, namespace: NamespaceQuery = None
) -> Response:
    store = request.app.state.store
    wanted = Digest.parse(digest)
    readable = readable_scope(request.state.principal, namespace)
    head = request.method == "HEAD"
    # A lookup made since the last commit is answered without a thread hop.
    record = store.known_blob(wanted, readable, head=head)
    if record is None:
        record = await run_in_threadpool(lambda: store.find_blob(wanted, readable, head=head))
    if record is None:
        raise BlobNotFound(f"blob {wanted} is not in the store")
    if not head and store.settings.presign_downloads > 0:
        url = await run_in_threadpool(store.download_url, record)
        if url is not None:  # the object store sends the bytes (PRESIGN_DOWNLOADS)
            return Response(status_code=307, headers={"Location": url, "Cache-Control": "no-store"})
    return send_blob(request, store, record, "application/octet-stream")


_ONE_SHOT: dict[str, Any] = {
    "status_code": 201,
    "response_model": BlobDigestsOut,
    "responses": {409: PROBLEM, 413: PROBLEM, 422: PROBLEM},
    "openapi_extra": {
        "requestBody": {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        }
    },
}


# PUT too: it is what ``curl -T file URL`` sends, the quickest upload there is.
@router.put("/v1/blobs", summary="One-shot upload (as POST; what curl -T sends)", **_ONE_SHOT)
@router.post(
    "/v1/blobs", summary="One-shot upload of a request body; returns both digests", **_ONE_SHOT
)
async def post_blob(
    request: Request,
    namespace: NamespaceQuery = None,
    digest: DigestQuery = None,
) -> JSONResponse:
    store = request.app.state.store
    expected = Digest.parse(digest) if digest else None
    limit = store.settings.max_upload_bytes
    length = declared_length(request, limit)
    principal = request.state.principal
    target = upload_namespace(principal, namespace)
    if target is not None and length is not None:  # a quota refuses before any byte
        await run_in_threadpool(store.check_upload_room, target, length)
    upload = store.blob_upload(principal.actor, target, expected)
    tail = await receive(request, upload, limit)
    digests = await run_in_threadpool(upload.finish, None, tail)
    body = {"digest": str(digests.blake3), "sha256": str(digests.sha256), "size": digests.size}
    return JSONResponse(body, status_code=201, headers={"Location": f"/v1/blobs/{digests.blake3}"})
