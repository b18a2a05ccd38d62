"""/v1/uploads: resumable upload sessions, speaking tus 1.0 as well as plain HTTP.

tus 1.0: core, creation, creation-with-upload, termination, checksum and
expiration. Without a ``Tus-Resumable`` header the same routes take plain
clients too (``Content-Range: bytes a-b/*`` in place of ``Upload-Offset``).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
from collections.abc import Mapping

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from artifactstore.errors import InvalidInput, UploadNotFound
from artifactstore.model.api import UploadAppend
from artifactstore.model.identity import Digest, Namespace
from artifactstore.model.records import UploadSession
from artifactstore.server.auth import authorize, upload_namespace
from artifactstore.server.bodies import feed
from artifactstore.server.params import DigestQuery, NamespaceQuery, UploadId
from artifactstore.server.problems import Problem, plain_problem
from artifactstore.store import Store

router = APIRouter(tags=["uploads"])

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = ("sha256", "sha1", "md5")
OFFSET_TYPE = "application/offset+octet-stream"
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)")
_META_KEY = re.compile(r"[!-+\--~]+")  # printable ASCII without space and comma


def _header(name: str, schema: Mapping[str, object], description: str) -> dict[str, object]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _response_header(
    description: str, schema: Mapping[str, object] | None = None
) -> dict[str, object]:
    return {"description": description, "schema": schema or {"type": "string"}}


# OpenAPI declarations of the tus headers: schemathesis generates and checks them.
_COUNT = {"type": "string", "pattern": r"^[0-9]{1,19}$"}
_TUS_RESUMABLE = _header("Tus-Resumable", {"type": "string"}, f"tus version: {TUS_VERSION}")
_UPLOAD_LENGTH = _header("Upload-Length", _COUNT, "Total size of the upload in bytes")
_UPLOAD_CHECKSUM = _header(
    "Upload-Checksum",
    {"type": "string", "pattern": r"^(sha256|sha1|md5) [A-Za-z0-9+/]*={0,2}$"},
    "tus checksum of this request's body: ALGORITHM BASE64",
)
_BYTES_BODY = {"content": {OFFSET_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
_OFFSET_OUT = {"Upload-Offset": _response_header("Bytes received so far", _COUNT)}
_TUS_OUT = {
    "Tus-Resumable": _response_header("tus version", {"type": "string", "const": TUS_VERSION})
}


class UploadStatus(BaseModel):
    id: str
    offset: int
    length: int | None
    state: str
    digest: str | None
    expires: str


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _tus_headers(session: UploadSession | None = None) -> dict[str, str]:
    headers = {"Tus-Resumable": TUS_VERSION}
    if session is not None:
        headers["Upload-Offset"] = str(session.offset)
        headers["Upload-Expires"] = _http_date(session.expires_at)
        if session.length is not None:
            headers["Upload-Length"] = str(session.length)
        else:
            headers["Upload-Defer-Length"] = "1"
        if session.digest is not None:
            headers["Artifactstore-Digest"] = session.digest
    return headers


def _check_tus_version(request: Request) -> Response | None:
    version = request.headers.get("tus-resumable")
    if version is not None and version != TUS_VERSION:
        return plain_problem(
            412,
            "tus_version",
            "Unsupported tus version",
            f"this server speaks tus {TUS_VERSION}, not {version[:20]!r}",
            {"Tus-Version": TUS_VERSION, "Tus-Resumable": TUS_VERSION},
        )
    return None


def _parse_metadata(header: str | None) -> dict[str, str]:
    if not header:
        return {}
    out: dict[str, str] = {}
    for item in header.split(","):
        parts = item.strip().split(" ")
        if not parts[0] or not _META_KEY.fullmatch(parts[0]) or len(parts) > 2:
            raise InvalidInput(
                "Upload-Metadata must be 'key base64value' pairs separated by commas"
            )
        try:
            value = base64.b64decode(parts[1], validate=True).decode() if len(parts) == 2 else ""
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInput(
                f"Upload-Metadata value of {parts[0]!r} is not base64 UTF-8"
            ) from None
        if parts[0] in out:
            raise InvalidInput(f"Upload-Metadata repeats the key {parts[0]!r}")
        out[parts[0]] = value
    return out


def _parse_int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    # isascii: str.isdigit() also accepts digits int() refuses, such as "\u00b2".
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise InvalidInput(f"{name} must be a non-negative integer")
    return int(value)


def _parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    if header is None:
        return None
    algo, _, value = header.strip().partition(" ")
    if algo not in CHECKSUM_ALGORITHMS:
        raise InvalidInput(
            f"Upload-Checksum algorithm {algo[:20]!r} is not one of {CHECKSUM_ALGORITHMS}"
        )
    try:
        return algo, base64.b64decode(value, validate=True)
    except binascii.Error:
        raise InvalidInput("Upload-Checksum value is not base64") from None


async def _append(request: Request, store: Store, handle: UploadAppend) -> UploadSession:
    """Stream the body into the session; a broken-off body keeps what arrived."""
    limits = request.app.state.limits
    remaining = (
        handle.session.length
        if handle.session.length is not None
        else store.settings.max_upload_bytes
    ) - handle.session.offset
    try:
        await feed(
            request.stream(),
            handle.write,
            limit=remaining,
            idle_timeout=limits.idle_timeout,
            total_timeout=limits.total_timeout,
        )
    except BaseException:
        # A broken-off, slow or oversized body keeps (and acknowledges) what arrived.
        await run_in_threadpool(handle.abort)
        raise
    return await run_in_threadpool(handle.finish)


async def _own_session(request: Request, store: Store, upload_id: str) -> UploadSession:
    """The session, if the caller may write into its namespace; else as if absent."""
    session = await run_in_threadpool(store.upload_session, upload_id)
    principal = request.state.principal
    allowed = principal.admin or (
        principal.may("write", session.namespace)
        if session.namespace is not None
        else session.actor == principal.actor
    )
    if not allowed:
        raise UploadNotFound(f"upload {upload_id[:64]} does not exist, was aborted or expired")
    return session


@router.options("/v1/uploads", status_code=204, summary="tus capabilities")
async def options(request: Request) -> Response:
    store = request.app.state.store
    return Response(
        status_code=204,
        headers={
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(store.settings.max_upload_bytes),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        },
    )


@router.post(
    "/v1/uploads",
    status_code=201,
    summary="Open a resumable upload session (tus creation)",
    responses={
        201: {
            "description": "Created",
            "headers": {
                "Location": {**_response_header("The upload's URL"), "required": True},
                **_OFFSET_OUT,
                **_TUS_OUT,
            },
        },
        409: PROBLEM,
        412: PROBLEM,
        413: PROBLEM,
        422: PROBLEM,
    },
    response_class=Response,
    openapi_extra={
        "parameters": [
            _TUS_RESUMABLE,
            _UPLOAD_LENGTH,
            _header("Upload-Defer-Length", {"type": "string", "enum": ["1"]}, "Length later"),
            _header(
                "Upload-Metadata",
                {"type": "string"},
                "tus metadata: comma-separated 'key base64value' pairs (key namespace names "
                "the namespace)",
            ),
            _UPLOAD_CHECKSUM,
        ],
        "requestBody": {"required": False, **_BYTES_BODY},
    },
)
async def create_upload(request: Request, namespace: NamespaceQuery = None) -> Response:
    if (refusal := _check_tus_version(request)) is not None:
        return refusal
    store: Store = request.app.state.store
    length = _parse_int(request.headers.get("upload-length"), "Upload-Length")
    defer = request.headers.get("upload-defer-length")
    if defer is not None and defer != "1":
        raise InvalidInput("Upload-Defer-Length must be 1")
    if length is not None and defer is not None:
        raise InvalidInput("send Upload-Length or Upload-Defer-Length, not both")
    metadata = _parse_metadata(request.headers.get("upload-metadata"))
    ns = namespace or metadata.get("namespace")
    principal = request.state.principal
    if ns is not None:
        Namespace(ns)
        authorize(principal, "write", ns)  # the tus metadata may name it, past the guard
    ns = upload_namespace(principal, ns)
    session = await run_in_threadpool(
        lambda: store.create_upload(
            namespace=ns, length=length, metadata=metadata, actor=principal.actor
        )
    )
    if request.headers.get("content-type") == OFFSET_TYPE:
        checksum = _parse_checksum(request.headers.get("upload-checksum"))
        handle = await run_in_threadpool(store.append_upload, session.id, 0, checksum)
        session = await _append(request, store, handle)
    headers = _tus_headers(session)
    headers["Location"] = str(request.url_for("upload_status", upload_id=session.id))
    return Response(status_code=201, headers=headers)


@router.get(
    "/v1/uploads/{upload_id}",
    operation_id="upload_status",
    summary="Upload offset (tus HEAD) and state",
    response_model=UploadStatus,
    responses={
        200: {
            "headers": {**_OFFSET_OUT, **_TUS_OUT, "Cache-Control": _response_header("no-store")}
        },
        404: PROBLEM,
    },
)
@router.head(
    "/v1/uploads/{upload_id}",
    operation_id="upload_status_head",
    summary="Upload offset (tus HEAD) and state",
    response_model=UploadStatus,
    responses={
        200: {
            "headers": {**_OFFSET_OUT, **_TUS_OUT, "Cache-Control": _response_header("no-store")}
        },
        404: PROBLEM,
    },
)
async def upload_status(request: Request, upload_id: UploadId) -> Response:
    store: Store = request.app.state.store
    session = await _own_session(request, store, upload_id)
    headers = {**_tus_headers(session), "Cache-Control": "no-store"}
    body = UploadStatus(
        id=session.id,
        offset=session.offset,
        length=session.length,
        state=session.state,
        digest=session.digest,
        expires=_http_date(session.expires_at),
    )
    response = JSONResponse(body.model_dump(), headers=headers)
    if request.method == "HEAD":
        # The headers GET would send (Content-Type and Content-Length too), without the body.
        return Response(status_code=200, headers=dict(response.headers))
    return response


@router.patch(
    "/v1/uploads/{upload_id}",
    status_code=204,
    summary="Append bytes at Upload-Offset (or Content-Range)",
    responses={
        204: {"description": "Appended", "headers": {**_OFFSET_OUT, **_TUS_OUT}},
        404: PROBLEM,
        409: PROBLEM,
        412: PROBLEM,
        413: PROBLEM,
        415: PROBLEM,
        422: PROBLEM,
        460: PROBLEM,
    },
    response_class=Response,
    openapi_extra={
        "parameters": [
            _TUS_RESUMABLE,
            _header("Upload-Offset", _COUNT, "Where this body starts (tus)"),
            _header(
                "Content-Range",
                {"type": "string", "pattern": r"^bytes [0-9]{1,19}-[0-9]{1,19}/([0-9]{1,19}|\*)$"},
                "Where this body starts, for plain HTTP clients: bytes FIRST-LAST/*",
            ),
            _UPLOAD_LENGTH,
            _UPLOAD_CHECKSUM,
        ],
        "requestBody": _BYTES_BODY,
    },
)
async def patch_upload(request: Request, upload_id: UploadId) -> Response:
    if (refusal := _check_tus_version(request)) is not None:
        return refusal
    store: Store = request.app.state.store
    content_type = request.headers.get("content-type", "")
    tus = "tus-resumable" in request.headers
    allowed = (OFFSET_TYPE,) if tus else (OFFSET_TYPE, "application/octet-stream")
    if content_type.split(";")[0].strip() not in allowed:
        return plain_problem(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            f"PATCH bodies are {OFFSET_TYPE}",
            {"Tus-Resumable": TUS_VERSION},
        )
    offset = _parse_int(request.headers.get("upload-offset"), "Upload-Offset")
    if offset is None:
        m = _CONTENT_RANGE.fullmatch(request.headers.get("content-range", ""))
        if m is None:
            raise InvalidInput("send Upload-Offset (or Content-Range: bytes FIRST-LAST/*)")
        offset = int(m.group(1))
        if int(m.group(2)) < offset:
            raise InvalidInput("Content-Range ends before it starts")
    await _own_session(request, store, upload_id)
    new_length = _parse_int(request.headers.get("upload-length"), "Upload-Length")
    if new_length is not None:
        await run_in_threadpool(store.declare_upload_length, upload_id, new_length)
    checksum = _parse_checksum(request.headers.get("upload-checksum"))
    handle = await run_in_threadpool(store.append_upload, upload_id, offset, checksum)
    session = await _append(request, store, handle)
    return Response(status_code=204, headers=_tus_headers(session))


@router.post(
    "/v1/uploads/{upload_id}/complete",
    summary="Finalise an upload into a blob; optional expected digest",
    responses={404: PROBLEM, 409: PROBLEM, 413: PROBLEM, 422: PROBLEM},
)
async def complete_upload(
    request: Request, upload_id: UploadId, digest: DigestQuery = None
) -> JSONResponse:
    store: Store = request.app.state.store
    expected = Digest.parse(digest) if digest else None
    await _own_session(request, store, upload_id)
    digests = await run_in_threadpool(store.complete_upload, upload_id, expected)
    return JSONResponse(
        {"digest": str(digests.blake3), "sha256": str(digests.sha256), "size": digests.size},
        headers={"Tus-Resumable": TUS_VERSION},
    )


@router.delete(
    "/v1/uploads/{upload_id}",
    status_code=204,
    summary="Abort an upload (tus termination)",
    responses={204: {"description": "Aborted"}, 404: PROBLEM},
    response_class=Response,
)
async def delete_upload(request: Request, upload_id: UploadId) -> Response:
    store: Store = request.app.state.store
    await _own_session(request, store, upload_id)
    await run_in_threadpool(store.abort_upload, upload_id)
    return Response(status_code=204, headers={"Tus-Resumable": TUS_VERSION})
