"""Blob uploads: one-shot streams and resumable sessions (tus 1.0 underneath).

Sessions live in the ``upload_sessions`` table and their bytes in the
backend's staging capability, so a session survives a restart and can be
continued by another replica. The rules that make that safe:

* An append first *claims* the session (a short-lived lease in its row), so
  two concurrent appends to one session never interleave bytes; the loser
  gets ``UploadBusy``. The holder renews the lease every ``CLAIM_RENEW``
  seconds from a keeper thread for as long as its request runs, so a claim
  left by a killed process lapses within ``CLAIM_SECONDS`` and the client
  can resume soon after a crash.
* The new offset is recorded only after the appended bytes are durable;
  bytes past the recorded offset are discarded by the next append.
* Completion hashes the staged bytes (reusing the in-memory hasher when this
  process saw every byte in order, else re-reading them), renews the GC lease,
  promotes the staged object to its content address with a rename, and only
  then records ``blob.stored``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from artifactstore.controlplane import blobs as blob_records
from artifactstore.controlplane import namespaces
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.db.group import GroupCommit
from artifactstore.controlplane.eventlog import utc_iso
from artifactstore.dataplane.blobs import BlobIngest, DataPlane, IngestBatch, Placement
from artifactstore.dataplane.digests import DualHasher
from artifactstore.dataplane.staging import StagedAppend, Staging
from artifactstore.errors import (
    ChecksumMismatch,
    DigestMismatch,
    InvalidInput,
    LimitExceeded,
    MissingBlobs,
    QuotaExceeded,
    StorageError,
    UploadBusy,
    UploadClosed,
    UploadNotFound,
    UploadOffsetMismatch,
)
from artifactstore.model.identity import BlobDigests, Digest

__all__ = ["BlobUpload", "SessionAppend", "UploadService", "UploadSession"]

CLAIM_SECONDS = 15.0
"""Lease of a claim; renewed while its request runs, so only a dead holder's claim lapses."""
CLAIM_RENEW = 3.0
"""How often a live claim is renewed."""


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


def _session(row: Any) -> UploadSession:
    return UploadSession(
        id=row.id,
        namespace=row.namespace,
        actor=row.actor,
        created_at=row.created_at,
        expires_at=row.expires_at,
        offset=row.offset,
        length=row.length,
        metadata=json.loads(row.upload_metadata),
        state=row.state,
        digest=row.digest,
    )


@dataclass(frozen=True, slots=True)
class _Recording:
    """A published blob waiting for its ``blob.stored`` record."""

    digests: BlobDigests
    key: str
    actor: str
    namespace: str | None


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
        self, service: UploadService, limit: int, actor: str, namespace: str | None
    ) -> None:
        self._namespace = namespace
        self._service = service
        self._actor = actor
        self._limit = limit
        # Opened by the first write, so that creating an upload does no I/O (the
        # server creates it on its event loop) and a small body costs one hop to
        # a worker thread, for its write and finish together.
        self._open: tuple[IngestBatch, BlobIngest] | None = None

    def _started(self) -> tuple[IngestBatch, BlobIngest]:
        if self._open is None:
            batch = self._service.plane.batch()
            self._open = batch, batch.begin()
        return self._open

    def write(self, data: bytes | bytearray | memoryview) -> None:
        _, blob = self._started()
        if blob.size + len(data) > self._limit:
            self.cancel()
            raise LimitExceeded(f"upload is larger than the limit of {self._limit} bytes")
        blob.write(data)

    def finish(self, expected: Digest | None = None, last: bytes = b"") -> BlobDigests:
        """Write ``last`` (the tail of the body), then store and record the blob."""
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


