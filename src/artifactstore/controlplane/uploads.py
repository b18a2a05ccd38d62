"""Upload sessions: their rows in ``upload_sessions`` and the rules those rows keep.

A session is operational state, not an event: it records who may append
where, at which acknowledged offset, and which request holds it now. The
rules that let several requests (and replicas) share one session safely:

* An append first *claims* the session: a short lease (``claimed_until``) in
  its row, so two concurrent appends never interleave bytes; the loser gets
  ``UploadBusy``. The holder renews the lease while its request runs, so a
  claim left by a killed process lapses within ``CLAIM_SECONDS``.
* The new offset is recorded (:func:`release`, and :func:`checkpoint` while a
  long request runs) only after the appended bytes are durable; bytes past the
  recorded offset are discarded by the next append. So a crash mid-request
  loses only what arrived since the last checkpoint.
* Completion claims the session too, so it never hashes or moves bytes that
  an append is still writing.
* A token (actor) and a namespace hold a bounded number of open sessions
  (:func:`count_open`, checked when one is created).
* A session is marked completed before its staged bytes move to their content
  address: a crash in between leaves a completed session without a blob (the
  client starts a new session), never an open one whose bytes are gone.

Every function runs in the caller's transaction. The bytes themselves are
the data plane's (``dataplane/staging.py``, ``dataplane/uploads.py``).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from artifactstore.controlplane.db import tables as t
from artifactstore.errors import UploadBusy, UploadClosed, UploadNotFound, UploadOffsetMismatch
from artifactstore.model.records import UploadSession

__all__ = [
    "CLAIM_SECONDS",
    "checkpoint",
    "claim",
    "count_open",
    "create",
    "delete_session",
    "expire",
    "get",
    "mark_completed",
    "release",
    "renew_claim",
    "set_length",
]

CLAIM_SECONDS = 15.0
"""Lease of a claim; renewed while its request runs, so only a dead holder's claim lapses."""

_S = t.upload_sessions


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


def _not_found(upload_id: str) -> UploadNotFound:
    return UploadNotFound(f"upload {upload_id[:64]} does not exist, was aborted or expired")


def create(
    conn: Connection,
    upload_id: str,
    *,
    namespace: str | None,
    actor: str,
    now: float,
    ttl: float,
    length: int | None,
    metadata: dict[str, str],
) -> None:
    """Insert an open session (before its staged object exists: ``expire`` relies on it)."""
    conn.execute(
        insert(_S).values(
            id=upload_id,
            namespace=namespace,
            actor=actor,
            created_at=now,
            expires_at=now + ttl,
            offset=0,
            length=length,
            upload_metadata=json.dumps(metadata, sort_keys=True),
            state="open",
            claimed_until=0.0,
            digest=None,
        )
    )


def count_open(
    conn: Connection, now: float, *, actor: str, namespace: str | None
) -> tuple[int, int]:
    """Open, unexpired sessions of ``actor`` and of ``namespace`` (0 for None)."""
    live = select(func.count()).where(_S.c.state == "open", _S.c.expires_at >= now)
    by_actor = conn.execute(live.where(_S.c.actor == actor)).scalar_one()
    by_namespace = (
        0
        if namespace is None
        else conn.execute(live.where(_S.c.namespace == namespace)).scalar_one()
    )
    return by_actor, by_namespace


def get(conn: Connection, upload_id: str, now: float) -> UploadSession:
    """The live session; UploadNotFound when absent, aborted or expired."""
    row = conn.execute(select(_S).where(_S.c.id == upload_id)).first()
    if row is None or row.expires_at < now:
        raise _not_found(upload_id)
    return _session(row)


def claim(conn: Connection, upload_id: str, offset: int, now: float) -> UploadSession:
    """Claim an open session for one request's bytes at ``offset`` (the acknowledged size)."""
    row = conn.execute(select(_S).where(_S.c.id == upload_id).with_for_update()).first()
    if row is None or row.expires_at < now:
        raise _not_found(upload_id)
    if row.state != "open":
        raise UploadClosed(f"upload {upload_id} is already completed")
    if row.claimed_until > now:
        raise UploadBusy(f"another request is appending to upload {upload_id}: retry later")
    if row.offset != offset:
        raise UploadOffsetMismatch(
            f"upload {upload_id} is at offset {row.offset}, not {offset}", row.offset
        )
    conn.execute(update(_S).where(_S.c.id == upload_id).values(claimed_until=now + CLAIM_SECONDS))
    return _session(row)


def renew_claim(conn: Connection, upload_id: str, now: float) -> None:
    """Extend a held claim's lease (a released claim stays released)."""
    conn.execute(
        update(_S)
        .where(_S.c.id == upload_id, _S.c.claimed_until > 0)
        .values(claimed_until=now + CLAIM_SECONDS)
    )


def release(conn: Connection, upload_id: str, offset: int) -> None:
    """Record the durable offset and end the claim."""
    conn.execute(update(_S).where(_S.c.id == upload_id).values(offset=offset, claimed_until=0.0))


def checkpoint(conn: Connection, upload_id: str, offset: int) -> None:
    """Record a durable offset while the claim goes on (a request still appending)."""
    conn.execute(
        update(_S)
        .where(_S.c.id == upload_id, _S.c.state == "open", _S.c.claimed_until > 0)
        .values(offset=offset)
    )


def set_length(conn: Connection, upload_id: str, length: int) -> None:
    """Fix a deferred length; a session that has one keeps it."""
    conn.execute(
        update(_S).where(_S.c.id == upload_id, _S.c.length.is_(None)).values(length=length)
    )


def mark_completed(conn: Connection, upload_id: str, size: int, blake3: str) -> None:
    """Close the session as the blob ``blake3`` (before its staged bytes move); ends the
    claim completion held."""
    conn.execute(
        update(_S)
        .where(_S.c.id == upload_id)
        .values(state="completed", length=size, digest=blake3, claimed_until=0.0)
    )


def delete_session(conn: Connection, upload_id: str) -> None:
    conn.execute(delete(_S).where(_S.c.id == upload_id))


def expire(conn: Connection, now: float) -> tuple[list[str], set[str]]:
    """Delete expired sessions; return their ids and the ids of the sessions still open."""
    expired = [r.id for r in conn.execute(select(_S.c.id).where(_S.c.expires_at < now))]
    if expired:
        conn.execute(delete(_S).where(_S.c.id.in_(expired)))
    open_ids = {r.id for r in conn.execute(select(_S.c.id).where(_S.c.state == "open"))}
    return expired, open_ids
