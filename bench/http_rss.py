"""HTTP benchmark, memory: the server's peak RSS during one very large upload.

Each server (ours per ASGI server, the CNCF registry for comparison) gets a
fresh store and one 4 GiB one-shot and one 4 GiB chunked upload (8 MiB
PATCHes), streamed from a generator: a random 1 MiB block stamped with its
index, so no client-side file or page cache is involved. A thread sums VmRSS
over the server's process tree every 50 ms; the maximum is the figure judged
against the target (< 200 MB). The table also shows the summed VmHWM (reset
before the upload, so it cannot miss a spike between polls), the largest
single process, the summed PSS after the upload (pages a forked worker shares
with its parent count once) and the RSS before it.

    .venv/bin/python bench/http_rss.py                    # 4 GiB
    .venv/bin/python bench/http_rss.py --quick            # 1 GiB
    .venv/bin/python bench/http_rss.py --servers granian --rss-gib 8 --json out.json
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# bench/ is a namespace package under the repo root (see ingest.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from bench._common import CHUNK, MB, GiB, MiB, fmt_num, render_table, settle
from bench._http_bench import HttpBench, main
from bench._http_common import (
    HttpConfig,
    common_options,
    http_parser,
    parse_options,
    size_label,
    target_row,
)
from bench._http_targets import Ours, Source, Target, new_client, source_sha256
from bench._services import (
    PeakRssSampler,
    process_tree,
    reset_hwm,
    tree_hwm_bytes,
    tree_pss_bytes,
    tree_rss_bytes,
)

TARGET_PEAK_RSS_MB = 200.0


class GeneratedSource:
    """``size`` bytes made of one random 1 MiB block, each copy stamped with its index.

    Needs no disk and no page cache, so a 4 GiB upload measures the server's
    memory, not ours; no two MiB are equal, and ``seed`` makes streams differ.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self._block = bytearray(os.urandom(CHUNK))
        self._block[8:16] = seed.to_bytes(8, "big")

    def slices(self, offset: int, length: int) -> Iterator[memoryview]:
        buf = bytearray(self._block)
        view = memoryview(buf)
        pos, end = offset, offset + length
        while pos < end:
            index, within = divmod(pos, CHUNK)
            buf[0:8] = index.to_bytes(8, "big")
            n = min(CHUNK - within, end - pos)
            yield view[within : within + n]
            pos += n


@dataclass(frozen=True)
class RssConfig(HttpConfig):
    """Parsed command line."""

    rss_size: int
    chunk: int

    def to_json(self) -> dict[str, Any]:
        return {"rss_bytes": self.rss_size, "chunk_bytes": self.chunk, **super().to_json()}


def parse_args(argv: list[str] | None = None) -> RssConfig:
    """Command line; ``--quick`` only changes the default size."""
    p = http_parser(
        "HTTP benchmark: peak server RSS during a large upload, ours vs the CNCF registry.",
        quick="1 GiB",
        rounds=False,
    )
    p.add_argument("--rss-gib", type=int, help="upload size in GiB (default 4)")
    p.add_argument("--chunk-mib", type=int, help="chunked upload PATCH size (8)")
    a = parse_options(p, argv, {"rss_gib": (4, 1), "chunk_mib": (8, 8)})
    return RssConfig(**common_options(p, a), rss_size=a.rss_gib * GiB, chunk=a.chunk_mib * MiB)


@dataclass
class RssResult:
    """Peak RSS of one server's process tree during one big upload."""

    target: str
    mode: str
    idle_bytes: int = 0
    peak_sampled_bytes: int = 0
    peak_hwm_bytes: int = 0
    largest_hwm_bytes: int = 0
    """VmHWM of the biggest single process of the tree."""
    pss_after_bytes: int = 0
    """Summed PSS right after the upload: shared (forked) pages counted once."""
    samples: int = 0
    processes: int = 0
    mb_per_s: float | None = None
    error: str | None = None


