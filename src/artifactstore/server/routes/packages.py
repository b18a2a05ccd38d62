"""/v1/packages: commit, read, delete, files, archives and the query."""

from __future__ import annotations

import tarfile
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from artifactstore.errors import (
    InvalidInput,
    InvalidManifest,
    InvalidPath,
    LimitExceeded,
    PackageNotFound,
)
from artifactstore.model.envelope import (
    MAX_SIGNATURES,
    SIGNATURE_HEADER,
    parse_signature_header,
)
from artifactstore.model.identity import Namespace, PackageName, Reference, Version
from artifactstore.model.manifest import Manifest
from artifactstore.model.paths import PackagePath
from artifactstore.model.versions import VersionRecord
from artifactstore.server.auth import readable_scope
from artifactstore.server.bodies import declared_length, feed
from artifactstore.server.params import (
    MANIFEST_JSON_SCHEMA,
    Cursor,
    Name,
    NameQuery,
    NamespaceQuery,
    Ns,
    Ver,
)
from artifactstore.server.problems import Problem
from artifactstore.server.serving import FILE_RESPONSES, cache_headers, send_blob
from artifactstore.store import Store

router = APIRouter(tags=["packages"])
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
CBOR = "application/cbor"


class VersionOut(BaseModel):
    reference: str
    namespace: str
    name: str
    version: str
    digest: str
    sha256: str
    variant: str | None
    metadata: dict[str, Any]
    created: str
    committed_at: str
    actor: str
    size: int
    file_count: int


class VersionDetail(VersionOut):
    manifest: dict[str, Any]
    signatures: list[dict[str, Any]]
    holds: list[dict[str, Any]]
    retention: dict[str, Any]


class CommitOut(VersionOut):
    created_now: bool


class QueryOut(BaseModel):
    items: list[VersionOut]
    next_cursor: str | None


def _ref(ns: str, name: str, version: str) -> Reference:
    return Reference(Namespace(ns), PackageName(name), version=Version(version))


async def _read_body(request: Request, limit: int) -> bytes:
    declared_length(request, limit, "the limit")
    parts: list[bytes] = []
    limits = request.app.state.limits
    await feed(
        request.stream(),
        parts.append,
        limit=limit,
        idle_timeout=limits.idle_timeout,
        total_timeout=limits.total_timeout,
    )
    return b"".join(parts)


@router.put(
    "/v1/packages/{ns}/{name}/{version}",
    summary="Commit a manifest (JSON or canonical CBOR)",
    response_model=CommitOut,
    status_code=201,
    responses={
        200: {"model": CommitOut},
        409: PROBLEM,
        413: PROBLEM,
        415: PROBLEM,
        422: PROBLEM,
        423: PROBLEM,
    },
    openapi_extra={
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "A DSSE envelope over this manifest, as unpadded base64url of "
                "its JSON; repeatable. Recorded with the commit; a namespace that requires "
                "signatures refuses a commit without one by a trusted key.",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": MANIFEST_JSON_SCHEMA},
                CBOR: {"schema": {"type": "string", "format": "binary"}},
            },
        },
    },
)
async def put_version(request: Request, ns: Ns, name: Name, version: Ver) -> JSONResponse:
    store: Store = request.app.state.store
    ref = _ref(ns, name, version)
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type not in ("application/json", CBOR):
        raise InvalidManifest(f"a manifest is application/json or {CBOR}, not {content_type!r}")
    body = await _read_body(request, store.settings.max_manifest_bytes)
    manifest = await run_in_threadpool(
        Manifest.from_cbor if content_type == CBOR else Manifest.from_json, body
    )
    if (str(manifest.namespace), str(manifest.name), str(manifest.version)) != (
        str(ref.namespace),
        str(ref.name),
        str(ref.version),
    ):
        raise InvalidManifest(
            f"the manifest names {manifest.namespace}/{manifest.name}:"
            f"{manifest.version}, but the URL names {ref}"
        )
    envelopes = [
        parse_signature_header(value) for value in request.headers.getlist(SIGNATURE_HEADER)
    ]
    if len(envelopes) > MAX_SIGNATURES:
        raise LimitExceeded(f"at most {MAX_SIGNATURES} {SIGNATURE_HEADER} headers per commit")
    principal = request.state.principal
    result = await run_in_threadpool(
        lambda: store.commit_manifest(
            manifest, principal.actor, require_held=not principal.admin, signatures=envelopes
        )
    )
    body_out = {**result.record.summary(), "created_now": result.created}
    return JSONResponse(
        body_out,
        status_code=201 if result.created else 200,
        headers={
            "Location": f"/v1/packages/{ref.namespace}/{ref.name}/{ref.version}",
            "ETag": f'"{result.record.digest}"',
        },
    )


