"""``create_app``: wires the Store, the auth layer, the routes and the middleware."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from artifactstore.config import IPNetwork
from artifactstore.errors import ArtifactStoreError
from artifactstore.server.auth import (
    PUBLIC,
    ROUTE_SCOPES,
    AmbiguousCredentials,
    Authenticator,
    TokenAuth,
    authorize,
    client_address,
)
from artifactstore.server.background import Background, scheduled_jobs
from artifactstore.server.bodies import BodyTimeout, RangeNotSatisfiable
from artifactstore.server.metrics import Metrics
from artifactstore.server.problems import plain_problem, problem_response
from artifactstore.server.routes import (
    blob_batches,
    blobs,
    events,
    health,
    packages,
    retention,
    schemas,
    signatures,
    tiers,
    tokens,
    uploads,
)
from artifactstore.server.routes import log as transparency_log
from artifactstore.store import Store

__all__ = ["ServerLimits", "create_app"]


class ServerLimits:
    """HTTP-layer limits (the library enforces its own: files, metadata, manifest)."""

    def __init__(
        self,
        *,
        max_json_body: int = 1024 * 1024,
        idle_timeout: float = 30.0,
        total_timeout: float = 3600.0,
    ) -> None:
        self.max_json_body = max_json_body
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout


async def guard(request: Request) -> None:
    """The one authorisation check: ``ROUTE_SCOPES`` says what each route needs."""
    if len(request.headers.getlist("authorization")) > 1:
        raise AmbiguousCredentials("send one Authorization header, not several")
    route = request.scope.get("route")
    path = getattr(route, "path", "")
    method = request.method
    if method == "HEAD" and (method, path) not in ROUTE_SCOPES:
        method = "GET"  # HEAD shares GET's entry unless it has one of its own
    action, source = ROUTE_SCOPES[(method, path)]
    namespace: str | None = None
    if source == "path:ns":
        namespace = request.path_params.get("ns")
    elif source == "query:namespace":
        namespace = request.query_params.get("namespace")
    if action == "public":  # health, readiness, the API document: credentials play no part
        request.state.principal = PUBLIC
        return
    # Authentication reads the database: off the event loop, unless the answer is known.
    auth = request.app.state.auth
    principal = auth.known(request)
    if principal is None:
        principal = await run_in_threadpool(auth.authenticate, request)
    authorize(principal, action, namespace)
    request.state.principal = principal


class AccessLog:
    """Request ids, JSON-line access logs and per-route metrics, as raw ASGI middleware."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        logger: logging.Logger,
        trusted_proxies: tuple[IPNetwork, ...] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.logger = logger
        self.trusted_proxies = trusted_proxies  # the client logged is the one auth counts
        # Request ids: a random prefix per process and a counter. Unique without
        # a getrandom() call per request (a measurable share of a HEAD's CPU).
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"{self._id_prefix}{next(self._ids):08x}"
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500
        sent = 0
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        headers: list[tuple[bytes, bytes]] = []  # of the response, once started

        async def tagging_send(message: Message) -> None:
            nonlocal status, sent, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.pathsend":  # granian sends the file itself
                sent += next(
                    (int(v) for n, v in headers if n.lower() == b"content-length" and v.isdigit()),
                    0,
                )
            await send(message)

        try:
            await self.app(scope, counting_receive, tagging_send)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.observe(scope["method"], template, status, elapsed, received, sent)
            self.logger.info(
                json.dumps(
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "bytes_in": received,
                        "bytes_out": sent,
                        "client": client_address(Request(scope), self.trusted_proxies),
                    }
                )
            )


def _http_problem(exc: StarletteHTTPException) -> Response:
    codes = {
        404: ("route_not_found", "Not found"),
        405: ("method_not_allowed", "Method not allowed"),
        406: ("not_acceptable", "Not acceptable"),
        415: ("unsupported_media_type", "Unsupported media type"),
    }
    code, title = codes.get(exc.status_code, ("http_error", "HTTP error"))
    headers = dict(exc.headers) if exc.headers else None
    return plain_problem(exc.status_code, code, title, str(exc.detail), headers)


