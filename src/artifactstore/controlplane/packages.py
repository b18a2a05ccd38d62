"""Package versions: commit, read, delete (tombstone) and query."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence, Set
from dataclasses import dataclass, replace
from typing import TypedDict, Unpack

from sqlalchemy import Connection, select, tuple_

from artifactstore.controlplane import namespaces
from artifactstore.controlplane import signatures as signing
from artifactstore.controlplane.blobs import dereference, lock_rows, not_held
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.bulk import in_batches, values_in
from artifactstore.controlplane.eventlog import append_all, append_many
from artifactstore.controlplane.protection import (
    check_deletable,
    serialise,
)
from artifactstore.controlplane.versionquery import record_of
from artifactstore.errors import (
    InvalidManifest,
    MissingBlobs,
    PackageNotFound,
    VersionExists,
)
from artifactstore.model.envelope import Envelope
from artifactstore.model.events import PackageCommitted, PackageDeleted, TagMoved
from artifactstore.model.identity import BlobDigests, Digest, Reference
from artifactstore.model.manifest import Manifest
from artifactstore.model.records import NamespaceSettings
from artifactstore.model.versions import CommitResult, VersionRecord
from artifactstore.provenance.dsse import PackageRef

__all__ = [
    "Checks",
    "Plan",
    "VersionKey",
    "apply",
    "commit",
    "delete",
    "delete_many",
    "file_blobs",
    "get",
    "get_keys",
    "live",
    "prepare",
]


def get(conn: Connection, ref: Reference) -> VersionRecord:
    query = select(t.versions).where(
        t.versions.c.namespace == str(ref.namespace),
        t.versions.c.name == str(ref.name),
        t.versions.c.deleted_seq.is_(None),
    )
    if ref.version is not None:
        query = query.where(t.versions.c.version == str(ref.version))
    else:
        assert ref.digest is not None
        col = t.versions.c.digest if ref.digest.algorithm == "blake3" else t.versions.c.sha256
        query = query.where(col == str(ref.digest))
    row = conn.execute(query.limit(1)).first()
    if row is None:
        raise PackageNotFound(f"{ref} does not exist (or was deleted): see 'artifactstore ls'")
    return record_of(row)


def live(conn: Connection, refs: Collection[Reference]) -> dict[str, VersionRecord | None]:
    """The live version under each reference (``NS/NAME:VERSION``; None: there is none),
    in one query: a group commit looks up the versions of its whole batch at once."""
    v = t.versions.c
    keys = sorted({(str(r.namespace), str(r.name), str(r.version)) for r in refs})
    out: dict[str, VersionRecord | None] = {str(Reference.of(*k)): None for k in keys}
    for chunk in in_batches(keys):
        query = select(t.versions).where(
            tuple_(v.namespace, v.name, v.version).in_(chunk), v.deleted_seq.is_(None)
        )
        out.update(
            (f"{r.namespace}/{r.name}:{r.version}", record_of(r)) for r in conn.execute(query)
        )
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    """A commit checked under the append lock and not written yet (:func:`apply`).

    ``existing``: the live version under the same reference: identical content
    (``done``: nothing to append) or the version a movable tag moves from.
    """

    manifest: Manifest
    actor: str
    sent: BlobDigests
    signatures: Sequence[Envelope]
    now: float
    existing: VersionRecord | None
    done: bool

    @property
    def event(self) -> PackageCommitted | TagMoved:
        """What :func:`apply` appends. The logged subject is the manifest's own reference."""
        body, digest, was = self.manifest.to_map(), str(self.sent.blake3), self.existing
        if was is None:
            return PackageCommitted(body, digest)
        return TagMoved(body, digest, was.id, str(was.digest))


class Checks(TypedDict, total=False):
    """:func:`prepare`'s optional arguments, which :func:`commit` passes on."""

    require_held: bool
    recorded_here: Set[str]
    signatures: Sequence[Envelope]
    locked: Mapping[str, tuple[str, int]] | None
    settings: NamespaceSettings | None
    versions: Mapping[str, VersionRecord | None] | None


