"""The values a store's verbs return, each with its one JSON form.

The server answers with these forms and the HTTP client parses them back, so
local and remote callers get the same types (``model/api.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self, TypedDict, TypeVar

from artifactstore.errors import InvalidInput
from artifactstore.model import jsonform
from artifactstore.model.envelope import Signer
from artifactstore.model.identity import BlobDigests, Version
from artifactstore.model.paths import PackagePath
from artifactstore.model.trust import MAX_TRUSTED_KEYS, TrustEntry

__all__ = [
    "AVAILABLE",
    "MAX_MOVABLE_TAGS",
    "TIERS",
    "BlobRecord",
    "BlobTier",
    "GcReport",
    "Hold",
    "JsonForm",
    "LocalFile",
    "NamespaceSettings",
    "Paged",
    "Placement",
    "Progress",
    "PushArgs",
    "QueryArgs",
    "TierReport",
    "TokenInfo",
    "UploadSession",
    "VerifyReport",
    "no_progress",
    "pages",
    "query_params",
]


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file of the caller's to push: its path in the package, where it is, its size."""

    path: PackagePath
    #: A plain string: a ``Path`` per file cost a 10,000-file push a tenth of its walk.
    source: str
    size: int


class PushArgs(TypedDict, total=False):
    """The options of a push beyond its reference and paths (docs/cli.md, README.md)."""

    metadata: Mapping[str, Any] | None
    #: a registered metadata schema id the metadata is validated against
    variant: str | None
    annotations: Mapping[str, str] | None
    producer: str
    #: push what symlinks leaving the tree point to (refused otherwise)
    follow_symlinks: bool
    progress: Progress
    #: bytes hashed before anything is sent (a remote push hashes every file first;
    #: a local one hashes as it stores, which ``progress`` counts)
    hash_progress: Progress
    #: the walk of ``paths`` (``client.files.collect_files``) when the caller has it
    walked: Sequence[LocalFile] | None
    #: a private key (``provenance.keys.load_private_key``): the commit carries its
    #: signature (docs/provenance.md), in the commit's transaction
    sign: Signer | None


class QueryArgs(TypedDict, total=False):
    """What a query of live versions may filter on (``GET /v1/packages``).

    Declared once: the library's ``query``, the control plane's SQL, the
    server's route and the HTTP client all take these keywords.
    """

    namespace: str | None
    name: str | None
    variant: str | None
    #: metadata key -> value, all of which must match (``meta.KEY=VALUE``)
    where: Mapping[str, str] | None
    created_after: str | None
    created_before: str | None
    limit: int
    cursor: str | None


def query_params(args: QueryArgs) -> dict[str, str]:
    """The query as the HTTP route's parameters."""
    params = {k: str(v) for k, v in args.items() if k != "where" and v is not None}
    params.update({f"meta.{k}": v for k, v in (args.get("where") or {}).items()})
    return params


#: Called with the number of bytes just transferred (drives progress bars).
Progress = Callable[[int], None]


def no_progress(_n: int) -> None:
    """The default progress callback: nothing to show."""
    return None


class JsonForm:
    """A value whose JSON is its fields plus ``JSON_COMPUTED`` (``model/jsonform.py``)."""

    JSON_COMPUTED: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = jsonform.to_json(self)
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Self:
        return jsonform.from_json(cls, body)


@dataclass
class VerifyReport(JsonForm):
    """What ``verify`` checked and what it found damaged (empty ``damaged`` means clean)."""

    JSON_COMPUTED = ("ok",)

    blobs_checked: int = 0
    bytes_checked: int = 0
    damaged: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged


@dataclass
class GcReport(JsonForm):
    """What a GC run collected (or, in a dry run, would collect)."""

    dry_run: bool
    grace_seconds: float
    collected: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    orphans_removed: int = 0
    protected_by_grace: int = 0


#: A blob's restore status when it can be read now.
AVAILABLE = "available"


@dataclass(frozen=True, slots=True)
class BlobTier(JsonForm):
    """Where one blob is and whether it can be read now."""

    digest: str
    size: int
    tier: str
    restore_status: str
    restore_ready_at: str | None

    @property
    def available(self) -> bool:
        return self.restore_status == AVAILABLE


@dataclass
class TierReport(JsonForm):
    """What a move or restore did, and where each blob is afterwards."""

    changed: list[str] = field(default_factory=list)
    bytes_changed: int = 0
    blobs: list[BlobTier] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Hold(JsonForm):
    """One legal hold, active or released."""

    JSON_COMPUTED = ("active",)

    id: int
    reference: str
    version_id: int
    reason: str
    actor: str
    placed_at: str
    released_at: str | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None

    @property
    def namespace(self) -> str:
        return self.reference.partition("/")[0]


