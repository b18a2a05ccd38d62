"""The one authentication and authorisation layer every route passes through.

``ROUTE_SCOPES`` says, for every route, which action it needs and where its
namespace comes from; ``create_app`` refuses to start if a route has no
entry, so a new route cannot forget its check, and the permission tests are
generated from the same table.

Authentication (:class:`TokenAuth`): ``Authorization: Bearer ast_...``, or
the token as the password of Basic auth (what OCI clients send). No
credentials make the caller anonymous, who may read the namespaces that turn
anonymous read on and nothing else. ``serve --no-auth`` swaps in
:class:`LoopbackDevAuth` (everyone is admin; loopback addresses only).

Failure answers never depend on whether a namespace or package exists: the
check runs before any lookup, so the body and the work done are the same.

Failed authentications are throttled per client address (docs/security.md),
counted in the database so that every replica counts against one limit
(``controlplane/throttle.py``):
past ``failure_limit`` failures in a minute, a bad token is answered 429 with
``Retry-After`` instead of 401, but a valid token is always checked and
served, whatever else arrives from the same address (a NAT, a CI pool, a
proxy). The client address is the socket's peer, or, when the peer is one of
``TRUSTED_PROXIES``, the right-most address of ``X-Forwarded-For`` that is not
a trusted proxy (the left part of that header is whatever the client wrote).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import time
from dataclasses import dataclass
from typing import Literal, Protocol

from starlette.requests import Request

from artifactstore.config import IPNetwork
from artifactstore.errors import Forbidden, InvalidInput, TooManyRequests, Unauthenticated
from artifactstore.model.records import TokenInfo
from artifactstore.store import Store

__all__ = [
    "METRICS_SCOPE",
    "PUBLIC",
    "ROUTE_SCOPES",
    "Action",
    "AmbiguousCredentials",
    "Authenticator",
    "LoopbackDevAuth",
    "Principal",
    "TokenAuth",
    "authorize",
    "client_address",
    "readable_scope",
    "upload_namespace",
]

#: public: anyone; authenticated: any valid token; exists: read or write on the namespace
#: (a writer may ask whether its namespace holds a blob); the rest: that scope on the namespace.
Action = Literal["public", "authenticated", "exists", "read", "write", "delete", "admin"]
#: The global scope that shows every figure of ``/metrics`` (a scraper's token).
METRICS_SCOPE = "metrics"
#: Where a route's namespace comes from: a path parameter, a query parameter, or nowhere.
NsSource = Literal["path:ns", "query:namespace", "none"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the actor recorded in events, and what they may do."""

    actor: str
    admin: bool = False
    scopes: frozenset[str] = frozenset()
    anonymous: bool = False

    def may(self, action: Action, namespace: str | None) -> bool:
        if action == "public" or self.admin:
            return True
        if action == "authenticated":
            return not self.anonymous
        if action == "admin" and namespace is None:
            return False  # global admin routes
        if action == "exists":
            allowed = self.namespaces("read") | self.namespaces("write")
        else:
            allowed = self.namespaces(action)
        if namespace is None:
            return bool(allowed)  # the route filters by namespace itself
        return namespace in allowed

    def namespaces(self, action: Action) -> set[str]:
        """The namespaces this principal may ``action`` in (``NS:admin`` grants every action)."""
        out = set()
        for scope in self.scopes:
            ns, _, level = scope.rpartition(":")
            if level in (action, "admin"):
                out.add(ns)
        return out

    def readable(self) -> set[str] | None:
        """Namespaces whose contents this principal may see (None: all)."""
        return None if self.admin else self.namespaces("read")

    def sees_global_metrics(self) -> bool:
        """Store-wide figures (and every namespace's): a global admin or a metrics token."""
        return self.admin or METRICS_SCOPE in self.scopes


#: The caller of a public route (no credentials are looked at).
PUBLIC = Principal(actor="anonymous", anonymous=True)


class Authenticator(Protocol):
    def authenticate(self, request: Request) -> Principal:
        """Identify the caller; raise Unauthenticated for bad credentials."""

    def known(self, request: Request) -> Principal | None:
        """The caller if telling needs no I/O (called on the event loop); None: authenticate."""


class LoopbackDevAuth:
    """``serve --no-auth``: every caller is admin (the server binds loopback only)."""

    def authenticate(self, request: Request) -> Principal:
        return Principal(actor="anonymous@loopback", admin=True)

    def known(self, request: Request) -> Principal | None:
        return self.authenticate(request)


class AmbiguousCredentials(Exception):
    """More than one ``Authorization`` header: which one counts is not ours to guess (400)."""


