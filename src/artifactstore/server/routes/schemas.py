"""/v1/schemas: metadata schemas per variant id (JSON Schema draft 2020-12)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from artifactstore.errors import InvalidSchema
from artifactstore.model.jsonio import strict_json_loads
from artifactstore.server.params import SchemaId
from artifactstore.server.problems import Problem
from artifactstore.server.routes.packages import _read_body
from artifactstore.store import Store

router = APIRouter(tags=["schemas"])
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
MAX_SCHEMA_BODY = 256 * 1024


class SchemaInfo(BaseModel):
    id: str
    digest: str
    registered_at: str


class SchemaList(BaseModel):
    items: list[SchemaInfo]


@router.put(
    "/v1/schemas/{schema_id}",
    status_code=201,
    summary="Register a schema (immutable once registered)",
    responses={
        200: {"description": "Identical schema already registered"},
        409: PROBLEM,
        413: PROBLEM,
        422: PROBLEM,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def put_schema(request: Request, schema_id: SchemaId) -> JSONResponse:
    store: Store = request.app.state.store
    body = await _read_body(request, MAX_SCHEMA_BODY)
    document = strict_json_loads(body, error=InvalidSchema)
    created = await run_in_threadpool(
        store.register_schema, schema_id, document, request.state.principal.actor
    )
    return JSONResponse({"id": schema_id, "created": created}, status_code=201 if created else 200)


@router.get(
    "/v1/schemas/{schema_id}",
    summary="A registered schema",
    responses={200: {"content": {"application/schema+json": {}}}, 404: PROBLEM, 422: PROBLEM},
)
async def get_schema(request: Request, schema_id: SchemaId) -> dict[str, Any]:
    store: Store = request.app.state.store
    result: dict[str, Any] = await run_in_threadpool(store.get_schema, schema_id)
    return result


@router.get("/v1/schemas", summary="Registered schema ids", response_model=SchemaList)
async def list_schemas(request: Request) -> dict[str, Any]:
    store: Store = request.app.state.store
    return {"items": await run_in_threadpool(store.list_schemas)}
