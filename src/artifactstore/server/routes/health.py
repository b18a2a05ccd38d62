"""Liveness, readiness and metrics."""

from __future__ import annotations

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


@router.get(
    "/ready",
    summary="Readiness: database and storage reachable",
    responses={503: {"model": Problem, "content": {"application/problem+json": {}}}},
)
async def ready(request: Request) -> Response:
    store = request.app.state.store
    try:
        await run_in_threadpool(store.health)
    except (ArtifactStoreError, OSError) as exc:
        detail = exc.detail if isinstance(exc, ArtifactStoreError) else str(exc)
        return plain_problem(503, "not_ready", "Not ready", detail)
    except Exception as exc:  # a database driver error: not ready, never a 500
        return plain_problem(503, "not_ready", "Not ready", type(exc).__name__)
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
