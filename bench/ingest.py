"""Ingest benchmark (issue 3): our push against the machine's limits and restic.

Pushes one large incompressible file and a tree of small files into fresh
local stores with the ``artifactstore`` CLI, and measures in the same run,
over the same bytes, interleaved with our trials:

* the hashing limit: single-thread ``hashlib.sha256`` over the file, read from
  the page cache in 1 MiB chunks;
* the disk limit: a sequential copy of the file to a new file with one
  ``fdatasync`` at the end (what ``dd bs=1M conv=fdatasync`` measures);
* the peer: ``restic backup`` of the same small-file tree into a fresh
  repository on the same disk.

Absolute figures drift on the shared 2-vCPU VMs, so the result that counts is
the ratio of our best trial to the limit's (or peer's) best trial in this run.
The targets (as restated in issue 17):

* the durable 1 GiB push, as a library call (``Store.push``, fsync on), at
  least 0.85 x the lower of the fdatasync and single-thread SHA-256 limits,
  with the CLI's fixed start-up printed beside it;
* the 10,000-file tree reported as a ratio to ``restic backup``, with the CPU
  seconds (user + system) per 1,000 files of both beside it;
* peak RSS of a push under 150 MB.

The CLI's pushes and the no-fsync rows are printed as context.

    .venv/bin/python bench/ingest.py                 # full: 1 GiB, 10,000 files
    .venv/bin/python bench/ingest.py --quick         # 256 MiB, 2,000 files
    .venv/bin/python bench/ingest.py --only limits,restic --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# bench/ is a namespace package under the repo root, so `python bench/ingest.py`
# and mypy (which runs from the root) resolve the helpers by the same name.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    CHUNK,
    GB,
    MB,
    ChildResult,
    CpuMeter,
    MiB,
    Series,
    TreeInfo,
    add_scratch_and_json,
    check_free_space,
    child_env,
    command_line,
    compile_package,
    fmt_num,
    make_small_tree,
    pick_scratch_parent,
    prefault_page_cache,
    print_header,
    probe_cli,
    read_through,
    remove,
    render_table,
    repo_revision,
    run_child,
    scratch_dir,
    settle,
    venv_cli,
    verdict,
    warn_if_busy,
    write_json,
    write_random_file,
)

MEASUREMENTS = ("limits", "big", "tree", "restic")
ALIASES = {"ours": ("big", "tree"), "all": MEASUREMENTS}

TARGET_DURABLE_VS_LOWER_LIMIT = 0.85
TARGET_PEAK_RSS_MB = 150.0

#: The library row's child: open the store, then time ``Store.push`` alone.
_LIBRARY_PUSH = """
import sys, time
from pathlib import Path
from artifactstore import Store
home, ref, path, out = sys.argv[1:]
with Store.open(home) as store:
    start = time.perf_counter()
    store.push(ref, [path])
    seconds = time.perf_counter() - start