def _detail(store: Store, record: VersionRecord) -> dict[str, Any]:
    """The version plus its signatures, active legal holds and retention state (what would
    happen now)."""
    holds, retention = store.version_retention(record)
    return {
        **record.summary(),
        "manifest": record.manifest.to_map(),
        "signatures": [e.to_json() for e in store.signatures(record.reference)],
        "holds": [h.to_json() for h in holds],
        "retention": retention.to_json(),
    }


@router.get(
    "/v1/packages/{ns}/{name}/{version}",
    summary="A version's manifest (JSON; Accept: application/cbor for the canonical bytes)",
    response_model=VersionDetail,
    responses={
        200: {"content": {CBOR: {"schema": {"type": "string", "format": "binary"}}}},
        304: {"description": "Not modified"},
        404: PROBLEM,
        422: PROBLEM,
    },
)
async def get_version(request: Request, ns: Ns, name: Name, version: Ver) -> Response:
    store: Store = request.app.state.store
    record = await run_in_threadpool(store.show, _ref(ns, name, version))
    etag = f'"{record.digest}"'
    headers = {"ETag": etag, "Vary": "Accept"}
    if request.headers.get("if-none-match") in (etag, "*"):
        return Response(status_code=304, headers=headers)
    if CBOR in request.headers.get("accept", ""):
        return Response(record.manifest_cbor, media_type=CBOR, headers=headers)
    return JSONResponse(await run_in_threadpool(_detail, store, record), headers=headers)


@router.delete(
    "/v1/packages/{ns}/{name}/{version}",
    status_code=204,
    summary="Delete a version (tombstone); 423 while a legal hold or retention lock covers it",
    responses={204: {"description": "Deleted"}, 404: PROBLEM, 422: PROBLEM, 423: PROBLEM},
    response_class=Response,
)
async def delete_version(request: Request, ns: Ns, name: Name, version: Ver) -> Response:
    store: Store = request.app.state.store
    await run_in_threadpool(store.delete, _ref(ns, name, version), request.state.principal.actor)
    return Response(status_code=204)


@router.get(
    "/v1/packages/{ns}/{name}/{version}/files/{path:path}",
    operation_id="get_file",
    summary="One file's bytes, with one Range",
    response_class=Response,
    responses=FILE_RESPONSES,
)
@router.head(
    "/v1/packages/{ns}/{name}/{version}/files/{path:path}",
    operation_id="get_file_head",
    summary="One file's bytes, with one Range",
    response_class=Response,
    responses=FILE_RESPONSES,
)
async def get_file(request: Request, ns: Ns, name: Name, version: Ver, path: str) -> Response:
    store: Store = request.app.state.store
    if not request.scope["path"].endswith(path):
        # Starlette's route pattern ends in "$", which also matches before a final
        # newline: ".../files/a.txt%0A" would arrive as "a.txt" and serve that file.
        raise PackageNotFound("no file path ends in a newline")
    try:
        wanted = PackagePath(path)
    except InvalidPath as exc:  # no package can hold such a path: absent, with the reason
        raise PackageNotFound(f"no file {path[:200]!r}: {exc.detail}") from None
    record = await run_in_threadpool(store.show, _ref(ns, name, version))
    entry = next((f for f in record.manifest.files if f.path == wanted), None)
    if entry is None:
        raise PackageNotFound(f"{record.reference} has no file {path[:200]!r}")
    blob = await run_in_threadpool(store.find_blob, entry.blake3)
    if blob is None:
        raise PackageNotFound(f"{record.reference}: the bytes of {path[:200]!r} are missing")
    return send_blob(request, store, blob, entry.media_type)