def create_app(
    store: Store,
    *,
    auth: Authenticator | None = None,
    limits: ServerLimits | None = None,
    logger: logging.Logger | None = None,
) -> FastAPI:
    log = logger or _default_logger()
    background = Background(store, scheduled_jobs(store, log), log)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The periodic jobs (background GC) live as long as the server; stopping
        # them blocks on running jobs, so off the event loop.
        background.start()
        try:
            yield
        finally:
            await run_in_threadpool(background.stop)

    app = FastAPI(
        title="artifact-store",
        version="1",
        description="Content-addressed registry for generated artifacts.",
        dependencies=[Depends(guard)],
        # A trailing slash is a different (absent) resource: answer 404, not a
        # redirect that re-sends a PATCH or POST body elsewhere.
        redirect_slashes=False,
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.background = background
    app.state.auth = auth or TokenAuth(
        store,
        failure_limit=store.settings.auth_failures_per_minute,
        trusted_proxies=store.settings.trusted_networks(),
    )
    app.state.limits = limits or ServerLimits()
    app.state.metrics = Metrics()
    for module in (
        health,
        blob_batches,
        blobs,
        uploads,
        packages,
        signatures,
        schemas,
        events,
        transparency_log,
        tokens,
        retention,
        tiers,
    ):
        app.include_router(module.router)
    _check_route_table(app)

    @app.exception_handler(ArtifactStoreError)
    async def library_error(_request: Request, exc: ArtifactStoreError) -> Response:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = "/".join(str(p) for p in first.get("loc", ()))
        return plain_problem(
            422, "invalid_request", "Invalid request", f"{where}: {first.get('msg', 'invalid')}"
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette names only the last route that matched the path; a path
            # served by several routes (GET and PUT, say) allows all their methods.
            allowed: set[str] = set()
            for route in _flat_routes(app.router.routes):
                match, _ = route.matches({**request.scope, "method": "\0"})
                if match is not Match.NONE:
                    allowed.update(getattr(route, "methods", None) or ())
            exc.headers = {"Allow": ", ".join(sorted(allowed))}
        return _http_problem(exc)

    @app.exception_handler(RangeNotSatisfiable)
    async def bad_range(_request: Request, exc: RangeNotSatisfiable) -> Response:
        return plain_problem(
            416,
            "range_not_satisfiable",
            "Range not satisfiable",
            f"the representation has {exc.size} bytes",
            {"Content-Range": f"bytes */{exc.size}"},
        )

    @app.exception_handler(AmbiguousCredentials)
    async def ambiguous_credentials(_request: Request, exc: AmbiguousCredentials) -> Response:
        return plain_problem(400, "ambiguous_credentials", "Ambiguous credentials", str(exc))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(_request: Request, _exc: ClientDisconnect) -> Response:
        return plain_problem(400, "client_disconnected", "Client disconnected", "body cut off")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # A bug, not a client error: still a problem document, never a bare text page.
        # This answer is sent outside AccessLog (which logged the 500), so it
        # carries the request id itself; Starlette logs the traceback after it.
        request_id = request.scope.get("state", {}).get("request_id", "")
        return plain_problem(
            500,
            "internal_error",
            "Internal error",
            f"unexpected {type(exc).__name__}",
            {"X-Request-Id": request_id} if request_id else None,
        )

    @app.exception_handler(BodyTimeout)
    async def slow_body(_request: Request, exc: BodyTimeout) -> Response:
        return plain_problem(
            408, "body_timeout", "Request body timeout", str(exc), {"Connection": "close"}
        )

    _problem_only_openapi(app)
    app.add_middleware(
        AccessLog,
        metrics=app.state.metrics,
        logger=log,
        trusted_proxies=store.settings.trusted_networks(),
    )
    return app


def _flat_routes(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """Every endpoint route, including those of included routers.

    FastAPI 0.16x no longer copies an included router's routes into the app:
    ``app.routes`` holds one wrapper per ``include_router`` (with the router
    as ``original_router``). Older versions hold the routes themselves.
    """
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat_routes(inner.routes)
        else:
            yield route


def _check_route_table(app: FastAPI) -> None:
    """Every route must have an entry in ROUTE_SCOPES: a new route cannot skip auth."""
    for route in _flat_routes(app.routes):
        for method in getattr(route, "methods", None) or ():
            if method == "HEAD":
                continue
            key = (method, getattr(route, "path", ""))
            if key[1] in ("/docs", "/docs/oauth2-redirect", "/redoc"):
                continue
            if key not in ROUTE_SCOPES:
                raise RuntimeError(f"route {key} has no entry in server.auth.ROUTE_SCOPES")


_PROBLEM_REF = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _problem_only_openapi(app: FastAPI) -> None:
    """Declare every error response as RFC 9457 problem+json, and only that.

    FastAPI would advertise its own validation-error body for 422 and plain
    JSON beside our problem type; we answer neither. Every operation also
    declares ``default``: any other failure (401, 403, 413, 503 ...) is a
    problem document too, and schemathesis holds us to it.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for code, response in responses.items():
                    if code[0] in "45":
                        response["content"] = _PROBLEM_REF
                        response.setdefault("description", "Problem details")
                responses["default"] = {"description": "Problem details", "content": _PROBLEM_REF}
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _default_logger() -> logging.Logger:
    logger = logging.getLogger("artifactstore.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
