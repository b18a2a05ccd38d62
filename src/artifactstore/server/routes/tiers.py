"""Storage tiers over HTTP (docs/retention.md; rules in ``controlplane/tiers.py``).

``POST /v1/blobs/{digest}/restore`` restores one blob; the version-level
routes (``.../{version}/tier`` and ``.../{version}/restore``) are what the
``tier`` command uses: a version is what a user thinks in.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from artifactstore.errors import BlobNotFound, InvalidInput
from artifactstore.model.identity import Digest
from artifactstore.model.records import TIERS, TierReport
from artifactstore.server.auth import readable_scope
from artifactstore.server.params import DigestParam, Name, NamespaceQuery, Ns, Ver, json_body
from artifactstore.server.problems import Problem
from artifactstore.server.routes.packages import _ref
from artifactstore.server.routes.tokens import _json_object
from artifactstore.server.shapes import shape
from artifactstore.store import Store

router = APIRouter(tags=["tiers"])
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
VERSION = "/v1/packages/{ns}/{name}/{version}"
TierReportOut = shape(TierReport)


def _answer(report: TierReport) -> JSONResponse:
    """202 while any blob is still being restored, else 200."""
    pending = any(b.restore_status == "restoring" for b in report.blobs)
    return JSONResponse(report.to_json(), status_code=202 if pending else 200)


@router.post(
    "/v1/blobs/{digest}/restore",
    summary="Restore a blob from the cold tier (202 while the restore is under way)",
    response_model=TierReportOut,
    responses={202: {"model": TierReportOut}, 404: PROBLEM, 422: PROBLEM},
)
async def restore_blob(
    request: Request, digest: DigestParam, namespace: NamespaceQuery = None
) -> JSONResponse:
    store: Store = request.app.state.store
    wanted = Digest.parse(digest)
    principal = request.state.principal
    record = await run_in_threadpool(store.find_blob, wanted, readable_scope(principal, namespace))
    if record is None:
        raise BlobNotFound(f"blob {wanted} is not in the store")
    report = await run_in_threadpool(
        store.restore_blobs, [str(record.digests.blake3)], principal.actor
    )
    return _answer(report)


@router.get(
    VERSION + "/tier",
    summary="Where a version's blobs are (tier, restore status)",
    response_model=TierReportOut,
    responses={404: PROBLEM},
)
async def tier_status(request: Request, ns: Ns, name: Name, version: Ver) -> JSONResponse:
    store: Store = request.app.state.store
    blobs = await run_in_threadpool(store.tier_status, _ref(ns, name, version))
    return JSONResponse(TierReport(blobs=blobs).to_json())


@router.post(
    VERSION + "/tier",
    summary='Move a version\'s blobs to another tier (body: {"to": "cold"})',
    response_model=TierReportOut,
    responses={404: PROBLEM, 413: PROBLEM, 422: PROBLEM},
    openapi_extra=json_body({"to": {"type": "string", "enum": list(TIERS)}}, ["to"]),
)
async def tier_move(request: Request, ns: Ns, name: Name, version: Ver) -> JSONResponse:
    store: Store = request.app.state.store
    body = await _json_object(request)
    if set(body) != {"to"} or body["to"] not in TIERS:
        raise InvalidInput(f'send {{"to": TIER}} with TIER one of {", ".join(TIERS)}')
    report = await run_in_threadpool(
        store.tier_move, _ref(ns, name, version), body["to"], request.state.principal.actor
    )
    return JSONResponse(report.to_json())


@router.post(
    VERSION + "/restore",
    summary="Restore a version's cold blobs (202 while the restore is under way)",
    response_model=TierReportOut,
    responses={202: {"model": TierReportOut}, 404: PROBLEM},
)
async def restore_version(request: Request, ns: Ns, name: Name, version: Ver) -> JSONResponse:
    store: Store = request.app.state.store
    report = await run_in_threadpool(
        store.tier_restore, _ref(ns, name, version), request.state.principal.actor
    )
    return _answer(report)
