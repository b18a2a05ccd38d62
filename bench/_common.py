"""Shared helpers for the benchmark scripts in ``bench/``.

The machines this project runs on are small shared VMs whose absolute figures
drift from run to run (see PERF-NOTES.md), so every benchmark here measures the
machine's own limits and the peers in the same run, interleaved with our
measurements, and reports best-of-N and ratios. These helpers keep that
machinery (scratch space on the right disk, child processes with peak RSS,
best-of series, the machine header, the table) in one place; servers under
test and their process trees are in ``_services.py``.

Units: MB and GB are decimal (10**6, 10**9 bytes), like ``dd`` prints them;
MiB and GiB are binary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MB = 1_000_000
GB = 1_000_000_000

CHUNK = MiB
"""I/O unit of the limit measurements: 1 MiB, like ``dd bs=1M``."""

REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- machine


@dataclass(frozen=True)
class MachineInfo:
    """What the figures were measured on; printed and stored with every run."""

    date: str
    hostname: str
    nproc: int
    cpu_model: str
    cpu_flags: str
    mem_total_mb: int
    kernel: str
    python: str
    scratch: str
    scratch_free_gb: float
    scratch_device: str


def _cpu_model() -> tuple[str, str]:
    """CPU model and the flags that matter for hashing (SHA-NI, AVX2, AVX-512)."""
    model = platform.processor() or "unknown"
    flags: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("unknown", "", "x86_64"):
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    wanted = [f for f in ("sha_ni", "avx2", "avx512f") if f in flags]
    return model, " ".join(wanted) or "-"


def _meminfo(key: str) -> int:
    """One /proc/meminfo field in bytes (0 if unknown)."""
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * KiB
    return 0


def _mem_total_mb() -> int:
    return _meminfo("MemTotal") // MB


def _device_of(path: Path) -> str:
    """The block device holding ``path`` (as ``df`` shows it), for the header."""
    try:
        out = subprocess.run(
            ["df", "--output=source", str(path)], capture_output=True, text=True, check=True
        ).stdout.split()
        return out[-1] if out else "?"
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine_info(scratch: Path) -> MachineInfo:
    """Collect the machine header; ``scratch`` is where the data and stores live."""
    model, flags = _cpu_model()
    return MachineInfo(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        hostname=platform.node(),
        nproc=os.cpu_count() or 0,
        cpu_model=model,
        cpu_flags=flags,
        mem_total_mb=_mem_total_mb(),
        kernel=platform.release(),
        python=platform.python_version(),
        scratch=str(scratch),
        scratch_free_gb=shutil.disk_usage(scratch).free / GB,
        scratch_device=_device_of(scratch),
    )


def format_machine(info: MachineInfo) -> str:
    """Human-readable header block."""
    return "\n".join(
        [
            f"date:     {info.date}",
            f"machine:  {info.hostname}, nproc={info.nproc}, {info.cpu_model} "
            f"[{info.cpu_flags}], {info.mem_total_mb:,} MB RAM",
            f"kernel:   {info.kernel}, Python {info.python}",
            f"scratch:  {info.scratch} on {info.scratch_device}, "
            f"{info.scratch_free_gb:.1f} GB free",
        ]
    )


def command_line() -> str:
    """The command as typed, so a reader can rerun exactly this."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def repo_revision(root: Path = REPO_ROOT) -> str:
    """The checked-out commit, read from ``.git`` directly (no git process needed).

    In a worktree ``.git`` is a file naming the worktree's git directory, which
    holds its ``HEAD``; the refs live in the directory its ``commondir`` names.
    """
    git = root / ".git"
    try:
        if git.is_file():
            git = (
                root / git.read_text(encoding="utf-8").strip().removeprefix("gitdir: ")
            ).resolve()
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref: "):
            return head[:12]
        common = git / "commondir"
        if common.is_file():
            git = (git / common.read_text(encoding="utf-8").strip()).resolve()
        ref = head[5:]
        loose = git / ref
        if loose.is_file():
            return loose.read_text(encoding="utf-8").strip()[:12]
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name == ref:
                    return sha[:12]
        return f"{ref.removeprefix('refs/heads/')} (no commits)"
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- scratch


