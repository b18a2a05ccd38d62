"""The one authentication and authorisation layer every route passes through.

``ROUTE_SCOPES`` says, for every route, which action it needs and where its
namespace comes from. ``create_app`` refuses to start if a route has no entry,
so a new route cannot forget its check. Authentication is pluggable: this
build ships :class:`LoopbackDevAuth` (every caller is admin, and ``serve``
only binds loopback with it); the tokens issue adds the real authenticator
behind the same :class:`Authenticator` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from starlette.requests import Request

from artifactstore.errors import Forbidden

__all__ = [
    "ROUTE_SCOPES",
    "Action",
    "Authenticator",
    "LoopbackDevAuth",
    "Principal",
    "authorize",
]

Action = Literal["public", "read", "write", "delete", "admin"]
#: Where a route's namespace comes from: a path parameter, a query parameter, or nowhere.
NsSource = Literal["path:ns", "query:namespace", "none"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the actor name recorded in events, and what they may do."""

    actor: str
    admin: bool = False
    scopes: frozenset[str] = frozenset()

    def may(self, action: Action, namespace: str | None) -> bool:
        if action == "public" or self.admin:
            return True
        if namespace is None:
            return False
        return f"{namespace}:{action}" in self.scopes or f"{namespace}:admin" in self.scopes


class Authenticator(Protocol):
    def authenticate(self, request: Request) -> Principal:
        """Identify the caller; raise an ArtifactStoreError (401) for bad credentials."""


class LoopbackDevAuth:
    """``serve --no-auth``: every caller is admin (the server binds loopback only)."""

    def authenticate(self, request: Request) -> Principal:
        return Principal(actor="anonymous@loopback", admin=True)


#: (method, route path) -> (action, namespace source). HEAD shares GET's entry.
ROUTE_SCOPES: dict[tuple[str, str], tuple[Action, NsSource]] = {
    ("GET", "/health"): ("public", "none"),
    ("GET", "/ready"): ("public", "none"),
    ("GET", "/metrics"): ("public", "none"),
    ("GET", "/openapi.json"): ("public", "none"),
    ("GET", "/v1/blobs/{digest}"): ("read", "query:namespace"),
    ("POST", "/v1/blobs"): ("write", "query:namespace"),
    ("OPTIONS", "/v1/uploads"): ("public", "none"),
    ("POST", "/v1/uploads"): ("write", "query:namespace"),
    ("GET", "/v1/uploads/{upload_id}"): ("write", "none"),
    ("PATCH", "/v1/uploads/{upload_id}"): ("write", "none"),
    ("POST", "/v1/uploads/{upload_id}/complete"): ("write", "none"),
    ("DELETE", "/v1/uploads/{upload_id}"): ("write", "none"),
    ("PUT", "/v1/packages/{ns}/{name}/{version}"): ("write", "path:ns"),
    ("GET", "/v1/packages/{ns}/{name}/{version}"): ("read", "path:ns"),
    ("DELETE", "/v1/packages/{ns}/{name}/{version}"): ("delete", "path:ns"),
    ("GET", "/v1/packages/{ns}/{name}/{version}/files/{path:path}"): ("read", "path:ns"),
    ("GET", "/v1/packages/{ns}/{name}/{version}/archive"): ("read", "path:ns"),
    ("GET", "/v1/packages"): ("read", "query:namespace"),
    ("PUT", "/v1/schemas/{schema_id}"): ("admin", "none"),
    ("GET", "/v1/schemas/{schema_id}"): ("public", "none"),
    ("GET", "/v1/schemas"): ("public", "none"),
    ("GET", "/v1/events"): ("admin", "none"),
    ("POST", "/v1/admin/gc"): ("admin", "none"),
}


def authorize(principal: Principal, action: Action, namespace: str | None) -> None:
    if not principal.may(action, namespace):
        raise Forbidden(f"{principal.actor} may not {action} here")
