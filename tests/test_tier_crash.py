"""Crash consistency of tier moves: SIGKILL ``artifactstore tier move`` at random moments.

A version of 24 files (4 of a few MiB) moves between the hot and the cold tier,
alternately; each move runs as a real CLI process killed with SIGKILL after a
random delay between the CLI's start-up and the end of an uncut move (both
measured first). After
every kill, in this process:

* ``verify()`` is clean (every recorded location's bytes exist and re-hash)
  and the event chain verifies;
* every blob is in exactly one tier, and rerunning the move completes it;

and at the end GC (grace 0) leaves each backend holding exactly the keys
recorded there (the copies interrupted moves left behind are collected), and
the version pulls byte for byte.

``ARTIFACTSTORE_TIER_CRASH_TRIALS`` (default 8, which ``make test`` runs; ``make soak``
runs 40; a quarter of that, at least 2 (one move each way), in the scale-out
configuration) sets the number of trials;
``ARTIFACTSTORE_CRASH_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from artifactstore.controlplane.db import tables as t
from artifactstore.store import Store
from tests.conftest import ARTIFACTSTORE, Cli, make_tree, read_tree
from tests.matrix import StoreConfig
from tests.stored import Stored

pytestmark = pytest.mark.configs("embedded", "scaleout")

TRIALS = int(os.environ.get("ARTIFACTSTORE_TIER_CRASH_TRIALS", "8"))
SEED = int(os.environ.get("ARTIFACTSTORE_CRASH_SEED") or random.randrange(2**32))
MIB = 1 << 20


def _recorded(store: Store) -> dict[str, set[str]]:
    loc = t.storage_locations
    out: dict[str, set[str]] = {"local": set(), "cold": set()}
    with store.db.read() as conn:
        for row in conn.execute(select(loc.c.backend, loc.c.key)):
            out[row.backend].add(row.key)
    return out


def _check(home: Path, placed: dict[str, Any]) -> None:
    with Store.open(home, create=False, **placed) as store:
        report = store.verify()
        assert report.ok, report.damaged
        store.verify_chain()
        recorded = _recorded(store)
        assert not recorded["local"] & recorded["cold"]
        assert len(recorded["local"]) + len(recorded["cold"]) == 24


def test_tier_moves_survive_sigkill(tmp_path: Path, store_config: StoreConfig) -> None:
    # Scale-out runs a quarter of the trials: the suite's time affords only so many.
    trials = TRIALS if store_config.name == "embedded" else max(2, TRIALS // 4)
    rng = random.Random(SEED)
    print(f"tier crash seed {SEED}, {trials} trials")
    placed = store_config.overrides()
    cli = Cli(tmp_path / "home", tmp_path)
    cli.env.update(store_config.env())
    files = {f"small/{i}.txt": rng.randbytes(1000 + i).hex() for i in range(20)}
    files.update({f"big/{i}.bin": rng.randbytes(2 * MIB).hex()[: 3 * MIB] for i in range(4)})
    tree = make_tree(tmp_path / "dist", files)
    cli.ok("push", "ev/case:1", tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env["ARTIFACTSTORE_HOME"] = str(tmp_path / "home")
    env.update(store_config.env())

    def move_argv(tier: str) -> list[str]:
        return [str(ARTIFACTSTORE), "tier", "move", "ev/case:1", "--to", tier]

    started = time.monotonic()
    cli.ok("tier", "status", "ev/case:1")
    startup = time.monotonic() - started  # a kill before this hits no move at all
    # The shorter of the two directions: a first move (cold directory created,
    # caches cold) can take longer than the rest, and delays past a typical move
    # would interrupt too few of them (seen: 3 kills in 12).
    uncut = float("inf")
    for tier in ("cold", "hot"):
        started = time.monotonic()
        cli.ok("tier", "move", "ev/case:1", "--to", tier)
        uncut = min(uncut, time.monotonic() - started)
    kills = 0
    for trial in range(trials):
        tier = "cold" if trial % 2 == 0 else "hot"
        delay = rng.uniform(0.8 * startup, uncut)
        print(f"trial {trial}: move to {tier}, SIGKILL after {delay:.3f}s")
        proc = subprocess.Popen(
            move_argv(tier),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            kills += 1
        _check(tmp_path / "home", placed)
        rerun = subprocess.run(move_argv(tier), env=env, cwd=tmp_path, capture_output=True)
        assert rerun.returncode == 0, rerun.stderr
        with Store.open(tmp_path / "home", create=False, **placed) as store:
            assert {b.tier for b in store.tier_status("ev/case:1")} == {tier}
    assert kills >= trials // 3, "too few moves were interrupted to test anything"
    with Store.open(tmp_path / "home", create=False, **placed) as store:
        store.gc(grace=0)
        recorded = _recorded(store)
        assert Stored.of(store, "local").keys() == recorded["local"]
        assert Stored.of(store, "cold").keys() == recorded["cold"]
        store.tier_move("ev/case:1", "hot")
        store.pull("ev/case:1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(tree)
