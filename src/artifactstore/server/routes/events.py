"""/v1/events (the log, paged), /v1/events/stream (the log, live) and /v1/admin/gc."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from artifactstore.errors import InvalidInput
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


MAX_SEQ = 2**62
# How often an open stream asks the log for new events: one indexed read per
# stream, cheap beside the commits it reports, and well under a second of lag.
POLL_SECONDS = 0.5
# A comment this often keeps proxies and load balancers from cutting an idle stream.
KEEP_ALIVE_SECONDS = 15.0
STREAM_PAGE = 1000
# At shutdown a stream is asked to end and has this long (a poll, or a page being
# read) before it is cancelled: uvicorn's graceful shutdown waits for it.
SHUTDOWN_GRACE_SECONDS = 2.0


def _resume_point(after: int, last_event_id: str | None) -> int:
    """The seq to stream after: ``Last-Event-ID`` (what a reconnecting client last
    saw) wins over ``?after`` (where the first connection started)."""
    if last_event_id is None or not last_event_id.strip():
        return after
    text = last_event_id.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_SEQ:
        raise InvalidInput(
            f"Last-Event-ID {last_event_id[:40]!r} is not an event seq "
            f"(a whole number from 0 to {MAX_SEQ})"
        )
    return int(text)


async def _event_stream(
    store: Store, after: int, shutdown: anyio.Event
) -> AsyncIterator[ServerSentEvent]:
    """Every event after ``after``, in seq order, then each new one as it commits.

    Polls the log (the database alone: no NATS needed). It ends when the server
    shuts down (``shutdown``: the response then ends cleanly, so the client sees
    a closed stream to resume, not a broken one); the response cancels it when
    the client goes away."""
    while not shutdown.is_set():
        batch = await run_in_threadpool(store.events, after, STREAM_PAGE)
        for e in batch:
            data = json.dumps(e.to_json(), ensure_ascii=False, separators=(",", ":"))
            yield ServerSentEvent(data=data, id=str(e.seq))
            after = e.seq
        if len(batch) < STREAM_PAGE:  # caught up: wait for the next commit
            with anyio.move_on_after(POLL_SECONDS):
                await shutdown.wait()


@router.get(
    "/v1/events/stream",
    tags=["events"],
    summary="The event log, live, as Server-Sent Events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "id: seq, data: the event"},
        400: PROBLEM,
        422: PROBLEM,
    },
)
async def stream_events(
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    store: Store = request.app.state.store
    start = _resume_point(after, last_event_id)
    shutdown = anyio.Event()
    return EventSourceResponse(
        _event_stream(store, start, shutdown),
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        ping=KEEP_ALIVE_SECONDS,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"),
        sep="\n",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
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
