"""Transparency-log benchmark (issue 19): checkpoints and proofs at 1,000,000 events.

1. **Load.** ``--events`` events (default 1,000,000) are appended to a new
   SQLite store through the log's own write path, ``eventlog.append_many``
   (``--batch`` per transaction, not flushed: the figure is not about the
   disk), as small ``token.revoked`` events, whose projection is one UPDATE
   that matches nothing. Each is a real, hash-chained event.
2. **Fill.** The one-off cost of filling ``tlog_nodes`` (every perfect
   subtree of 16 or more entries) from the events: what the first checkpoint
   of an existing store pays once, and what ``rebuild`` hands to the next
   request. Then the cost of a checkpoint after ``--append`` more events
   (the incremental fill a busy server pays).
3. **Requests.** ``--trials`` times each (p50, p99, max, in ms, through the
   ``Store`` verbs the routes call; target: each under 50 ms):
   a signed checkpoint of the whole log; an inclusion proof of a random
   event at the full size; a consistency proof from a random size to the full
   size; and the offline verification of each.
4. **Signatures.** Checkpoints signed and verified per second (Ed25519 via
   ``cryptography``, the note formatted and parsed around it).
5. **Audit.** ``log audit`` in local mode against one checkpoint: the chain
   verified and the tree recomputed from every event row (O(n), once).
6. **Package signatures** (``bench/_log_signing.py``): DSSE envelopes signed and
   verified per second, and the cost a signature adds to a local push.

    .venv/bin/python bench/log.py                      # 1,000,000 events
    .venv/bin/python bench/log.py --events 50000       # smoke
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _log_signing
from bench._common import (
    add_scratch_and_json,
    fmt_num,
    load_average,
    pick_scratch_parent,
    print_header,
    render_table,
    scratch_dir,
    write_json,
)

from artifactstore.config import Settings
from artifactstore.controlplane import eventlog, tlog
from artifactstore.controlplane.db.tables import events
from artifactstore.model.blob_events import TokenRevoked
from artifactstore.model.tlog import Checkpoint
from artifactstore.provenance import (
    keys,
    merkle,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
)
from artifactstore.provenance.checkpoint import sign_checkpoint
from artifactstore.store import Store

TARGET_MS = 50.0


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    p.add_argument("--batch", type=int, default=5000, help="events per append transaction")
    p.add_argument("--append", type=int, default=1000, help="events appended before the re-fill")
    p.add_argument("--trials", type=int, default=300, help="requests of each kind")
    p.add_argument("--sign-seconds", type=float, default=3.0, help="length of each rate run")
    p.add_argument("--no-audit", action="store_true", help="skip the O(n) audit")
    add_scratch_and_json(p)
    return p.parse_args()


def load(store: Store, start: int, count: int, batch: int) -> float:
    """Append ``count`` events; returns events/s."""
    began = time.perf_counter()
    for first in range(start, start + count, batch):
        items = [TokenRevoked(f"t{i}") for i in range(first, min(first + batch, start + count))]
        with store.db.write(durable=False) as conn:
            eventlog.append_many(conn, items, "bench")
        if (first - start) % 200_000 < batch and first > start:
            rate = (first - start) / (time.perf_counter() - began)
            print(f"  appended {first - start:,} ({rate:,.0f}/s)", flush=True)
    return count / (time.perf_counter() - began)


def _ms(fn: Callable[[], object], trials: int) -> list[float]:
    out = []
    for _ in range(trials):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _row(name: str, values: list[float], target: float | None) -> list[str]:
    p99 = _pct(values, 0.99)
    verdict = "-" if target is None else ("met" if p99 < target else "MISSED")
    return [
        name,
        str(len(values)),
        fmt_num(statistics.median(values), 2),
        fmt_num(p99, 2),
        fmt_num(max(values), 2),
        verdict,
    ]


def _rate(fn: Callable[[], object], seconds: float) -> float:
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - began)


def requests_part(store: Store, size: int, trials: int) -> tuple[list[list[str]], dict[str, Any]]:
    public = keys.public_key_from_pem(store.log_key().pem.encode())
    note = store.log_checkpoint()
    cp = verify_checkpoint(note, public)
    assert cp.size == size
    rng = random.Random(19)
    with store.db.read() as conn:
        hashes = {
            int(r.seq): str(r.hash)
            for r in conn.execute(
                events.select()
                .with_only_columns(events.c.seq, events.c.hash)
                .where(events.c.seq.in_(rng.sample(range(1, size + 1), min(trials, size))))
            )
        }
    seqs = list(hashes)
    olds = [rng.randint(1, size) for _ in range(trials)]
    roots = {}
    for old in olds[:20]:  # old checkpoints to verify against: roots from the stored tree
        with store.db.read() as conn:
            roots[old] = Checkpoint(cp.origin, old, merkle.root(old, tlog.subtrees(conn)))
    it_seq, it_old = iter(seqs * 2), iter(olds * 2)
    proofs = itertools.cycle([store.log_inclusion(s, size) for s in seqs[:20]])
    steps = itertools.cycle([store.log_consistency(o, size) for o in list(roots)])

    def check_inclusion() -> None:
        proof = next(proofs)
        verify_inclusion(hashes[proof.leaf_index + 1], proof, cp)

    def check_consistency() -> None:
        proof = next(steps)
        verify_consistency(roots[proof.old_size], cp, proof)

    times = {
        "checkpoint (signed)": _ms(store.log_checkpoint, trials),
        "inclusion proof": _ms(lambda: store.log_inclusion(next(it_seq), size), trials),
        "consistency proof": _ms(lambda: store.log_consistency(next(it_old), size), trials),
        "verify inclusion (offline)": _ms(check_inclusion, trials),
        "verify consistency (offline)": _ms(check_consistency, trials),
    }
    rows = [
        _row(name, values, TARGET_MS if "offline" not in name else None)
        for name, values in times.items()
    ]
    summary = {
        name: {"p50": statistics.median(v), "p99": _pct(v, 0.99), "max": max(v)}
        for name, v in times.items()
    }
    return rows, summary


def signing_part(seconds: float) -> dict[str, float]:
    key = keys.generate()
    cp = Checkpoint("artifactstore.local/log", 1_000_000, b"\x01" * 32)
    note = sign_checkpoint(cp, key)
    return {
        "sign_per_s": _rate(lambda: sign_checkpoint(cp, key), seconds),
        "verify_per_s": _rate(lambda: verify_checkpoint(note, key.public), seconds),
    }


def signature_push_cost(scratch: Path) -> list[list[str]]:
    """The cost a signature adds to a push, and DSSE sign/verify rates
    (``bench/_log_signing.py``), as rows of this script's summary table."""
    return [
        [row["figure"], fmt_num(row["value"], 3), row["unit"]]
        for row in _log_signing.measure(scratch)
    ]