def _tar_stream(store: Store, record: VersionRecord) -> Iterator[bytes]:
    """A POSIX (pax) tar of the version, streamed; each file verified as it goes."""
    mtime = 0
    for entry in record.manifest.files:
        info = tarfile.TarInfo(entry.path.value)
        info.size = entry.size
        info.mtime = mtime
        info.mode = 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8")
        yield from store.stream_entry(entry)
        padding = -entry.size % tarfile.BLOCKSIZE
        if padding:
            yield b"\0" * padding
    yield b"\0" * (tarfile.BLOCKSIZE * 2)


@router.get(
    "/v1/packages/{ns}/{name}/{version}/archive",
    summary="The whole version streamed as a tar",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}},
        404: PROBLEM,
        409: PROBLEM,
        422: PROBLEM,
    },
)
async def get_archive(
    request: Request,
    ns: Ns,
    name: Name,
    version: Ver,
    format: Annotated[Literal["tar"], Query()] = "tar",
) -> StreamingResponse:
    store: Store = request.app.state.store
    record = await run_in_threadpool(store.show, _ref(ns, name, version))
    await run_in_threadpool(store.require_available, record.manifest.files)
    filename = f"{record.reference.name}-{record.reference.version}.tar"
    return StreamingResponse(
        _tar_stream(store, record),
        media_type="application/x-tar",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "ETag": f'"{record.digest}"',
            **cache_headers(request),
        },
    )


#: The parameters of the query route besides ``meta.KEY``.
_QUERY_PARAMETERS = frozenset(
    ("namespace", "name", "variant", "created_after", "created_before", "limit", "cursor")
)


def _refuse_repeated(request: Request, names: frozenset[str]) -> None:
    """A parameter given twice is refused: taking one of the values would silently
    drop a filter the caller asked for (``name=a&name=b``, ``meta.os=a&meta.os=b``)."""
    counts = Counter(
        k for k, _ in request.query_params.multi_items() if k in names or k.startswith("meta.")
    )
    repeated = sorted(k for k, n in counts.items() if n > 1)
    if repeated:
        raise InvalidInput(
            f"query parameter {repeated[0][:100]!r} is given {counts[repeated[0]]} times: "
            "give each parameter once"
        )


@router.get(
    "/v1/packages",
    summary="Query live versions, newest first (meta.KEY=VALUE filters metadata)",
    response_model=QueryOut,
    responses={413: PROBLEM, 422: PROBLEM},
)
async def query(
    request: Request,
    namespace: NamespaceQuery = None,
    name: NameQuery = None,
    variant: NameQuery = None,
    created_after: Annotated[str | None, Query()] = None,
    created_before: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
) -> JSONResponse:
    store: Store = request.app.state.store
    _refuse_repeated(request, _QUERY_PARAMETERS)
    where = {
        k.removeprefix("meta."): v for k, v in request.query_params.items() if k.startswith("meta.")
    }
    page = await run_in_threadpool(
        lambda: store.query(
            namespace=namespace,
            name=name,
            variant=variant,
            where=where,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
            readable=readable_scope(request.state.principal, namespace),
        )
    )
    body = {"items": [r.summary() for r in page.items], "next_cursor": page.next_cursor}
    headers = {}
    if page.next_cursor:
        headers["Link"] = (
            f'<{request.url.include_query_params(cursor=page.next_cursor)}>; rel="next"'
        )
    return JSONResponse(body, headers=headers)