def same_device(a: Path, b: Path) -> bool:
    """True when both paths are on one filesystem (what ``df`` would show)."""
    return os.stat(a).st_dev == os.stat(b).st_dev


def pick_scratch_parent(explicit: Path | None, anchor: Path = REPO_ROOT) -> Path:
    """Choose where to put GBs of scratch data: on the same disk as ``anchor``.

    Disk-bound figures only mean something when the data, the stores and the
    peers' repositories share the disk our users' stores would live on.
    """
    if explicit is not None:
        explicit.mkdir(parents=True, exist_ok=True)
        if not same_device(explicit, anchor):
            print(f"warning: --scratch {explicit} is not on the same disk as {anchor}")
        return explicit
    tmp = Path(tempfile.gettempdir())
    if same_device(tmp, anchor):
        return tmp
    print(f"note: {tmp} is on another disk than {anchor}; using {anchor.parent} for scratch")
    return anchor.parent


@contextlib.contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory removed on exit, on SIGTERM and on Ctrl-C alike.

    The benchmarks leave GBs behind otherwise, so SIGTERM is turned into an
    exception for the duration so that the cleanup runs.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))

    def _on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def remove(path: Path) -> None:
    """Delete a file or tree if present (trial leftovers)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def settle() -> None:
    """Flush dirty pages so the next timed step is not charged for earlier writes."""
    os.sync()


def prefault_page_cache(directory: Path, nbytes: int, chunk: int = CHUNK) -> float:
    """Make ``nbytes`` of guest RAM cheap to allocate again, just before a timed step.

    These VMs run a balloon driver with free page reporting: about 2 s after
    memory is freed the guest hands it back to the host, and the next first
    touch of each page costs a host page fault. Writing 1 GiB to the page cache
    then runs at ~300 MB/s instead of ~3 GB/s, which is most of the
    "200 to 1,200 MB/s" disk noise in PERF-NOTES.md and has nothing to do with
    the disk or the code measured. Writing and deleting a page-cache file of
    the size the step will need, right before it, leaves that many freshly
    freed, host-backed pages at the head of the free lists. The file is
    unlinked before writeback, so the disk never sees it. Returns seconds taken.
    """
    # Never push the benchmark's own data out of the page cache to do it.
    nbytes = min(nbytes, max(0, _meminfo("MemFree") - 512 * MiB))
    start = time.perf_counter()
    path = directory / ".prefault"
    block = b"\x01" * chunk
    with open(path, "wb", buffering=0) as f:
        left = nbytes
        while left > 0:
            left -= f.write(block[: min(chunk, left)]) or 0
    path.unlink()
    return time.perf_counter() - start


def check_free_space(path: Path, needed: int) -> None:
    """Fail early with a clear message rather than fill the disk mid-run."""
    free = shutil.disk_usage(path).free
    if free < needed:
        raise SystemExit(
            f"not enough free space in {path}: need {needed / GB:.1f} GB, have {free / GB:.1f} GB"
        )


# --------------------------------------------------------------------------- data


def write_random_file(path: Path, size: int, chunk: int = CHUNK) -> float:
    """Write ``size`` incompressible, non-repeating bytes; return seconds taken.

    Every chunk comes fresh from ``os.urandom`` so neither compression nor
    chunk-level deduplication (restic, ours) can shortcut the work.
    """
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n
    return time.perf_counter() - start


@dataclass(frozen=True)
class TreeInfo:
    """Shape of a generated small-file tree."""

    root: Path
    files: int
    dirs: int
    total_bytes: int


def make_small_tree(
    root: Path,
    files: int,
    dirs: int = 100,
    min_size: int = 1 * KiB,
    max_size: int = 16 * KiB,
    seed: int = 3,
) -> TreeInfo:
    """Create ``files`` random files of ``min_size..max_size`` bytes in ``dirs`` subdirectories.

    Sizes are seeded (same shape every run); contents are random so nothing
    deduplicates.
    """
    rng = random.Random(seed)
    dirs = max(1, min(dirs, files))
    root.mkdir(parents=True, exist_ok=True)
    subdirs = [root / f"d{i:03d}" for i in range(dirs)]
    for d in subdirs:
        d.mkdir()
    total = 0
    for i in range(files):
        size = rng.randint(min_size, max_size)
        (subdirs[i % dirs] / f"f{i:05d}.bin").write_bytes(os.urandom(size))
        total += size
    return TreeInfo(root=root, files=files, dirs=dirs, total_bytes=total)


def read_through(path: Path, chunk: int = CHUNK) -> None:
    """Read a file once so later passes hit the page cache."""
    buf = bytearray(chunk)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ChildResult:
    """One finished child process: wall time, exit code, peak RSS and its output."""

    argv: tuple[str, ...]
    seconds: float
    returncode: int
    peak_rss_bytes: int
    output_tail: str

    @property
    def ok(self) -> bool:
        """Exit status 0."""
        return self.returncode == 0


def run_child(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> ChildResult:
    """Run a command to completion, timing it and measuring its peak RSS.

    ``env`` is the child's whole environment (None: inherit ours), so callers
    can drop variables that would change what is measured. ``os.wait4``
    returns the rusage of exactly this child (and any children it waited
    for), so the figure is the process's own high-water mark, not the
    benchmark's. Output goes to a file, not a pipe, so nothing in the parent
    competes with the child for CPU and a chatty child cannot block.
    """
    full_env = dict(os.environ) if env is None else dict(env)
    log_path = log or Path(tempfile.mkstemp(prefix="bench-child-", suffix=".log")[1])
    with open(log_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            # Ctrl-C / SIGTERM: stop the child before the scratch dir is removed
            # under it, or it keeps writing GBs into a deleted tree.
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = log_path.read_bytes()[-4000:].decode("utf-8", "replace")
    if log is None:
        log_path.unlink(missing_ok=True)
    return ChildResult(
        argv=tuple(argv),
        seconds=seconds,
        returncode=proc.returncode,
        peak_rss_bytes=usage.ru_maxrss * KiB,  # Linux reports KiB
        output_tail=tail,
    )


def child_env(drop_prefixes: Sequence[str], **values: str) -> dict[str, str]:
    """Our environment minus variables with the given prefixes, plus ``values``.

    Keeps a stray ``ARTIFACTSTORE_URL`` or ``RESTIC_REPOSITORY`` in the
    caller's shell from silently changing what a trial measures.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes))}
    env.update(values)
    return env


