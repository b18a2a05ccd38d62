"""The run every HTTP benchmark shares: targets, trials, rounds, report and main.

Each ``bench/http_*.py`` script measures one thing against the CNCF
distribution registry (Debian ``docker-registry``) in the same run, with one
client implementation for both (httpx, see ``_http_targets.py``):

* ``http_large.py``: a large blob uploaded one-shot and in chunks, downloaded;
* ``http_small.py``: many 4 KiB blobs pushed, then HEADs and GETs of them,
  by concurrent Python clients;
* ``http_load.py``: GET and HEAD of one 4 KiB blob under ``wrk`` and ``hey``;
* ``http_rss.py``: the server's peak RSS during one very large upload.

A script is an ``HttpBench`` subclass naming its steps and running them over
the targets. This module starts our server (``artifactstore serve``, once per
ASGI server) and the registry on fresh, empty stores for every round, runs
each step over all targets back to back in an order that rotates from round
to round, records each trial (rate, the server's CPU seconds, the share of
the CPUs other processes took) and prints the best of N and the ratio
ours/registry: on the shared 2-vCPU VMs absolute figures drift, the ratio in
one run is what counts.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
from bench._common import (
    MB,
    CpuMeter,
    GiB,
    check_free_space,
    command_line,
    compile_package,
    fmt_num,
    pick_scratch_parent,
    prefault_page_cache,
    print_header,
    render_table,
    repo_revision,
    scratch_dir,
    settle,
    venv_cli,
    warn_if_busy,
    write_json,
)
from bench._http_common import (
    TARGET_RATIO,
    TRIALS_HEADER,
    HttpConfig,
    HttpSeries,
    target_row,
    trial_row,
    version_of,
)
from bench._http_targets import Ours, Registry, Target, serve_server_option
from bench._services import (
    PeakRssSampler,
    process_tree,
    reset_hwm,
    tree_cpu_seconds,
    tree_hwm_bytes,
)

# --------------------------------------------------------------------------- bench

C = TypeVar("C", bound=HttpConfig)


class HttpBench(Generic[C]):
    """The targets, the trials, the rounds and the report; a script adds its steps.

    A subclass names its ``steps`` (with their ``units``), labels them, and
    runs them over the round's targets in ``run_steps``; the hooks
    (``find_more_tools``, ``prepare_data``, ``new_round``) default to nothing.
    """

    group = ""
    """What the script measures: the old ``bench/http.py --only`` group, kept in the JSON."""
    title = ""
    steps: tuple[str, ...] = ()
    units: Mapping[str, str] = {}

    def __init__(self, cfg: C, work: Path) -> None:
        self.cfg = cfg
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir()
        self.skipped: dict[str, str] = {}
        """Why a target or a step is left out: 'registry' or a step name -> reason."""
        self.versions: dict[str, str] = {}
        self.ours = [Ours(work, self.logs, s, cfg.workers, auth=cfg.auth) for s in cfg.servers]
        self.registry: Registry | None = None
        self.reference: Target | None = None
        """A target shown in its own column but in no ratio (the raw sink)."""
        self.series: dict[str, HttpSeries] = {}

    @staticmethod
    def scratch_bytes(cfg: C) -> int:
        """Disk space the run needs in the scratch dir (beyond 1 GiB of slack)."""
        return 0

    @property
    def targets(self) -> list[Target]:
        out: list[Target] = [*self.ours]
        if self.registry is not None:
            out.append(self.registry)
        if self.reference is not None:
            out.append(self.reference)
        return out

    # ---------------------------------------------------------------- setup

    def find_tools(self) -> None:
        """Decide which targets and tools can run, say why any are skipped; make the series."""
        option = serve_server_option(venv_cli("artifactstore"))
        for o in self.ours:
            o.option = option
        binary = shutil.which("docker-registry")
        if not self.cfg.peer:
            self.skipped["registry"] = "--no-peer"
        elif binary is None:
            self.skipped["registry"] = (
                "docker-registry not found; install the CNCF distribution registry with "
                "`apt-get install -y docker-registry` (Debian package); ratios are n/a"
            )
        else:
            self.registry = Registry(self.work, self.logs, binary)
            self.versions["registry"] = version_of([binary, "--version"])
        self.find_more_tools()
        for t in self.targets:
            for step in self.steps:
                if t.measures(step):
                    self.series[f"{t.key}.{step}"] = HttpSeries(
                        f"{t.label}: {self.step_label(step)}", self.units[step]
                    )

    def find_more_tools(self) -> None:
        """The script's own targets and tools (a reference server, a load generator)."""

    def step_label(self, step: str) -> str:
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Make the data the steps send (files, blobs in memory)."""

    def plan(self) -> str:
        """The line that says how the trials run."""
        n = self.cfg.trials
        return f"trials:   {n} rounds (fresh servers and stores each), best of {n}"

    def prefault(self, nbytes: int) -> None:
        """The page-cache prefault before an upload, unless ``--no-prefault``."""
        if self.cfg.prefault:
            prefault_page_cache(self.work, nbytes)

    # ---------------------------------------------------------------- trials

    def _servers_cpu(self) -> float:
        return sum(tree_cpu_seconds(t.pid) for t in self.targets if t.proc is not None)

    def trial(
        self,
        target: Target,
        step: str,
        fn: Callable[[], tuple[float, float]],
        sample_rss: bool = False,
    ) -> None:
        """Run one trial of ``step`` on ``target``: fn returns (rate, work units).

        Records the server's CPU time (its process tree, from /proc) and, for
        the large steps, its peak RSS; prints the share of CPU other processes
        took meanwhile (the servers' own CPU is not "other").
        """
        s = self.series[f"{target.key}.{step}"]
        if s.error is not None or step in self.skipped:
            return
        cpu0, all0 = tree_cpu_seconds(target.pid), self._servers_cpu()
        meter = CpuMeter()
        t0 = time.perf_counter()
        sampler: PeakRssSampler | None = None
        try:
            if sample_rss:
                reset_hwm(process_tree(target.pid))
                with PeakRssSampler(target.pid) as sampler:
                    value, work = fn()
            else:
                value, work = fn()
        except (RuntimeError, httpx.HTTPError) as e:
            s.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"    {s.name}: FAILED\n      {e}", flush=True)
            return
        elapsed = time.perf_counter() - t0
        share = meter.read()
        cpu = tree_cpu_seconds(target.pid) - cpu0
        servers = self._servers_cpu() - all0
        others = share.others_pct - 100 * servers / (elapsed * (os.cpu_count() or 1))
        others = min(100.0, max(0.0, others))  # tick granularity: short trials overshoot
        s.values.append(value)
        s.server_cpu_s.append(round(cpu, 3))
        s.work.append(work)
        s.seconds.append(round(elapsed, 3))
        s.others_cpu_pct.append(round(others, 1))
        extra = f"server CPU {cpu:6.2f} s, others {others:3.0f}% CPU"
        if share.steal_pct >= 1:
            extra += f", steal {share.steal_pct:.0f}%"
        if sampler is not None:
            peak = max(sampler.peak_bytes, tree_hwm_bytes(process_tree(target.pid)))
            s.peak_rss_bytes.append(peak)
            extra += f", peak RSS {peak / MB:,.0f} MB"
        print(f"    {s.name:<52} {fmt_num(value):>8} {s.unit:<8} {extra}", flush=True)

    # ---------------------------------------------------------------- rounds

    def run(self) -> None:
        """Fresh servers per round; every step over all targets, rotating the order."""
        targets = self.targets
        for r in range(self.cfg.trials):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            print(f"  round {r + 1}/{self.cfg.trials} (order: {', '.join(t.key for t in order)})")
            self.new_round()
            try:
                self.run_steps([t for t in order if self.start(t)], r)
            finally:
                for t in targets:
                    t.stop()
                settle()

    def new_round(self) -> None:
        """Forget what the last round stored (its servers are gone)."""

    def run_steps(self, order: Sequence[Target], round_no: int) -> None:
        raise NotImplementedError

    def start(self, t: Target) -> bool:
        """Start a fresh server; if it fails, say why and fail its series (not the run)."""
        try:
            t.start()
        except RuntimeError as e:
            print(f"    {t.label}: FAILED to start\n      {e}", flush=True)
            for key, s in self.series.items():
                if key.startswith(f"{t.key}.") and s.error is None:
                    s.error = f"server did not start: {str(e).splitlines()[0]}"
            t.stop()
            return False
        return True

    def stop_all(self) -> None:
        for t in self.targets:
            t.stop()

    def log_problems(self, limit: int = 5) -> list[str]:
        """Server-side trouble the clients did not see: tracebacks, 5xx, error lines.

        The logs live in the scratch dir, which is removed at the end, so the
        script reports what they hold before that.
        """
        bad = re.compile(r'Traceback|"status": 5\d\d|level=(?:error|fatal|panic)|\bERROR\b')
        out: list[str] = []
        for log in sorted(self.logs.glob("*.log")):
            hits = [
                line.strip()
                for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                if bad.search(line)
            ]
            if hits:
                out.append(f"{log.name}: {len(hits)} line(s), first: {hits[0][:300]}")
                out.extend(f"    {h[:300]}" for h in hits[1:limit])
        return out

    # ---------------------------------------------------------------- report

    def best(self, target: str, step: str) -> float | None:
        s = self.series.get(f"{target}.{step}")
        return None if s is None else s.best

    def ratios(self) -> list[dict[str, Any]]:
        """Ours over the registry (best vs best) per step and server."""
        rows: list[dict[str, Any]] = []
        for o in self.ours:
            for step in self.steps:
                if f"{o.key}.{step}" not in self.series:
                    continue
                mine, theirs = self.best(o.key, step), self.best("registry", step)
                value = None if mine is None or not theirs else mine / theirs
                rows.append(
                    target_row(
                        f"{o.key}: {step}", o.key, step, value, TARGET_RATIO, higher_is_better=True
                    )
                )
        return rows

    def cell(self, target: str, step: str) -> str:
        """A target's best figure for a step, or why there is none."""
        s = self.series.get(f"{target}.{step}")
        if s is None:
            return "n/a"
        if s.best is None:
            if s.error:
                return "FAILED"
            return "skipped" if step in self.skipped else "-"
        return f"{fmt_num(s.best)} {s.unit}"

    def summary_rows(
        self, o: Ours, ratios: Mapping[tuple[str, str], dict[str, Any]]
    ) -> list[list[str]]:
        """One server's table: label, ours, registry, [reference], ratio, target, verdict."""
        rows: list[list[str]] = []
        ref = self.reference
        for step in self.steps:
            r = ratios.get((o.key, step))
            if r is None:
                continue
            row = [self.step_label(step), self.cell(o.key, step), self.cell("registry", step)]
            if ref is not None:
                row.append(self.cell(ref.key, step) if ref.measures(step) else "")
            row += [
                fmt_num(r["value"], 2) if r["value"] is not None else "n/a",
                f">= {TARGET_RATIO:.2f}",
                r["status"],
            ]
            rows.append(row)
        return rows

    def details(self) -> list[str]:
        """Lines the script prints between the summary and the trials (default none)."""
        return []

    def report(self) -> str:
        """Per-server comparison tables, the script's details, then every trial."""
        out: list[str] = []
        ratios = {(r["server"], r["step"]): r for r in self.ratios()}
        for o in self.ours:
            header = ["measurement (best of trials)", "ours", "registry", "ours/registry"]
            if self.reference is not None:
                header.insert(3, self.reference.label)
            header += ["target", ""]
            serve = f"artifactstore serve {o.option} {o.key} --workers {o.workers}"
            out.append(f"ours = {serve} {o.auth_label}")
            out.append(render_table(header, self.summary_rows(o, ratios)))
            out.append("")
        out.extend(self.details())
        if self.series:
            out.append("all trials (in order); server CPU = its process tree's user+system time")
            out.append(render_table(TRIALS_HEADER, [trial_row(s) for s in self.series.values()]))
        return "\n".join(out).rstrip("\n")

    def max_others(self) -> float:
        """Highest others-CPU share over the trials that lasted 1 s or more.

        /proc/stat counts in 10 ms ticks: the share of a 20 ms trial means little.
        """
        shares = [
            x
            for s in self.series.values()
            for x, secs in zip(s.others_cpu_pct, s.seconds, strict=True)
            if secs >= 1.0
        ]
        return max(shares, default=0.0)

    def json_extra(self) -> dict[str, Any]:
        """The script's own figures beside the series (default none)."""
        return {}


# --------------------------------------------------------------------------- main


def run_bench(bench_type: type[HttpBench[C]], cfg: C) -> int:
    """Set up scratch space, run the benchmark, print and save the figures."""
    compile_package()
    started = time.perf_counter()
    parent = pick_scratch_parent(cfg.scratch)
    check_free_space(parent, bench_type.scratch_bytes(cfg) + 1 * GiB)
    with scratch_dir(parent, f"bench-http-{bench_type.group}-") as work:
        info = print_header(f"HTTP benchmark (issue 4): {bench_type.title}", work)
        run_meter = CpuMeter()
        bench = bench_type(cfg, work)
        try:
            bench.find_tools()
            for key, why in bench.skipped.items():
                print(f"skip {key}: {why}")
            for name, version in bench.versions.items():
                print(f"{name + ':':<9} {version}")
            print(f"client:   httpx {httpx.__version__}, 1 MiB memoryview body slices")
            bench.prepare_data()
            print(bench.plan())
            bench.run()
        finally:
            bench.stop_all()
        problems = bench.log_problems()
        elapsed = time.perf_counter() - started
        share = run_meter.read()
        print()
        print(bench.report())
        if bench.series:
            print(
                f"\nCPU used by everything but this script, wrk/hey and the servers: "
                f"{bench.max_others():.0f}% at most in one trial of 1 s or more "
                f"(per-trial shares above)"
            )
            warn_if_busy(bench.max_others())
        else:
            print(f"\nother processes used {share.others_pct:.0f}% of the CPUs during the run")
        print("server logs: " + ("no tracebacks, 5xx or error lines" if not problems else ""))
        for line in problems:
            print(f"  {line}")
        print(f"units: MB = 10^6 bytes; wall time of the whole run {elapsed:.0f} s")
        if cfg.json_path is not None:
            write_json(
                cfg.json_path,
                {
                    "benchmark": "http",
                    "command": command_line(),
                    "revision": repo_revision(),
                    "machine": asdict(info),
                    "config": {**cfg.to_json(), "only": [bench.group]},
                    "versions": bench.versions,
                    "skipped": bench.skipped,
                    "results": {k: s.to_json() for k, s in bench.series.items()},
                    **bench.json_extra(),
                    "ratios": bench.ratios(),
                    "server_log_problems": problems,
                    "elapsed_s": round(elapsed, 1),
                    "run_others_cpu_pct": round(share.others_pct, 1),
                    "max_trial_others_cpu_pct": round(bench.max_others(), 1),
                },
            )
            print(f"figures written to {cfg.json_path}")
    return 0


def main(bench_type: type[HttpBench[C]], parse_args: Callable[[], C]) -> None:
    """Entry point of a script: parse, run, exit; Ctrl-C stops the servers cleanly."""
    try:
        sys.exit(run_bench(bench_type, parse_args()))
    except KeyboardInterrupt:
        # The finally blocks have stopped every server and removed the scratch dir.
        print("\ninterrupted: servers stopped, temporary data removed", file=sys.stderr)
        sys.exit(130)
