"""Blob uploads: one-shot streams and resumable sessions (tus 1.0 underneath).

This service composes the session rows (``controlplane/uploads.py``, which
states the claim and offset rules), the staged bytes (``dataplane/uploads.py``)
and the recording of finished blobs. Completion hashes the staged bytes,
renews the GC lease, marks the session completed, promotes the staged object
to its content address with a rename, and only then records ``blob.stored``.
Concurrent uploads share their lease and record transactions (group commit).
One request's bytes into a session are a ``SessionAppend`` (``upload_appends.py``).

Sessions are bounded (issue 17): a token and a namespace hold at most
``max_open_uploads_per_actor`` and ``max_open_uploads_per_namespace`` open
sessions; every appended byte counts against the namespace's quota as it
arrives (a deferred length is never checked up front); a long ``PATCH``
records a durable offset every ``upload_checkpoint_bytes``, so a crash keeps
what reached the disk; and :meth:`UploadService.expire`, run on a timer by
``serve``, removes expired sessions' bytes and crash leftovers.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from artifactstore.controlplane import blobs as blob_records
from artifactstore.controlplane import namespaces
from artifactstore.controlplane import uploads as sessions
from artifactstore.controlplane.db.group import GroupCommit
from artifactstore.controlplane.gc import STAGING_MIN_AGE
from artifactstore.dataplane.blobs import BlobIngest, IngestBatch
from artifactstore.dataplane.staging import Staging
from artifactstore.dataplane.uploads import SessionHashers, StagedBody
from artifactstore.errors import (
    DigestMismatch,
    InvalidInput,
    LimitExceeded,
    MissingBlobs,
    QuotaExceeded,
    TooManyUploads,
    UploadClosed,
    UploadOffsetMismatch,
)
from artifactstore.model.identity import BlobDigests, Digest, Namespace
from artifactstore.model.records import Placement, UploadSession
from artifactstore.services.core import Core
from artifactstore.services.upload_appends import ClaimKeeper, SessionAppend

__all__ = [
    "BlobUpload",
    "SessionAppend",
    "UploadService",
]


@dataclass(frozen=True, slots=True)
class _Recording:
    """A published blob waiting for its ``blob.stored`` record."""

    digests: BlobDigests
    key: str
    actor: str
    namespace: str | None


def _checked(namespace: str | None) -> None:
    """Refuse a malformed namespace before anything is written (InvalidName): every later
    quota check parses it again and must not fail a group commit of others' uploads."""
    if namespace is not None:
        Namespace(namespace)


def _refusal(check: Callable[..., None], *args: Any) -> BaseException | None:
    """Run ``check(*args)``; the quota or missing-bytes refusal it raised, else None.

    Both are raised before anything is written, so the transaction goes on
    for the other blobs of a group commit.
    """
    try:
        check(*args)
    except (QuotaExceeded, MissingBlobs) as exc:
        return exc
    return None


class BlobUpload:
    """A one-shot upload: bytes streamed in, durable and recorded on :meth:`finish`."""

    def __init__(
        self,
        service: UploadService,
        limit: int,
        actor: str,
        namespace: str | None,
        expected: Digest | None = None,
    ) -> None:
        self._namespace = namespace
        self._service = service
        self._actor = actor
        self._limit = limit
        # Named before the bytes: on S3 they stream to the blob's own key (no copy).
        self._expected = expected
        # Opened by the first write, so that creating an upload does no I/O (the
        # server creates it on its event loop) and a small body costs one hop to
        # a worker thread, for its write and finish together.
        self._open: tuple[IngestBatch, BlobIngest] | None = None

    def _started(self) -> tuple[IngestBatch, BlobIngest]:
        if self._open is None:
            batch = self._service.plane.batch()
            self._open = batch, batch.begin(self._expected)
        return self._open

    def write(self, data: bytes | bytearray | memoryview) -> None:
        _, blob = self._started()
        if blob.size + len(data) > self._limit:
            self.cancel()
            raise LimitExceeded(f"upload is larger than the limit of {self._limit} bytes")
        blob.write(data)

    def finish(self, expected: Digest | None = None, last: bytes = b"") -> BlobDigests:
        """Write ``last`` (the tail of the body), then store and record the blob;
        ``expected`` defaults to the digest the upload was begun with."""
        expected = expected or self._expected
        if last:
            self.write(last)
        batch, blob = self._started()
        try:
            digests = blob.finish(expected)
            self._service.publish_batch(batch, digests, self._actor, self._namespace)
        except BaseException:
            batch.cancel()
            raise
        return digests

    def cancel(self) -> None:
        if self._open is not None:
            batch, blob = self._open
            blob.cancel()
            batch.cancel()