class _ClaimKeeper:
    """Renews one session's claim every CLAIM_RENEW seconds until stopped.

    It stops by itself once its append is gone without finish() or abort()
    (a cancelled request), so such a claim still lapses.
    """

    def __init__(self, service: UploadService, upload_id: str, owner: SessionAppend) -> None:
        self._service = service
        self._upload_id = upload_id
        self._owner = weakref.ref(owner)
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"upload-claim-{upload_id[:8]}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(CLAIM_RENEW) and self._owner() is not None:
            with contextlib.suppress(Exception):  # a missed renewal is retried next round
                self._service.renew_claim(self._upload_id)

    def stop(self) -> None:
        self._stopped.set()


class SessionAppend:
    """One request's bytes appended to a session; see the module docstring."""

    def __init__(
        self,
        service: UploadService,
        session: UploadSession,
        sink: StagedAppend,
        hasher: DualHasher | None,
        checksum: tuple[str, bytes] | None,
    ) -> None:
        self._service = service
        self.session = session
        self._sink = sink
        self._hasher = hasher
        self._checksum = checksum
        self._body_hash = hashlib.new(checksum[0]) if checksum else None
        self.written = 0
        self._limit = session.length if session.length is not None else service.max_upload_bytes
        self._keeper = _ClaimKeeper(service, session.id, self)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.session.offset + self.written + len(data) > self._limit:
            raise LimitExceeded(
                f"appending {len(data)} bytes at offset {self.session.offset + self.written} "
                f"passes the upload's length of {self._limit} bytes"
            )
        self._sink.write(data)
        if self._hasher is not None:
            self._hasher.update(bytes(data))
        if self._body_hash is not None:
            self._body_hash.update(data)
        self.written += len(data)

    def finish(self) -> UploadSession:
        """Flush, check the body checksum, record the new offset; complete when full."""
        self._keeper.stop()
        size = self._sink.close()
        checksum, body_hash = self._checksum, self._body_hash
        if checksum is not None and body_hash is not None and body_hash.digest() != checksum[1]:
            self._service.release(self.session.id, self.session.offset, drop_hasher=True)
            raise ChecksumMismatch(
                f"the request body does not match its {checksum[0]} Upload-Checksum; "
                f"the upload stays at offset {self.session.offset}"
            )
        session = self._service.release(self.session.id, size)
        if session.length is not None and session.offset == session.length:
            self._service.complete(session.id)
            session = self._service.get(session.id)
        return session

    def abort(self) -> UploadSession:
        """The request broke off: keep (and acknowledge) what arrived, as tus asks."""
        self._keeper.stop()
        try:
            size = self._sink.abort()
        except StorageError:
            return self._service.release(self.session.id, self.session.offset, drop_hasher=True)
        drop = self._checksum is not None  # unverifiable partial body: discard it
        return self._service.release(
            self.session.id, self.session.offset if drop else size, drop_hasher=drop
        )


