"""Legal holds (``.../{version}/holds``, ``/v1/holds``) and retention
(``/v1/namespaces/{ns}/retention``, ``.../retention/lock``, ``/v1/retention/apply``).

Retention is a sub-resource of the namespace rather than a field of
``PUT /v1/namespaces/{ns}``: that route replaces the whole settings object,
so a client that omitted the lock would be asking to remove it, and the lock
needs a stricter scope (global admin) than the policy (namespace admin).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from artifactstore.errors import InvalidInput
from artifactstore.model.records import Hold
from artifactstore.model.retention import (
    RetentionPolicy,
)
from artifactstore.server.auth import readable_scope
from artifactstore.server.params import Name, NamespaceQuery, Ns, Ver, json_body
from artifactstore.server.problems import Problem
from artifactstore.server.routes.packages import _ref
from artifactstore.server.routes.tokens import _json_object
from artifactstore.server.shapes import items_of, shape
from artifactstore.store import Store

router = APIRouter()
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
HOLDS = "/v1/packages/{ns}/{name}/{version}/holds"
HoldOut = shape(Hold)
HoldList = items_of(Hold)


class RetentionPolicyModel(BaseModel):
    """A policy as JSON: at least one rule must be set (the server says 422 otherwise)."""

    model_config = ConfigDict(extra="forbid")

    keep_last: int | None = Field(default=None, ge=1, le=1_000_000)
    keep_days: int | float | None = Field(default=None, gt=0, le=36525)
    keep_where: dict[str, str] | None = None


class LockOut(BaseModel):
    keep_days: int | float
    locked_at: str | None


class RetentionOut(BaseModel):
    namespace: str
    default: RetentionPolicyModel | None
    packages: dict[str, RetentionPolicyModel]
    lock: LockOut | None


class DecisionOut(BaseModel):
    version_id: int
    reference: str
    namespace: str
    name: str
    committed_at: str
    action: str
    rules: list[str]
    reason: str
    held: bool
    locked: bool
    policy_scope: str | None


class ApplyOut(BaseModel):
    dry_run: bool
    evaluated_at: str
    versions: int
    kept: int
    deleted: int
    decisions: list[DecisionOut]


_REASON = {"type": "string", "minLength": 1, "maxLength": 1024}
_POLICY = {
    "anyOf": [
        {"$ref": "#/components/schemas/RetentionPolicyModel"},
        {"type": "null"},
    ]
}


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))[:200]}")


def _reason(value: object) -> str:
    """The reason as text; check_reason (in the library) judges its content."""
    if not isinstance(value, str):
        raise InvalidInput('a legal hold needs a reason: send {"reason": "..."}')
    return value


# --- legal holds --------------------------------------------------------------------------------


@router.post(
    HOLDS,
    tags=["holds"],
    status_code=201,
    summary="Place a legal hold (blocks deletion by anyone until released)",
    response_model=HoldOut,
    responses={404: PROBLEM, 413: PROBLEM, 422: PROBLEM},
    openapi_extra=json_body({"reason": _REASON}, ["reason"]),
)
async def place_hold(request: Request, ns: Ns, name: Name, version: Ver) -> JSONResponse:
    store: Store = request.app.state.store
    body = await _json_object(request)
    _only(body, {"reason"})
    hold = await run_in_threadpool(
        store.place_hold,
        _ref(ns, name, version),
        _reason(body.get("reason")),
        request.state.principal.actor,
    )
    return JSONResponse(hold.to_json(), status_code=201)


@router.delete(
    HOLDS,
    tags=["holds"],
    summary="Release a legal hold (the only active one, or the one named by id)",
    response_model=HoldOut,
    responses={404: PROBLEM, 409: PROBLEM, 413: PROBLEM, 422: PROBLEM},
    openapi_extra=json_body({"reason": _REASON, "id": {"type": "integer", "minimum": 1}}, []),
)
async def release_hold(
    request: Request,
    ns: Ns,
    name: Name,
    version: Ver,
    reason: Annotated[str | None, Query(max_length=1024)] = None,
    hold_id: Annotated[int | None, Query(alias="id", ge=1, le=2**62)] = None,
) -> JSONResponse:
    store: Store = request.app.state.store
    raw_reason: object = reason
    raw_id: object = hold_id
    if request.headers.get("content-length", "0") not in ("", "0"):
        body = await _json_object(request)
        _only(body, {"reason", "id"})
        raw_reason = body.get("reason", reason)
        raw_id = body.get("id", hold_id)
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, int)):
        raise InvalidInput("id is the hold's number (see GET .../holds)")
    chosen = raw_id
    text = _reason(raw_reason)
    hold = await run_in_threadpool(
        lambda: store.release_hold(
            _ref(ns, name, version), text, hold_id=chosen, actor=request.state.principal.actor
        )
    )
    return JSONResponse(hold.to_json())


@router.get(
    HOLDS,
    tags=["holds"],
    summary="A version's legal holds (all=true includes released ones)",
    response_model=HoldList,
    responses={404: PROBLEM, 422: PROBLEM},
)
async def version_holds(
    request: Request,
    ns: Ns,
    name: Name,
    version: Ver,
    include_released: Annotated[bool, Query(alias="all")] = False,
) -> JSONResponse:
    store: Store = request.app.state.store
    items = await run_in_threadpool(
        lambda: store.list_holds(_ref(ns, name, version), include_released=include_released)
    )
    return JSONResponse({"items": [h.to_json() for h in items]})


@router.get(
    "/v1/holds",
    tags=["holds"],
    summary="Legal holds in the namespaces the caller may read (all=true: released too)",
    response_model=HoldList,
    responses={422: PROBLEM},
)
async def all_holds(
    request: Request,
    namespace: NamespaceQuery = None,
    include_released: Annotated[bool, Query(alias="all")] = False,
) -> JSONResponse:
    store: Store = request.app.state.store
    scope = {namespace} if namespace else readable_scope(request.state.principal, None)
    items = await run_in_threadpool(
        lambda: store.list_holds(include_released=include_released, readable=scope)
    )
    return JSONResponse({"items": [h.to_json() for h in items]})


# --- retention ----------------------------------------------------------------------------------


@router.put(
    "/v1/namespaces/{ns}/retention",
    tags=["retention"],
    summary="Set or clear (policy: null) the namespace default or a package's retention policy",
    response_model=RetentionOut,
    responses={413: PROBLEM, 422: PROBLEM},
    openapi_extra=json_body(
        {
            "package": {
                "anyOf": [
                    {"type": "string", "pattern": r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$"},
                    {"type": "null"},
                ]
            },
            "policy": _POLICY,
        },
        ["policy"],
    ),
)
async def put_retention(request: Request, ns: Ns) -> JSONResponse:
    store: Store = request.app.state.store
    body = await _json_object(request)
    _only(body, {"package", "policy"})
    if "policy" not in body:
        raise InvalidInput('send {"policy": {...}} (or "policy": null to clear it)')
    package = body.get("package")
    if package is not None and not isinstance(package, str):
        raise InvalidInput("package is a package name, or null for the namespace default")
    raw = body["policy"]
    policy = None if raw is None else RetentionPolicy.from_json(raw)
    result = await run_in_threadpool(
        store.set_retention, ns, package, policy, request.state.principal.actor
    )
    return JSONResponse(result.to_json())


@router.get(
    "/v1/namespaces/{ns}/retention",
    tags=["retention"],
    summary="A namespace's retention policies and lock",
    response_model=RetentionOut,
    responses={422: PROBLEM},
)
async def get_retention(request: Request, ns: Ns) -> JSONResponse:
    store: Store = request.app.state.store
    result = await run_in_threadpool(store.retention_settings, ns)
    return JSONResponse(result.to_json())


@router.put(
    "/v1/namespaces/{ns}/retention/lock",
    tags=["retention"],
    summary="Set or extend the retention lock (minimum keep-days); it can never shrink (423)",
    response_model=RetentionOut,
    responses={413: PROBLEM, 422: PROBLEM, 423: PROBLEM},
    openapi_extra=json_body(
        {"keep_days": {"type": "number", "exclusiveMinimum": 0, "maximum": 36525}}, ["keep_days"]
    ),
)
async def lock_retention(request: Request, ns: Ns) -> JSONResponse:
    store: Store = request.app.state.store
    body = await _json_object(request)
    _only(body, {"keep_days"})
    if "keep_days" not in body:
        raise InvalidInput('send {"keep_days": D}')
    result = await run_in_threadpool(
        store.lock_retention, ns, body["keep_days"], request.state.principal.actor
    )
    return JSONResponse(result.to_json())


@router.post(
    "/v1/retention/apply",
    tags=["retention"],
    summary="Evaluate retention policies; delete what they release (dry_run: only the plan)",
    response_model=ApplyOut,
    responses={422: PROBLEM},
)
async def apply_retention(
    request: Request,
    dry_run: Annotated[bool, Query()] = False,
    namespace: NamespaceQuery = None,
) -> JSONResponse:
    store: Store = request.app.state.store
    report = await run_in_threadpool(
        lambda: store.apply_retention(
            namespace, dry_run=dry_run, actor=request.state.principal.actor
        )
    )
    return JSONResponse(report.to_json())
