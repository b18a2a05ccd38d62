"""The transparency log's tree over the event log, stored so requests never rebuild it.

Entry ``i`` of the tree is the 32 raw bytes of the chain hash of event
``seq = i + 1`` (SPEC section 8). ``tlog_nodes`` keeps every *perfect*
subtree of ``2**level`` entries for ``level >= STORED_LEVEL`` (16 entries):
about ``n / 8`` rows for ``n`` events, an eighth of what storing every node
would take. Anything below that level is hashed from at most 15 event rows
per piece. So a root, an inclusion proof or a consistency proof at any size
reads O(log n) node rows and at most a few dozen event hashes, in two
queries (:func:`subtrees`).

Filling (:func:`fill`) runs on demand, in short write transactions of at
most :data:`FILL_CHUNK` entries, each under the tree's own lock (the
database's write lock on SQLite, an advisory lock on PostgreSQL, never the
log's append lock: commits go on meanwhile), and re-reads how far the table
reaches once it holds the lock, so two replicas never insert the same row.
Invariant after every transaction: for ``filled = 16 * (rows at level 4)``,
every level ``L >= 4`` holds exactly the nodes ``idx < filled >> L``.

The table is a cache: ``rebuild`` empties it, and ``log audit``
(:func:`audit`) recomputes the tree from the event rows and reports any
stored node that disagrees instead of trusting it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, and_, delete, func, or_, select, text

from artifactstore.controlplane.db.bulk import insert_rows
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.db.tables import chain_head, events, tlog_nodes
from artifactstore.controlplane.eventlog import verify_chain
from artifactstore.errors import ChainBroken, InvalidInput, LogInconsistent
from artifactstore.model.tlog import AuditFinding, AuditReport, Checkpoint, entry_of
from artifactstore.provenance import merkle

__all__ = [
    "FILL_CHUNK",
    "STORED_LEVEL",
    "audit",
    "clear",
    "fill",
    "filled_size",
    "log_size",
    "subtrees",
]

#: Subtrees of 2**STORED_LEVEL entries and larger are stored.
STORED_LEVEL = 4
#: Entries hashed per fill transaction (a multiple of 2**STORED_LEVEL).
FILL_CHUNK = 1 << 16
#: The PostgreSQL advisory lock that fills take turns on ("ARTSTLOG").
_FILL_LOCK = 0x4152_5453_544C_4F47
#: Stored nodes compared per audit query.
_AUDIT_PAGE = 50_000


def log_size(conn: Connection) -> int:
    """The number of events (the tree's size), from the chain head."""
    seq = conn.execute(select(chain_head.c.seq).where(chain_head.c.id == 1)).scalar()
    return int(seq or 0)


def filled_size(conn: Connection) -> int:
    """Entries the stored nodes cover: a multiple of 16."""
    top = conn.execute(
        select(func.max(tlog_nodes.c.idx)).where(tlog_nodes.c.level == STORED_LEVEL)
    ).scalar()
    return 0 if top is None else (int(top) + 1) << STORED_LEVEL


def _leaves(conn: Connection, start: int, end: int) -> list[bytes]:
    """Leaf hashes of entries [start, end): events start+1 .. end."""
    rows = conn.execute(
        select(events.c.seq, events.c.hash)
        .where(events.c.seq > start, events.c.seq <= end)
        .order_by(events.c.seq)
    ).all()
    if len(rows) != end - start or (rows and int(rows[0].seq) != start + 1):
        raise ChainBroken(f"events {start + 1} to {end} are not all in the log", start + 1)
    return [merkle.leaf_hash(entry_of(r.hash)) for r in rows]


def _leaves_at(conn: Connection, indexes: set[int]) -> dict[int, bytes]:
    """Leaf hashes of scattered entries (the pieces of a proof below the stored level)."""
    if not indexes:
        return {}
    rows = conn.execute(
        select(events.c.seq, events.c.hash).where(events.c.seq.in_([i + 1 for i in indexes]))
    ).all()
    found = {int(r.seq) - 1: merkle.leaf_hash(entry_of(r.hash)) for r in rows}
    if len(found) != len(indexes):
        first = min(indexes - set(found)) + 1
        raise ChainBroken(f"event {first} is not in the log", first)
    return found


def fill(db: Database) -> int:
    """Store every perfect subtree the log completes; returns the entries covered."""
    while True:
        with db.write(durable=False) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FILL_LOCK})
            have, size = filled_size(conn), log_size(conn)
            end = min(size, have + FILL_CHUNK) >> STORED_LEVEL << STORED_LEVEL
            if end <= have:
                return have
            _fill_range(conn, have, end)