def commit(
    conn: Connection,
    manifest: Manifest,
    actor: str,
    *,
    held_since: str,
    now: float | None = None,
    **checks: Unpack[Checks],
) -> CommitResult:
    """Commit a manifest inside the caller's write transaction: :func:`prepare`, then
    :func:`apply`; ``now`` defaults to the clock."""
    when = time.time() if now is None else now
    plan = prepare(conn, manifest, actor, held_since=held_since, now=when, **checks)
    return apply(conn, [plan])[0]


def prepare(
    conn: Connection,
    manifest: Manifest,
    actor: str,
    *,
    held_since: str,
    now: float,
    require_held: bool = False,
    recorded_here: Set[str] = frozenset(),
    signatures: Sequence[Envelope] = (),
    locked: Mapping[str, tuple[str, int]] | None = None,
    settings: NamespaceSettings | None = None,
    versions: Mapping[str, VersionRecord | None] | None = None,
) -> Plan:
    """Check a commit inside the caller's write transaction; it writes nothing.

    Re-checks, inside this transaction and under row locks, that every
    referenced blob is recorded: GC holds the same rows while it decides, so a
    blob is either still there for this commit or this commit fails with the
    missing digests. ``held_since`` starts the grace period
    within which uploads into the namespace count as its holdings (for the
    quota, and for ``require_held``: a caller who is not a global admin must
    have uploaded every blob into the namespace, or use it in a live version).

    A version is immutable unless its name is one of the namespace's movable
    tags: then a different manifest moves the tag (``tag.moved``), which
    removes the previous version exactly as a deletion would, so a legal hold
    or the retention lock on it refuses the move.

    ``recorded_here``: blobs this transaction recorded from the digests the
    manifest was built with (a push). They are neither looked up nor locked:
    no other transaction sees their rows before this one ends.

    ``signatures``: DSSE envelopes over this manifest that travel with the
    commit (docs/provenance.md): a namespace that requires signatures refuses
    the commit unless one is by a trusted key (``now``, default the clock, is
    when trust is judged), and each is recorded (``signature.added``) in this
    transaction. A no-op commit (identical content already there) records
    them only if they are over the stored manifest itself.
    """
    ref = Reference(manifest.namespace, manifest.name, version=manifest.version)
    ns = str(manifest.namespace)
    blake3s = [str(f.blake3) for f in manifest.files]
    wanted = sorted(set(blake3s))
    present = {
        b: (str(f.sha256), f.size)
        for b, f in zip(blake3s, manifest.files, strict=True)
        if b in recorded_here
    }
    present.update((b, locked[b]) for b in wanted if locked and b in locked and b not in present)
    present.update(lock_rows(conn, [d for d in wanted if d not in present]))
    # The event log's append lock (after the blob rows, the order GC takes them in) before
    # looking for the version: two concurrent commits of one version, or two moves
    # of one tag, then see each other on PostgreSQL too (SQLite serialises writers).
    serialise(conn)
    sent = manifest.digests()
    if settings is None:
        settings = namespaces.get(conn, manifest.namespace)  # once: every check uses them
    package = PackageRef(str(ref), sent.blake3.hex, sent.sha256.hex)
    signing.require(conn, package, signatures, now, settings)
    known = versions or {}
    existing = known[str(ref)] if str(ref) in known else live(conn, [ref])[str(ref)]
    plan = Plan(manifest, actor, sent, signatures, now, existing, done=False)
    if existing is not None:
        if existing.manifest.same_content(manifest):
            if existing.digest == sent.blake3:  # they are recorded: refuse a bad one now
                signing.check_all(signatures, package, settings, now)
            return replace(plan, done=True)
        if str(ref.version) not in settings.movable_tags:
            raise VersionExists(
                f"{ref} already exists with different content (digest {existing.digest}); "
                "versions are immutable: push under a new version"
            )
    missing = [d for d in wanted if d not in present]
    for b, f in zip(blake3s, manifest.files, strict=True):
        stored = present.get(b)
        if stored is not None and stored != (str(f.sha256), f.size):
            raise InvalidManifest(
                f"file {f.path.value!r} claims blob {f.blake3} with sha256 {f.sha256} and size "
                f"{f.size}, but that blob is {stored[0]} with {stored[1]} bytes"
            )
    if require_held and not missing:
        # A digest is not a capability: the namespace must hold every blob
        # (its writer uploaded the bytes, or a live version of it uses them).
        missing = not_held(conn, ns, wanted, held_since)
    if missing:
        raise MissingBlobs(
            f"{len(missing)} referenced blob(s) are not in the store: upload them first", missing
        )
    namespaces.check_quota(
        conn, manifest.namespace, [(d, present[d][1]) for d in wanted], held_since, settings
    )
    if existing is not None:
        check_deletable(conn, [existing], now)
    signing.check_all(signatures, package, settings, now)
    return plan


