"""HTTP benchmark, request rates: one 4 KiB blob read under C/Go load generators.

Every round starts our server (uvicorn and granian, each a fresh store) and
the CNCF distribution registry (Debian ``docker-registry``) on loopback,
pushes one 4 KiB blob to each (untimed), and measures for ``--load-seconds``:

* GET of the blob under ``wrk -t2 -c8`` (C);
* HEAD of it under ``hey -c 8 -m HEAD`` (Go): Debian's wrk 4.1 waits forever
  for the body of a HEAD response, so it cannot measure HEADs.

A C or Go client costs the two shared cores far less per request than
Python clients (``http_small.py``), so these rates are the servers'. Each
row also shows the server's CPU microseconds per request.

    .venv/bin/python bench/http_load.py                   # 10 s per run
    .venv/bin/python bench/http_load.py --quick           # 5 s per run
    .venv/bin/python bench/http_load.py --servers uvicorn --concurrency 16
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# bench/ is a namespace package under the repo root (see ingest.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from bench._http_bench import HttpBench, main
from bench._http_common import (
    HttpConfig,
    common_options,
    http_parser,
    parse_options,
    small_blobs,
    version_of,
)
from bench._http_targets import Target, new_client


@dataclass(frozen=True)
class LoadConfig(HttpConfig):
    """Parsed command line."""

    load_seconds: int
    concurrency: int

    def to_json(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "load_seconds": self.load_seconds,
            **super().to_json(),
        }


def parse_args(argv: list[str] | None = None) -> LoadConfig:
    """Command line; ``--quick`` only changes the default duration."""
    p = http_parser(
        "HTTP benchmark: GET (wrk) and HEAD (hey) rates, our server vs the CNCF registry.",
        quick="5 s per run",
        prefault=False,
    )
    p.add_argument("--load-seconds", type=int, help="duration of each wrk / hey run (default 10)")
    p.add_argument("--concurrency", type=int, help="concurrent connections (8)")
    a = parse_options(p, argv, {"load_seconds": (10, 5), "concurrency": (8, 8)})
    return LoadConfig(
        **common_options(p, a), load_seconds=a.load_seconds, concurrency=a.concurrency
    )


# --------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class LoadResult:
    """One wrk or hey run: successful requests per second and how many there were."""

    rate: float
    requests: int
    note: str


def _run(argv: list[str], seconds: int) -> tuple[int, str]:
    """Run a load generator for about ``seconds``: its exit status and all it printed."""
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL
    )
    return out.returncode, out.stdout + out.stderr


def header_args(headers: Mapping[str, str]) -> list[str]:
    """``-H "Name: value"`` for each header (wrk and hey spell it alike)."""
    return [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]


def run_wrk(
    wrk: str, url: str, connections: int, seconds: int, headers: Mapping[str, str]
) -> LoadResult:
    """``wrk -t2 -cN -dSs [-H ...] URL`` (GET); fails on any non-2xx/3xx response."""
    threads = min(2, connections)
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", *header_args(headers), url]
    status, text = _run(argv, seconds)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    if status != 0 or rate is None or total is None:
        raise RuntimeError(f"wrk failed (exit {status}):\n{text[-1000:]}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if bad is not None:
        raise RuntimeError(f"wrk: {bad.group(1)} non-2xx/3xx responses from {url}")
    errors = re.search(r"Socket errors: (.*)", text)
    return LoadResult(float(rate.group(1)), int(total.group(1)), errors.group(1) if errors else "")


def run_hey(
    hey: str, url: str, method: str, connections: int, seconds: int, headers: Mapping[str, str]
) -> LoadResult:
    """``hey -c N -z Ss -m METHOD [-H ...] URL``; fails on any non-200 response."""
    argv = [hey, "-c", str(connections), "-z", f"{seconds}s", "-m", method]
    argv += [*header_args(headers), url]
    status, text = _run(argv, seconds)
    total = re.search(r"Total:\s+([\d.]+) secs", text)
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    if status != 0 or total is None or not codes:
        raise RuntimeError(f"hey failed (exit {status}):\n{text[-1000:]}")
    if set(codes) != {200}:
        raise RuntimeError(f"hey: status codes {codes} from {method} {url}")
    # Requests cut off by the deadline show up as errors; more than that is a failure.
    errors = re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)+)", text)
    n_errors = sum(int(x) for x in re.findall(r"\[(\d+)\]", errors.group(1))) if errors else 0
    if n_errors > connections:
        raise RuntimeError(f"hey: {n_errors} errors from {method} {url}:\n{errors}")
    ok = codes[200]
    return LoadResult(ok / float(total.group(1)), ok, f"{n_errors} cut off" if n_errors else "")


# --------------------------------------------------------------------------- bench


class LoadBench(HttpBench[LoadConfig]):
    """wrk GETs and hey HEADs of one stored 4 KiB blob, for a fixed duration each."""

    group = "load"
    title = "request rates, wrk and hey"
    steps = ("wrk_get", "hey_head")
    units = dict.fromkeys(steps, "req/s")

    def __init__(self, cfg: LoadConfig, work: Path) -> None:
        super().__init__(cfg, work)
        self.wrk = shutil.which("wrk")
        self.hey = shutil.which("hey")
        self.blob: tuple[bytes, str] = (b"", "")

    def find_more_tools(self) -> None:
        if self.wrk is None:
            self.skipped["wrk_get"] = "wrk not found; `apt-get install -y wrk`"
        else:
            self.versions["wrk"] = version_of([self.wrk, "-v"]).split(" [")[0]
        if self.hey is None:
            self.skipped["hey_head"] = "hey not found; `apt-get install -y hey`"
        else:
            self.versions["hey"] = "hey " + version_of(
                ["dpkg-query", "-W", "-f", "${Version}", "hey"]
            )

    def step_label(self, step: str) -> str:
        n, secs = self.cfg.concurrency, self.cfg.load_seconds
        return {
            "wrk_get": f"GET 4 KiB, wrk -t2 -c{n} -d{secs}s",
            "hey_head": f"HEAD, hey -c {n} -z {secs}s",
        }[step]

    def prepare_data(self) -> None:
        (self.blob,) = small_blobs(1)

    def run_steps(self, order: Sequence[Target], round_no: int) -> None:
        steps = [step for step in self.steps if step not in self.skipped]
        if not steps:
            return
        urls = {t.key: url for t in order if (url := self._push_one(t)) is not None}
        for step in steps:
            for t in order:
                if t.key in urls:
                    self.trial(t, step, functools.partial(self._load, step, t, urls[t.key]))

    def _push_one(self, t: Target) -> str | None:
        """Push the blob (untimed); its URL, or None if the server would not take it."""
        data, sha = self.blob
        try:
            with new_client(t.headers) as client:
                return t.blob_url(t.upload_small(client, data, sha))
        except (RuntimeError, httpx.HTTPError) as e:
            print(f"    {t.label}: could not push a small blob: {e}")
            return None

    def _load(self, step: str, t: Target, url: str) -> tuple[float, float]:
        """One wrk GET or hey HEAD run against ``url`` of ``t``: (requests/s, requests)."""
        c, secs = self.cfg.concurrency, self.cfg.load_seconds
        if step == "wrk_get":
            assert self.wrk is not None
            res = run_wrk(self.wrk, url, c, secs, t.headers)
        else:
            assert self.hey is not None
            res = run_hey(self.hey, url, "HEAD", c, secs, t.headers)
        return res.rate, res.requests


if __name__ == "__main__":
    main(LoadBench, parse_args)
