"""Control-plane tables (SQLAlchemy Core).

Three kinds of table, and the difference matters:

* ``events``: the append-only, hash-chained log. The source of truth.
* views (``VIEW_TABLES``): derived from the log by ``projection.py`` and
  nothing else; ``rebuild`` empties and replays them and must reproduce them
  row for row. Their rows carry event times and sequence numbers, never the
  wall clock of the replay.
* operational state (``chain_head``, ``blob_activity``, ``upload_sessions``,
  ``token_usage``, ``auth_failures``, ``leases``, ``stream_cursors``): coordination
  data that is not history (the chain tip for serialising appends, GC leases,
  in-flight uploads, tokens' last use, recent failed authentications, how far the
  event stream is published).
  Rebuild leaves it alone.
* caches of the log (``CACHE_TABLES``: ``tlog_nodes``, the transparency log's
  perfect subtrees, ``controlplane/tlog.py``): derived from the events but
  filled lazily, not by the projection; ``rebuild`` empties them and the next
  request refills them. Never trusted by ``log audit``.

The Alembic migrations in ``migrations/`` create exactly these tables; a test
compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "CACHE_TABLES",
    "OPERATIONAL_TABLES",
    "POSTGRESQL_ONLY",
    "VIEW_TABLES",
    "auth_failures",
    "blob_activity",
    "blobs",
    "chain_head",
    "events",
    "files",
    "holds",
    "leases",
    "metadata",
    "namespace_blobs",
    "namespaces",
    "packages",
    "retention_policies",
    "schemas",
    "signatures",
    "storage_locations",
    "stream_cursors",
    "tlog_nodes",
    "token_usage",
    "tokens",
    "upload_sessions",
    "version_meta",
    "versions",
]

metadata = MetaData()

#: JSON text on SQLite, JSONB on PostgreSQL (indexable, compared by value); None is NULL.
_JSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
#: A 64-bit integer key: BIGINT on PostgreSQL, INTEGER (the rowid) on SQLite.
_ROWID = BigInteger().with_variant(Integer, "sqlite")

# --- the log --------------------------------------------------------------------------

events = Table(
    "events",
    metadata,
    Column("seq", _ROWID, primary_key=True, autoincrement=False),
    Column("time", String(32), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("type", String(64), nullable=False),
    Column("subject", String(1024), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(80), nullable=False),
    Column("hash", String(80), nullable=False),
)

# --- operational state ----------------------------------------------------------------

chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(80), nullable=False),
)

blob_activity = Table(
    "blob_activity",
    metadata,
    Column("key", String(1024), primary_key=True),
    Column("touched_at", Float, nullable=False),
)

upload_sessions = Table(
    "upload_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("namespace", String(64), nullable=True),
    Column("actor", String(256), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("length", BigInteger, nullable=True),
    Column("upload_metadata", Text, nullable=False),
    Column("state", String(16), nullable=False),  # open | completed
    Column("claimed_until", Float, nullable=False),  # a PATCH in progress holds the session
    Column("digest", String(80), nullable=True),  # blake3 of the completed blob
)

#: Leader leases: one replica at a time runs a named background job (e.g. ``gc``).
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)

#: The event stream's outbox cursor: every event up to ``published_seq`` has been
#: acknowledged by the JetStream stream ``stream`` (``controlplane/outbox.py``).
stream_cursors = Table(
    "stream_cursors",
    metadata,
    Column("stream", String(64), primary_key=True),
    Column("published_seq", BigInteger, nullable=False),
)

# --- views ------------------------------------------------------------------------------

blobs = Table(
    "blobs",
    metadata,
    Column("blake3", String(80), primary_key=True),
    Column("sha256", String(80), nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("stored_seq", BigInteger, nullable=False),
    Column("stored_at", String(32), nullable=False),
)

storage_locations = Table(
    "storage_locations",
    metadata,
    Column("blake3", String(80), ForeignKey("blobs.blake3", ondelete="CASCADE"), primary_key=True),
    Column("backend", String(64), primary_key=True),
    Column("key", String(1024), nullable=False),
    Column("representation", String(32), nullable=False),
    Column("retrieval_tier", String(16), nullable=False),
    Column("restore_status", String(16), nullable=False),
    Column("restore_ready_at", String(32), nullable=True),  # a restore in progress ends then
    # NULL: the whole object at ``key``; else the blob's first byte in the pack at ``key``.
    Column("pack_offset", BigInteger, nullable=True),
)
Index("ix_storage_locations_key", storage_locations.c.backend, storage_locations.c.key)

namespaces = Table(
    "namespaces",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("settings", Text, nullable=False),
    Column("updated_seq", BigInteger, nullable=False),
)

packages = Table(
    "packages",
    metadata,
    Column("namespace", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("created_seq", BigInteger, nullable=False),
    Column("created_at", String(32), nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", _ROWID, primary_key=True, autoincrement=False),
    Column("namespace", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("version", String(128), nullable=False),
    Column("digest", String(80), nullable=False),
    Column("sha256", String(80), nullable=False),
    Column("manifest", LargeBinary, nullable=False),
    Column("variant", String(128), nullable=True),
    Column("created", String(32), nullable=False),
    Column("committed_at", String(32), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("file_count", Integer, nullable=False),
    Column("deleted_seq", BigInteger, nullable=True),
    Column("deleted_at", String(32), nullable=True),
    # A live version's queryable metadata (the pairs of its ``version_meta`` rows) as one
    # object; NULL when it has none or is deleted. PostgreSQL answers ``meta.K=V`` queries
    # from it through a GIN index (0006); SQLite from ``version_meta``'s index.
    Column("meta", _JSON, nullable=True),
    UniqueConstraint("namespace", "name", "version", name="uq_versions_ref"),
)
Index("ix_versions_digest", versions.c.digest)
Index("ix_versions_listing", versions.c.namespace, versions.c.id)
# Time-range queries (``created_after``/``created_before``), in a namespace or across all,
# in their order (``committed_at``, ``id``): one range scan, newest first (0011).
Index("ix_versions_ns_time", versions.c.namespace, versions.c.committed_at, versions.c.id)
Index("ix_versions_time", versions.c.committed_at, versions.c.id)
#: Indexes only PostgreSQL has (``ddl_if``): the migrations create them there alone.
POSTGRESQL_ONLY = frozenset({"ix_versions_meta"})
Index(
    "ix_versions_meta",
    versions.c.meta,
    postgresql_using="gin",
    postgresql_ops={"meta": "jsonb_path_ops"},  # smaller and faster; @> is all we ask
).ddl_if(dialect="postgresql")

files = Table(
    "files",
    metadata,
    Column(
        "version_id", BigInteger, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("path", String(1024), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("blake3", String(80), nullable=False),
    Column("sha256", String(80), nullable=False),
)
Index("ix_files_blake3", files.c.blake3)

version_meta = Table(
    "version_meta",
    metadata,
    Column(
        "version_id", BigInteger, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("key", String(256), primary_key=True),
    Column("value", Text, nullable=False),
)
# Covering: a key/value filter reads the matching version ids from the index alone.
Index("ix_version_meta_kv", version_meta.c.key, version_meta.c.value, version_meta.c.version_id)

schemas = Table(
    "schemas",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("schema", Text, nullable=False),
    Column("digest", String(80), nullable=False),
    Column("registered_seq", BigInteger, nullable=False),
    Column("registered_at", String(32), nullable=False),
)

#: Legal holds: ``id`` is the seq of the ``hold.placed`` event. ``reference`` keeps the
#: held version's name readable after a later commit reuses it (0003).
holds = Table(
    "holds",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("version_id", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("placed_at", String(32), nullable=False),
    Column("released_seq", BigInteger, nullable=True),
    Column("released_at", String(32), nullable=True),
    Column("release_reason", Text, nullable=True),
    Column("reference", String(512), nullable=False),
    Column("released_by", String(256), nullable=True),
)
Index("ix_holds_version", holds.c.version_id)

#: DSSE envelopes over versions: ``id`` is the seq of the ``signature.added`` event,
#: ``envelope`` its canonical JSON and ``envelope_sha256`` that text's SHA-256 (the same
#: envelope twice is recorded once); ``key_ids`` the signatures' keyid hints (JSON list).
#: A version's rows go with its row (a new commit of a tombstoned name) (0009).
signatures = Table(
    "signatures",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("version_id", BigInteger, ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
    Column("envelope", Text, nullable=False),
    Column("envelope_sha256", String(64), nullable=False),
    Column("key_ids", Text, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("added_at", String(32), nullable=False),
    UniqueConstraint("version_id", "envelope_sha256", name="uq_signatures_envelope"),
)

#: Retention policies, one row per namespace default (``package`` = "") or package. The
#: namespace row also carries the retention lock (``locked``, ``lock_days``, ``locked_at``),
#: so a locked namespace without a default policy has a row whose ``policy`` is NULL (0003).
retention_policies = Table(
    "retention_policies",
    metadata,
    Column("namespace", String(64), primary_key=True),
    Column("package", String(128), primary_key=True),  # "" for the namespace default
    Column("policy", Text, nullable=True),  # JSON; NULL: no policy (a lock-only row)
    Column("locked", Boolean, nullable=False),
    Column("updated_seq", BigInteger, nullable=False),
    Column("lock_days", Float, nullable=True),
    Column("locked_at", String(32), nullable=True),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("secret_hash", String(80), nullable=False),  # sha256 of the secret, never the secret
    Column("scopes", Text, nullable=False),  # JSON list
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("expires_at", String(32), nullable=True),
    Column("revoked_at", String(32), nullable=True),
    Column("revoked_by", String(256), nullable=True),
)

token_usage = Table(
    "token_usage",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("last_used_at", Float, nullable=False),
)

namespace_blobs = Table(
    "namespace_blobs",
    metadata,
    Column("namespace", String(64), primary_key=True),
    Column("blake3", String(80), primary_key=True),
    Column("held_seq", BigInteger, nullable=False),
    Column("held_at", String(32), nullable=False),
)

#: Derived from the log; emptied and replayed by rebuild. Children before parents.
VIEW_TABLES = (
    signatures,
    version_meta,
    files,
    holds,
    versions,
    packages,
    storage_locations,
    blobs,
    schemas,
    namespaces,
    retention_policies,
    tokens,
    namespace_blobs,
)
#: Recent failed authentications per client address: the throttle every replica shares
#: (controlplane/throttle.py). At most the limit's worth of rows per address, none older
#: than the window once the next failure is recorded.
auth_failures = Table(
    "auth_failures",
    metadata,
    Column("id", _ROWID, primary_key=True, autoincrement=True),
    Column("client", String(64), nullable=False),
    Column("failed_at", Float, nullable=False),
)
Index("ix_auth_failures_client", auth_failures.c.client, auth_failures.c.failed_at)
Index("ix_auth_failures_failed_at", auth_failures.c.failed_at)

OPERATIONAL_TABLES = (
    chain_head,
    blob_activity,
    upload_sessions,
    token_usage,
    leases,
    auth_failures,
    stream_cursors,
)

#: The transparency log's perfect subtrees of 2**level entries, from level
#: ``tlog.STORED_LEVEL`` up: ``idx`` counts subtrees of that level from the left.
tlog_nodes = Table(
    "tlog_nodes",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

#: Derived from the log but filled on demand; rebuild empties them.
CACHE_TABLES = (tlog_nodes,)
