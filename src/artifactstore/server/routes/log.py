"""/v1/log/...: the transparency log (SPEC section 8): checkpoints, proofs, the key.

Who may read: the event log's readers (global admin), as for ``/v1/events``,
whose hashes the tree is made of; the public key is public (``/v1/log/key``),
so that anyone holding a checkpoint can check its signature.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse

from artifactstore.server.problems import Problem
from artifactstore.store import Store

router = APIRouter()
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
#: Largest seq or tree size a request may name (larger ones: 422).
MAX_SIZE = 2**62

Size = Annotated[int, Query(ge=1, le=MAX_SIZE)]


class InclusionOut(BaseModel):
    """RFC 9162 inclusion proof of event ``leaf_index + 1``; hashes base64, leaf side first."""

    leaf_index: int
    tree_size: int
    hashes: list[str]


class ConsistencyOut(BaseModel):
    """RFC 9162 consistency proof from ``old_size`` to ``new_size``; hashes base64."""

    old_size: int
    new_size: int
    hashes: list[str]


class KeyOut(BaseModel):
    """The log's Ed25519 public key: PEM and the C2SP verifier key string."""

    name: str
    public_key: str
    vkey: str


@router.get(
    "/v1/log/checkpoint",
    tags=["log"],
    summary="A signed checkpoint of the event log (C2SP signed note)",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def checkpoint(request: Request) -> PlainTextResponse:
    store: Store = request.app.state.store
    note = await run_in_threadpool(store.log_checkpoint)
    return PlainTextResponse(
        note, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-store"}
    )


@router.get("/v1/log/key", tags=["log"], summary="The log's public key", response_model=KeyOut)
async def key(request: Request) -> dict[str, Any]:
    store: Store = request.app.state.store
    return (await run_in_threadpool(store.log_key)).to_json()


@router.get(
    "/v1/log/proof/inclusion",
    tags=["log"],
    summary="Proof that event seq is in the tree of size entries",
    response_model=InclusionOut,
    responses={422: PROBLEM},
)
async def inclusion(request: Request, seq: Size, size: Size | None = None) -> dict[str, Any]:
    store: Store = request.app.state.store
    return (await run_in_threadpool(store.log_inclusion, seq, size)).to_json()


@router.get(
    "/v1/log/proof/consistency",
    tags=["log"],
    summary="Proof that the tree of new entries extends the tree of old entries",
    response_model=ConsistencyOut,
    responses={422: PROBLEM},
)
async def consistency(request: Request, old: Size, new: Size | None = None) -> dict[str, Any]:
    store: Store = request.app.state.store
    return (await run_in_threadpool(store.log_consistency, old, new)).to_json()