class RssBench(HttpBench[RssConfig]):
    """One one-shot and one chunked upload per server, its process tree's RSS sampled."""

    group = "rss"
    title = "peak server RSS during a large upload"

    def __init__(self, cfg: RssConfig, work: Path) -> None:
        super().__init__(cfg, work)
        self.rss: list[RssResult] = []

    @staticmethod
    def scratch_bytes(cfg: RssConfig) -> int:
        return 2 * cfg.rss_size

    def plan(self) -> str:
        return (
            "trials:   one one-shot and one chunked upload per server (fresh store); "
            f"page-cache prefault {'on' if self.cfg.prefault else 'off'}"
        )

    def run(self) -> None:
        """Peak RSS of each server's process tree during one big upload per mode."""
        size = self.cfg.rss_size
        print(f"  peak RSS during a {size_label(size)} upload (VmRSS of the tree every 50 ms)")
        sources = {
            "oneshot": GeneratedSource(size, seed=1),
            "chunked": GeneratedSource(size, seed=2),
        }
        shas = {mode: source_sha256(src) for mode, src in sources.items()}
        for t in self.targets:
            try:
                if not self.start(t):
                    continue
                for mode, src in sources.items():
                    self.rss.append(self._upload(t, mode, src, shas[mode]))
                    settle()
            finally:
                t.stop()
                settle()

    def _upload(self, t: Target, mode: str, src: Source, sha: str) -> RssResult:
        """One upload to ``t`` with its process tree's RSS sampled; prints the figures."""
        res = RssResult(target=t.key, mode=mode)
        self.prefault(src.size + 256 * MiB)
        pids = process_tree(t.pid)
        res.idle_bytes = tree_rss_bytes(pids)
        res.processes = len(pids)
        reset_hwm(pids)
        try:
            with new_client(t.headers) as client, PeakRssSampler(t.pid) as sampler:
                start = time.perf_counter()
                if mode == "oneshot":
                    t.upload_oneshot(client, src, sha)
                else:
                    t.upload_chunked(client, src, sha, self.cfg.chunk)
                secs = time.perf_counter() - start
        except (RuntimeError, httpx.HTTPError) as e:
            res.error = str(e).splitlines()[0]
            print(f"    {t.label} {mode}: FAILED\n      {e}")
            return res
        res.peak_sampled_bytes = sampler.peak_bytes
        res.samples = sampler.samples
        pids = process_tree(t.pid)
        res.peak_hwm_bytes = tree_hwm_bytes(pids)
        res.largest_hwm_bytes = max(tree_hwm_bytes([p]) for p in pids)
        res.pss_after_bytes = tree_pss_bytes(pids)
        res.mb_per_s = src.size / secs / MB
        print(
            f"    {t.label:<16} {mode:<8} peak {res.peak_sampled_bytes / MB:6,.0f} MB "
            f"(VmHWM {res.peak_hwm_bytes / MB:,.0f} MB, PSS "
            f"{res.pss_after_bytes / MB:,.0f} MB, idle "
            f"{res.idle_bytes / MB:,.0f} MB, {res.processes} process(es), "
            f"{res.samples} samples), {res.mb_per_s:,.0f} MB/s",
            flush=True,
        )
        return res

    # ---------------------------------------------------------------- report

    def _peak_mb(self, target: str) -> float | None:
        peaks = [r.peak_sampled_bytes for r in self.rss if r.target == target and not r.error]
        return max(peaks) / MB if peaks else None

    def ratios(self) -> list[dict[str, Any]]:
        """Each of our servers' peak RSS against the target (the registry's is shown, unjudged)."""
        return [
            target_row(
                f"{o.key}: peak RSS MB",
                o.key,
                "rss",
                self._peak_mb(o.key),
                TARGET_PEAK_RSS_MB,
                higher_is_better=False,
            )
            for o in self.ours
        ]

    def summary_rows(
        self, o: Ours, ratios: Mapping[tuple[str, str], dict[str, Any]]
    ) -> list[list[str]]:
        r = ratios[(o.key, "rss")]
        reg = self._peak_mb("registry")
        return [
            [
                f"peak server RSS, {size_label(self.cfg.rss_size)} upload",
                "-" if r["value"] is None else f"{fmt_num(r['value'])} MB",
                "n/a" if reg is None else f"{fmt_num(reg)} MB",
                "",
                f"< {TARGET_PEAK_RSS_MB:.0f} MB",
                r["status"],
            ]
        ]

    def details(self) -> list[str]:
        """Every upload's figures."""
        rows = [
            [
                f"{r.target} {r.mode}",
                r.error or f"{r.peak_sampled_bytes / MB:,.0f}",
                f"{r.peak_hwm_bytes / MB:,.0f}",
                f"{r.largest_hwm_bytes / MB:,.0f}",
                f"{r.pss_after_bytes / MB:,.0f}",
                f"{r.idle_bytes / MB:,.0f}",
                str(r.processes),
                fmt_num(r.mb_per_s),
            ]
            for r in self.rss
        ]
        header = [
            "server, mode",
            "peak MB (50 ms VmRSS)",
            "VmHWM MB",
            "largest process",
            "PSS MB after",
            "idle MB",
            "procs",
            "MB/s",
        ]
        title = f"peak RSS during one {size_label(self.cfg.rss_size)} upload"
        return [title, render_table(header, rows), ""]

    def json_extra(self) -> dict[str, Any]:
        return {"rss": [asdict(r) for r in self.rss]}


if __name__ == "__main__":
    main(RssBench, parse_args)