def main() -> None:
    args = _args()
    parent = pick_scratch_parent(args.scratch)
    print_header(f"log: transparency log at {args.events:,} events", parent)
    results: dict[str, Any] = {"events": args.events}
    with scratch_dir(parent, "bench-log-") as root:
        with Store.from_config(Settings(home=root / "home")) as store:
            rate = load(store, 0, args.events, args.batch)
            print(f"appended {args.events:,} events at {rate:,.0f}/s", flush=True)
            began = time.perf_counter()
            filled = tlog.fill(store.db)
            fill_s = time.perf_counter() - began
            with store.db.read() as conn:
                nodes = conn.exec_driver_sql("SELECT count(*) FROM tlog_nodes").scalar_one()
            print(
                f"filled the node table: {nodes:,} nodes for {filled:,} entries in {fill_s:.1f} s"
            )
            load(store, args.events, args.append, args.batch)
            began = time.perf_counter()
            store.log_checkpoint()
            refill_ms = (time.perf_counter() - began) * 1000
            size = args.events + args.append
            rows, summary = requests_part(store, size, args.trials)
            print(f"\nrequests at {size:,} entries (ms; target p99 < {TARGET_MS:.0f} ms)")
            print(render_table(["what", "n", "p50", "p99", "max", "target"], rows))
            sig = signing_part(args.sign_seconds)
            audit_s = None
            if not args.no_audit:
                cp = verify_checkpoint(
                    store.log_checkpoint(),
                    keys.public_key_from_pem(store.log_key().pem.encode()),
                )
                began = time.perf_counter()
                report = store.log_audit([("now", cp)])
                audit_s = time.perf_counter() - began
                assert report.ok, report.to_json()
            push_rows = signature_push_cost(root)
        summary_rows = [
            ["append (append_many, not flushed)", fmt_num(rate), "events/s"],
            ["fill tlog_nodes (one-off)", fmt_num(fill_s, 2), f"s for {nodes:,} nodes"],
            [f"checkpoint after {args.append:,} more events", fmt_num(refill_ms, 1), "ms"],
            ["sign checkpoints", fmt_num(sig["sign_per_s"]), "per s"],
            ["verify checkpoints", fmt_num(sig["verify_per_s"]), "per s"],
            ["log audit (local, O(n))", fmt_num(audit_s, 1), "s"],
            *push_rows,
        ]
        print()
        print(render_table(["what", "figure", "unit / note"], summary_rows))
        print(f"load:     {load_average()} (1/5/15 min) at end")
    results.update(
        append_per_s=rate,
        fill_s=fill_s,
        nodes=nodes,
        refill_ms=refill_ms,
        requests_ms=summary,
        signing=sig,
        audit_s=audit_s,
        signature_push=push_rows,
    )
    if args.json_path:
        write_json(args.json_path, results)


if __name__ == "__main__":
    main()