def apply(conn: Connection, plans: Sequence[Plan]) -> list[CommitResult]:
    """Write prepared commits, in order, inside the transaction that prepared them.

    Their events are appended together (one statement per table for all):
    the group commit of ``services/commits.py`` writes a batch of them at once.
    """
    new = [p for p in plans if not p.done]
    # Their projection (``projection._commit``, ``_tag_moved``) only writes: pipelined.
    events = iter(append_all(conn, [(p.event, p.actor) for p in new], writes_only=True))
    out: list[CommitResult] = []
    for plan in plans:
        if plan.done:
            assert plan.existing is not None
            if plan.existing.digest == plan.sent.blake3:
                signing.add(conn, plan.existing, plan.signatures, plan.actor, plan.now)
            out.append(CommitResult(plan.existing, created=False))
            continue
        event, manifest = next(events), plan.manifest
        if plan.existing is not None:
            blobs = (str(f.blake3) for f in plan.existing.manifest.files)
            dereference(conn, blobs, plan.now)
        # What the projection just wrote, without reading and parsing it back.
        record = VersionRecord(
            id=event.seq,
            reference=Reference(manifest.namespace, manifest.name, version=manifest.version),
            digest=plan.sent.blake3,
            sha256=plan.sent.sha256,
            manifest=manifest,
            manifest_cbor=manifest.to_cbor(),
            committed_at=event.time,
            actor=plan.actor,
            size=manifest.total_size,
            file_count=len(manifest.files),
        )
        signing.add(conn, record, plan.signatures, plan.actor, plan.now)
        out.append(CommitResult(record, created=True))
    return out


def delete(
    conn: Connection, ref: Reference, actor: str, *, now: float | None = None
) -> VersionRecord:
    """Tombstone one live version (see :func:`delete_many`); ``now`` defaults to the clock."""
    record = get(conn, ref)
    delete_many(conn, [record], actor, now=time.time() if now is None else now)
    return record


@dataclass(frozen=True, slots=True)
class VersionKey:
    """What a deletion needs of a version, read without parsing its manifest."""

    id: int
    reference: Reference
    digest: Digest
    committed_at: str


def delete_many(
    conn: Connection,
    records: Sequence[VersionRecord | VersionKey],
    actor: str,
    *,
    now: float,
    cause: str | None = None,
) -> None:
    """Append ``package.deleted`` for each record, inside the caller's write transaction.

    The only code that deletes versions, so the protection check lives here:
    a legal hold or the retention lock on any record raises (LegalHold,
    RetentionLocked) before anything is appended. ``cause`` is recorded in
    the payload (``"retention"`` for deletions by retention apply).
    """
    check_deletable(conn, records, now)
    append_many(
        conn,
        [PackageDeleted(str(r.reference), r.id, str(r.digest), cause) for r in records],
        actor,
    )


def get_keys(conn: Connection, version_ids: Collection[int]) -> list[VersionKey]:
    """Live versions by id, in id order (ids that are not live are left out).

    Bulk deletion reads these instead of whole records: parsing 100,000
    manifests would cost more than everything else retention does.
    """
    v = t.versions
    ids = sorted(set(version_ids))
    out: list[VersionKey] = []
    for chunk in in_batches(ids):
        rows = conn.execute(
            select(v.c.id, v.c.namespace, v.c.name, v.c.version, v.c.digest, v.c.committed_at)
            .where(v.c.id.in_(chunk), v.c.deleted_seq.is_(None))
            .order_by(v.c.id)
        )
        out.extend(
            VersionKey(
                r.id,
                Reference.of(r.namespace, r.name, r.version),
                Digest.parse(r.digest),
                r.committed_at,
            )
            for r in rows
        )
    return out


def file_blobs(conn: Connection, version_ids: Collection[int]) -> set[str]:
    """The blobs (blake3) the files of these versions reference."""
    return values_in(conn, t.files.c.blake3, t.files.c.version_id, version_ids)
