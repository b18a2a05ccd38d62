"""/v1/events (the log, paged) and /v1/admin/gc."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from artifactstore.model.events import Event
from artifactstore.model.records import GcReport
from artifactstore.server.problems import Problem
from artifactstore.server.shapes import shape
from artifactstore.store import Store

GcOut = shape(GcReport)

router = APIRouter()
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


class EventPage(BaseModel):
    """A page of the log; each event in its one JSON form (``Event.to_json``)."""

    events: list[Event]
    next_after: int


@router.get(
    "/v1/events",
    tags=["events"],
    summary="The event log, paged by seq",
    response_model=EventPage,
    responses={422: PROBLEM},
)
async def list_events(
    request: Request,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    store: Store = request.app.state.store
    events = await run_in_threadpool(store.events, after, limit)
    # Served as the log holds them, not through the response model: a client
    # re-encodes each payload to check its hash, and a page of 10,000-file
    # manifests is not worth validating again (the model documents the shape).
    return JSONResponse(
        {"events": [e.to_json() for e in events], "next_after": events[-1].seq if events else after}
    )


@router.post(
    "/v1/admin/gc",
    tags=["admin"],
    summary="Collect unreferenced blobs",
    response_model=GcOut,
    responses={500: PROBLEM},
)
async def run_gc(request: Request, dry_run: Annotated[bool, Query()] = False) -> dict[str, Any]:
    store: Store = request.app.state.store
    report = await run_in_threadpool(
        lambda: store.gc(dry_run=dry_run, actor=request.state.principal.actor)
    )
    return report.to_json()