Path(out).write_text(repr(seconds))
"""

RESTIC_PASSWORD = "bench-ingest-not-a-secret"


@dataclass(frozen=True)
class Config:
    """Parsed command line."""

    size: int
    files: int
    trials: int
    only: frozenset[str]
    scratch: Path | None
    json_path: Path | None
    prime: bool
    prefault: bool


def parse_args(argv: list[str] | None = None) -> Config:
    """Command line; ``--quick`` only changes the defaults of the two sizes."""
    p = argparse.ArgumentParser(
        description="Ingest benchmark: our push vs sha256/fdatasync limits and restic.",
    )
    p.add_argument("--size-mib", type=int, help="large file size in MiB (default 1024)")
    p.add_argument("--files", type=int, help="files in the small tree (default 10000)")
    p.add_argument("--quick", action="store_true", help="256 MiB and 2,000 files")
    p.add_argument("--trials", type=int, default=3, help="rounds; best of N is reported")
    p.add_argument(
        "--only",
        default="all",
        help="comma list of: limits (sha256 + fdatasync), big (our large-file push, "
        "both fsync modes), tree (our small-tree push), restic, ours (= big,tree), all",
    )
    add_scratch_and_json(p)
    p.add_argument(
        "--no-prime",
        dest="prime",
        action="store_false",
        help="time the first push into an empty home (includes store creation); by "
        "default each fresh home is created by an untimed tiny push first, as "
        "restic's repository is by an untimed `restic init`",
    )
    p.add_argument(
        "--no-prefault",
        dest="prefault",
        action="store_false",
        help="do not write-and-delete a page-cache file before each write-timed step "
        "(see prefault_page_cache in bench/_common.py: without it, the VM's free "
        "page reporting makes first-touch page faults dominate write figures)",
    )
    a = p.parse_args(argv)
    only: set[str] = set()
    for word in filter(None, (w.strip() for w in a.only.split(","))):
        if word in ALIASES:
            only.update(ALIASES[word])
        elif word in MEASUREMENTS:
            only.add(word)
        else:
            p.error(f"--only: unknown measurement {word!r}")
    size_mib = a.size_mib if a.size_mib is not None else (256 if a.quick else 1024)
    files = a.files if a.files is not None else (2000 if a.quick else 10_000)
    if size_mib <= 0 or files <= 0 or a.trials <= 0:
        p.error("--size-mib, --files and --trials must be positive")
    return Config(
        size=size_mib * MiB,
        files=files,
        trials=a.trials,
        only=frozenset(only),
        scratch=a.scratch,
        json_path=a.json_path,
        prime=a.prime,
        prefault=a.prefault,
    )


class IngestBench:
    """The data, the tools found, and one method per measurement (one trial each)."""

    def __init__(self, cfg: Config, work: Path) -> None:
        self.cfg = cfg
        self.work = work
        self.big = work / "big.bin"
        self.tree_root = work / "tree"
        self.tree: TreeInfo | None = None
        self.logs = work / "logs"
        self.logs.mkdir()
        self.cli = venv_cli("artifactstore")
        self.restic = shutil.which("restic")
        self.restic_version = ""
        self.skipped: dict[str, str] = {}
        self.data_notes: dict[str, Any] = {}
        self.prime_seconds: list[float] = []
        """Wall time of each priming push: our fixed cost per push, for reading the ratios."""
        self.cpu_seconds: dict[str, list[float]] = {"tree": [], "restic": []}
        """User + system seconds of each timed tree push and restic backup, in order."""
        self.series = {
            "sha256": Series("sha256 limit (1 thread, 1 MiB reads)", "GB/s"),
            "fdatasync": Series("fdatasync write limit (dd-like)", "MB/s"),
            "big_nofsync": Series("ours: push big, ARTIFACTSTORE_FSYNC=0", "MB/s"),
            "big_fsync": Series("ours: push big, fsync on", "MB/s"),
            "lib_nofsync": Series("library: Store.push big, FSYNC=0 (no start-up)", "MB/s"),
            "lib_fsync": Series("library: Store.push big, fsync on (no start-up)", "MB/s"),
            "restic": Series("restic backup tree", "files/s"),
            "tree": Series("ours: push tree", "files/s"),
        }

    # ---------------------------------------------------------------- setup

    def find_tools(self) -> None:
        """Decide which measurements can run; say why any are skipped."""
        wanted = self.cfg.only
        if wanted & {"big", "tree"}:
            reason = probe_cli([str(self.cli), "push", "--help"], cwd=self.work)
            if reason is not None:
                msg = (
                    f"our CLI is not usable yet ({reason}); skipping our rows. "
                    f"Expected `{self.cli} push NS/NAME:VERSION PATH`."
                )
                for key in ("big", "tree"):
                    if key in wanted:
                        self.skipped[key] = msg
        if "restic" in wanted:
            if self.restic is None:
                self.skipped["restic"] = (
                    "restic not found; install it with `apt-get install -y restic` "
                    "(Debian package); skipping the restic row"
                )
            else:
                r = run_child([self.restic, "version"], log=self.logs / "restic-version.log")
                self.restic_version = r.output_tail.strip()

    def active(self, key: str) -> bool:
        """Selected on the command line and runnable here."""
        return key in self.cfg.only and key not in self.skipped

    def prepare_data(self) -> None:
        """Write the large file and the tree once; every trial reuses them."""
        need_big = self.active("limits") or self.active("big")
        need_tree = self.active("tree") or self.active("restic")
        if need_big:
            secs = write_random_file(self.big, self.cfg.size)
            settle()
            read_through(self.big)  # resident in the page cache for every trial
            self.data_notes["big_bytes"] = self.cfg.size
            self.data_notes["big_generate_s"] = round(secs, 2)
            print(f"data:     {self.cfg.size / MiB:,.0f} MiB random file ({secs:.1f} s to write)")
        if need_tree:
            start = time.perf_counter()
            self.tree = make_small_tree(self.tree_root, self.cfg.files)
            settle()
            secs = time.perf_counter() - start
            self.data_notes["tree_files"] = self.tree.files
            self.data_notes["tree_dirs"] = self.tree.dirs
            self.data_notes["tree_bytes"] = self.tree.total_bytes
            print(
                f"data:     tree of {self.tree.files:,} files (1-16 KiB) in {self.tree.dirs} "
                f"dirs, {self.tree.total_bytes / MB:,.1f} MB ({secs:.1f} s to write)"
            )

    # ---------------------------------------------------------------- limits

    def _prefault(self, nbytes: int) -> None:
        """Untimed: make the RAM the next step writes into cheap to allocate."""
        if self.cfg.prefault:
            prefault_page_cache(self.work, nbytes)

    def _big_need(self) -> int:
        """RAM a large-file step touches: the copy's page cache plus process heaps."""
        return self.cfg.size + 256 * MiB

    def _tree_need(self) -> int:
        """RAM a tree step touches: stored bytes, metadata, process heaps."""
        tree_bytes = self.tree.total_bytes if self.tree else 0
        return 2 * tree_bytes + 256 * MiB

    def sha256_limit(self) -> float:
        """One single-thread SHA-256 pass over the cached file; GB/s."""
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        h = hashlib.sha256()
        start = time.perf_counter()
        with open(self.big, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
        h.hexdigest()
        return self.cfg.size / (time.perf_counter() - start) / GB

    def fdatasync_limit(self) -> float:
        """Copy the cached file to a new file in 1 MiB writes, then one fdatasync; MB/s.

        The same work as ``dd if=big of=copy bs=1M conv=fdatasync``: the clock
        stops after the data is on the disk.
        """
        dst = self.work / "fdatasync-copy.bin"
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        self._prefault(self._big_need())
        start = time.perf_counter()
        with open(self.big, "rb", buffering=0) as src, open(dst, "wb", buffering=0) as out:
            while n := src.readinto(buf):
                done = 0
                while done < n:
                    done += out.write(view[done:n]) or 0
            os.fdatasync(out.fileno())
        secs = time.perf_counter() - start
        remove(dst)
        return self.cfg.size / secs / MB

    # ---------------------------------------------------------------- ours

    def _ours_env(self, home: Path, fsync: bool) -> dict[str, str]:
        """Local mode on ``home``; fsync default (unset) or the no-fsync switch."""
        values = {"ARTIFACTSTORE_HOME": str(home)}
        if not fsync:
            values["ARTIFACTSTORE_FSYNC"] = "0"
        return child_env(["ARTIFACTSTORE_"], **values)

    def _fresh_home(self, tag: str, env: dict[str, str]) -> Path:
        """An empty home; created by a tiny untimed push unless --no-prime."""
        home = self.work / f"home-{tag}"
        remove(home)
        home.mkdir()
        if self.cfg.prime:
            seed = self.work / "prime.txt"
            seed.write_bytes(b"prime\n")
            r = run_child(
                [str(self.cli), "push", "bench/prime:1", str(seed)],
                env=env,
                log=self.logs / f"prime-{tag}.log",
                cwd=self.work,
            )
            self.prime_seconds.append(r.seconds)
            if not r.ok:
                raise RuntimeError(f"priming push failed (exit {r.returncode}):\n{r.output_tail}")
        settle()
        return home

    def _push(self, tag: str, ref: str, path: str, fsync: bool, need: int) -> ChildResult:
        return self._run_ours(tag, [str(self.cli), "push", ref, path], fsync, need)

    def _run_ours(self, tag: str, argv: list[str], fsync: bool, need: int) -> ChildResult:
        """Run ``argv`` against a fresh primed home, after a prefault of ``need`` bytes."""
        home = self.work / f"home-{tag}"
        env = self._ours_env(home, fsync)
        self._fresh_home(tag, env)
        self._prefault(need)
        cpu = _children_cpu()
        r = run_child(
            argv,
            env=env,
            log=self.logs / f"{tag}.log",
            cwd=self.work,  # a CLI that ignored ARTIFACTSTORE_HOME must not write into the repo
        )
        if tag in self.cpu_seconds and r.ok:
            self.cpu_seconds[tag].append(_children_cpu() - cpu)
        remove(home)  # before settle(): no-fsync bytes are dropped, not written back
        settle()
        if not r.ok:
            raise RuntimeError(f"{tag} exited {r.returncode}:\n{r.output_tail}")
        return r

    def ours_big(self, fsync: bool) -> ChildResult:
        """One push of the large file into a fresh home; the caller derives MB/s."""
        tag = "big-fsync" if fsync else "big-nofsync"
        return self._push(tag, "bench/big:1", str(self.big), fsync, self._big_need())

    def library_big(self, fsync: bool) -> float:
        """Seconds of ``Store.push`` alone in a child that opened the store first.

        The CLI row pays for the interpreter, its imports and opening the store
        on every push (the fixed cost printed below the tables); this row times
        only the library call, to show what the data plane and the control plane
        do with the bytes themselves.
        """
        tag = "lib-fsync" if fsync else "lib-nofsync"
        home = self.work / f"home-{tag}"
        out = self.work / "lib-seconds.txt"
        argv = [sys.executable, "-c", _LIBRARY_PUSH, str(home), "bench/big:1", str(self.big)]
        self._run_ours(tag, [*argv, str(out)], fsync, self._big_need())
        return float(out.read_text())

    def ours_tree(self) -> ChildResult:
        """One push of the whole tree (directory argument) into a fresh home."""
        return self._push(
            "tree", "bench/tree:1", f"{self.tree_root}/", fsync=True, need=self._tree_need()
        )

    # ---------------------------------------------------------------- restic

    def restic_tree(self) -> ChildResult:
        """One ``restic backup`` of the tree into a fresh repository (init untimed)."""
        assert self.restic is not None
        repo = self.work / "restic-repo"
        cache = self.work / "restic-cache"
        remove(repo)
        remove(cache)
        env = child_env(["RESTIC_"], RESTIC_PASSWORD=RESTIC_PASSWORD, RESTIC_CACHE_DIR=str(cache))
        init = run_child(
            [self.restic, "init", "--repo", str(repo)], env=env, log=self.logs / "restic-init.log"
        )
        if not init.ok:
            raise RuntimeError(f"restic init exited {init.returncode}:\n{init.output_tail}")
        settle()
        self._prefault(self._tree_need())
        cpu = _children_cpu()
        r = run_child(
            [self.restic, "backup", "--repo", str(repo), str(self.tree_root)],
            env=env,
            log=self.logs / "restic-backup.log",
        )
        if r.ok:
            self.cpu_seconds["restic"].append(_children_cpu() - cpu)
        remove(repo)
        remove(cache)
        settle()
        if not r.ok:
            raise RuntimeError(f"restic backup exited {r.returncode}:\n{r.output_tail}")
        return r

    # ---------------------------------------------------------------- rounds

    def _trial(self, key: str, fn: Callable[[], tuple[float, int | None]]) -> None:
        """Run one trial, record it, print it; a failure stops that series only."""
        s = self.series[key]
        if s.error is not None:
            return
        meter = CpuMeter()
        try:
            value, rss = fn()
        except RuntimeError as e:
            s.error = str(e).splitlines()[0]
            print(f"    {s.name}: FAILED\n{e}", flush=True)
            return
        share = meter.read()
        s.values.append(value)
        s.others_cpu_pct.append(round(share.others_pct, 1))
        extra = f"   others {share.others_pct:3.0f}% CPU"
        if share.steal_pct >= 1:
            extra += f", steal {share.steal_pct:.0f}%"
        if rss is not None:
            s.peak_rss_bytes.append(rss)
            extra += f", peak RSS {rss / MB:,.0f} MB"
        digits = 2 if s.unit == "GB/s" else 0
        print(f"    {s.name:<40} {fmt_num(value, digits):>9} {s.unit:<7}{extra}", flush=True)

    def run(self) -> None:
        """Interleave limits, peers and ours round by round, so drift hits all alike."""
        size = self.cfg.size
        files = self.tree.files if self.tree else 0

        def big(fsync: bool) -> tuple[float, int | None]:
            r = self.ours_big(fsync)
            return size / r.seconds / MB, r.peak_rss_bytes

        def tree() -> tuple[float, int | None]:
            r = self.ours_tree()
            return files / r.seconds, r.peak_rss_bytes

        def restic() -> tuple[float, int | None]:
            r = self.restic_tree()
            return files / r.seconds, r.peak_rss_bytes

        for i in range(1, self.cfg.trials + 1):
            print(f"  round {i}/{self.cfg.trials}", flush=True)
            if self.active("limits"):
                self._trial("sha256", lambda: (self.sha256_limit(), None))
            if self.active("big"):
                self._trial("big_nofsync", lambda: big(False))
                self._trial("lib_nofsync", lambda: (size / self.library_big(False) / MB, None))
            if self.active("limits"):
                self._trial("fdatasync", lambda: (self.fdatasync_limit(), None))
            if self.active("big"):
                self._trial("big_fsync", lambda: big(True))
                self._trial("lib_fsync", lambda: (size / self.library_big(True) / MB, None))
            if self.active("restic"):
                self._trial("restic", restic)
            if self.active("tree"):
                self._trial("tree", tree)

    # ---------------------------------------------------------------- report

    def ratios(self) -> list[dict[str, Any]]:
        """The targets of issue 17 and the context rows, best vs best, with what goes beside."""
        s = self.series
        sha = s["sha256"].best
        sha_mb = None if sha is None else sha * GB / MB
        lower = _lower(s["fdatasync"].best, sha_mb)
        startup = min(self.prime_seconds) if self.prime_seconds else None
        cli_vs_lower = _ratio(s["big_fsync"].best, lower)
        rows = [
            _target(
                "TARGET library push big, fsync on / min(fdatasync, sha256)",
                _ratio(s["lib_fsync"].best, lower),
                TARGET_DURABLE_VS_LOWER_LIMIT,
                beside=f"CLI fixed start-up {fmt_num(startup, 2)} s; "
                f"CLI push, fsync on / min: {fmt_num(cli_vs_lower, 2)}",
            ),
            _target(
                "TARGET push tree files/s / restic files/s (reported)",
                _ratio(s["tree"].best, s["restic"].best),
                None,
                beside=f"CPU s per 1,000 files: ours {fmt_num(self.cpu_per_1000('tree'), 2)}, "
                f"restic {fmt_num(self.cpu_per_1000('restic'), 2)}",
            ),
        ]
        for key, label in (("big_fsync", "fsync on"), ("big_nofsync", "FSYNC=0")):
            rss = s[key].max_rss_bytes
            rows.append(
                _target(
                    f"TARGET peak RSS MB, push big, {label}",
                    None if rss is None else rss / MB,
                    TARGET_PEAK_RSS_MB,
                    higher_is_better=False,
                )
            )
        for name, num, den in (  # issue 3's targets before the restatement, as context
            ("push big, fsync on / fdatasync write limit", "big_fsync", s["fdatasync"].best),
            ("push big, FSYNC=0 / sha256 limit", "big_nofsync", sha_mb),
            ("library push big, FSYNC=0 / sha256 limit", "lib_nofsync", sha_mb),
        ):
            rows.append(_target(name, _ratio(s[num].best, den), None, status="context"))
        return rows

    def cpu_per_1000(self, key: str) -> float | None:
        """CPU seconds (user + system) per 1,000 files of the tree: the least over the trials."""
        trials = self.cpu_seconds[key]
        files = self.tree.files if self.tree else 0
        return min(trials) / files * 1000 if trials and files else None

    def report(self) -> str:
        """The result tables as printed to stdout."""
        rows: list[list[str]] = []
        for key, s in self.series.items():
            digits = 2 if s.unit == "GB/s" else 0
            if s.values:
                trials = " ".join(fmt_num(v, digits) for v in s.values)
                best = f"{fmt_num(s.best, digits)} {s.unit}"
            else:
                trials = s.error or self._skip_word(key)
                best = "-"
            rss = "-" if s.max_rss_bytes is None else fmt_num(s.max_rss_bytes / MB)
            rows.append([s.name, best, rss, trials])
        out = [
            render_table(["measurement", "best", "peak RSS MB", "trials (in order)"], rows),
            "",
        ]
        trows = []
        for t in self.ratios():
            digits = 0 if "peak RSS" in t["name"] else 2
            op = ">=" if t["higher_is_better"] else "<"
            target = "-" if t["target"] is None else f"{op} {fmt_num(t['target'], digits)}"
            trows.append([t["name"], fmt_num(t["value"], digits), target, t["status"], t["beside"]])
        out.append(
            render_table(["ratio / figure (best vs best)", "value", "target", "", "beside"], trows)
        )
        for key, label in (("tree", "ours, tree"), ("restic", "restic")):
            if self.cpu_seconds[key]:
                trials = " ".join(fmt_num(c, 2) for c in self.cpu_seconds[key])
                out.append(f"CPU s (user + system) per trial, {label}: {trials}")
        if self.prime_seconds:
            out.append(
                f"\nfixed cost of one push (6-byte push into an empty home, best of "
                f"{len(self.prime_seconds)}): {min(self.prime_seconds):.2f} s, included in "
                "every timed push"
            )
        return "\n".join(out)

    def _skip_word(self, key: str) -> str:
        group = {
            "sha256": "limits",
            "fdatasync": "limits",
            "big_nofsync": "big",
            "big_fsync": "big",
            "lib_nofsync": "big",
            "lib_fsync": "big",
            "restic": "restic",
            "tree": "tree",
        }[key]
        if group not in self.cfg.only:
            return "not selected (--only)"
        return "skipped" if group in self.skipped else "no result"


def _lower(a: float | None, b: float | None) -> float | None:
    """The lower of two limits, or None if either is unmeasured."""
    return None if a is None or b is None else min(a, b)


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def _children_cpu() -> float:
    """User + system seconds of every child reaped so far (``run_child`` reaps with wait4).

    The difference around one ``run_child`` is that child's CPU time, its own
    children's included: what restic's Go threads and our threads spend.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _target(
    name: str,
    value: float | None,
    target: float | None,
    higher_is_better: bool = True,
    beside: str = "",
    status: str = "reported",
) -> dict[str, Any]:
    """One row of the ratio table; ``target`` None: a figure without a threshold."""
    if target is not None:
        status = verdict(value, target, higher_is_better, missing="pending")
    return {
        "name": name,
        "value": value,
        "target": target,
        "higher_is_better": higher_is_better,
        "status": status,
        "beside": beside,
    }


def main(argv: list[str] | None = None) -> int:
    """Set up scratch space, run the rounds, print and optionally save the figures."""
    cfg = parse_args(argv)
    compile_package()
    started = time.perf_counter()
    parent = pick_scratch_parent(cfg.scratch)
    # big file + dd copy + one store of it + tree, its store and restic's repo, + slack
    check_free_space(parent, 3 * cfg.size + 4 * cfg.files * 17 * 1024 + 1024 * MiB)
    with scratch_dir(parent, "bench-ingest-") as work:
        info = print_header("Ingest benchmark (issue 3)", work)
        run_meter = CpuMeter()
        bench = IngestBench(cfg, work)
        bench.find_tools()
        for why in dict.fromkeys(bench.skipped.values()):
            keys = ",".join(k for k, v in bench.skipped.items() if v == why)
            print(f"skip {keys}: {why}")
        if bench.restic_version:
            print(f"peer:     {bench.restic_version}")
        bench.prepare_data()
        print(
            f"trials:   {cfg.trials} interleaved rounds, best of {cfg.trials} reported; "
            f"fresh store per trial ({'primed' if cfg.prime else 'empty'}); "
            f"page-cache prefault {'on' if cfg.prefault else 'off'}"
        )
        bench.run()
        elapsed = time.perf_counter() - started
        share = run_meter.read()
        print()
        print(bench.report())
        print(
            f"\nother processes used {share.others_pct:.0f}% of the CPUs during the run "
            f"(steal {share.steal_pct:.0f}%); per-trial shares above"
        )
        warn_if_busy(share.others_pct)
        print(f"units: MB/GB = 10^6/10^9 bytes; wall time of the whole run {elapsed:.0f} s")
        if cfg.json_path is not None:
            write_json(
                cfg.json_path,
                {
                    "benchmark": "ingest",
                    "command": command_line(),
                    "revision": repo_revision(),
                    "machine": asdict(info),
                    "config": {
                        "size_bytes": cfg.size,
                        "files": cfg.files,
                        "trials": cfg.trials,
                        "only": sorted(cfg.only),
                        "prime": cfg.prime,
                        "prefault": cfg.prefault,
                    },
                    "data": bench.data_notes,
                    "restic_version": bench.restic_version or None,
                    "prime_push_seconds": bench.prime_seconds,
                    "cpu_seconds": bench.cpu_seconds,
                    "skipped": bench.skipped,
                    "results": {k: s.to_json() for k, s in bench.series.items()},
                    "ratios": bench.ratios(),
                    "elapsed_s": round(elapsed, 1),
                    "others_cpu_pct": round(share.others_pct, 1),
                    "steal_pct": round(share.steal_pct, 1),
                },
            )
            print(f"figures written to {cfg.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