def _fill_range(conn: Connection, have: int, end: int) -> None:
    """Insert the nodes that entries [have, end) complete (both multiples of 16)."""
    width = 1 << STORED_LEVEL
    leaves = _leaves(conn, have, end)
    level_nodes = {
        (have >> STORED_LEVEL) + j: merkle.MemoryTree(leaves[i : i + width]).root()
        for j, i in enumerate(range(0, len(leaves), width))
    }
    rows = [{"level": STORED_LEVEL, "idx": i, "hash": h} for i, h in level_nodes.items()]
    level = STORED_LEVEL
    while True:
        level += 1
        lo, hi = have >> level, end >> level
        if hi <= lo:
            break
        below = level_nodes
        if 2 * lo not in below:  # the left child was stored by an earlier fill
            stored = conn.execute(
                select(tlog_nodes.c.hash).where(
                    tlog_nodes.c.level == level - 1, tlog_nodes.c.idx == 2 * lo
                )
            ).scalar()
            if stored is None:
                raise LogInconsistent(
                    f"the stored tree lacks node ({level - 1}, {2 * lo}); run rebuild"
                )
            below = {**below, 2 * lo: bytes(stored)}
        level_nodes = {i: merkle.node_hash(below[2 * i], below[2 * i + 1]) for i in range(lo, hi)}
        rows += [{"level": level, "idx": i, "hash": h} for i, h in level_nodes.items()]
    insert_rows(conn, tlog_nodes, rows)


def subtrees(conn: Connection) -> merkle.Subtrees:
    """A :data:`merkle.Subtrees` over this connection: stored nodes in one query,
    pieces below the stored level from their events in one more."""

    def answer(nodes: Sequence[merkle.Node]) -> dict[merkle.Node, bytes]:
        high = [n for n in nodes if n[0] >= STORED_LEVEL]
        out: dict[merkle.Node, bytes] = {}
        if high:
            # One (level = L AND idx IN ...) per level, OR-ed: both engines search the
            # primary key for each; a row-value IN made SQLite scan the whole table.
            by_level: dict[int, list[int]] = {}
            for lv, ix in high:
                by_level.setdefault(lv, []).append(ix)
            query = select(tlog_nodes.c.level, tlog_nodes.c.idx, tlog_nodes.c.hash).where(
                or_(
                    *(
                        and_(tlog_nodes.c.level == lv, tlog_nodes.c.idx.in_(ixs))
                        for lv, ixs in by_level.items()
                    )
                )
            )
            out = {(int(r.level), int(r.idx)): bytes(r.hash) for r in conn.execute(query)}
        missing = [n for n in high if n not in out]
        if missing:
            raise LogInconsistent(
                f"the stored tree lacks node {missing[0]} below its filled size; run rebuild"
            )
        low = [n for n in nodes if n[0] < STORED_LEVEL]
        wanted = {i for lv, ix in low for i in range(ix << lv, (ix + 1) << lv)}
        leaves = _leaves_at(conn, wanted)
        for lv, ix in low:
            first = ix << lv
            piece = merkle.MemoryTree([leaves[first + j] for j in range(1 << lv)])
            out[(lv, ix)] = piece.root()
        return out

    return answer


def check_size(size: int, current: int, what: str) -> None:
    """Refuse a tree size the log cannot answer for (422, never a 500)."""
    if not 1 <= size <= current:
        raise InvalidInput(f"{what} must be from 1 to the log's size, {current}; not {size}")


