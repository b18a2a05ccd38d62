"""/v1/events (the log, paged) and /v1/admin/gc."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from artifactstore.model.records import GcReport
from artifactstore.server.problems import Problem
from artifactstore.server.shapes import shape
from artifactstore.store import Store

GcOut = shape(GcReport)

router = APIRouter()
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


class EventOut(BaseModel):
    seq: int
    time: str
    actor: str
    type: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class EventPage(BaseModel):
    events: list[EventOut]
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
) -> dict[str, Any]:
    store: Store = request.app.state.store
    events = await run_in_threadpool(store.events, after, limit)
    return {
        "events": [e.to_json() for e in events],
        "next_after": events[-1].seq if events else after,
    }


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