#: Over-the-limit addresses a process remembers (more: it starts over, and asks the database).
MAX_OVER_ADDRESSES = 10_000


class TokenAuth:
    """API tokens from the store; checked against the database on every request
    unless this process checked the token and no token was revoked since
    (``known``), so a revocation is effective on the very next request on every
    replica."""

    def __init__(
        self,
        store: Store,
        *,
        failure_limit: int = 10,
        window: float = 60.0,
        trusted_proxies: tuple[IPNetwork, ...] = (),
    ) -> None:
        self._store = store
        self._limit = failure_limit
        self._window = window
        #: Addresses the shared count put over the limit, until when (monotonic): further
        #: failures from them are answered 429 without a write, so a flood of bad tokens
        #: does not become a flood of write transactions. Only failures read it.
        self._over: dict[str, float] = {}
        self._trusted = trusted_proxies

    def authenticate(self, request: Request) -> Principal:
        presented = _credentials(request.headers.get("authorization"))
        if presented is None:
            readable = self._store.anonymous_namespaces()
            return Principal(
                actor="anonymous",
                scopes=frozenset(f"{ns}:read" for ns in readable),
                anonymous=True,
            )
        # A valid token is served whatever else came from its address: the throttle
        # is consulted only once the token has failed.
        info = self._store.authenticate(presented)
        if info is None:
            retry = self._failed(client_address(request, self._trusted))
            if retry is not None:
                raise TooManyRequests(
                    f"too many failed authentications from this address: retry in {retry} s",
                    retry_after=retry,
                )
            raise Unauthenticated("the token is unknown, expired or revoked")
        return _token_principal(info)

    def _failed(self, client: str) -> int | None:
        """Seconds ``client`` must wait (None: not over the limit), counting this failure
        in the database unless this process already knows the address is over."""
        now = time.monotonic()
        until = self._over.get(client)
        if until is not None and until > now:
            return int(until - now) + 1
        retry = self._store.authentication_failed(client, limit=self._limit, window=self._window)
        if retry is None:
            self._over.pop(client, None)
            return None
        if len(self._over) >= MAX_OVER_ADDRESSES:
            self._over.clear()
        self._over[client] = now + retry
        return retry

    def known(self, request: Request) -> Principal | None:
        """A token this process verified with nothing committed to the database since
        (``Store.known_token``); anything else (no or bad credentials): None."""
        try:
            presented = _credentials(request.headers.get("authorization"))
        except Unauthenticated:
            return None
        info = None if presented is None else self._store.known_token(presented)
        return None if info is None else _token_principal(info)


def _token_principal(info: TokenInfo) -> Principal:
    return Principal(
        actor=info.actor,
        admin="admin" in info.scopes,
        scopes=frozenset(s for s in info.scopes if s != "admin"),
    )


