"""Crash consistency (SPEC section 11): SIGKILL a real ``artifactstore`` process at random moments.

Each trial pushes a new version ``crash/app:N`` through the CLI and kills it with SIGKILL
after a random delay spread over the duration of an uncut push (measured first), with a
share of the delays packed near its end, where the database commit happens. Every third
trial also deletes versions and kills an ``artifactstore gc --grace 0s`` run the same way.
After every kill the library checks, in this process:

* ``verify()`` is clean and the event chain verifies;
* every file of every live version has a recorded blob (whose bytes ``verify`` re-hashed);
* the interrupted version is wholly present (exactly the expected files and digests) or
  absent; every acknowledged version is still there, unchanged, and pulls;
* rerunning the interrupted command succeeds (exit 0), and a completed GC leaves exactly
  the recorded blobs in storage.

Trees mix 40 small files and 2 of a few MiB; half of them are shared with an earlier
acknowledged push, so deduplicated and new bytes are in flight together. Every fourth
trial pushes only 5 files, which takes the per-file fsync path instead of ``syncfs``.

``ARTIFACTSTORE_CRASH_TRIALS`` (default 20, which ``make test`` runs; ``make soak`` runs
150; a tenth of that, at least 3 so that one GC trial runs, in the scale-out
configuration, whose S3 requests make each trial about 6 s) sets the number of push trials;
``ARTIFACTSTORE_CRASH_SEED`` replays a run (the seed and every delay are printed).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pytest
from sqlalchemy import exists, select

from artifactstore.controlplane.db import tables as t
from artifactstore.errors import PackageNotFound
from artifactstore.store import Store
from tests.conftest import ARTIFACTSTORE, Cli, make_tree
from tests.matrix import StoreConfig
from tests.stored import Stored

pytestmark = pytest.mark.configs("embedded", "scaleout")

# Read at import: the autouse _clean_env fixture removes ARTIFACTSTORE_* before each test.
TRIALS = int(os.environ.get("ARTIFACTSTORE_CRASH_TRIALS", "20"))
SEED = int(os.environ.get("ARTIFACTSTORE_CRASH_SEED") or random.randrange(2**32))
GC_EVERY = 3  # a GC crash trial after every third push trial

SMALL_FILES = 40
MIB = 1 << 20

#: path -> (size, blake3, sha256)
Expected = dict[str, tuple[int, str, str]]


def expected_of(files: dict[str, bytes]) -> Expected:
    return {
        path: (
            len(data),
            "blake3:" + blake3.blake3(data).hexdigest(),
            "sha256:" + hashlib.sha256(data).hexdigest(),
        )
        for path, data in files.items()
    }


@dataclass
class Trees:
    """Generates trial trees; even-numbered small files and ``big0`` are shared with base."""

    rng: random.Random

    def __post_init__(self) -> None:
        self.base_small = [self.rng.randbytes(512 + 97 * i) for i in range(SMALL_FILES)]
        self.base_big = self.rng.randbytes(3 * MIB)

    def base(self) -> dict[str, bytes]:
        files = {f"small/s{i:02d}.txt": data for i, data in enumerate(self.base_small)}
        files["big0.bin"] = self.base_big
        files["big1.bin"] = self.rng.randbytes(2 * MIB)
        return files

    def trial(self, n: int, *, few: bool) -> dict[str, bytes]:
        if few:  # 5 files: the per-file fsync publish path
            return {
                "small/s00.txt": self.base_small[0],
                "small/s01.txt": self.rng.randbytes(3000),
                "nested/deep/n.txt": f"trial {n}\n".encode(),
                "notes.txt": self.rng.randbytes(777),
                "big0.bin": self.base_big,
            }
        files = {
            f"small/s{i:02d}.txt": (
                self.base_small[i] if i % 2 == 0 else self.rng.randbytes(self.rng.randint(1, 8192))
            )
            for i in range(SMALL_FILES)
        }
        files["big0.bin"] = self.base_big
        files["big1.bin"] = self.rng.randbytes(2 * MIB + self.rng.randint(0, MIB))
        return files


class Crasher:
    """Runs CLI commands against one home; can SIGKILL them after a delay."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli

    def timed(self, *args: str | Path) -> float:
        started = time.monotonic()
        self.cli.ok(*args)
        return time.monotonic() - started

    def kill_after(self, delay: float, *args: str | Path) -> tuple[int, float]:
        """Start ``artifactstore ARGS``, SIGKILL it after ``delay`` s; (return code, seconds)."""
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(ARTIFACTSTORE), *map(str, args)],
            cwd=self.cli.cwd,
            env=self.cli.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL: no handler, no cleanup, no flush
        elapsed = time.monotonic() - started
        _, err = proc.communicate(timeout=120)
        if proc.returncode not in (0, -9):
            raise AssertionError(f"{args} exited {proc.returncode}: {err.decode(errors='replace')}")
        return proc.returncode, elapsed


