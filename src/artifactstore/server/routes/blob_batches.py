"""POST /v1/blobs/batch: many small blobs in one tar stream, stored in packs (docs/api.md).

An extension of the SPEC's route table (issue 18): a remote push of many
small files costs one request per batch and one S3 object per pack, where
``POST /v1/blobs`` costs a request and an object per blob.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from artifactstore.server.auth import upload_namespace
from artifactstore.server.bodies import declared_length, receive
from artifactstore.server.params import NamespaceQuery
from artifactstore.server.problems import Problem
from artifactstore.server.routes.blobs import BlobDigestsOut

router = APIRouter(tags=["blobs"])

PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


class BatchOut(BaseModel):
    blobs: list[BlobDigestsOut]


@router.post(
    "/v1/blobs/batch",
    operation_id="post_blob_batch",
    summary="Upload many small blobs in one tar stream (members named by digest), into packs",
    response_model=BatchOut,
    responses={403: PROBLEM, 409: PROBLEM, 413: PROBLEM, 422: PROBLEM},
    openapi_extra={
        "requestBody": {
            "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}
        }
    },
)
async def post_blob_batch(request: Request, namespace: NamespaceQuery = None) -> JSONResponse:
    store = request.app.state.store
    limit = store.settings.max_upload_bytes
    declared_length(request, limit)
    principal = request.state.principal
    target = upload_namespace(principal, namespace)
    # No quota check on the declared length: tar headers and duplicates make the body
    # larger than what it stores. The quota is checked before the packs are published.
    batch = store.blob_batch(principal.actor, target)
    tail = await receive(request, batch, limit)
    digests = await run_in_threadpool(batch.finish, tail)
    body = [{"digest": str(d.blake3), "sha256": str(d.sha256), "size": d.size} for d in digests]
    return JSONResponse({"blobs": body})