class UploadService:
    def __init__(
        self,
        core: Core,
        staging: Staging,
        on_stored: Callable[[BlobDigests, str], None] = lambda _d, _k: None,
    ) -> None:
        self._core = core
        self.db, self.plane, self.clock, self.actor = core.db, core.plane, core.clock, core.actor
        self.staging = staging
        self.ttl = core.settings.upload_ttl
        self.max_upload_bytes = core.settings.max_upload_bytes
        self.checkpoint_every = core.settings.upload_checkpoint_bytes
        self._on_stored = on_stored  # told of every blob an upload recorded
        self._hashers = SessionHashers(core.plane.pool)
        self._leases = GroupCommit(self._lease_batch)
        self._recorder = GroupCommit(self._record_batch)

    # --- one-shot -----------------------------------------------------------------------

    def begin_blob(
        self,
        actor: str | None = None,
        namespace: str | None = None,
        length: int | None = None,
    ) -> BlobUpload:
        """A one-shot upload into ``namespace`` (None: held by none until referenced);
        a known ``length`` that cannot fit the namespace's quota is refused before any byte."""
        self.check_room(namespace, length)
        return self.blob_upload(actor or self.actor, namespace)

    def blob_upload(
        self, actor: str, namespace: str | None, expected: Digest | None = None
    ) -> BlobUpload:
        """A one-shot upload whose room the caller checked (``check_room``); no I/O yet.
        ``expected``: the digest the bytes must have (checked at ``finish``)."""
        _checked(namespace)
        return BlobUpload(self, self.max_upload_bytes, actor, namespace, expected)

    def check_room(self, namespace: str | None, length: int | None) -> None:
        """Refuse a declared ``length`` that cannot fit the namespace's quota."""
        _checked(namespace)
        if namespace is not None and length is not None:
            with self.db.read() as conn:
                namespaces.check_room(conn, Namespace(namespace), length, self._core.held_since())

    def _check_quota(
        self, conn: Connection, namespace: str | None, blobs: Sequence[BlobDigests]
    ) -> None:
        if namespace is not None:
            sizes = [(str(d.blake3), d.size) for d in blobs]
            namespaces.check_quota(conn, Namespace(namespace), sizes, self._core.held_since())

    def publish_batch(
        self, batch: Any, digests: BlobDigests, actor: str, namespace: str | None
    ) -> None:
        rec = _Recording(digests, self.plane.key(digests), actor, namespace)
        self._leases.submit(rec)  # gc.py, step 1: the lease before the bytes are published
        batch.commit()
        self._record(rec)

    def _lease_batch(self, batch: Sequence[_Recording]) -> list[BaseException | None]:
        with self.db.write(durable=False) as conn:
            # A refused blob's bytes are not published: its lease is a spare one.
            errors: list[BaseException | None] = [
                _refusal(self._check_quota, conn, rec.namespace, [rec.digests]) for rec in batch
            ]
            blob_records.touch(conn, [r.key for r in batch], self.clock())
        return errors

    def _record(self, rec: _Recording) -> None:
        """Record ``blob.stored`` durably, in one transaction with concurrent uploads'."""
        self._recorder.submit(rec)
        self._on_stored(rec.digests, rec.key)

    def _record_batch(self, batch: Sequence[_Recording]) -> list[BaseException | None]:
        """One transaction; the blobs of one uploader and namespace in one call.

        A group that is refused (over the quota, or bytes collected meanwhile:
        both raised before anything is appended) is retried blob by blob, so
        only the blobs at fault fail.
        """
        errors: list[BaseException | None] = [None] * len(batch)
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i, rec in enumerate(batch):
            groups.setdefault((rec.actor, rec.namespace), []).append(i)
        with self.db.write() as conn:
            for (actor, namespace), members in groups.items():
                recs = [batch[i] for i in members]
                refused = _refusal(self._record_group, conn, actor, namespace, recs)
                if refused is None:
                    continue
                for i in members:
                    errors[i] = (
                        refused
                        if len(members) == 1
                        else _refusal(self._record_group, conn, actor, namespace, [batch[i]])
                    )
        return errors

    def _record_group(
        self, conn: Connection, actor: str, namespace: str | None, recs: Sequence[_Recording]
    ) -> None:
        # Again where the holding is recorded: a concurrent upload into the namespace
        # may have passed the first check and been recorded since. Refused here,
        # the published bytes have no record and GC removes them.
        self._check_quota(conn, namespace, [r.digests for r in recs])
        blob_records.record_stored(
            conn,
            [(r.digests, Placement(r.key)) for r in recs],
            self.plane.backend.properties.name,
            actor,
            exists=self._core.stored,
            now=self.clock(),
            namespace=namespace,
        )

    # --- sessions -----------------------------------------------------------------------

    def create(
        self, *, namespace: str | None, length: int | None, metadata: dict[str, str], actor: str
    ) -> UploadSession:
        _checked(namespace)
        if length is not None and not 0 <= length <= self.max_upload_bytes:
            limit = self.max_upload_bytes
            raise LimitExceeded(
                f"declared length {length} is over the upload limit of {limit} bytes"
            )
        self.check_room(namespace, length)
        upload_id = secrets.token_urlsafe(24)
        with self.db.write() as conn:
            self._check_open(conn, actor, namespace)
            sessions.create(
                conn,
                upload_id,
                namespace=namespace,
                actor=actor,
                now=self.clock(),
                ttl=self.ttl,
                length=length,
                metadata=metadata,
            )
        # The row exists before the staged object: expire() relies on that order.
        self.staging.create(upload_id)
        self._hashers.start(upload_id)
        return self.get(upload_id)

    def _check_open(self, conn: Connection, actor: str, namespace: str | None) -> None:
        """Refuse one more open session past the actor's or the namespace's cap."""
        settings = self._core.settings
        by_actor, by_namespace = sessions.count_open(
            conn, self.clock(), actor=actor, namespace=namespace
        )
        for held, cap, whose in (
            (by_actor, settings.max_open_uploads_per_actor, f"token {actor}"),
            (by_namespace, settings.max_open_uploads_per_namespace, f"namespace {namespace}"),
        ):
            if held >= cap:
                raise TooManyUploads(
                    f"{whose} already has {held} open upload sessions, the most it may hold: "
                    "complete or abort some (DELETE /v1/uploads/ID) or wait until they expire"
                )

    def _quota(self, conn: Connection, namespace: str | None) -> tuple[int, int] | None:
        """The namespace's (quota, used bytes), if it has a quota."""
        if namespace is None:
            return None
        ns = Namespace(namespace)
        quota = namespaces.get(conn, ns).quota_bytes
        if quota is None:
            return None
        return quota, namespaces.usage(conn, ns, self._core.held_since())

    def get(self, upload_id: str) -> UploadSession:
        with self.db.read() as conn:
            return sessions.get(conn, upload_id, self.clock())

    def begin_append(
        self, upload_id: str, offset: int, checksum: tuple[str, bytes] | None = None
    ) -> SessionAppend:
        """Claim the session for one request's bytes at ``offset``."""
        with self.db.write() as conn:
            session = sessions.claim(conn, upload_id, offset, self.clock())
            quota = self._quota(conn, session.namespace)
        try:
            if offset == 0 and self.staging.staged_size(upload_id) is None:
                # A crash between committing the session row and creating its
                # staged object leaves the row alone; nothing was acknowledged yet.
                self.staging.create(upload_id)
            sink = self.staging.append(upload_id, offset)
        except BaseException:
            self.release(upload_id, offset)
            raise
        limit = session.length if session.length is not None else self.max_upload_bytes
        body = StagedBody(
            sink,
            offset=offset,
            limit=limit,
            hasher=self._hashers.at(upload_id, offset),
            checksum=checksum,
        )
        # A body with a checksum is verified whole, so none of it is kept before its end.
        every = 0 if checksum is not None else self.checkpoint_every
        return SessionAppend(self, session, body, quota=quota, checkpoint_every=every)

    def declare_length(self, upload_id: str, length: int) -> None:
        """Fix a deferred length (tus ``Upload-Length`` on a later PATCH); once only."""
        session = self.get(upload_id)
        if session.length == length:
            return
        if session.length is not None:
            raise InvalidInput(f"upload {upload_id} already has length {session.length}")
        if not session.offset <= length <= self.max_upload_bytes:
            raise LimitExceeded(
                f"length {length} is below the offset {session.offset} or over the upload limit"
            )
        self.check_room(session.namespace, length)
        with self.db.write() as conn:
            sessions.set_length(conn, upload_id, length)

    def renew_claim(self, upload_id: str) -> None:
        """Extend a held claim's lease (a released claim stays released)."""
        with self.db.write() as conn:
            sessions.renew_claim(conn, upload_id, self.clock())

    def checkpoint(self, upload_id: str, offset: int) -> None:
        """Record ``offset`` (durable already) while the append holding the claim goes on."""
        with self.db.write() as conn:
            sessions.checkpoint(conn, upload_id, offset)

    def release(self, upload_id: str, offset: int, *, drop_hasher: bool = False) -> UploadSession:
        """Record the durable offset and end the claim."""
        if drop_hasher:
            self._hashers.drop([upload_id])
        with self.db.write() as conn:
            sessions.release(conn, upload_id, offset)
        return self.get(upload_id)

    def complete(self, upload_id: str, expected: Digest | None = None) -> BlobDigests:
        """Finalise a session into a blob; idempotent once completed."""
        session = self.get(upload_id)
        if session.complete and session.digest is not None:
            with self.db.read() as conn:
                rec = blob_records.find(conn, Digest.parse(session.digest))
            if rec is None:
                # Collected before its client completed the session (a grace period
                # shorter than the upload, gc.py step 4): as a one-shot upload
                # refused this way, ask for the bytes again.
                raise MissingBlobs(
                    f"upload {upload_id}'s blob was collected since; upload it again",
                    [session.digest],
                )
            if expected is not None and not rec.digests.matches(expected):
                raise DigestMismatch(
                    f"upload {upload_id} completed as {rec.digests.blake3}, not {expected}"
                )
            return rec.digests
        if session.length is not None and session.offset != session.length:
            raise UploadOffsetMismatch(
                f"upload {upload_id} has {session.offset} of its {session.length} bytes",
                session.offset,
            )
        # Claimed like an append (UploadBusy while one runs), so the bytes hashed
        # and moved are exactly the acknowledged ones. A claim only coordinates live
        # processes (a crash's lapses anyway): no flush of its own.
        try:
            with self.db.write(durable=False) as conn:
                sessions.claim(conn, upload_id, session.offset, self.clock())
        except UploadClosed:  # a concurrent completion won: answer as it did
            return self.complete(upload_id, expected)
        keeper = ClaimKeeper(self, upload_id)
        try:
            key, digests = self._finalise(session, expected)
        except BaseException:
            self.release(upload_id, session.offset)
            raise
        finally:
            keeper.stop()
        self.staging.promote(upload_id, key)
        # Over the quota here (a concurrent upload won the room), the session
        # stays completed without a blob.
        self._record(_Recording(digests, key, session.actor, session.namespace))
        return digests

    def _finalise(self, session: UploadSession, expected: Digest | None) -> tuple[str, BlobDigests]:
        """Hash a claimed session's bytes and mark it completed; its blob's key and digests."""
        if (self.staging.staged_size(session.id) or 0) > session.offset:
            # A crash mid-PATCH left bytes past the last checkpoint: not acknowledged.
            self.staging.append(session.id, session.offset).close()
        digests = self._hashers.digests(self.staging, session.id, session.offset)
        if expected is not None and not digests.matches(expected):
            raise DigestMismatch(
                f"uploaded bytes hash to {digests.get(expected.algorithm)}, expected {expected}"
            )
        key = self.plane.key(digests)
        with self.db.write() as conn:
            # Over the quota: the session stays open and its bytes staged (abort it).
            self._check_quota(conn, session.namespace, [digests])
            blob_records.touch(conn, [key], self.clock())
            sessions.mark_completed(conn, session.id, session.offset, str(digests.blake3))
        return key, digests

    def abort(self, upload_id: str) -> None:
        self.get(upload_id)
        with self.db.write() as conn:
            sessions.delete_session(conn, upload_id)
        self._hashers.drop([upload_id])
        self.staging.discard(upload_id)

    def expire(self, now: float | None = None) -> int:
        """Drop expired sessions, staged bytes no session owns, and the backends' staging
        files a crash left (older than STAGING_MIN_AGE); returns how many."""
        now = self.clock() if now is None else now
        # List staged objects before reading the sessions: a session's row is
        # committed before its staged object exists, so nothing listed here
        # can belong to a session the query below misses.
        staged = list(self.staging.staged_ids())
        with self.db.write() as conn:
            expired, open_ids = sessions.expire(conn, now)
        removed = 0
        for upload_id in staged:
            if upload_id not in open_ids:
                self.staging.discard(upload_id)
                removed += 1
        self._hashers.drop(expired)
        # The age GC's sweep never goes below: younger staging files may belong to a
        # write batch in progress (a push, a one-shot upload), older ones to a crash.
        leftovers = sum(backend.sweep_staging(STAGING_MIN_AGE) for backend in self.plane.backends)
        return max(removed, len(expired)) + leftovers
