"""The fixed cost of a small CLI push, for two builds side by side.

A push of a few small files is almost all fixed cost: starting Python,
importing, opening the store, one transaction. Restructuring moves imports
around, so this compares two ``artifactstore`` executables (say a checkout of
the previous revision and this one, each with its own venv) on the same
files, interleaved round by round, and prints the median of each and their
ratio. Each build pushes into its own store, made once before timing.

    .venv/bin/python bench/cli_start.py --before /path/to/old/.venv/bin/artifactstore
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _push(exe: str, home: Path, ref: str, tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [exe, "--home", str(home), "push", ref, str(tree)], check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the artifactstore executable to compare")
    parser.add_argument(
        "--after",
        default=str(Path(sys.executable).with_name("artifactstore")),
        help="default: this venv's",
    )
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--files", type=int, default=50, help="small files in the pushed tree")
    args = parser.parse_args()
    builds = {"before": args.before, "after": args.after}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        tree = root / "tree"
        tree.mkdir()
        for i in range(args.files):
            (tree / f"f{i}.bin").write_bytes(os.urandom(2000))
        times: dict[str, list[float]] = {name: [] for name in builds}
        for name, exe in builds.items():  # untimed: create each store
            _push(exe, root / name, "bench/warm:0", tree)
        for i in range(1, args.rounds + 1):
            for name, exe in builds.items():
                times[name].append(_push(exe, root / name, f"bench/app:{i}", tree))
    for name, series in times.items():
        print(
            f"{name:6}  median {statistics.median(series) * 1000:6.1f} ms  "
            f"min {min(series) * 1000:6.1f} ms  ({builds[name]})"
        )
    ratio = statistics.median(times["after"]) / statistics.median(times["before"])
    print(f"after / before (medians): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
