"""What ``verify`` must re-read: each recorded blob with its storage location, and the
damage the records alone show (a version pointing at a blob nobody recorded)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Select, select

from artifactstore.controlplane.db import tables as t
from artifactstore.model.identity import BlobDigests, Digest

__all__ = ["BlobToCheck", "blobs_to_check", "unrecorded_references"]


@dataclass(frozen=True, slots=True)
class BlobToCheck:
    digests: BlobDigests
    #: None: the blob is recorded but has no storage location (damage).
    key: str | None
    backend: str | None
    pack_offset: int | None


def _with_locations() -> Select[tuple[str, str, int, str | None, str | None, int | None]]:
    loc = t.storage_locations
    return select(
        t.blobs.c.blake3, t.blobs.c.sha256, t.blobs.c.size, loc.c.key, loc.c.backend,
        loc.c.pack_offset,
    ).outerjoin(loc, loc.c.blake3 == t.blobs.c.blake3)  # fmt: skip


def blobs_to_check(conn: Connection, blake3s: Sequence[str] | None = None) -> list[BlobToCheck]:
    """Every recorded blob (or those of ``blake3s`` that are recorded), by digest."""
    query = _with_locations().order_by(t.blobs.c.blake3)
    if blake3s is not None:
        query = query.where(t.blobs.c.blake3.in_(sorted(blake3s)))
    return [
        BlobToCheck(
            BlobDigests(Digest.parse(r.blake3), Digest.parse(r.sha256), r.size),
            r.key,
            r.backend,
            r.pack_offset,
        )
        for r in conn.execute(query)
    ]


def unrecorded_references(conn: Connection) -> list[tuple[str, str]]:
    """(blake3, ``ns/name:version``) for each file whose blob is not recorded."""
    rows = conn.execute(
        select(t.files.c.blake3, t.versions.c.namespace, t.versions.c.name, t.versions.c.version)
        .join(t.versions, t.versions.c.id == t.files.c.version_id)
        .where(~select(t.blobs.c.blake3).where(t.blobs.c.blake3 == t.files.c.blake3).exists())
    )
    return [(r.blake3, f"{r.namespace}/{r.name}:{r.version}") for r in rows]