def clear(conn: Connection) -> None:
    """Drop every stored node (rebuild): the next request refills them from the events."""
    conn.execute(delete(tlog_nodes))


def audit(conn: Connection, checkpoints: Sequence[tuple[str, Checkpoint]]) -> AuditReport:
    """Recompute the tree from the event rows (O(n)) and check each checkpoint against it.

    Trusts nothing stored but the events: the chain is verified (an edited event
    whose chain hash was left alone changes no tree entry, so the chain must be
    checked), each checkpoint's root is compared with the recomputed root at its
    size, and every stored node is compared with the recomputed one.
    """
    report = AuditReport()
    try:
        verify_chain(conn)
    except ChainBroken as exc:
        report.problems.append(f"chain_broken: {exc.detail}")
    wanted: dict[int, bytes] = {}
    frontier = merkle.Frontier()
    computed: dict[merkle.Node, bytes] = {}

    def keep(node: merkle.Node, h: bytes) -> None:
        if node[0] >= STORED_LEVEL:
            computed[node] = h

    sizes = {cp.size for _, cp in checkpoints}
    if 0 in sizes:
        wanted[0] = frontier.root()
    after = 0
    while True:
        rows = conn.execute(
            select(events.c.seq, events.c.hash)
            .where(events.c.seq > after)
            .order_by(events.c.seq)
            .limit(_AUDIT_PAGE)
        ).all()
        if not rows:
            break
        for r in rows:
            frontier.push(merkle.leaf_hash(entry_of(r.hash)), keep)
            if frontier.size in sizes:
                wanted[frontier.size] = frontier.root()
        after = int(rows[-1].seq)
        _compare_nodes(conn, computed, report)
    _stray_nodes(conn, frontier.size, report)
    report.size, report.root = frontier.size, frontier.root()
    for name, cp in checkpoints:
        report.checkpoints.append(AuditFinding(name, cp.size, _verdict(cp, wanted, report.size)))
    return report


def _verdict(cp: Checkpoint, roots: dict[int, bytes], size: int) -> str | None:
    if cp.size > size:
        return (
            f"the log holds {size} events, fewer than the {cp.size} this checkpoint signs: "
            "events were cut off its end"
        )
    if roots[cp.size] != cp.root:
        return (
            f"the log's first {cp.size} events do not hash to this checkpoint's root: "
            "the history it signs was rewritten"
        )
    return None


def _compare_nodes(
    conn: Connection, computed: dict[merkle.Node, bytes], report: AuditReport
) -> None:
    """Compare (then forget) the recomputed nodes with the stored ones, a page at a time."""
    for level in sorted({lv for lv, _ in computed}):
        idxs = sorted(ix for lv, ix in computed if lv == level)
        rows = conn.execute(
            select(tlog_nodes.c.idx, tlog_nodes.c.hash).where(
                tlog_nodes.c.level == level, tlog_nodes.c.idx.between(idxs[0], idxs[-1])
            )
        )
        for r in rows:
            if len(report.problems) < 20 and computed[(level, int(r.idx))] != bytes(r.hash):
                report.problems.append(
                    f"log_inconsistent: stored tree node ({level}, {r.idx}) disagrees with "
                    "the events (the node cache was altered; run rebuild to refill it)"
                )
    computed.clear()


def _stray_nodes(conn: Connection, size: int, report: AuditReport) -> None:
    """Stored nodes past the log's end: the tree once held entries the log lost."""
    tops = conn.execute(
        select(tlog_nodes.c.level, func.max(tlog_nodes.c.idx)).group_by(tlog_nodes.c.level)
    ).all()
    stray = [(int(lv), int(top)) for lv, top in tops if (int(top) + 1) << int(lv) > size]
    if stray:
        report.problems.append(
            f"log_inconsistent: stored tree nodes cover entries past the log's end ({size}), "
            f"up to node {stray[0]}: events were removed after the tree was filled"
        )