def client_address(request: Request, trusted: tuple[IPNetwork, ...]) -> str:
    """The caller's address: the peer, or what trusted proxies say in ``X-Forwarded-For``.

    Each proxy appends the address it was called from, so the header is read
    from the right: trusted proxies are skipped, and the first address that
    is not one is the client (everything to its left the client could have
    written). Should every hop be a trusted proxy, the left-most one is.
    """
    peer = request.client.host if request.client else "unknown"
    if not _is_trusted(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    client = peer
    for hop in reversed(hops):
        client = hop[:64]  # a proxy's garbage is still just a key
        if not _is_trusted(hop, trusted):
            break
    return client


def _is_trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def _credentials(header: str | None) -> str | None:
    """The token in a Bearer or Basic (password) Authorization header."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("malformed Basic credentials") from None
        return decoded.partition(":")[2]
    raise Unauthenticated("use Authorization: Bearer <token> (or Basic with the token as password)")


#: (method, route path) -> (action, namespace source). HEAD shares GET's entry unless it
#: has one of its own.
ROUTE_SCOPES: dict[tuple[str, str], tuple[Action, NsSource]] = {
    ("GET", "/health"): ("public", "none"),
    ("GET", "/ready"): ("public", "none"),
    # Global figures need a global admin or a metrics token; other callers see their
    # namespaces' figures only (routes/health.py).
    ("GET", "/metrics"): ("authenticated", "none"),
    ("GET", "/openapi.json"): ("public", "none"),
    ("GET", "/v1/blobs/{digest}"): ("read", "query:namespace"),
    # Whether the namespace holds a blob (no bytes): what a push asks, so a writer may too.
    ("HEAD", "/v1/blobs/{digest}"): ("exists", "query:namespace"),
    ("POST", "/v1/blobs"): ("write", "query:namespace"),
    ("PUT", "/v1/blobs"): ("write", "query:namespace"),
    ("POST", "/v1/blobs/batch"): ("write", "query:namespace"),
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
    ("PUT", "/v1/namespaces/{ns}"): ("admin", "path:ns"),
    ("GET", "/v1/namespaces/{ns}"): ("read", "path:ns"),
    ("PUT", "/v1/schemas/{schema_id}"): ("admin", "none"),
    ("GET", "/v1/schemas/{schema_id}"): ("authenticated", "none"),
    ("GET", "/v1/schemas"): ("authenticated", "none"),
    ("GET", "/v1/events"): ("admin", "none"),
    ("GET", "/v1/events/stream"): ("admin", "none"),
    # The transparency log is made of the events' hashes: the event log's readers'.
    # Its public key is public: anyone holding a checkpoint may check it.
    ("GET", "/v1/log/checkpoint"): ("admin", "none"),
    ("GET", "/v1/log/proof/inclusion"): ("admin", "none"),
    ("GET", "/v1/log/proof/consistency"): ("admin", "none"),
    ("GET", "/v1/log/key"): ("public", "none"),
    ("POST", "/v1/admin/gc"): ("admin", "none"),
    ("POST", "/v1/tokens"): ("admin", "none"),
    ("GET", "/v1/tokens"): ("admin", "none"),
    ("DELETE", "/v1/tokens/{token_id}"): ("admin", "none"),
    # Legal holds: placing and releasing is the namespace admin's; reading them is a
    # reader's (the version detail shows them to readers anyway).
    ("POST", "/v1/packages/{ns}/{name}/{version}/holds"): ("admin", "path:ns"),
    ("DELETE", "/v1/packages/{ns}/{name}/{version}/holds"): ("admin", "path:ns"),
    ("GET", "/v1/packages/{ns}/{name}/{version}/holds"): ("read", "path:ns"),
    ("GET", "/v1/holds"): ("read", "query:namespace"),
    # Retention: a namespace admin sets policies; only a global admin applies them or
    # sets the lock (compliance mode binds the namespace admin too).
    ("PUT", "/v1/namespaces/{ns}/retention"): ("admin", "path:ns"),
    ("GET", "/v1/namespaces/{ns}/retention"): ("read", "path:ns"),
    ("PUT", "/v1/namespaces/{ns}/retention/lock"): ("admin", "none"),
    ("POST", "/v1/retention/apply"): ("admin", "none"),
    # Tiers: reading a version may need a restore, so readers may start one; moving
    # bytes to another tier changes how fast everyone can read: the namespace admin's.
    ("POST", "/v1/blobs/{digest}/restore"): ("read", "query:namespace"),
    ("GET", "/v1/packages/{ns}/{name}/{version}/tier"): ("read", "path:ns"),
    ("POST", "/v1/packages/{ns}/{name}/{version}/tier"): ("admin", "path:ns"),
    ("POST", "/v1/packages/{ns}/{name}/{version}/restore"): ("read", "path:ns"),
    # Signatures: a writer adds them (a commit carries them too); readers list them.
    ("GET", "/v1/packages/{ns}/{name}/{version}/signatures"): ("read", "path:ns"),
    ("POST", "/v1/packages/{ns}/{name}/{version}/signatures"): ("write", "path:ns"),
}


def upload_namespace(principal: Principal, requested: str | None) -> str | None:
    """The namespace an upload is recorded for (blob visibility, docs/security.md).

    Named by the request, or implied when the token writes exactly one
    namespace; a global admin's upload that names none is held by none.
    """
    if requested is not None or principal.admin:
        return requested
    writable = principal.namespaces("write")
    if len(writable) == 1:
        return next(iter(writable))
    raise InvalidInput(
        "name the namespace of this upload (?namespace=NS): the token writes several"
    )


def readable_scope(principal: Principal, requested: str | None) -> set[str] | None:
    """The namespaces a lookup may see through (None: every one, for a global admin)."""
    if principal.admin:
        return None
    if requested is not None:
        return {requested}  # the guard checked the caller may read it (HEAD: or write)
    return principal.namespaces("read")


def authorize(principal: Principal, action: Action, namespace: str | None) -> None:
    """Raise unless ``principal`` may ``action``: 401 for anonymous callers, else 403."""
    if principal.may(action, namespace):
        return
    if principal.anonymous:
        raise Unauthenticated("this needs a token: set ARTIFACTSTORE_TOKEN (Bearer auth)")
    raise Forbidden(f"{principal.actor} may not {action} here")