def recorded_keys(store: Store) -> set[str]:
    with store.db.read() as conn:
        return {r.key for r in conn.execute(select(t.storage_locations.c.key))}


def unreferenced_rows(store: Store) -> int:
    with store.db.read() as conn:
        rows = conn.execute(
            select(t.blobs.c.blake3).where(~exists().where(t.files.c.blake3 == t.blobs.c.blake3))
        )
        return len(rows.all())


def files_of(store: Store, ref: str) -> Expected:
    record = store.show(ref)
    return {f.path.value: (f.size, str(f.blake3), str(f.sha256)) for f in record.manifest.files}


def check_store(
    home: Path,
    acknowledged: dict[str, Expected],
    interrupted: tuple[str, Expected] | None,
    scratch: Path,
    placed: dict[str, Any],
) -> bool | None:
    """Every invariant of the module docstring; whether the interrupted version is present."""
    with Store.open(home, create=False, **placed) as store:
        report = store.verify()
        assert report.ok, report.damaged
        store.verify_chain()
        with store.db.read() as conn:
            blobs = {
                r.blake3: (r.size, r.sha256)
                for r in conn.execute(select(t.blobs.c.blake3, t.blobs.c.size, t.blobs.c.sha256))
            }
        live = {str(rec.reference) for rec in store.iter_query()}
        for ref in live:
            for size, b3, sha in files_of(store, ref).values():
                assert blobs.get(b3) == (size, sha), f"{ref}: blob {b3} not recorded as expected"

        present: bool | None = None
        if interrupted is not None:
            ref, expected = interrupted
            try:
                got = files_of(store, ref)
            except PackageNotFound:
                present = False
            else:
                assert got == expected, f"{ref} is present but not whole"
                present = True
        wanted = set(acknowledged) | ({interrupted[0]} if interrupted and present else set())
        assert live == wanted, live
        for ref, expected in acknowledged.items():
            assert files_of(store, ref) == expected, f"acknowledged {ref} changed"

        # Every acknowledged version still pulls (pull re-hashes every file against the
        # manifest just compared with what was pushed, so sizes complete the comparison).
        for ref, expected in acknowledged.items():
            out = scratch / "pull"
            store.pull(ref, out)
            pulled = {
                p.relative_to(out).as_posix(): p.stat().st_size
                for p in out.rglob("*")
                if p.is_file()
            }
            assert pulled == {path: size for path, (size, _, _) in expected.items()}, ref
            shutil.rmtree(out)
    return present