def compile_package() -> None:
    """Byte-compile our sources first (what ``make bytecode`` does).

    An editable install leaves them uncompiled, and with PYTHONDONTWRITEBYTECODE
    set (as on these machines) every CLI start would compile them again: a
    quarter second of start-up that a packaged install never pays.
    """
    import compileall

    compileall.compile_dir(str(REPO_ROOT / "src"), quiet=1)


def venv_cli(name: str) -> Path:
    """A console script installed next to the running interpreter (the venv's bin)."""
    return Path(sys.executable).parent / name


def probe_cli(argv: Sequence[str], timeout: float = 120.0, cwd: Path | None = None) -> str | None:
    """Return None if ``argv`` runs and exits 0, else a one-line reason."""
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return f"{argv[0]} not found"
    except subprocess.TimeoutExpired:
        return f"{shlex.join(argv)} did not finish within {timeout:.0f} s"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        last = lines[-1] if lines else "(no output)"
        return f"{shlex.join(argv)} exited {proc.returncode}: {last}"
    return None


# --------------------------------------------------------------------------- series


@dataclass
class Series:
    """Trials of one measurement; ``best`` is the highest rate (noise only slows)."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    peak_rss_bytes: list[int] = field(default_factory=list)
    others_cpu_pct: list[float] = field(default_factory=list)
    error: str | None = None
    note: str = ""

    @property
    def best(self) -> float | None:
        """Best of the trials, or None if none succeeded."""
        return max(self.values) if self.values else None

    @property
    def max_rss_bytes(self) -> int | None:
        """Highest peak RSS over all trials (the figure a memory target is about)."""
        return max(self.peak_rss_bytes) if self.peak_rss_bytes else None

    def to_json(self) -> dict[str, Any]:
        """Plain-data form for ``--json``."""
        return {
            "name": self.name,
            "unit": self.unit,
            "best": self.best,
            "trials": self.values,
            "peak_rss_bytes": self.peak_rss_bytes or None,
            "max_peak_rss_mb": None if self.max_rss_bytes is None else self.max_rss_bytes / MB,
            "others_cpu_pct": self.others_cpu_pct,
            "error": self.error,
            "note": self.note,
        }


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes (monotonic clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass(frozen=True)
class CpuShare:
    """How busy the machine was with work that was not ours, over an interval."""

    others_pct: float
    """CPU used by other processes, as % of all CPUs (other sessions' tests, daemons)."""
    steal_pct: float
    """CPU the hypervisor gave to other guests, as % of all CPUs."""


class CpuMeter:
    """Measures CPU taken by everything except this process and its children.

    The machines are shared: another session's test run during a trial makes
    that trial slow for reasons unrelated to what is measured. Printing the
    share next to each trial says which figures to distrust.
    """

    def __init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK")
        self._ncpu = os.cpu_count() or 1
        self._start = self._sample()

    @staticmethod
    def _proc_stat() -> tuple[float, float]:
        try:
            with open("/proc/stat", encoding="utf-8") as f:
                fields = [float(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return 0.0, 0.0
        fields += [0.0] * (8 - len(fields))
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        return user + nice + system + irq + softirq, steal

    def _sample(self) -> tuple[float, float, float, float]:
        busy, steal = self._proc_stat()
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.perf_counter(), busy, steal, own

    def restart(self) -> None:
        """Begin a new interval."""
        self._start = self._sample()

    def read(self) -> CpuShare:
        """Share of the machine others used since the interval began."""
        now, busy, steal, own = self._sample()
        t0, busy0, steal0, own0 = self._start
        capacity = max(now - t0, 1e-9) * self._ncpu
        others = (busy - busy0) / self._hz - (own - own0)
        return CpuShare(
            others_pct=max(0.0, 100 * others / capacity),
            steal_pct=max(0.0, 100 * (steal - steal0) / self._hz / capacity),
        )


def load_average() -> str:
    """The 1/5/15-minute load, to show whether the machine was idle before the run."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# --------------------------------------------------------------------------- output


def fmt_num(value: float | None, digits: int = 0) -> str:
    """Thousands separators, fixed decimals, and '-' for a missing figure."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width table; first column left-aligned, the rest right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def add_scratch_and_json(p: argparse.ArgumentParser) -> None:
    """The ``--scratch DIR`` and ``--json FILE`` options (``scratch``, ``json_path``)."""
    p.add_argument(
        "--scratch",
        type=Path,
        help="parent dir for the GBs of temporary data (default $TMPDIR if it is on "
        "the repo's disk); everything is removed at the end",
    )
    p.add_argument("--json", type=Path, dest="json_path", help="also write figures here")


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write the figures for later comparison (BENCHMARKS.md, CI artefacts)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


BUSY_WARN_PCT = 15.0
"""Share of the CPUs used by other processes above which a run's figures are flagged."""


def print_header(title: str, work: Path) -> MachineInfo:
    """Print what runs, the command, the machine, the revision and the load; return the machine."""
    info = machine_info(work)
    print(title)
    print(f"command:  {command_line()}")
    print(format_machine(info))
    print(f"revision: {repo_revision()}")
    print(f"load:     {load_average()} (1/5/15 min) at start")
    return info


def warn_if_busy(others_pct: float) -> None:
    """Flag the run's figures when other work took more than ``BUSY_WARN_PCT`` of the CPUs."""
    if others_pct > BUSY_WARN_PCT:
        print(
            "WARNING: the machine was busy with other work; CPU-bound figures and "
            "ratios are unreliable. Rerun when `uptime` shows a load near 0."
        )


def verdict(value: float | None, target: float, higher_is_better: bool, missing: str) -> str:
    """PASS or FAIL of ``value`` against ``target``, or ``missing`` when there is no value."""
    if value is None:
        return missing
    met = value >= target if higher_is_better else value < target
    return "PASS" if met else "FAIL"
