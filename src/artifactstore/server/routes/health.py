"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from artifactstore.errors import ArtifactStoreError
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
    store = request.app.state.store
    stats = await run_in_threadpool(store.stats)
    gauges = {
        "artifactstore_blobs": ("Blobs recorded.", float(stats["blobs"])),
        "artifactstore_blob_bytes": ("Bytes of recorded blobs.", float(stats["blob_bytes"])),
        "artifactstore_upload_sessions_open": (
            "Upload sessions open.",
            float(stats["uploads_open"]),
        ),
        "artifactstore_versions": ("Live package versions.", float(stats["versions"])),
    }
    return PlainTextResponse(
        request.app.state.metrics.render(gauges), media_type="text/plain; version=0.0.4"
    )