@pytest.mark.slow
def test_sigkill_push_and_gc_at_random_moments(
    tmp_path: Path, cli: Cli, store_config: StoreConfig
) -> None:
    # Scale-out runs a tenth of the trials (at least one GC trial): the same code paths over
    # PostgreSQL and S3, which the suite's time affords only so often (``make soak`` runs
    # more of both).
    trials = TRIALS if store_config.name == "embedded" else max(GC_EVERY, TRIALS // 10)
    print(f"crash trials: seed={SEED} (ARTIFACTSTORE_CRASH_SEED={SEED} replays), {trials} trials")
    rng = random.Random(SEED)
    home, work, scratch = cli.home, cli.cwd, tmp_path / "scratch"
    scratch.mkdir()
    placed = store_config.overrides()
    stored = Stored.at(home, cli.env)
    crasher = Crasher(cli)
    trees = Trees(rng)
    acknowledged: dict[str, Expected] = {}
    outcomes: Counter[str] = Counter()

    def push_uncut(ref: str, files: dict[str, bytes]) -> float:
        src = make_tree(work / ref.replace("/", "_").replace(":", "_"), files)
        took = crasher.timed("push", ref, src)
        acknowledged[ref] = expected_of(files)
        shutil.rmtree(src)
        return took

    # Calibration: uncut pushes like the trials' and command start-up. Pushes that finish
    # before their kill keep the estimate current (the machine's load changes).
    push_uncut("crash/base:1", trees.base())
    spans = {
        False: [push_uncut("crash/calib:1", trees.trial(0, few=False))],
        True: [push_uncut("crash/calib:few", trees.trial(0, few=True))],
    }
    startup = crasher.timed("show", "crash/base:1")
    print(
        f"calibration: push {spans[False][0]:.2f}s, 5-file push {spans[True][0]:.2f}s, "
        f"start-up {startup:.2f}s"
    )
    protected = {"crash/base:1"}

    for n in range(1, trials + 1):
        # --- push trial ---------------------------------------------------------------
        few = n % 4 == 0
        ref = f"crash/app:{n}"
        files = trees.trial(n, few=few)
        expected = expected_of(files)
        src = make_tree(work / f"app-{n}", files)
        span = statistics.median(spans[few][-5:])
        if rng.random() < 0.3:  # near the end: publishing, recording blobs, committing
            delay = rng.uniform(0.75 * span, span)
        else:
            delay = rng.uniform(0.6 * startup, span)
        before = stored.keys()
        code, took = crasher.kill_after(delay, "push", ref, src)
        print(f"trial {n:3d} push{' (5 files)' if few else ''}: kill at {delay:.3f}s, exit {code}")
        if code == 0:
            spans[few].append(took)
        present = check_store(home, acknowledged, (ref, expected), scratch, placed)
        with Store.open(home, create=False, **placed) as store:
            debris = stored.keys() - before - recorded_keys(store)
        outcome = (
            "completed"
            if code == 0
            else "killed after commit"
            if present
            else "killed after publishing"
            if debris
            else "killed before publishing"
        )
        assert code == -9 or present, f"{ref} exited 0 but is absent"
        outcomes[f"push {outcome}"] += 1
        print(f"          -> {outcome}")

        cli.ok("push", ref, src)  # the rerun completes
        acknowledged[ref] = expected
        shutil.rmtree(src)
        with Store.open(home, create=False, **placed) as store:
            assert files_of(store, ref) == expected

        if n % GC_EVERY:
            continue
        # --- gc trial: delete versions, kill gc, rerun it -----------------------------
        victims = rng.sample(sorted(set(acknowledged) - protected), 3)
        with Store.open(home, create=False, **placed) as store:
            for victim in victims:
                store.delete(victim)
                del acknowledged[victim]
            collected_before = sum(e.type == "blob.collected" for e in store.events())
            ripe = unreferenced_rows(store)
        # A dry run takes as long as GC up to its decision: aim around and after that.
        plan = crasher.timed("gc", "--dry-run", "--grace", "0s")
        delay = rng.uniform(0.85 * plan, plan + 0.3)
        code, _ = crasher.kill_after(delay, "gc", "--grace", "0s")
        print(f"trial {n:3d} gc: {ripe} ripe blobs, kill at {delay:.3f}s, exit {code}")
        check_store(home, acknowledged, None, scratch, placed)
        with Store.open(home, create=False, **placed) as store:
            decided = sum(e.type == "blob.collected" for e in store.events()) - collected_before
            leftover = stored.keys() - recorded_keys(store)
        outcome = (
            "completed"
            if code == 0
            else "killed before deciding"
            if decided == 0
            else "killed while unlinking"
            if leftover
            else "killed after unlinking"
        )
        outcomes[f"gc {outcome}"] += 1
        print(f"          -> {outcome} ({decided} decided, {len(leftover)} unrecorded files)")
        cli.ok("gc", "--grace", "0s")  # GC reruns to completion...
        with Store.open(home, create=False, **placed) as store:
            assert unreferenced_rows(store) == 0  # ...collecting every unreferenced row
            assert stored.keys() == recorded_keys(store)  # ...and every orphan
        check_store(home, acknowledged, None, scratch, placed)

    print("outcomes:", dict(sorted(outcomes.items())))
    killed = sum(v for k, v in outcomes.items() if k.startswith("push killed"))
    assert killed >= trials // 3, f"only {killed} of {trials} pushes were interrupted"

    # Finally every live version pulls back byte for byte, and a last GC is clean.
    cli.ok("gc", "--grace", "0s")
    assert cli("verify", "--all").code == 0
    with Store.open(home, create=False, **placed) as store:
        for ref, expected in acknowledged.items():
            out = scratch / "final"
            store.pull(ref, out)
            pulled = {
                p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
            }
            assert expected_of(pulled) == expected, ref
            shutil.rmtree(out)
        assert stored.keys() == recorded_keys(store)
