"""Queries over live versions: filters, order, keyset pagination and the plan's shape.

Two orders, both newest first. Without a time bound, by version id (the log's
seq): the namespace index ``(namespace, id)`` or the primary key serves it. With
``created_after``/``created_before``, by ``(committed_at, id)``: the time indexes
``(committed_at, id)`` and ``(namespace, committed_at, id)`` then give a range and
its order at once, so a page reads a page of rows, however far back the range
lies (ordering such a range by id made PostgreSQL walk the id index back through
months, and SQLite sort every version of the range).

A metadata filter has two plans, and the planners cannot tell which pays: neither
keeps statistics of a key/value pair. When few versions hold some pair, collect
them all through its index (GIN on PostgreSQL, ``version_meta``'s on SQLite) and
sort them; when many do, walk the order index newest first and test each row,
which stops after about ``limit / share`` rows. One capped count on
``version_meta``'s covering index decides, before the query (see :func:`_collect`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Mapping
from math import isqrt
from typing import Any, Unpack

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    and_,
    cast,
    exists,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy import Select as SelectT
from sqlalchemy.dialects.postgresql import JSONB

from artifactstore.controlplane.db import tables as t
from artifactstore.errors import InvalidInput
from artifactstore.model.identity import Digest, Namespace, PackageName, Reference
from artifactstore.model.manifest import Manifest
from artifactstore.model.records import QueryArgs
from artifactstore.model.versions import Page, VersionRecord

__all__ = ["query", "query_statement", "record_of"]

#: The fewest versions a pair's count is allowed to stop at: below, collecting is cheap.
_MIN_CAP = 200
_TIME = re.compile(r"[0-9T:.Z+-]{1,32}")
#: ASCII digits only: ``str.isdigit`` also takes "²", which ``int`` refuses.
_ID = re.compile(r"[0-9]{1,18}")


def record_of(r: Any) -> VersionRecord:
    """A row of ``versions`` as a typed record (the manifest bytes are authoritative)."""
    manifest = Manifest.from_cbor(r.manifest)
    return VersionRecord(
        id=r.id,
        reference=Reference(manifest.namespace, manifest.name, version=manifest.version),
        digest=Digest.parse(r.digest),
        sha256=Digest.parse(r.sha256),
        manifest=manifest,
        manifest_cbor=r.manifest,
        committed_at=r.committed_at,
        actor=r.actor,
        size=r.size,
        file_count=r.file_count,
    )


def query(
    conn: Connection, namespaces: Collection[str] | None = None, **args: Unpack[QueryArgs]
) -> Page[VersionRecord]:
    """Live versions, newest first, keyset-paginated (see the module's docstring).

    ``namespaces`` restricts the answer to those the caller may read (None: all).
    """
    limit = args.get("limit", 100)
    if conn.dialect.name == "postgresql":
        # A page reads about a page of rows: parallel workers never pay (at 1,000,000
        # versions PostgreSQL chose two for a common key, and starting them cost 6 ms
        # of a 15 ms query). For this transaction only.
        conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
    rows = conn.execute(query_statement(conn, namespaces, **args)).all()
    items = [record_of(r) for r in rows[:limit]]
    if len(rows) <= limit or not items:
        return Page(items, None)
    last = items[-1]
    timed = _timed(args)
    return Page(items, _encode_cursor(last.id, last.committed_at if timed else None))


def query_statement(
    conn: Connection, namespaces: Collection[str] | None = None, **args: Unpack[QueryArgs]
) -> SelectT[Any]:
    """The SELECT of :func:`query` (one row more than the limit: is there a next page?);
    apart so that a test can ask the engine for its plan."""
    limit = args.get("limit", 100)
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    v = t.versions.c
    q = select(t.versions).where(v.deleted_seq.is_(None))
    if namespace := args.get("namespace"):
        q = q.where(v.namespace == str(Namespace(namespace)))
    if namespaces is not None:
        q = q.where(v.namespace.in_(sorted(namespaces)))
    if name := args.get("name"):
        q = q.where(v.name == str(PackageName(name)))
    if (variant := args.get("variant")) is not None:
        q = q.where(v.variant == variant)
    if (created_after := args.get("created_after")) is not None:
        q = q.where(v.committed_at > created_after)
    if (created_before := args.get("created_before")) is not None:
        q = q.where(v.committed_at < created_before)
    timed = _timed(args)
    order: tuple[ColumnElement[Any], ...] = (v.committed_at.desc(), v.id.desc())
    where = args.get("where")
    if where and timed:
        q = q.where(_metadata_matches(conn, where, collect=_collect(conn, where, limit)))
    elif where:
        q, order = _driven_by_pair(conn, q, where)
    elif not timed:
        order = (v.id.desc(),)
    if cursor := args.get("cursor"):
        at, last = _decode_cursor(cursor, timed=timed)
        q = q.where(tuple_(v.committed_at, v.id) < tuple_(at, last) if at else v.id < last)
    return q.order_by(*order).limit(limit + 1)


def _driven_by_pair(
    conn: Connection, q: SelectT[Any], where: Mapping[str, str]
) -> tuple[SelectT[Any], tuple[ColumnElement[Any], ...]]:
    """Id order with a metadata filter: walk one pair's entries of ``version_meta``'s
    covering index ``(key, value, version_id)`` backwards (newest first, no sort) and
    fetch each version by its id, until a page has passed the other filters.

    A rare pair ends the walk after its few entries, a common one after about
    ``limit`` divided by the share of its versions the other filters keep: never more
    than collecting every version that holds it and sorting them, and without the
    statistics neither engine keeps of a key/value pair. The other pairs are tested
    per row. (The pair that drives is the first by key: which is rarer is unknown.)
    """
    (key, value), *rest = sorted(where.items())
    driver = t.version_meta.alias("driver")
    q = q.join(
        driver,
        # ``+ 0``: a merge join could walk the primary key instead (PostgreSQL picks it
        # when the namespace's rows look evenly spread), reading every namespace.
        and_(
            t.versions.c.id == driver.c.version_id + 0, driver.c.key == key, driver.c.value == value
        ),
    )
    if rest:
        q = q.where(_metadata_matches(conn, dict(rest), collect=False))
    return q, (driver.c.version_id.desc(),)


def _timed(args: QueryArgs) -> bool:
    """Is the query ordered by commit time (it has a time bound)?"""
    return args.get("created_after") is not None or args.get("created_before") is not None


def _collect(conn: Connection, where: Mapping[str, str], limit: int) -> bool:
    """Collect-and-sort (True) or walk-and-test (False)?

    Walking finds a page after about ``limit * N / M`` rows when M of N versions hold
    the pair; collecting reads all M. They cost the same near ``M = sqrt(limit * N)``:
    collect if some pair is held by fewer, which a count stopping there tells, read
    from ``version_meta``'s covering index (at most that many entries). ``max(id)``
    stands for N (one index probe). A pair common overall but rare in the asked
    namespace makes the walk read that whole namespace: the price of deciding
    without per-namespace statistics.
    """
    newest = conn.execute(select(func.max(t.versions.c.id))).scalar()
    cap = max(_MIN_CAP, isqrt((limit + 1) * int(newest or 0)))
    vm = t.version_meta.c
    for key, value in where.items():
        held = select(literal(1)).where(vm.key == key, vm.value == value).limit(cap).subquery()
        if conn.execute(select(func.count()).select_from(held)).scalar_one() < cap:
            return True
    return False


def _metadata_matches(
    conn: Connection, where: Mapping[str, str], *, collect: bool
) -> ColumnElement[bool]:
    """Every ``key = value`` pair of ``where``, in the form that makes the plan ``collect``
    chose (see :func:`_collect`).

    PostgreSQL: one containment test on ``versions.meta``; as the ``@>`` operator the
    GIN index serves it (collect), as the function ``jsonb_contains`` no index can,
    so the planner walks the order index and tests each row. SQLite: the version ids
    under each pair from ``version_meta``'s covering key/value index (collect), or
    one probe per row of its primary key ``(version_id, key)`` (walk). The two hold
    the same pairs (``projection._commit``), so the answers are the same.
    """
    if conn.dialect.name == "postgresql":
        pairs = cast(literal(json.dumps(dict(where), sort_keys=True), String), JSONB)
        if collect:
            return t.versions.c.meta.op("@>")(pairs)
        return func.jsonb_contains(t.versions.c.meta, pairs).is_(True)
    vm = t.version_meta.c
    if collect:
        return and_(
            *(
                t.versions.c.id.in_(select(vm.version_id).where(vm.key == k, vm.value == v))
                for k, v in sorted(where.items())
            )
        )
    return and_(
        *(
            exists().where(vm.version_id == t.versions.c.id, vm.key == k, vm.value == v)
            for k, v in sorted(where.items())
        )
    )


def _encode_cursor(version_id: int, committed_at: str | None) -> str:
    """The keyset position: the last id seen (ids only grow, so it is stable), and in
    commit-time order its time too, as unpadded base64url (opaque to clients)."""
    if committed_at is None:
        return str(version_id)
    raw = f"{committed_at} {version_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, *, timed: bool) -> tuple[str | None, int]:
    """(committed_at or None, id); a cursor of the other order is refused."""
    refused = InvalidInput("invalid cursor: pass the next_cursor of a previous page of this query")
    if not timed:
        if not _ID.fullmatch(cursor):
            raise refused
        return None, int(cursor)
    if len(cursor) > 80:
        raise refused
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise refused from None
    at, _, last = raw.partition(" ")
    if not _TIME.fullmatch(at) or not _ID.fullmatch(last):
        raise refused
    return at, int(last)
