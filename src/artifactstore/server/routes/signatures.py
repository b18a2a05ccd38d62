"""``.../{version}/signatures``: list and add DSSE envelopes over a version
(docs/provenance.md, "Signatures").

A POST body is one envelope (the DSSE JSON envelope, at most
``MAX_ENVELOPE_BYTES``); the library checks it against the version and the
namespace's policy before recording it (422 ``signature_invalid`` when it
refuses). 201 when it is new, 200 when that envelope was already recorded.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from artifactstore.model.envelope import MAX_ENVELOPE_BYTES, PAYLOAD_TYPE, Envelope
from artifactstore.server.params import Name, Ns, Ver
from artifactstore.server.problems import Problem
from artifactstore.server.routes.packages import _read_body, _ref
from artifactstore.store import Store

router = APIRouter(tags=["signatures"])
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
SIGNATURES = "/v1/packages/{ns}/{name}/{version}/signatures"


class SignatureOut(BaseModel):
    keyid: str
    sig: str = Field(description="base64 Ed25519 signature over PAE(payloadType, payload)")


class EnvelopeOut(BaseModel):
    """A DSSE JSON envelope whose payload is an in-toto Statement v1 about the version."""

    model_config = ConfigDict(populate_by_name=True)

    payloadType: str = Field(description=f"always {PAYLOAD_TYPE}")
    payload: str = Field(description="base64 of the statement's JSON")
    signatures: list[SignatureOut]


class EnvelopeList(BaseModel):
    items: list[EnvelopeOut]


@router.get(
    SIGNATURES,
    summary="The DSSE envelopes recorded over a version, oldest first",
    response_model=EnvelopeList,
    responses={404: PROBLEM, 422: PROBLEM},
)
async def list_signatures(request: Request, ns: Ns, name: Name, version: Ver) -> dict[str, Any]:
    store: Store = request.app.state.store
    envelopes = await run_in_threadpool(store.signatures, _ref(ns, name, version))
    return {"items": [e.to_json() for e in envelopes]}


@router.post(
    SIGNATURES,
    status_code=201,
    summary="Add a DSSE envelope over a version (verified before it is recorded)",
    response_model=EnvelopeOut,
    responses={200: {"model": EnvelopeOut}, 404: PROBLEM, 413: PROBLEM, 422: PROBLEM},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EnvelopeOut.model_json_schema()}},
        }
    },
)
async def add_signature(request: Request, ns: Ns, name: Name, version: Ver) -> JSONResponse:
    store: Store = request.app.state.store
    envelope = Envelope.parse(await _read_body(request, MAX_ENVELOPE_BYTES))
    added = await run_in_threadpool(
        store.add_signature, _ref(ns, name, version), envelope, request.state.principal.actor
    )
    return JSONResponse(envelope.to_json(), status_code=201 if added else 200)
