"""Namespace settings and byte quotas (docs/retention.md#quotas).

Settings are one JSON document per namespace, replaced whole by
``namespace.updated``: ``anonymous_read``, ``quota_bytes`` and
``movable_tags`` (version names such as ``latest`` that a push may move).

**Usage** is what a quota limits: the bytes of the distinct blobs the
namespace holds, each counted once however many versions share it. A
namespace holds a blob while a live version references it or while the
grace period of its upload into the namespace runs (the same rule as blob
visibility, ``blobs.not_held``): bytes uploaded for a push that has not
committed yet already count, so two concurrent pushes cannot both slip under
the limit. Deleting a version frees its bytes once they are neither
referenced nor recently uploaded.

**Enforcement** happens at three points, each inside a write transaction that
first takes the event log's append lock, so concurrent checks on any database see each
other's effects: before a blob is recorded for the namespace (a local push,
an upload's completion), and when a manifest is committed (an admin may
commit blobs the namespace did not upload). Uploads with a declared length
are also refused at creation, before any byte arrives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, func, select, union

from artifactstore.controlplane.blobs import lock_rows, not_held
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.eventlog import append
from artifactstore.controlplane.protection import (
    serialise,
)
from artifactstore.errors import QuotaExceeded
from artifactstore.model.events import NamespaceUpdated
from artifactstore.model.identity import Namespace
from artifactstore.model.records import NamespaceSettings

__all__ = [
    "anonymous",
    "check_quota",
    "check_room",
    "get",
    "movable_tags",
    "put",
    "usage",
    "usage_by_namespace",
]


def _all(conn: Connection, names: Iterable[str] | None = None) -> dict[str, NamespaceSettings]:
    query = select(t.namespaces.c.name, t.namespaces.c.settings)
    if names is not None:
        query = query.where(t.namespaces.c.name.in_(sorted(set(names))))
    return {
        r.name: NamespaceSettings.from_json(json.loads(r.settings)) for r in conn.execute(query)
    }


def get(conn: Connection, namespace: Namespace) -> NamespaceSettings:
    name = str(namespace)
    return _all(conn, [name]).get(name, NamespaceSettings())


def put(
    conn: Connection, namespace: Namespace, settings: NamespaceSettings, actor: str
) -> NamespaceSettings:
    append(conn, NamespaceUpdated(str(namespace), settings.to_json()), actor)
    return settings


def anonymous(conn: Connection) -> set[str]:
    """Namespaces whose packages anyone may read."""
    return {name for name, s in _all(conn).items() if s.anonymous_read}


def movable_tags(conn: Connection, namespaces: Iterable[str] | None = None) -> dict[str, set[str]]:
    """Each namespace's movable tags (namespaces without any are left out)."""
    return {
        name: set(s.movable_tags) for name, s in _all(conn, namespaces).items() if s.movable_tags
    }


def _held(held_since: str) -> Any:
    """(namespace, blake3) of every holding: live references and recent uploads."""
    live = (
        select(t.versions.c.namespace, t.files.c.blake3)
        .join(t.files, t.files.c.version_id == t.versions.c.id)
        .where(t.versions.c.deleted_seq.is_(None))
    )
    recent = select(t.namespace_blobs.c.namespace, t.namespace_blobs.c.blake3).where(
        t.namespace_blobs.c.held_at >= held_since
    )
    return union(live, recent).subquery()


def usage(conn: Connection, namespace: Namespace, held_since: str) -> int:
    """Bytes of the distinct blobs ``namespace`` holds (see the module docstring)."""
    held = _held(held_since)
    total = conn.execute(
        select(func.coalesce(func.sum(t.blobs.c.size), 0))
        .select_from(held)
        .join(t.blobs, t.blobs.c.blake3 == held.c.blake3)
        .where(held.c.namespace == str(namespace))
    ).scalar_one()
    return int(total)


def usage_by_namespace(conn: Connection, held_since: str) -> dict[str, tuple[int, int | None]]:
    """(used bytes, quota) of every namespace that holds something or has settings."""
    held = _held(held_since)
    used = {
        r.namespace: int(r.total)
        for r in conn.execute(
            select(held.c.namespace, func.sum(t.blobs.c.size).label("total"))
            .select_from(held)
            .join(t.blobs, t.blobs.c.blake3 == held.c.blake3)
            .group_by(held.c.namespace)
        )
    }
    settings = _all(conn)
    return {
        name: (used.get(name, 0), settings[name].quota_bytes if name in settings else None)
        for name in sorted(set(used) | set(settings))
    }


def _refuse(namespace: Namespace, quota: int, used: int, adding: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"namespace {namespace} holds {used} of its {quota} bytes; {adding} more would exceed "
        "its quota: delete versions (then 'artifactstore gc') or raise the quota with "
        f"'artifactstore namespace set {namespace} --quota BYTES'",
        quota_bytes=quota,
        used_bytes=used,
    )


def check_room(conn: Connection, namespace: Namespace, adding: int, held_since: str) -> None:
    """Refuse ``adding`` more bytes when they cannot fit (an upload's declared length)."""
    quota = get(conn, namespace).quota_bytes
    if quota is None or adding == 0:
        return
    used = usage(conn, namespace, held_since)
    if used + adding > quota:
        raise _refuse(namespace, quota, used, adding)


def check_quota(
    conn: Connection,
    namespace: Namespace,
    blobs: Sequence[tuple[str, int]],
    held_since: str,
    settings: NamespaceSettings | None = None,
) -> None:
    """Inside a write transaction: refuse if holding ``blobs`` (blake3, size) would exceed
    the quota. Blobs the namespace already holds add nothing, each blob counts once.
    ``settings``: the namespace's, if the caller read them in this transaction."""
    quota = (get(conn, namespace) if settings is None else settings).quota_bytes
    if quota is None:
        return
    sizes = dict(blobs)
    # Locks in GC's order, blob rows before the chain head, so that the two never
    # wait on each other in opposite orders (PostgreSQL).
    lock_rows(conn, sizes)
    serialise(conn)
    adding = sum(sizes[b] for b in not_held(conn, str(namespace), sizes, held_since))
    if adding == 0:
        return
    used = usage(conn, namespace, held_since)
    if used + adding > quota:
        raise _refuse(namespace, quota, used, adding)
