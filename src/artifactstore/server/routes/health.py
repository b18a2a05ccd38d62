"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from artifactstore.errors import ArtifactStoreError
from artifactstore.server.metrics import Gauge
from artifactstore.server.problems import Problem, plain_problem

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
    """Store-wide gauges for anyone; per-namespace ones for the namespaces the caller may
    read (all of them for a global admin, and every caller of ``serve --no-auth``):
    namespace names and sizes are not public."""
    store = request.app.state.store
    stats = await run_in_threadpool(store.stats)
    gauges = {
        "artifactstore_blobs": Gauge.of("Blobs recorded.", stats["blobs"]),
        "artifactstore_blob_bytes": Gauge.of("Bytes of recorded blobs.", stats["blob_bytes"]),
        "artifactstore_upload_sessions_open": Gauge.of(
            "Upload sessions open.", stats["uploads_open"]
        ),
        "artifactstore_versions": Gauge.of("Live package versions.", stats["versions"]),
    }
    readable = await _readable(request)
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
    return PlainTextResponse(
        request.app.state.metrics.render(gauges), media_type="text/plain; version=0.0.4"
    )


async def _readable(request: Request) -> set[str] | None:
    """The namespaces whose gauges the caller may see (None: all). /metrics is public, so
    credentials that do not check out just mean none, never a 401."""
    try:
        principal = await run_in_threadpool(request.app.state.auth.authenticate, request)
    except ArtifactStoreError:
        return set()
    readable: set[str] | None = principal.readable()
    return readable
