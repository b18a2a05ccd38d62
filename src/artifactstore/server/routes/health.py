"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from artifactstore.errors import ArtifactStoreError
from artifactstore.server.metrics import Gauge
from artifactstore.server.problems import Problem, plain_problem
from artifactstore.store import Store

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


#: How long ``/ready`` waits for each part's answer. A load balancer probes every few
#: seconds and must get an answer: a database or bucket that blackholes is "down"
#: after this long, not after the TCP stack gives up minutes later.
READY_TIMEOUT = 3.0


class Readiness:
    """The probes of one app, at most one per part in flight.

    A probe stuck on a blackholed host keeps its worker thread (and pooled
    connection) until the driver's own timeouts free it; probes arriving
    meanwhile wait for that same probe instead of starting more, so a load
    balancer polling a dead database cannot exhaust the thread pool or the
    connection pool that requests need once it is back.
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[None]] = {}

    async def check(self, name: str, probe: Callable[[], None]) -> str | None:
        """None when ``probe`` passed within ``READY_TIMEOUT``; else why not (one line)."""
        task = self._running.get(name)
        if task is None or task.done():
            task = asyncio.ensure_future(run_in_threadpool(probe))
            self._running[name] = task
        try:
            await asyncio.wait_for(asyncio.shield(task), READY_TIMEOUT)
        except TimeoutError:
            return f"no answer within {READY_TIMEOUT:g} s"
        except ArtifactStoreError as exc:
            return _line(exc.detail)
        except Exception as exc:  # a driver's or the OS's error: not ready, never a 500
            return _line(f"{type(exc).__name__}: {exc}")
        return None


def _line(text: str, limit: int = 500) -> str:
    """``text`` on one line, cut at ``limit``: a driver's message may span several."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _readiness(request: Request) -> Readiness:
    state = request.app.state
    if not hasattr(state, "readiness"):
        state.readiness = Readiness()
    found: Readiness = state.readiness
    return found


@router.get(
    "/ready",
    summary="Readiness: database and storage reachable",
    responses={503: {"model": Problem, "content": {"application/problem+json": {}}}},
)
async def ready(request: Request) -> Response:
    """200 when the database answers a query and every storage backend takes a probe
    write, each within ``READY_TIMEOUT``; else 503 naming each part that is down."""
    store: Store = request.app.state.store
    readiness = _readiness(request)
    try:
        checks = await run_in_threadpool(store.readiness_checks)
    except ArtifactStoreError as exc:  # the store never opened (its database was down)
        return plain_problem(503, "not_ready", "Not ready", f"store down: {_line(exc.detail)}")
    names = list(checks)
    answers = await asyncio.gather(*(readiness.check(n, checks[n]) for n in names))
    down = {n: a for n, a in zip(names, answers, strict=True) if a is not None}
    if down:
        detail = "; ".join(f"{n} down: {a}" for n, a in down.items())
        up = [n for n in names if n not in down]
        detail += "".join(f"; {n} up" for n in up)
        return plain_problem(503, "not_ready", "Not ready", detail)
    return Response('{"status":"ready"}', media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> PlainTextResponse:
    """Every figure for a global admin or a ``metrics`` token (and every caller of
    ``serve --no-auth``); any other token sees the gauges of the namespaces it may
    read and nothing store-wide: the blob count and the request counters tell whether
    bytes someone uploads were already held elsewhere. Anonymous callers get 401."""
    store = request.app.state.store
    everything = request.state.principal.sees_global_metrics()
    gauges = await run_in_threadpool(_store_gauges, store) if everything else {}
    readable = None if everything else request.state.principal.readable()
    if readable is None or readable:
        usage = await run_in_threadpool(store.namespace_usage)
        shown = {ns: v for ns, v in usage.items() if readable is None or ns in readable}
        gauges["artifactstore_namespace_used_bytes"] = Gauge.by(
            "Bytes of the distinct blobs a namespace holds (what its quota counts).",
            "namespace",
            {ns: used for ns, (used, _) in shown.items()},
        )
        gauges["artifactstore_namespace_quota_bytes"] = Gauge.by(
            "A namespace's byte quota (namespaces without one have no sample).",
            "namespace",
            {ns: quota for ns, (_, quota) in shown.items() if quota is not None},
        )
    text = request.app.state.metrics.render(gauges, requests=everything)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def _store_gauges(store: Store) -> dict[str, Gauge]:
    """The store-wide gauges (a global admin's or a metrics token's)."""
    stats = store.stats()
    gauges = {
        "artifactstore_blobs": Gauge.of("Blobs recorded.", stats["blobs"]),
        "artifactstore_blob_bytes": Gauge.of("Bytes of recorded blobs.", stats["blob_bytes"]),
        "artifactstore_upload_sessions_open": Gauge.of(
            "Upload sessions open.", stats["uploads_open"]
        ),
        "artifactstore_versions": Gauge.of("Live package versions.", stats["versions"]),
    }
    if store.settings.nats_servers():  # the event stream out (NATS_URL)
        backlog = store.stream_backlog()
        gauges["artifactstore_events_unpublished"] = Gauge.of(
            "Committed events not yet acknowledged by the NATS stream.", backlog.unpublished
        )
        gauges["artifactstore_events_published_seq"] = Gauge.of(
            "Seq of the last event the NATS stream acknowledged.", backlog.published
        )
    return gauges
