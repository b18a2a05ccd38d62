"""Retention benchmark (issue 6): plan, apply and gc over 100,000 versions.

Builds one local store (SQLite + local files, the embedded default, fsync on)
holding 100,000 versions across 50 packages (5 namespaces of 10), then times
the three steps of a retention run through the library:

* ``apply --dry-run`` (the plan): live versions evaluated per second, best of
  3 (it changes nothing, so it can be repeated);
* ``apply``: versions evaluated per second, and versions tombstoned per
  second (once: it deletes);
* ``gc``: unreferenced blobs collected per second (once), grace period 0.

**Data.** Each version is a small manifest of two files: one of 8 shared
blobs, and a "build" blob shared by the versions with the same build number
in the same namespace (2,000 per namespace, 10,000 in all), so deleting old
versions leaves blobs for GC to collect. Metadata: ``build`` (the number) and
``release`` (``true`` for every 100th). The blobs arrive with one ``push`` of
a directory; the versions are committed with ``packages.commit`` (every check
of a real commit), 1,000 per transaction; this setup is timed and printed but
is not a target.

**Policies.** Every namespace keeps its 200 newest versions per package and
every release; ``team3/pkg0`` has its own policy (``keep_days 30``, so all of
its versions are kept); ``team4`` has a 7-day retention lock (all its
versions are younger, so all are kept); 100 old versions of ``team0`` are
under a legal hold. About 70% of the versions are deleted.

    .venv/bin/python bench/retention.py               # 100,000 versions
    .venv/bin/python bench/retention.py --quick       # 10,000 versions
    .venv/bin/python bench/retention.py --versions 50000 --json retention.json
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# bench/ is a namespace package under the repo root (see ingest.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    CpuMeter,
    command_line,
    fmt_num,
    format_machine,
    load_average,
    machine_info,
    pick_scratch_parent,
    render_table,
    repo_revision,
    scratch_dir,
    write_json,
)

from artifactstore.config import Settings
from artifactstore.controlplane import packages
from artifactstore.model.identity import Namespace, PackageName, Version
from artifactstore.model.manifest import FileEntry, Manifest
from artifactstore.model.paths import PackagePath
from artifactstore.model.retention import (
    RetentionPolicy,
)
from artifactstore.store import Store

NAMESPACES = 5
PACKAGES_PER_NAMESPACE = 10
SHARED_BLOBS = 8
COMMIT_BATCH = 1000


@dataclass
class Step:
    name: str
    seconds: float
    items: int
    unit: str
    others_cpu_pct: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 3),
            "items": self.items,
            "unit": self.unit,
            "rate_per_s": round(self.rate, 1),
            "others_cpu_pct": round(self.others_cpu_pct, 1),
            "note": self.note,
        }


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--versions", type=int, help="versions in all (default 100000)")
    p.add_argument("--quick", action="store_true", help="10,000 versions")
    p.add_argument("--json", type=Path, dest="json_path", help="also write figures here")
    p.add_argument("--scratch", type=Path, help="where the store goes (default: $TMPDIR)")
    args = p.parse_args()
    if args.versions is None:
        args.versions = 10_000 if args.quick else 100_000
    packages_total = NAMESPACES * PACKAGES_PER_NAMESPACE
    if args.versions < packages_total * 10 or args.versions % packages_total:
        p.error(
            f"--versions must be a multiple of {packages_total}, at least {packages_total * 10}"
        )
    return args


def _seed_blobs(store: Store, root: Path, per_package: int) -> dict[str, FileEntry]:
    """Every blob, pushed once as one throwaway version, which is then deleted."""
    tree = root / "seed"
    tree.mkdir()
    for k in range(SHARED_BLOBS):
        (tree / f"shared-{k}").write_bytes(f"shared blob {k}\n".encode() * 8)
    for n in range(NAMESPACES):
        for j in range(per_package):
            (tree / f"team{n}-build-{j}").write_bytes(f"team{n} build {j}\n".encode() * 4)
    record = store.push("seed/blobs:1", [tree]).record
    store.delete("seed/blobs:1")
    return {f.path.value: f for f in record.manifest.files}


def _entry(blob: FileEntry, path: str) -> FileEntry:
    return FileEntry(PackagePath(path), blob.size, blob.media_type, blob.blake3, blob.sha256)


def _commit_versions(store: Store, blobs: dict[str, FileEntry], per_package: int) -> int:
    """``per_package`` versions of each package, oldest build first, 1,000 per transaction."""
    manifests: list[Manifest] = []
    created = "2026-01-01T00:00:00Z"
    for j in range(per_package):
        for n in range(NAMESPACES):
            for p in range(PACKAGES_PER_NAMESPACE):
                files = [
                    _entry(blobs[f"shared-{(n + p) % SHARED_BLOBS}"], "common.bin"),
                    _entry(blobs[f"team{n}-build-{j}"], "build.bin"),
                ]
                manifests.append(
                    Manifest.build(
                        Namespace(f"team{n}"),
                        PackageName(f"pkg{p}"),
                        Version(f"1.0.{j}"),
                        files,
                        created=created,
                        producer="bench",
                        metadata={"build": j, "release": "true" if j % 100 == 0 else "false"},
                    )
                )
    for i in range(0, len(manifests), COMMIT_BATCH):
        with store.db.write() as conn:
            for m in manifests[i : i + COMMIT_BATCH]:
                packages.commit(conn, m, "bench", held_since="")
    return len(manifests)


def _policies(store: Store, per_package: int) -> int:
    """The policies of the module docstring; returns how many holds were placed."""
    keep = RetentionPolicy.of(keep_last=per_package // 10, keep_where={"release": "true"})
    for n in range(NAMESPACES):
        store.set_retention(f"team{n}", None, keep)
    store.set_retention("team3", "pkg0", RetentionPolicy.of(keep_days=30))
    store.lock_retention("team4", 7)
    held = 0
    for j in range(1, per_package, max(1, per_package // 20)):
        for p in range(0, PACKAGES_PER_NAMESPACE, 2):
            if j % 100:
                store.place_hold(f"team0/pkg{p}:1.0.{j}", "bench: litigation")
                held += 1
    return held


def _timed(name: str, fn: Any, unit: str) -> tuple[Step, Any]:
    meter = CpuMeter()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return Step(name, seconds, 0, unit, meter.read().others_pct), result


def main() -> None:
    args = _args()
    per_package = args.versions // (NAMESPACES * PACKAGES_PER_NAMESPACE)
    parent = pick_scratch_parent(args.scratch)
    info = machine_info(parent)
    print(format_machine(info))
    print(f"command:  {command_line()}")
    print(f"revision: {repo_revision()}, load average {load_average()}")
    print(
        f"data:     {args.versions:,} versions ({NAMESPACES * PACKAGES_PER_NAMESPACE} packages x "
        f"{per_package:,}), {SHARED_BLOBS + NAMESPACES * per_package:,} blobs"
    )
    steps: list[Step] = []
    with scratch_dir(parent, "bench-retention-") as root:
        settings = Settings(home=root / "home", gc_grace=0.0)
        with Store.from_config(settings) as store:
            step, blobs = _timed(
                "setup: push the blobs", lambda: _seed_blobs(store, root, per_package), "blobs"
            )
            step.items = len(blobs)
            steps.append(step)
            step, count = _timed(
                "setup: commit versions",
                lambda: _commit_versions(store, blobs, per_package),
                "versions",
            )
            step.items = count
            steps.append(step)
            held = _policies(store, per_package)
            print(f"setup:    {held} legal holds, policies on {NAMESPACES} namespaces, 1 lock")

            plans = []
            for trial in range(3):
                step, plan = _timed(
                    f"apply --dry-run (trial {trial + 1})", store.retention_plan, "versions"
                )
                step.items = len(plan.decisions)
                step.note = f"{len(plan.deleted):,} to delete"
                steps.append(step)
                plans.append(plan)
            planned = {d.reference for d in plans[-1].deleted}

            step, report = _timed("apply", store.apply_retention, "versions")
            step.items = len(report.decisions)
            deleted = len(report.deleted)
            step.note = f"{deleted:,} deleted ({deleted / step.seconds:,.0f} deletions/s)"
            steps.append(step)
            assert {d.reference for d in report.deleted} == planned, "apply differs from the plan"
            live = store.stats()["versions"]
            assert live == args.versions - deleted, (live, args.versions, deleted)
            assert len(store.list_holds()) == held

            step, gc = _timed("gc (grace 0)", lambda: store.gc(grace=0.0), "blobs")
            step.items = len(gc.collected)
            step.note = f"{gc.bytes_freed:,} bytes freed"
            steps.append(step)
            assert store.verify().ok

    rows = [
        [
            s.name,
            fmt_num(s.items),
            f"{s.seconds:.2f}",
            f"{fmt_num(s.rate)} {s.unit}/s",
            f"{s.others_cpu_pct:.0f}%",
            s.note,
        ]
        for s in steps
    ]
    print()
    print(render_table(["step", "items", "seconds", "rate", "others' CPU", "note"], rows))
    busy = [s for s in steps if s.others_cpu_pct > 15]
    if busy:
        print(
            "WARNING: other processes used more than 15% of the CPUs during "
            + ", ".join(s.name for s in busy)
            + ": the machine was shared; these figures are pessimistic"
        )
    if args.json_path:
        write_json(
            args.json_path,
            {
                "machine": info.__dict__,
                "command": command_line(),
                "revision": repo_revision(),
                "versions": args.versions,
                "steps": [s.to_json() for s in steps],
            },
        )


if __name__ == "__main__":
    main()