@dataclass(frozen=True, slots=True)
class TokenInfo(JsonForm):
    """A token as listed: never its secret."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: float | None = None

    def active(self, now: str) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    @property
    def actor(self) -> str:
        return f"token:{self.name}#{self.id}"


T = TypeVar("T", covariant=True)


class Paged(Protocol[T]):
    """One page of a listing: its items and the cursor of the next page (None: last)."""

    @property
    def items(self) -> Sequence[T]: ...
    @property
    def next_cursor(self) -> str | None: ...


def pages(fetch: Callable[[str | None], Paged[T]], cursor: str | None = None) -> Iterator[T]:
    """Every item of every page ``fetch(cursor)`` returns, following ``next_cursor``."""
    while True:
        page = fetch(cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a blob's bytes lie in a backend: the whole object at ``key``, or
    ``length`` bytes from ``offset`` of the pack object at ``key``."""

    key: str
    offset: int | None = None
    length: int = 0

    @property
    def representation(self) -> str:
        return "whole" if self.offset is None else "packed"

    def span(self, offset: int = 0, length: int | None = None) -> tuple[int, int | None]:
        """The object's span of ``length`` bytes (None: the rest) from the blob's ``offset``."""
        if self.offset is None:
            return offset, length
        if offset < 0:
            raise ValueError("a read cannot start before its blob")  # its neighbour's bytes
        rest = max(self.length - offset, 0)
        return self.offset + offset, rest if length is None else min(length, rest)


@dataclass(frozen=True, slots=True)
class BlobRecord:
    digests: BlobDigests
    place: Placement
    backend: str
    retrieval_tier: str
    restore_status: str
    restore_ready_at: str | None = None


MAX_MOVABLE_TAGS = 64


@dataclass(frozen=True, slots=True)
class NamespaceSettings:
    """A namespace's settings document (replaced whole by ``namespace.updated``).

    ``trusted_keys`` and ``require_signature`` are the signature policy
    (docs/provenance.md): with ``require_signature`` a commit must carry a
    signature by a trusted key whose trust has not expired.
    """

    anonymous_read: bool = False
    quota_bytes: int | None = None
    movable_tags: tuple[str, ...] = ()
    trusted_keys: tuple[TrustEntry, ...] = ()
    require_signature: bool = False

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> NamespaceSettings:
        """Validate a settings document; anything unknown or mistyped is refused."""
        unknown = set(body) - {
            "anonymous_read",
            "quota_bytes",
            "movable_tags",
            "trusted_keys",
            "require_signature",
        }
        if unknown:
            raise InvalidInput(f"unknown namespace setting(s): {', '.join(sorted(unknown))}")
        anonymous_read = body.get("anonymous_read", False)
        if not isinstance(anonymous_read, bool):
            raise InvalidInput("anonymous_read must be true or false")
        quota = body.get("quota_bytes")
        if quota is not None and (
            isinstance(quota, bool) or not isinstance(quota, int) or not 0 <= quota < 2**63
        ):
            raise InvalidInput("quota_bytes must be null or a whole number of bytes >= 0")
        tags = body.get("movable_tags", [])
        if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
            raise InvalidInput("movable_tags must be a list of version names")
        if len(tags) > MAX_MOVABLE_TAGS:
            raise InvalidInput(f"at most {MAX_MOVABLE_TAGS} movable tags per namespace")
        for tag in tags:
            Version(tag)
        return cls(anonymous_read, quota, tuple(sorted(set(tags))), *_signature_policy(body))

    def to_json(self) -> dict[str, Any]:
        return {
            "anonymous_read": self.anonymous_read,
            "quota_bytes": self.quota_bytes,
            "movable_tags": list(self.movable_tags),
            "trusted_keys": [k.to_json() for k in self.trusted_keys],
            "require_signature": self.require_signature,
        }


def _signature_policy(body: Mapping[str, Any]) -> tuple[tuple[TrustEntry, ...], bool]:
    """The trusted keys (one entry per key id: the last given wins) and the requirement."""
    entries = body.get("trusted_keys", [])
    if not isinstance(entries, list):
        raise InvalidInput("trusted_keys must be a list of {public_key, expires} objects")
    if len(entries) > MAX_TRUSTED_KEYS:
        raise InvalidInput(f"at most {MAX_TRUSTED_KEYS} trusted keys per namespace")
    by_id = {e.key_id: e for e in map(TrustEntry.from_json, entries)}
    require = body.get("require_signature", False)
    if not isinstance(require, bool):
        raise InvalidInput("require_signature must be true or false")
    if require and not by_id:
        raise InvalidInput("require_signature needs at least one trusted key")
    return tuple(sorted(by_id.values(), key=lambda e: e.key_id)), require


@dataclass(frozen=True, slots=True)
class UploadSession:
    id: str
    namespace: str | None
    actor: str
    created_at: float
    expires_at: float
    offset: int
    length: int | None
    metadata: dict[str, str]
    state: str
    digest: str | None

    @property
    def complete(self) -> bool:
        return self.state == "completed"


#: The tiers this build can store in.
TIERS = ("hot", "cold")