class UploadService:
    def __init__(
        self,
        db: Database,
        plane: DataPlane,
        staging: Staging,
        *,
        actor: str,
        ttl: float,
        max_upload_bytes: int,
        grace: float,
        on_stored: Callable[[BlobDigests, str], None] = lambda _d, _k: None,
    ) -> None:
        self.db = db
        self.grace = grace
        self._on_stored = on_stored  # told of every blob an upload recorded
        self.plane = plane
        self.staging = staging
        self.actor = actor
        self.ttl = ttl
        self.max_upload_bytes = max_upload_bytes
        self._hashers: dict[str, DualHasher] = {}
        self._lock = threading.Lock()
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

    def blob_upload(self, actor: str, namespace: str | None) -> BlobUpload:
        """A one-shot upload whose room the caller checked (``check_room``); no I/O yet."""
        return BlobUpload(self, self.max_upload_bytes, actor, namespace)

    def _since(self) -> str:
        return utc_iso(time.time() - self.grace)

    def check_room(self, namespace: str | None, length: int | None) -> None:
        """Refuse a declared ``length`` that cannot fit the namespace's quota."""
        if namespace is not None and length is not None:
            with self.db.read() as conn:
                namespaces.check_room(conn, namespace, length, self._since())

    def _check_quota(
        self, conn: Connection, namespace: str | None, blobs: Sequence[BlobDigests]
    ) -> None:
        if namespace is not None:
            namespaces.check_quota(
                conn, namespace, [(str(d.blake3), d.size) for d in blobs], self._since()
            )

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
            blob_records.touch(conn, [r.key for r in batch], time.time())
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
            exists=self._stored,
            now=time.time(),
            namespace=namespace,
        )

    def _stored(self, key: str) -> bool:
        return self.plane.stat(key) is not None

    # --- sessions -----------------------------------------------------------------------

    def create(
        self, *, namespace: str | None, length: int | None, metadata: dict[str, str], actor: str
    ) -> UploadSession:
        if length is not None and not 0 <= length <= self.max_upload_bytes:
            limit = self.max_upload_bytes
            raise LimitExceeded(
                f"declared length {length} is over the upload limit of {limit} bytes"
            )
        self.check_room(namespace, length)
        upload_id = secrets.token_urlsafe(24)
        now = time.time()
        with self.db.write() as conn:
            conn.execute(
                insert(t.upload_sessions).values(
                    id=upload_id,
                    namespace=namespace,
                    actor=actor,
                    created_at=now,
                    expires_at=now + self.ttl,
                    offset=0,
                    length=length,
                    upload_metadata=json.dumps(metadata, sort_keys=True),
                    state="open",
                    claimed_until=0.0,
                    digest=None,
                )
            )
        # The row exists before the staged object: expire() relies on that order.
        self.staging.create(upload_id)
        with self._lock:
            self._hashers[upload_id] = DualHasher(self.plane.pool)
        return self.get(upload_id)

    def get(self, upload_id: str) -> UploadSession:
        with self.db.read() as conn:
            row = conn.execute(
                select(t.upload_sessions).where(t.upload_sessions.c.id == upload_id)
            ).first()
        if row is None or row.expires_at < time.time():
            raise UploadNotFound(f"upload {upload_id[:64]} does not exist, was aborted or expired")
        return _session(row)

    def begin_append(
        self, upload_id: str, offset: int, checksum: tuple[str, bytes] | None = None
    ) -> SessionAppend:
        """Claim the session for one request's bytes at ``offset``."""
        now = time.time()
        with self.db.write() as conn:
            row = conn.execute(
                select(t.upload_sessions)
                .where(t.upload_sessions.c.id == upload_id)
                .with_for_update()
            ).first()
            if row is None or row.expires_at < now:
                raise UploadNotFound(
                    f"upload {upload_id[:64]} does not exist, was aborted or expired"
                )
            if row.state != "open":
                raise UploadClosed(f"upload {upload_id} is already completed")
            if row.claimed_until > now:
                raise UploadBusy(f"another request is appending to upload {upload_id}: retry later")
            if row.offset != offset:
                raise UploadOffsetMismatch(
                    f"upload {upload_id} is at offset {row.offset}, not {offset}", row.offset
                )
            conn.execute(
                update(t.upload_sessions)
                .where(t.upload_sessions.c.id == upload_id)
                .values(claimed_until=now + CLAIM_SECONDS)
            )
            session = _session(row)
        try:
            if offset == 0 and self.staging.staged_size(upload_id) is None:
                # A crash between committing the session row and creating its
                # staged object leaves the row alone; nothing was acknowledged yet.
                self.staging.create(upload_id)
            sink = self.staging.append(upload_id, offset)
        except BaseException:
            self.release(upload_id, offset)
            raise
        with self._lock:
            hasher = self._hashers.get(upload_id)
            if hasher is not None and hasher.size != offset:
                hasher = None
                self._hashers.pop(upload_id, None)
        return SessionAppend(self, session, sink, hasher, checksum)

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
            conn.execute(
                update(t.upload_sessions)
                .where(t.upload_sessions.c.id == upload_id, t.upload_sessions.c.length.is_(None))
                .values(length=length)
            )

    def renew_claim(self, upload_id: str) -> None:
        """Extend a held claim's lease (a released claim stays released)."""
        with self.db.write() as conn:
            conn.execute(
                update(t.upload_sessions)
                .where(
                    t.upload_sessions.c.id == upload_id,
                    t.upload_sessions.c.claimed_until > 0,
                )
                .values(claimed_until=time.time() + CLAIM_SECONDS)
            )

    def release(self, upload_id: str, offset: int, *, drop_hasher: bool = False) -> UploadSession:
        """Record the durable offset and end the claim."""
        if drop_hasher:
            with self._lock:
                self._hashers.pop(upload_id, None)
        with self.db.write() as conn:
            conn.execute(
                update(t.upload_sessions)
                .where(t.upload_sessions.c.id == upload_id)
                .values(offset=offset, claimed_until=0.0)
            )
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
        with self._lock:
            hasher = self._hashers.pop(upload_id, None)
        if hasher is None or hasher.size != session.offset:
            hasher = DualHasher(self.plane.pool)
            for chunk in self.staging.read_staged(upload_id):
                hasher.update(chunk)
        digests = hasher.result()
        if digests.size != session.offset:
            raise StorageError(
                f"upload {upload_id} staged {digests.size} bytes but acknowledged {session.offset}"
            )
        if expected is not None and not digests.matches(expected):
            raise DigestMismatch(
                f"uploaded bytes hash to {digests.get(expected.algorithm)}, expected {expected}"
            )
        key = self.plane.key(digests)
        with self.db.write() as conn:
            # Over the quota: the session stays open and its bytes staged (abort it).
            self._check_quota(conn, session.namespace, [digests])
            blob_records.touch(conn, [key], time.time())
            # Closed before the staged bytes move: a crash after this leaves a
            # completed session (the client starts a new one), never an open
            # session whose staged bytes were already renamed away.
            conn.execute(
                update(t.upload_sessions)
                .where(t.upload_sessions.c.id == upload_id)
                .values(state="completed", length=session.offset, digest=str(digests.blake3))
            )
        self.staging.promote(upload_id, key)
        # Over the quota here (a concurrent upload won the room), the session
        # stays completed without a blob.
        self._record(_Recording(digests, key, session.actor, session.namespace))
        return digests

    def abort(self, upload_id: str) -> None:
        self.get(upload_id)
        with self.db.write() as conn:
            conn.execute(delete(t.upload_sessions).where(t.upload_sessions.c.id == upload_id))
        with self._lock:
            self._hashers.pop(upload_id, None)
        self.staging.discard(upload_id)

    def expire(self, now: float | None = None) -> int:
        """Drop expired sessions and staged bytes no session owns; returns how many."""
        now = time.time() if now is None else now
        # List staged objects before reading the sessions: a session's row is
        # committed before its staged object exists, so nothing listed here
        # can belong to a session the query below misses.
        staged = list(self.staging.staged_ids())
        with self.db.write() as conn:
            expired = [
                r.id
                for r in conn.execute(
                    select(t.upload_sessions.c.id).where(t.upload_sessions.c.expires_at < now)
                )
            ]
            if expired:
                conn.execute(delete(t.upload_sessions).where(t.upload_sessions.c.id.in_(expired)))
            open_ids = {
                r.id
                for r in conn.execute(
                    select(t.upload_sessions.c.id).where(t.upload_sessions.c.state == "open")
                )
            }
        removed = 0
        for upload_id in staged:
            if upload_id not in open_ids:
                self.staging.discard(upload_id)
                removed += 1
        with self._lock:
            for upload_id in expired:
                self._hashers.pop(upload_id, None)
        return max(removed, len(expired))

    def open_count(self) -> int:
        with self.db.read() as conn:
            return len(
                conn.execute(
                    select(t.upload_sessions.c.id).where(t.upload_sessions.c.state == "open")
                ).all()
            )
