"""/v1/tokens (API tokens; the secret is in the creation response only) and
/v1/namespaces/{ns} (namespace settings)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from artifactstore.config import MAX_SIZE
from artifactstore.errors import Forbidden, InvalidInput
from artifactstore.model.jsonio import strict_json_loads
from artifactstore.model.records import MAX_MOVABLE_TAGS, TokenInfo
from artifactstore.model.trust import MAX_TRUSTED_KEYS
from artifactstore.server.params import Ns
from artifactstore.server.problems import Problem
from artifactstore.server.routes.packages import _read_body
from artifactstore.server.shapes import items_of, shape
from artifactstore.store import Store

router = APIRouter()
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
MAX_BODY = 64 * 1024


TokenOut = shape(TokenInfo)
TokenCreated = create_model(
    "TokenCreated",
    __base__=TokenOut,
    secret=(str, Field(description="Shown once; store it now.")),
)
TokenList = items_of(TokenInfo)

#: A movable tag is a version name (docs/architecture.md, "Names and paths").
_Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}$")]


class TrustedKeyIn(BaseModel):
    """One trusted signing key; ``key_id``, when sent, must be the key's own."""

    model_config = ConfigDict(extra="forbid")

    public_key: str = Field(
        description="Ed25519 public key: PEM SubjectPublicKeyInfo, or base64 of its 32 bytes."
    )
    key_id: str | None = Field(None, description="SHA-256 hex of the 32 raw key bytes.")
    expires: str | None = Field(
        None, description="RFC 3339 time from which the key is no longer trusted; null: never."
    )


class TrustedKey(BaseModel):
    key_id: str
    public_key: str = Field(description="PEM SubjectPublicKeyInfo")
    expires: str | None


class NamespaceSettingsIn(BaseModel):
    """The whole settings document: a PUT replaces every setting (an omitted one is reset)."""

    model_config = ConfigDict(extra="forbid")

    anonymous_read: bool = Field(
        False, description="Anyone, without a token, may read the namespace's packages."
    )
    quota_bytes: int | None = Field(
        None,
        ge=0,
        le=MAX_SIZE,
        description="Most bytes of distinct blobs the namespace may hold; null: no quota. "
        "Only a global admin changes it.",
    )
    movable_tags: list[_Tag] = Field(
        default_factory=list,
        max_length=MAX_MOVABLE_TAGS,
        description="Version names (such as latest) a push may move to a new manifest.",
    )
    trusted_keys: list[TrustedKeyIn] = Field(
        default_factory=list,
        max_length=MAX_TRUSTED_KEYS,
        description="Public keys whose signatures the namespace trusts (docs/provenance.md).",
    )
    require_signature: bool = Field(
        False,
        description="Refuse commits that carry no valid signature by a trusted, unexpired key.",
    )
    used_bytes: int | None = Field(
        None,
        json_schema_extra={"readOnly": True},
        description="Ignored: accepted so that a GET body can be sent back.",
    )


class NamespaceSettings(BaseModel):
    """A namespace's settings and the bytes its quota counts."""

    anonymous_read: bool
    quota_bytes: int | None = Field(description="null: no quota")
    movable_tags: list[str]
    trusted_keys: list[TrustedKey]
    require_signature: bool
    used_bytes: int = Field(
        ge=0,
        description="Bytes of the distinct blobs the namespace holds: referenced by live "
        "versions or uploaded into it within the GC grace period.",
    )


async def _json_object(request: Request) -> dict[str, Any]:
    body = strict_json_loads(await _read_body(request, MAX_BODY), error=InvalidInput)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


@router.post(
    "/v1/tokens",
    tags=["tokens"],
    status_code=201,
    summary="Create a token (the secret is shown once)",
    response_model=TokenCreated,
    responses={413: PROBLEM, 422: PROBLEM},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["name", "scopes"],
                        "properties": {
                            "name": {"type": "string"},
                            "scopes": {"type": "array", "items": {"type": "string"}},
                            "expires_in": {"type": ["number", "null"]},
                        },
                    }
                }
            },
        }
    },
)
async def create_token(request: Request) -> JSONResponse:
    store: Store = request.app.state.store
    body = await _json_object(request)
    name, scopes, expires = body.get("name"), body.get("scopes"), body.get("expires_in")
    if not isinstance(name, str) or not isinstance(scopes, list):
        raise InvalidInput('send {"name": string, "scopes": [string, ...]}')
    if not all(isinstance(s, str) for s in scopes):
        raise InvalidInput("scopes are strings such as ci:read or admin")
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, int | float) or not 0 < expires < 1e10
    ):
        raise InvalidInput("expires_in is a positive number of seconds")
    info, secret = await run_in_threadpool(
        lambda: store.create_token(
            name, scopes, expires_in=expires, actor=request.state.principal.actor
        )
    )
    return JSONResponse(
        {**info.to_json(), "secret": secret},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/v1/tokens",
    tags=["tokens"],
    summary="List tokens (never their secrets)",
    response_model=TokenList,
)
async def list_tokens(request: Request) -> dict[str, Any]:
    store: Store = request.app.state.store
    items = await run_in_threadpool(store.list_tokens)
    return {"items": [i.to_json() for i in items]}


@router.delete(
    "/v1/tokens/{token_id}",
    tags=["tokens"],
    summary="Revoke a token (effective on the next request)",
    response_model=TokenOut,
    responses={404: PROBLEM},
)
async def revoke_token(request: Request, token_id: str) -> dict[str, Any]:
    store: Store = request.app.state.store
    info = await run_in_threadpool(store.revoke_token, token_id, request.state.principal.actor)
    return info.to_json()


@router.put(
    "/v1/namespaces/{ns}",
    tags=["namespaces"],
    summary="Replace a namespace's settings",
    response_model=NamespaceSettings,
    responses={413: PROBLEM, 422: PROBLEM},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": NamespaceSettingsIn.model_json_schema()}},
        }
    },
)
async def put_namespace(request: Request, ns: Ns) -> dict[str, Any]:
    """Replace the settings whole (read, modify, send back). The namespace's own
    admins may change everything but the quota, which limits them: that is a
    global admin's (a body carrying the current quota unchanged is fine)."""
    store: Store = request.app.state.store
    body = await _json_object(request)
    principal = request.state.principal

    def put() -> dict[str, Any]:
        if not principal.admin:
            current = store.namespace_settings(ns).get("quota_bytes")
            if body.get("quota_bytes") != current:
                raise Forbidden(
                    f"only a global admin changes the quota of namespace {ns} "
                    f"(now {current}); send it unchanged to change the other settings"
                )
        return store.set_namespace_settings(ns, body, principal.actor)

    return await run_in_threadpool(put)


@router.get(
    "/v1/namespaces/{ns}",
    tags=["namespaces"],
    summary="A namespace's settings",
    response_model=NamespaceSettings,
    responses={422: PROBLEM},
)
async def get_namespace(request: Request, ns: Ns) -> dict[str, Any]:
    store: Store = request.app.state.store
    return await run_in_threadpool(store.namespace_settings, ns)
